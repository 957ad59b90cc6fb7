"""`hsrl simulator ...` (user response model and environment)."""

from __future__ import annotations

from hsrl.commands.common import new_group

app = new_group("Train the user response model and report its fidelity.")

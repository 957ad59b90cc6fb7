"""`hsrl sid ...` (Semantic ID codebooks and index)."""

from __future__ import annotations

from hsrl.commands.common import new_group

app = new_group("Build and describe the Semantic ID index (residual k-means codebooks).")

"""What an agent sees of a user: profile and recent history with feedback, as batched tensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hsrl.data.schema import PAD


@dataclass
class Observation:
    """A batch of B user states.

    ``user`` is the internal user index: the environment (simulator, true world) needs it; agents must
    not use it as a feature (test users are unseen). ``hist_items`` is left padded with PAD (-1), most
    recent item last; ``hist_feedback`` holds the feedback of each history entry (0 where padded).
    """

    user: torch.Tensor  # (B,) long
    profile: torch.Tensor  # (B, P) float, P may be 0
    hist_items: torch.Tensor  # (B, H) long
    hist_feedback: torch.Tensor  # (B, H) float

    @classmethod
    def from_histories(
        cls,
        histories: Sequence[Sequence[int]],
        history_length: int,
        feedback: Sequence[Sequence[float] | None] | None = None,
        profiles: Sequence[Sequence[float] | None] | Any | None = None,
        profile_dim: int = 0,
        device: torch.device | str | None = None,
    ) -> Observation:
        """Users given as histories of internal item indices (oldest first), the way a caller knows them.

        One helper for the Python API (``Agent.recommend``) and the service, so both see a history the
        way the environment shows it: the last ``history_length`` entries, left padded with PAD, each
        entry's feedback (default 1.0 = clicked) aligned to its item, profile zeros where none is given.
        The user index is 0: agents never read it, and no simulator is asked about these users.
        """
        b, h = len(histories), int(history_length)
        hist_items = np.full((b, h), PAD, dtype=np.int64)
        hist_fb = np.zeros((b, h), dtype=np.float32)
        profile = np.zeros((b, profile_dim), dtype=np.float32)
        for u, items in enumerate(histories):
            items = list(items)[-h:]
            n = len(items)
            if n:
                hist_items[u, h - n :] = items
                fb = None if feedback is None else feedback[u]
                hist_fb[u, h - n :] = 1.0 if fb is None else list(fb)[-n:]
            if profiles is not None and profiles[u] is not None:
                profile[u] = profiles[u]
        t = [torch.zeros(b, dtype=torch.long), *(torch.from_numpy(a) for a in (profile, hist_items, hist_fb))]
        return cls(*(x.to(device) for x in t)) if device is not None else cls(*t)

    @property
    def batch_size(self) -> int:
        return int(self.hist_items.shape[0])

    @property
    def hist_mask(self) -> torch.Tensor:
        """True where a history entry is real (not padding)."""
        return self.hist_items != PAD

    @property
    def device(self) -> torch.device:
        return self.hist_items.device

    def index(self, rows: torch.Tensor | slice) -> Observation:
        return Observation(self.user[rows], self.profile[rows], self.hist_items[rows], self.hist_feedback[rows])

    def to(self, device: torch.device | str) -> Observation:
        return Observation(*(t.to(device) for t in (self.user, self.profile, self.hist_items, self.hist_feedback)))

    def clone(self) -> Observation:
        return Observation(*(t.clone() for t in (self.user, self.profile, self.hist_items, self.hist_feedback)))

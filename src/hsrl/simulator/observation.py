"""What an agent sees of a user: profile and recent history with feedback, as batched tensors."""

from __future__ import annotations

from dataclasses import dataclass

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

    def index(self, rows: torch.Tensor | slice) -> "Observation":
        return Observation(self.user[rows], self.profile[rows], self.hist_items[rows], self.hist_feedback[rows])

    def to(self, device: torch.device | str) -> "Observation":
        return Observation(*(t.to(device) for t in (self.user, self.profile, self.hist_items, self.hist_feedback)))

    def clone(self) -> "Observation":
        return Observation(*(t.clone() for t in (self.user, self.profile, self.hist_items, self.hist_feedback)))

"""A fixed-size replay buffer of batched transitions, stored as preallocated tensors."""

from __future__ import annotations

from typing import Any

import torch

from hsrl.io import restore_generator
from hsrl.simulator.observation import Observation

OBS_FIELDS = ("user", "profile", "hist_items", "hist_feedback")


class ReplayBuffer:
    """Ring buffer of (obs, slate, extras, reward, next_obs, done); extras are agent-specific tensors
    (e.g. HSRL's tokens and their log-probabilities at collection time)."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.capacity = capacity
        self.storage: dict[str, torch.Tensor] = {}
        self.pos = 0
        self.size = 0
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def _flatten(
        self,
        obs: Observation,
        slate: torch.Tensor,
        extras: dict[str, torch.Tensor],
        reward: torch.Tensor,
        next_obs: Observation,
        done: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        row = {f"obs.{f}": getattr(obs, f) for f in OBS_FIELDS}
        row.update({f"next.{f}": getattr(next_obs, f) for f in OBS_FIELDS})
        row.update({"slate": slate, "reward": reward.float(), "done": done.bool()})
        row.update({f"x.{k}": v for k, v in extras.items()})
        return {k: v.detach() for k, v in row.items()}

    def add(self, obs, slate, extras, reward, next_obs, done) -> None:
        """Add a batch of B transitions (one env step of B users)."""
        row = self._flatten(obs, slate, extras, reward, next_obs, done)
        n = slate.shape[0]
        if not self.storage:
            self.storage = {
                k: torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype, device=v.device) for k, v in row.items()
            }
        idx = (self.pos + torch.arange(n)) % self.capacity
        for k, v in row.items():
            self.storage[k][idx.to(v.device)] = v
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> dict[str, Any]:
        idx = torch.randint(0, self.size, (batch_size,), generator=self.generator)
        take = {k: v[idx.to(v.device)] for k, v in self.storage.items()}
        return {
            "obs": Observation(*(take[f"obs.{f}"] for f in OBS_FIELDS)),
            "next_obs": Observation(*(take[f"next.{f}"] for f in OBS_FIELDS)),
            "slate": take["slate"],
            "reward": take["reward"],
            "done": take["done"],
            **{k[2:]: v for k, v in take.items() if k.startswith("x.")},
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "storage": {k: v[: self.size].clone() if self.size < self.capacity else v for k, v in self.storage.items()},
            "pos": self.pos,
            "size": self.size,
            "capacity": self.capacity,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity = int(state["capacity"])
        self.pos, self.size = int(state["pos"]), int(state["size"])
        self.storage = {}
        for k, v in state["storage"].items():
            full = torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype, device=v.device)
            full[: v.shape[0]] = v
            self.storage[k] = full
        restore_generator(self.generator, state["generator"])  # a state of another device reseeds

"""The agent interface shared by HSRL and every baseline (Stable-Baselines3-like: fit, act, save, load).

An agent sees observations and the catalogue (item feature table, plus the Semantic ID index for SID
agents), never the data readers. ``act`` returns a slate of K distinct item indices per user.
Learning agents also implement ``explore`` (a stochastic slate plus whatever the update needs) and
``update`` (one gradient step on a replay batch); the shared training loop drives both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch

from hsrl.errors import ArtifactError
from hsrl.simulator.observation import Observation

CHECKPOINT_VERSION = 1
NEG = -1e9  # the logit of an item or token that must never be chosen


class Agent(ABC):
    """A slate policy over a catalogue."""

    name: str = "agent"
    learned: bool = False
    privileged: bool = False  # True for references that peek at the simulator (oracle)
    replay_window: int | None = None  # policy-gradient agents learn from recent transitions only

    def __init__(self, item_features: torch.Tensor, slate_size: int) -> None:
        self.item_features = item_features
        self.slate_size = slate_size
        self.active = torch.ones(item_features.shape[0], dtype=torch.bool, device=item_features.device)

    @property
    def n_items(self) -> int:
        return int(self.item_features.shape[0])

    def set_catalogue(
        self, item_features: torch.Tensor, index: Any | None = None, active: torch.Tensor | None = None
    ) -> None:
        """Point the agent at a (possibly changed) catalogue: features of every item index, which are
        recommendable (``active``; default all), and for SID agents the updated index."""
        self.item_features = item_features
        if active is None:
            active = torch.ones(item_features.shape[0], dtype=torch.bool, device=item_features.device)
        self.active = active

    @abstractmethod
    def act(self, obs: Observation, greedy: bool = True) -> torch.Tensor:
        """Slate (B, K) of distinct item indices for each user in ``obs``."""

    # -- learning agents override these --------------------------------------------------------
    def explore(self, obs: Observation) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Stochastic slate for training plus per-row extras stored in the replay buffer."""
        return self.act(obs, greedy=False), {}

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        """One learning step on a replay batch; returns scalar diagnostics."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def train_mode(self, training: bool) -> None:
        """Switch dropout etc.; no-op for agents without networks."""

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        from hsrl.io import atomic_path

        with atomic_path(path) as tmp:
            torch.save({"version": CHECKPOINT_VERSION, "agent": self.name, "state": self.state_dict()}, tmp)

    def load(self, path: str | Path) -> "Agent":
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path}: no agent checkpoint here (train one with `hsrl train`)")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ArtifactError(f"{path}: corrupt agent checkpoint ({exc})") from None
        if not isinstance(blob, dict) or blob.get("version") != CHECKPOINT_VERSION:
            raise ArtifactError(f"{path}: agent checkpoint format {blob.get('version') if isinstance(blob, dict) else '?'}"
                                f", this hsrl reads {CHECKPOINT_VERSION}")
        if blob.get("agent") != self.name:
            raise ArtifactError(f"{path}: checkpoint of agent '{blob.get('agent')}', not '{self.name}'")
        try:
            self.load_state_dict(blob["state"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ArtifactError(f"{path}: checkpoint does not fit this agent/catalogue ({exc})") from None
        return self


def sample_without_replacement(logits: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k distinct indices per row, drawn from softmax(logits) without replacement (Gumbel top-k)."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp_(1e-10, 1 - 1e-10)
    gumbel = -torch.log(-torch.log(u))
    return (logits + gumbel).topk(k, dim=1).indices


@torch.no_grad()
def soft_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    """Polyak averaging of a target network: target <- (1 - tau) * target + tau * source."""
    for tp, p in zip(target.parameters(), source.parameters()):
        tp.lerp_(p, tau)

"""The environment contract that agents, the training loop and the evaluator rely on.

Two implementations: ``SlateEnv`` (the batched simulator or true world) and ``CatalogueView`` (an
environment whose catalogue is renumbered and partly hidden, for catalogue churn). Anything else that
offers these members can be trained and scored by hsrl (a test fake, another library's simulator).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from hsrl.simulator.observation import Observation


@runtime_checkable
class SlateEnvironment(Protocol):
    """B users served slates of K distinct items of an N-item catalogue."""

    @property
    def item_features(self) -> torch.Tensor:
        """(N, F) features of every item index the agents may recommend."""
        ...

    @property
    def n_items(self) -> int: ...

    @property
    def slate_size(self) -> int: ...

    def reset(self, seed: int | None = None) -> Observation:
        """Fresh sessions for the B users (reseeded when ``seed`` is given)."""
        ...

    def step(self, slate: torch.Tensor) -> tuple[Observation, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Show ``slate`` (B, K): (next observation, reward (B,), done (B,), info with ``clicks`` ...)."""
        ...

    def pop_episodes(self) -> dict[str, np.ndarray]:
        """Returns and depths of the episodes finished since the last call."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

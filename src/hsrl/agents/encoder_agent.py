"""What the learned baselines share: the state encoder, the catalogue mask, item scoring, RNG, persistence.

Every baseline (SL, A2C-item, DDPG, TD3, HAC) builds on ``EncoderAgent``: one ``StateEncoder`` (the
same as HSRL's), a seeded generator for all of its own sampling (so a resumed run is exact), and
``score_items``, which scores every ACTIVE item by a dot product between a query vector and the
items' vectors in the encoder's item space (items are represented by their features, so an item
added later is scored like any other). Subclasses list their modules and optimisers in ``modules`` /
``optimizers`` and get ``state_dict``/``load_state_dict``/``train_mode`` for free.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from hsrl.agents.base import NEG, Agent
from hsrl.agents.encoder import StateEncoder
from hsrl.config import AgentConfig
from hsrl.io import restore_generator

if TYPE_CHECKING:
    from hsrl.sid.protocols import SIDIndex


def mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inp, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out)
    )


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def frozen_copy(module: ModuleT) -> ModuleT:
    """A target network: a copy without gradients, always in eval mode (no dropout in TD targets)."""
    import copy

    return copy.deepcopy(module).requires_grad_(False).eval()


class EncoderAgent(Agent):
    """Base of the learned baselines; see the module docstring."""

    learned = True

    def __init__(
        self,
        item_features: torch.Tensor,
        slate_size: int,
        profile_dim: int,
        history_length: int,
        config: AgentConfig | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(item_features, slate_size)
        self.config = config or AgentConfig()
        self.profile_dim, self.history_length = int(profile_dim), int(history_length)
        cfg = self.config
        torch.manual_seed(seed)
        self.device = item_features.device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.encoder = StateEncoder(
            item_features.shape[1], profile_dim, history_length, cfg.dim, cfg.layers, cfg.heads, cfg.dropout
        ).to(self.device)
        self.updates = 0
        self.build()

    def build(self) -> None:
        """Create the agent's own networks and optimisers (called once by ``__init__``, after the encoder)."""

    # ------------------------------------------------------------------ to be listed by subclasses
    def modules(self) -> dict[str, nn.Module]:
        """Every network (online and target) by name."""
        return {"encoder": self.encoder}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def online(self) -> list[nn.Module]:
        """Networks whose dropout follows ``train_mode`` (targets stay in eval mode)."""
        return [m for name, m in self.modules().items() if not name.startswith("target")]

    # ------------------------------------------------------------------ catalogue
    def set_catalogue(
        self, item_features: torch.Tensor, index: SIDIndex | None = None, active: torch.Tensor | None = None
    ) -> None:
        """New items need only features; ``active`` defaults to the index's active mask when given one."""
        if active is None and index is not None and hasattr(index, "active"):
            active = torch.as_tensor(index.active, dtype=torch.bool, device=item_features.device)
        super().set_catalogue(item_features, index, active)

    def item_vectors(self) -> torch.Tensor:
        """Every catalogue item in the encoder's item space (N, dim)."""
        return self.encoder.item_vectors(self.item_features)

    def score_items(self, query: torch.Tensor, vectors: torch.Tensor | None = None) -> torch.Tensor:
        """<query_b, v_i> for every item (B, N); inactive items get NEG so they are never chosen."""
        vectors = self.item_vectors() if vectors is None else vectors
        return (query @ vectors.T).masked_fill(~self.active, NEG)

    def gaussian(self, like: torch.Tensor, std: float) -> torch.Tensor:
        return torch.randn(like.shape, generator=self.generator, device=like.device) * std

    def train_mode(self, training: bool) -> None:
        for m in self.online():
            m.train(training)

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode (no dropout) and no gradients for acting; the previous mode is restored after."""
        was = self.encoder.training
        self.train_mode(False)
        try:
            with torch.no_grad():
                yield
        finally:
            self.train_mode(was)

    # ------------------------------------------------------------------ persistence
    def checkpoint_inputs(self) -> dict[str, Any]:
        return {
            **super().checkpoint_inputs(),
            "profile_dim": self.profile_dim,
            "history_length": self.history_length,
            "config": self.config.model_dump(mode="json"),
        }

    @classmethod
    def _construct(
        cls, features: torch.Tensor, slate_size: int, inputs: dict[str, Any], config: AgentConfig | None
    ) -> EncoderAgent:
        cfg = config if config is not None else AgentConfig.model_validate(inputs["config"])
        return cls(features, slate_size, int(inputs["profile_dim"]), int(inputs["history_length"]), cfg)

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(),
            "modules": {k: m.state_dict() for k, m in self.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
            "generator": self.generator.get_state(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, m in self.modules().items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        restore_generator(self.generator, state["generator"])
        self.updates = int(state["updates"])

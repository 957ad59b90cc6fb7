"""Non-learned reference policies: random, popular, and the privileged oracle-greedy (DESIGN §8)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from hsrl.agents.base import NEG, Agent, sample_without_replacement
from hsrl.agents.world_model import ClickProbs, every_item_click_probs
from hsrl.io import restore_generator
from hsrl.simulator.observation import Observation

if TYPE_CHECKING:
    from hsrl.config import AgentConfig
    from hsrl.sid.protocols import SIDIndex


class RandomAgent(Agent):
    """K distinct items drawn uniformly from the active catalogue."""

    name = "random"

    def __init__(self, item_features: torch.Tensor, slate_size: int, seed: int = 0) -> None:
        super().__init__(item_features, slate_size)
        self.generator = torch.Generator(device=item_features.device).manual_seed(seed)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restore_generator(self.generator, state["generator"])

    def act(self, obs: Observation, greedy: bool = True) -> torch.Tensor:
        logits = torch.where(self.active, 0.0, NEG).expand(obs.batch_size, -1)
        return sample_without_replacement(logits, self.slate_size, self.generator)


class PopularAgent(Agent):
    """The K most clicked active items in the training logs, the same for everyone."""

    name = "popular"

    def __init__(self, item_features: torch.Tensor, slate_size: int, popularity: torch.Tensor) -> None:
        super().__init__(item_features, slate_size)
        self.popularity = popularity.float()

    def set_catalogue(
        self, item_features: torch.Tensor, index: SIDIndex | None = None, active: torch.Tensor | None = None
    ) -> None:
        extra = item_features.shape[0] - self.popularity.shape[0]
        if extra > 0:  # new items have no clicks yet
            self.popularity = torch.cat([self.popularity, self.popularity.new_zeros(extra)])
        super().set_catalogue(item_features, index, active)

    def checkpoint_inputs(self) -> dict[str, Any]:
        return {**super().checkpoint_inputs(), "popularity": self.popularity.detach().cpu()}

    @classmethod
    def _construct(
        cls, features: torch.Tensor, slate_size: int, inputs: dict[str, Any], config: AgentConfig | None
    ) -> PopularAgent:
        return cls(features, slate_size, inputs["popularity"].to(features.device))

    def act(self, obs: Observation, greedy: bool = True) -> torch.Tensor:
        scores = torch.where(self.active, self.popularity, NEG)
        return scores.topk(self.slate_size).indices.expand(obs.batch_size, -1)


class OracleGreedyAgent(Agent):
    """PRIVILEGED reference: top-K by the judging world's own click probabilities (myopic).

    ``click_probs(obs, slate, slots)`` is the environment's response function; every active item is scored
    as if shown in the first slot, and the top K fill the slate best first (where a world has position
    effects, the most attractive item then gets the most looked-at slot).
    """

    name = "oracle"
    privileged = True

    def __init__(
        self,
        item_features: torch.Tensor,
        slate_size: int,
        click_probs: ClickProbs,
        chunk: int = 4096,
    ) -> None:
        super().__init__(item_features, slate_size)
        self.click_probs = click_probs
        self.chunk = chunk

    def checkpoint_inputs(self) -> dict[str, Any]:
        raise TypeError(
            "the oracle scores with its world's click model, which no file can hold; build it for an "
            "environment with hsrl.build_agent('oracle', run, env=env)"
        )

    @torch.no_grad()
    def act(self, obs: Observation, greedy: bool = True) -> torch.Tensor:
        scores = every_item_click_probs(self.click_probs, obs, self.n_items, self.chunk)
        scores = torch.where(self.active, scores, NEG)
        return scores.topk(self.slate_size, dim=1).indices

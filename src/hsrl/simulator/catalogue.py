"""An environment seen through a reordered, growable catalogue (catalogue churn, DESIGN §9).

Production catalogues grow at the end: items a recommender was trained on keep their indices and new
ones are appended. ``CatalogueView`` gives any ``SlateEnv`` that shape. Item ``order[i]`` of the
underlying environment is item ``i`` of the view, and only the first ``visible`` items exist: slates
are translated back before the world answers, and history entries of items not yet visible read as
padding, so a policy trained on the view never sees a held-out item. ``reveal`` makes every item
visible (the held-out ones become items ``visible..N-1``), without touching the world, its users or
its random state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hsrl.data.schema import PAD
from hsrl.simulator.observation import Observation

if TYPE_CHECKING:
    from hsrl.simulator.env import SlateEnv


class CatalogueView:
    """``env`` with its items renumbered by ``order`` and cut to the first ``visible`` of them.

    It has the environment interface agents, the trainer and the evaluator use (``reset``, ``step``,
    ``observation``, ``state_dict``, ``pop_episodes``, ``item_features``, ``n_items``, ...). Its
    ``response.click_probs`` answers for view-indexed slates, so a privileged oracle can judge the
    view's items with the world's own model.
    """

    def __init__(self, env: SlateEnv, order: np.ndarray | torch.Tensor, visible: int) -> None:
        order_t = torch.as_tensor(np.asarray(order), dtype=torch.long, device=env.device)
        n = int(env.n_items)
        if order_t.shape != (n,) or not torch.equal(order_t.sort().values, torch.arange(n, device=env.device)):
            raise ValueError(f"order must be a permutation of the {n} item indices")
        if not 1 <= visible <= n:
            raise ValueError(f"visible must be in 1..{n}, got {visible}")
        self.env = env
        self.order = order_t
        self.rank = torch.empty_like(order_t)
        self.rank[order_t] = torch.arange(n, device=env.device)
        self.visible = int(visible)
        self._seen: tuple[Observation, Observation] | None = None  # (world's obs, its view) of the last call

    # ------------------------------------------------------------------ catalogue
    @property
    def n_items(self) -> int:
        return self.visible

    @property
    def item_features(self) -> torch.Tensor:
        return self.env.item_features[self.order[: self.visible]]

    def reveal(self) -> None:
        """Make every item visible: the held-out ones are appended as items ``visible..N-1``."""
        self.visible = int(self.env.n_items)
        self._seen = None

    def local_items(self, items: np.ndarray | torch.Tensor) -> torch.Tensor:
        """World item indices (any shape, PAD allowed) as view indices; items not visible become PAD."""
        items_t = torch.as_tensor(np.asarray(items) if not isinstance(items, torch.Tensor) else items)
        items_t = items_t.to(self.env.device, torch.long)
        local = self.rank[items_t.clamp_min(0)]
        return torch.where((items_t == PAD) | (local >= self.visible), torch.full_like(local, PAD), local)

    def local_values(self, per_item: np.ndarray | torch.Tensor) -> torch.Tensor:
        """A per-item array of the world (N, ...) in view order, visible items only."""
        values = torch.as_tensor(np.asarray(per_item) if not isinstance(per_item, torch.Tensor) else per_item)
        return values.to(self.env.device)[self.order[: self.visible]]

    # ------------------------------------------------------------------ translation
    def _local(self, obs: Observation) -> Observation:
        if self._seen is not None and self._seen[0] is obs:
            return self._seen[1]
        hist = self.local_items(obs.hist_items)
        view = Observation(obs.user, obs.profile, hist, torch.where(hist == PAD, 0.0, obs.hist_feedback))
        self._seen = (obs, view)
        return view

    def _world_slate(self, slate: torch.Tensor) -> torch.Tensor:
        slate = torch.as_tensor(slate).to(self.env.device, torch.long)
        if slate.numel() and (int(slate.min()) < 0 or int(slate.max()) >= self.visible):
            raise ValueError(f"slate holds an item index outside the visible catalogue 0..{self.visible - 1}")
        return self.order[slate]

    # ------------------------------------------------------------------ environment interface
    def reset(self, seed: int | None = None) -> Observation:
        return self._local(self.env.reset(seed))

    @property
    def observation(self) -> Observation:
        return self._local(self.env.observation)

    def step(self, slate: torch.Tensor) -> tuple[Observation, torch.Tensor, torch.Tensor, dict[str, Any]]:
        next_obs, reward, done, info = self.env.step(self._world_slate(slate))
        final = self.local_items(info["final_obs"].hist_items)
        info = dict(info)
        info["final_obs"] = Observation(
            info["final_obs"].user,
            info["final_obs"].profile,
            final,
            torch.where(final == PAD, 0.0, info["final_obs"].hist_feedback),
        )
        return self._local(next_obs), reward, done, info

    @property
    def response(self) -> CatalogueView:
        return self

    @torch.no_grad()
    def click_probs(self, obs: Observation, slate: torch.Tensor, slots: torch.Tensor | None = None) -> torch.Tensor:
        """The world's click probabilities of a view-indexed slate for the CURRENT users of the view."""
        world_obs = self.env.observation
        if self._local(world_obs) is not obs:
            raise ValueError("click_probs answers for the view's current observation only")
        return self.env.response.click_probs(world_obs, self.order[slate], slots)

    def __getattr__(self, name: str) -> Any:
        # slate_size, profile_dim, history_length, batch_users, device, state_dict, pop_episodes, ceiling, ...
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)

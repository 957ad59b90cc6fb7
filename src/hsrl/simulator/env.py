"""The batched slate environment: B users at once, all tensors on one device (DESIGN §5).

Each step: click probabilities of the shown slate from a response object (learned simulator or the
true synthetic world) → one Bernoulli draw per slot → reward → the slate and its clicks appended to
the history (last H kept) → temper leave rule → done. A finished user is replaced in place by a fresh
one drawn from the split's start states, and every finished episode is recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from hsrl.data.schema import SPLITS, LogDataset
from hsrl.io import restore_generator
from hsrl.simulator.observation import Observation
from hsrl.simulator.response import ResponseModel
from hsrl.simulator.reward import RewardFn, make_reward, make_slot_reward, reward_ceiling, temper_drop

if TYPE_CHECKING:
    from hsrl.config import EnvConfig

World = Literal["simulator", "judge", "true"]  # who answers: the trained simulator, the judge, the truth


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TrueWorldResponse:
    """The synthetic ground truth as a response object: ``world.click_probs(users, hist_items, slate)``."""

    def __init__(self, world: Any) -> None:
        self.world = world

    @torch.no_grad()
    def click_probs(self, obs: Observation, slate: torch.Tensor, slots: torch.Tensor | None = None) -> torch.Tensor:
        return self.world.click_probs(obs.user, obs.hist_items, slate, slots)


class SlateEnv:
    """B simulated users served slates of K distinct items; see ``step`` for the episode protocol.

    Start states are the (user, profile, history) of the split's logged impression rows, drawn uniformly
    with the environment's own seeded generator, so two environments with the same seed, response and
    actions produce identical trajectories. Attributes for agents: ``item_features`` (N, F),
    ``n_items``, ``slate_size``, ``profile_dim``, ``history_length``, ``batch_users``, ``device``.
    """

    def __init__(
        self,
        dataset: LogDataset,
        response: ResponseModel,
        split: str = "test",
        batch_users: int = 32,
        seed: int = 0,
        reward: str | RewardFn = "mean_with_cost",
        click_cost: float = 0.1,
        sweet_target: float = 0.9,
        temper: float = 20.0,
        device: str | torch.device | None = None,
        users: np.ndarray | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}' (expected one of {', '.join(SPLITS)})")
        if batch_users < 1:
            raise ValueError(f"batch_users must be >= 1, got {batch_users}")
        rows = dataset.rows_in(split)
        if users is not None:  # a subset of the split's users (e.g. one arm of an A/B test)
            rows = rows[np.isin(dataset.imp_user[rows], users)]
        if len(rows) == 0:
            raise ValueError(f"split '{split}' has no impressions to start sessions from")
        self.device = torch.device(device) if device is not None else default_device()
        self.response = response
        self.split = split
        self.batch_users = batch_users
        self.slate_size = dataset.slate_size
        self.history_length = dataset.history_length
        self.n_items = dataset.n_items
        self.profile_dim = dataset.profile_dim
        self.temper0 = float(temper)
        self.reward_fn: RewardFn = make_reward(reward, click_cost, sweet_target) if isinstance(reward, str) else reward
        self.reward_name = reward if isinstance(reward, str) else getattr(reward, "__name__", "custom")
        self.slot_reward_fn = make_slot_reward(self.reward_name, click_cost, sweet_target)
        dev = self.device
        # its own copy: the dataset may be shared by every environment of the process (RunDir)
        self.item_features = torch.tensor(dataset.item_features, dtype=torch.float32, device=dev)
        users = dataset.imp_user[rows]
        profiles = (
            dataset.user_profiles[users] if dataset.user_profiles is not None else np.zeros((len(rows), 0), np.float32)
        )
        self._start = Observation(
            torch.as_tensor(users, dtype=torch.long, device=dev),
            torch.as_tensor(profiles, dtype=torch.float32, device=dev),
            torch.as_tensor(dataset.hist_items[rows], dtype=torch.long, device=dev),
            torch.as_tensor(dataset.hist_feedback[rows], dtype=torch.float32, device=dev),
        )
        self.n_start_states = len(rows)
        self.generator = torch.Generator(device=dev)
        self.generator.manual_seed(seed)
        self._obs: Observation | None = None
        self.episodes_finished = 0  # running counters over the env's life
        self.user_steps = 0
        self.total_reward = 0.0
        self.total_clicks = 0.0
        self._finished_returns: list[torch.Tensor] = []
        self._finished_depths: list[torch.Tensor] = []

    @classmethod
    def from_run(
        cls,
        run: str | Path,
        split: str = "test",
        world: World = "simulator",
        **kwargs: Any,
    ) -> SlateEnv:
        """The environment of a run directory (its data and simulator, or the true world): ``make_env``'s
        keywords (``batch_users``, ``seed``, ``reward``, ``device``, ``users``) pass through."""
        return make_env(run, split=split, world=world, **kwargs)

    @classmethod
    def from_config(
        cls,
        dataset: LogDataset,
        response: ResponseModel,
        config: EnvConfig,
        split: str = "test",
        batch_users: int | None = None,
        seed: int = 0,
        reward: str | RewardFn | None = None,
        device: str | torch.device | None = None,
        users: np.ndarray | None = None,
    ) -> SlateEnv:
        """An environment whose batch size, reward, click cost, sweet-point target and initial temper
        come from an ``env`` config section, unless given."""
        return cls(
            dataset,
            response,
            split=split,
            batch_users=batch_users if batch_users is not None else config.batch_users,
            seed=seed,
            reward=reward if reward is not None else config.reward,
            click_cost=config.click_cost,
            sweet_target=config.sweet_target,
            temper=config.temper,
            device=device,
            users=users,
        )

    # ------------------------------------------------------------------ episodes
    def _draw(self, n: int) -> Observation:
        idx = torch.randint(self.n_start_states, (n,), generator=self.generator, device=self.device)
        return self._start.index(idx).clone()

    def reset(self, seed: int | None = None) -> Observation:
        """Start B fresh sessions (reseeding the generator first if ``seed`` is given).

        Without a seed the generator continues, so successive resets draw other users. Finished-episode
        records and counters are kept (``pop_episodes`` clears the records).
        """
        if seed is not None:
            self.generator.manual_seed(seed)
        b = self.batch_users
        self._obs = self._draw(b)
        self._temper = torch.full((b,), self.temper0, device=self.device)
        self._return = torch.zeros(b, device=self.device)
        self._depth = torch.zeros(b, dtype=torch.long, device=self.device)
        return self._obs

    @property
    def observation(self) -> Observation:
        """The current observation (what ``reset``/``step`` last returned)."""
        if self._obs is None:
            raise RuntimeError("call reset() before using the environment")
        return self._obs

    def _check_slate(self, slate: Any) -> torch.Tensor:
        if not isinstance(slate, torch.Tensor):
            slate = torch.as_tensor(np.asarray(slate))
        b, k = self.batch_users, self.slate_size
        if slate.shape != (b, k):
            raise ValueError(f"slate must have shape ({b}, {k}) (batch_users, slate_size), got {tuple(slate.shape)}")
        if slate.dtype.is_floating_point or slate.dtype == torch.bool:
            raise ValueError(f"slate must hold integer item indices, got dtype {slate.dtype}")
        slate = slate.to(self.device, torch.long)
        if slate.min() < 0 or slate.max() >= self.n_items:
            bad = int(((slate < 0) | (slate >= self.n_items)).any(1).nonzero()[0])
            raise ValueError(f"slate row {bad}: item index out of range (expected 0..{self.n_items - 1})")
        ordered = slate.sort(dim=1).values
        dup = (ordered[:, 1:] == ordered[:, :-1]).any(1)
        if dup.any():
            bad = int(dup.nonzero()[0])
            raise ValueError(f"slate row {bad}: an item appears twice (a slate holds {k} distinct items)")
        return slate

    def step(self, slate: torch.Tensor) -> tuple[Observation, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Show one slate (B, K) of distinct item indices to each user.

        Returns ``(next_obs, reward (B,), done (B,) bool, info)``. For a row with ``done`` True the
        episode ended at this step and ``next_obs`` already holds a FRESH user's first observation (the
        finished user was replaced in place): an agent must not bootstrap across that boundary, i.e. use
        ``(1 - done)`` in its TD target. ``info`` holds ``clicks``, ``click_probs`` and ``slot_rewards`` (B, K; per-slot
        terms that average to the reward),
        ``final_obs`` (every row's state after this step, before replacement), and ``episode_return`` /
        ``episode_depth`` (B,) of the episodes that ended (zero where not done). Observations returned
        are never modified later by the environment.
        """
        obs = self.observation
        slate = self._check_slate(slate)
        probs = self.response.click_probs(obs, slate).to(self.device, torch.float32)
        clicks = torch.bernoulli(probs.clamp(0.0, 1.0), generator=self.generator)
        reward = self.reward_fn(clicks).to(torch.float32)
        h = self.history_length
        after = Observation(
            obs.user,
            obs.profile,
            torch.cat([obs.hist_items, slate], dim=1)[:, -h:],
            torch.cat([obs.hist_feedback, clicks], dim=1)[:, -h:],
        )
        self._temper = self._temper - temper_drop(reward, self.slate_size)
        self._return = self._return + reward
        self._depth = self._depth + 1
        done = self._temper < 1.0
        ep_return = torch.where(done, self._return, torch.zeros_like(self._return))
        ep_depth = torch.where(done, self._depth, torch.zeros_like(self._depth))
        self.user_steps += self.batch_users
        self.total_reward += float(reward.sum())
        self.total_clicks += float(clicks.sum())
        next_obs = after
        idx = done.nonzero().squeeze(1)
        if idx.numel():
            self._finished_returns.append(self._return[idx])
            self._finished_depths.append(self._depth[idx])
            self.episodes_finished += int(idx.numel())
            fresh = self._draw(int(idx.numel()))
            next_obs = after.clone()
            for name in ("user", "profile", "hist_items", "hist_feedback"):
                getattr(next_obs, name)[idx] = getattr(fresh, name)
            self._temper = self._temper.index_fill(0, idx, self.temper0)
            self._return = self._return.index_fill(0, idx, 0.0)
            self._depth = self._depth.index_fill(0, idx, 0)
        self._obs = next_obs
        if self.slot_reward_fn is not None:
            per_slot = self.slot_reward_fn(clicks).to(torch.float32)
        else:  # a custom reward: no per-slot decomposition known, every slot gets the slate reward
            per_slot = reward.unsqueeze(1).expand_as(clicks)
        info = {
            "clicks": clicks,
            "slot_rewards": per_slot,
            "click_probs": probs,
            "final_obs": after,
            "episode_return": ep_return,
            "episode_depth": ep_depth,
        }
        return next_obs, reward, done, info

    def state_dict(self) -> dict[str, Any]:
        """Everything that moves (current users, tempers, returns, generator, counters), so a training
        run resumed from a checkpoint continues exactly as an uninterrupted one."""
        return {
            "obs": self.observation.clone(),
            "temper": self._temper.clone(),
            "return": self._return.clone(),
            "depth": self._depth.clone(),
            "generator": self.generator.get_state(),
            "counters": (self.episodes_finished, self.user_steps, self.total_reward, self.total_clicks),
            "finished": (list(self._finished_returns), list(self._finished_depths)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["obs"].batch_size != self.batch_users:
            raise ValueError(f"environment state for {state['obs'].batch_size} users, this env has {self.batch_users}")
        self._obs = state["obs"].to(self.device)
        self._temper = state["temper"].to(self.device)
        self._return = state["return"].to(self.device)
        self._depth = state["depth"].to(self.device)
        restore_generator(self.generator, state["generator"])  # a state of another device reseeds
        self.episodes_finished, self.user_steps, self.total_reward, self.total_clicks = state["counters"]
        self._finished_returns, self._finished_depths = (list(x) for x in state["finished"])

    def pop_episodes(self) -> dict[str, np.ndarray]:
        """Every episode finished since the last call: ``{"return": (E,), "depth": (E,)}``, then cleared."""
        returns = torch.cat(self._finished_returns).cpu().numpy() if self._finished_returns else np.zeros(0, np.float32)
        depths = torch.cat(self._finished_depths).cpu().numpy() if self._finished_depths else np.zeros(0, np.int64)
        self._finished_returns, self._finished_depths = [], []
        return {"return": returns, "depth": depths}

    def ceiling(self) -> dict[str, float]:
        """Best possible total reward and depth under this reward and leave rule (to report scores against)."""
        return reward_ceiling(self.reward_fn, self.slate_size, self.temper0)


def make_env(
    run_dir: str | Path,
    split: str = "test",
    world: World = "simulator",
    batch_users: int | None = None,
    seed: int = 0,
    reward: str | RewardFn | None = None,
    device: str | torch.device | None = None,
    users: np.ndarray | None = None,
) -> SlateEnv:
    """A SlateEnv over a run directory's dataset, driven by its trained simulator, the second simulator
    trained with another seed (``judge``: agents never trained in it), or the true synthetic world.

    ``batch_users`` and ``reward`` default to the run's ``env`` config section (as do the click cost
    sweet-point target and the initial temper). Missing or mismatched artefacts are ArtifactErrors.

    A run-taking entry point on purpose (as ``SlateEnv.from_run`` and the gymnasium and TorchRL adapters
    that call it): the run directory is resolved by ``hsrl.rundir.RunDir.env``, the one place that knows
    its layout; ``SlateEnv.from_config`` builds an environment from loaded artefacts.
    """
    from hsrl.rundir import RunDir  # the library's one way up to the pipeline (see the docstring)

    return RunDir(run_dir).env(split, world, batch_users, seed, reward, device, users)

"""Gymnasium views of SlateEnv, so other RL libraries can drive it.

Two views, both registered as ``hsrl/Slate-v0`` (see ``hsrl.simulator``):

- ``SlateGymEnv``: one user, a ``gymnasium.Env`` (``gymnasium.make("hsrl/Slate-v0", run=RUN_DIR)``).
- ``SlateVectorEnv``: B users at once, a ``gymnasium.vector.VectorEnv``
  (``gymnasium.make_vec("hsrl/Slate-v0", num_envs=B, run=RUN_DIR)``).

Observations are a Dict of NumPy arrays (``profile`` (P,), ``hist_items`` (H,) with -1 padding,
``hist_feedback`` (H,); a leading B axis in the vector view); actions are K item indices per user,
distinct within a slate. The action space is a ``SlateSpace``: a MultiDiscrete whose ``sample()``
draws K distinct items and whose ``contains()`` refuses a slate that repeats one. An invalid action
(an item out of range, an item twice, a wrong shape) is never repaired: ``step`` raises a ValueError
naming the problem, as SlateEnv does.

Episodes never truncate (the temper rule bounds them). The single view ends an episode with the
user's final observation (call ``reset`` for the next user); the vector view autoresets on the same
step (``metadata["autoreset_mode"]``): a terminated row's observation is already the next user's,
and ``infos["final_obs"]`` holds every row's state before replacement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from hsrl.simulator.env import SlateEnv, World, make_env
from hsrl.simulator.observation import Observation


class SlateSpace(spaces.MultiDiscrete):
    """K distinct item indices out of ``n_items`` (with ``rows``: one slate per row, shape (rows, K)).

    A plain MultiDiscrete would sample slates that repeat items, which SlateEnv refuses; this one
    samples without replacement, so ``action_space.sample()`` is always a valid action.
    """

    def __init__(
        self, n_items: int, slate_size: int, rows: int | None = None, seed: int | np.random.Generator | None = None
    ) -> None:
        if not 1 <= slate_size <= n_items:
            raise ValueError(f"a slate of {slate_size} distinct items needs 1 <= slate_size <= n_items ({n_items})")
        shape = (slate_size,) if rows is None else (rows, slate_size)
        super().__init__(np.full(shape, n_items, dtype=np.int64), dtype=np.int64, seed=seed)
        self.n_items = int(n_items)
        self.slate_size = int(slate_size)

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        """K distinct items per slate, uniformly. Per-slot masks cannot keep slates distinct: refused."""
        if mask is not None or probability is not None:
            raise ValueError(
                "SlateSpace.sample takes no mask or probability (per-slot masks cannot keep a slate distinct)"
            )
        out = np.empty(self.shape, dtype=np.int64)
        for row in np.ndindex(*self.shape[:-1]):
            out[row] = self.np_random.choice(self.n_items, size=self.slate_size, replace=False)
        return out

    def contains(self, x: Any) -> bool:
        if not super().contains(x):
            return False
        ordered = np.sort(np.asarray(x), axis=-1)
        return not bool((ordered[..., 1:] == ordered[..., :-1]).any())

    def __repr__(self) -> str:
        return f"SlateSpace(n_items={self.n_items}, slate_size={self.slate_size}, shape={self.shape})"


def single_observation_space(env: SlateEnv) -> spaces.Dict:
    """One user's observation: profile (P,), hist_items (H,) in -1..N-1, hist_feedback (H,) in [0, 1]."""
    h, p, n = env.history_length, env.profile_dim, env.n_items
    return spaces.Dict(
        {
            "profile": spaces.Box(-np.inf, np.inf, shape=(p,), dtype=np.float32),
            "hist_items": spaces.Box(-1, n - 1, shape=(h,), dtype=np.int64),
            "hist_feedback": spaces.Box(0.0, 1.0, shape=(h,), dtype=np.float32),
        }
    )


def _numpy(obs: Observation, row: int | None = None) -> dict[str, np.ndarray]:
    """Observation tensors as fresh NumPy arrays (copies: callers keep them, the env keeps its tensors)."""

    def arr(t: torch.Tensor) -> np.ndarray:
        return np.array((t if row is None else t[row]).cpu().numpy(), copy=True)

    return {"profile": arr(obs.profile), "hist_items": arr(obs.hist_items), "hist_feedback": arr(obs.hist_feedback)}


class SlateGymEnv(gym.Env):
    """One simulated user per episode: wraps a SlateEnv with ``batch_users == 1``.

    ``step`` returns the user's state after the slate, also on the terminating step; the SlateEnv has
    already drawn the next user by then, and ``reset`` starts a session from a fresh draw.
    ``reset(seed=s)`` reseeds the SlateEnv's generator, so a seed fixes the users and the clicks.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, env: SlateEnv, render_mode: str | None = None) -> None:
        if env.batch_users != 1:
            raise ValueError(f"SlateGymEnv drives one user; the SlateEnv has batch_users={env.batch_users}")
        if render_mode is not None:
            raise ValueError(f"SlateGymEnv has no render modes, got render_mode={render_mode!r}")
        self.env = env
        self.render_mode = None
        self.observation_space = single_observation_space(env)
        self.action_space = SlateSpace(env.n_items, env.slate_size)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        return _numpy(self.env.reset(seed=seed), 0), {}

    def step(self, action: Any):
        """``action``: K distinct item indices. Returns (obs, reward, terminated, False, info)."""
        slate = np.asarray(action)
        if slate.shape != (self.env.slate_size,):
            raise ValueError(f"action must be {self.env.slate_size} item indices, got shape {slate.shape}")
        _, reward, done, info = self.env.step(torch.as_tensor(slate.reshape(1, -1).astype(np.int64, copy=False)))
        infos: dict[str, Any] = {
            "clicks": np.array(info["clicks"][0].cpu().numpy(), copy=True),
            "click_probs": np.array(info["click_probs"][0].cpu().numpy(), copy=True),
        }
        terminated = bool(done[0])
        if terminated:
            infos["episode_return"] = float(info["episode_return"][0])
            infos["episode_depth"] = int(info["episode_depth"][0])
        return _numpy(info["final_obs"], 0), float(reward[0]), terminated, False, infos


class SlateVectorEnv(VectorEnv):
    """Wraps a SlateEnv; ``num_envs`` = its ``batch_users``."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, env: SlateEnv) -> None:
        self.env = env
        self.num_envs = env.batch_users
        self.single_observation_space = single_observation_space(env)
        self.single_action_space = SlateSpace(env.n_items, env.slate_size)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = SlateSpace(env.n_items, env.slate_size, rows=self.num_envs)

    @staticmethod
    def _numpy(obs: Observation) -> dict[str, np.ndarray]:
        return _numpy(obs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Fresh users for every row; ``seed`` reseeds the environment's generator."""
        if seed is not None:
            self._np_random_seed = seed
        return self._numpy(self.env.reset(seed=seed)), {}

    def step(self, actions: np.ndarray):
        """Returns (obs, rewards, terminations, truncations, infos), NumPy arrays of length ``num_envs``."""
        obs, reward, done, info = self.env.step(torch.as_tensor(np.asarray(actions, dtype=np.int64)))
        infos = {
            "clicks": info["clicks"].cpu().numpy(),
            "episode_return": info["episode_return"].cpu().numpy(),
            "episode_depth": info["episode_depth"].cpu().numpy(),
            "final_obs": self._numpy(info["final_obs"]),
        }
        terminations = done.cpu().numpy()
        return self._numpy(obs), reward.cpu().numpy(), terminations, np.zeros_like(terminations), infos


# ---------------------------------------------------------------------- gymnasium entry points
def make_single(
    run: str | Path,
    split: str = "train",
    world: World = "simulator",
    seed: int = 0,
    reward: str | None = None,
    device: str | torch.device | None = "cpu",
    render_mode: str | None = None,
) -> SlateGymEnv:
    """``gymnasium.make("hsrl/Slate-v0", run=RUN_DIR, ...)``: one user of a run directory's simulator
    (``world``: simulator | judge | true). CPU by default: one user per step is too little work for a GPU."""
    return SlateGymEnv(
        make_env(run, split=split, world=world, batch_users=1, seed=seed, reward=reward, device=device),
        render_mode=render_mode,
    )


def make_vector(
    num_envs: int,
    run: str | Path,
    split: str = "train",
    world: World = "simulator",
    seed: int = 0,
    reward: str | None = None,
    device: str | torch.device | None = None,
) -> SlateVectorEnv:
    """``gymnasium.make_vec("hsrl/Slate-v0", num_envs=B, run=RUN_DIR, ...)``: B users at once, on
    CUDA when present (SlateEnv's default)."""
    return SlateVectorEnv(
        make_env(run, split=split, world=world, batch_users=num_envs, seed=seed, reward=reward, device=device)
    )

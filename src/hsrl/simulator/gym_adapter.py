"""A ``gymnasium.vector.VectorEnv`` view of SlateEnv, so other RL libraries can drive it.

Observations are a Dict of NumPy arrays (``profile`` (B, P), ``hist_items`` (B, H) with -1 padding,
``hist_feedback`` (B, H)); actions are MultiDiscrete: K item indices per user, distinct within a slate.
Autoreset is same-step (``metadata["autoreset_mode"]``): a terminated row's observation is already the
next user's, and ``infos["final_obs"]`` holds every row's state before replacement. Episodes never
truncate (the temper rule bounds them). MultiDiscrete cannot express "distinct": ``action_space.sample()``
may repeat an item within a slate, which ``step`` rejects with a ValueError.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from hsrl.simulator.env import SlateEnv
from hsrl.simulator.observation import Observation


class SlateVectorEnv(VectorEnv):
    """Wraps a SlateEnv; ``num_envs`` = its ``batch_users``."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, env: SlateEnv) -> None:
        self.env = env
        self.num_envs = env.batch_users
        h, p, n, k = env.history_length, env.profile_dim, env.n_items, env.slate_size
        self.single_observation_space = spaces.Dict(
            {
                "profile": spaces.Box(-np.inf, np.inf, shape=(p,), dtype=np.float32),
                "hist_items": spaces.Box(-1, n - 1, shape=(h,), dtype=np.int64),
                "hist_feedback": spaces.Box(0.0, 1.0, shape=(h,), dtype=np.float32),
            }
        )
        self.single_action_space = spaces.MultiDiscrete(np.full(k, n, dtype=np.int64))
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    @staticmethod
    def _numpy(obs: Observation) -> dict[str, np.ndarray]:
        return {
            "profile": obs.profile.cpu().numpy(),
            "hist_items": obs.hist_items.cpu().numpy(),
            "hist_feedback": obs.hist_feedback.cpu().numpy(),
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Fresh users for every row; ``seed`` reseeds the environment's generator."""
        if seed is not None:
            self._np_random_seed = seed
        return self._numpy(self.env.reset(seed=seed)), {}

    def step(self, actions: np.ndarray):
        """Returns (obs, rewards, terminations, truncations, infos), NumPy arrays of length ``num_envs``."""
        obs, reward, done, info = self.env.step(np.asarray(actions, dtype=np.int64))
        infos = {
            "clicks": info["clicks"].cpu().numpy(),
            "episode_return": info["episode_return"].cpu().numpy(),
            "episode_depth": info["episode_depth"].cpu().numpy(),
            "final_obs": self._numpy(info["final_obs"]),
        }
        terminations = done.cpu().numpy()
        return self._numpy(obs), reward.cpu().numpy(), terminations, np.zeros_like(terminations), infos

"""A TorchRL view of SlateEnv: ``torchrl.envs.EnvBase`` with ``batch_size = [batch_users]``.

TorchRL is an optional extra (``pip install 'hsrl[torchrl]'``); nothing else in hsrl imports this
module, so hsrl works without it. Keys (B = batch_users, K = slate size, N = catalogue, H = history):

- observation: ``profile`` (B, P) float, ``hist_items`` (B, H) int64 in -1..N-1 (-1 pads),
  ``hist_feedback`` (B, H) float in [0, 1];
- action: ``action`` (B, K) int64, K item indices per user (a ``MultiCategorical`` spec of K x N);
- ``reward`` (B, 1) float; ``done`` / ``terminated`` (B, 1) bool (the temper rule ends a session),
  ``truncated`` (B, 1) bool, always False (sessions never truncate).

Invalid actions: a slate must hold K *distinct* items, which no TorchRL spec expresses; a slate that
repeats an item or names one out of range is never repaired: ``step`` raises SlateEnv's ValueError
(naming the row). ``rand_action`` (what ``rollout`` without a policy and ``check_env_specs`` use)
draws K distinct items per user, so random rollouts are valid.

Episode boundaries follow TorchRL's contract, not SlateEnv's in-place replacement: the step that ends
a session returns that user's final observation with ``done`` True; the following ``reset`` (with
``_reset`` marking the done rows, as ``rollout`` and the collectors do) returns the next user of each
such row. Rows that ``_reset`` marks without being done (e.g. truncated by a ``StepCounter``
transform) start a fresh user there too; their unfinished session is not recorded as an episode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

try:
    from tensordict import TensorDict, TensorDictBase
    from torchrl.data import Bounded, Categorical, Composite, MultiCategorical, Unbounded
    from torchrl.envs import EnvBase
except ImportError as exc:  # the optional extra is missing
    raise ImportError(f"hsrl.simulator.torchrl_env needs TorchRL: pip install 'hsrl[torchrl]' ({exc})") from None

from hsrl.simulator.env import SlateEnv, World, make_env
from hsrl.simulator.observation import Observation

OBS_KEYS = ("profile", "hist_items", "hist_feedback")


class SlateTorchRLEnv(EnvBase):
    """Wraps a SlateEnv (its device, its generator: ``set_seed`` reseeds SlateEnv's generator)."""

    def __init__(self, env: SlateEnv) -> None:
        b, k, n, h, p = env.batch_users, env.slate_size, env.n_items, env.history_length, env.profile_dim
        super().__init__(device=env.device, batch_size=torch.Size([b]))
        self.env = env
        dev = env.device
        self.observation_spec = Composite(
            profile=Unbounded(shape=(b, p), dtype=torch.float32, device=dev),
            hist_items=Bounded(low=-1, high=n - 1, shape=(b, h), dtype=torch.int64, device=dev),
            hist_feedback=Bounded(low=0.0, high=1.0, shape=(b, h), dtype=torch.float32, device=dev),
            shape=(b,),
            device=dev,
        )
        self.action_spec = MultiCategorical(nvec=[n] * k, shape=(b, k), dtype=torch.int64, device=dev)
        self.reward_spec = Unbounded(shape=(b, 1), dtype=torch.float32, device=dev)
        self.done_spec = Composite(
            done=Categorical(2, shape=(b, 1), dtype=torch.bool, device=dev),
            terminated=Categorical(2, shape=(b, 1), dtype=torch.bool, device=dev),
            truncated=Categorical(2, shape=(b, 1), dtype=torch.bool, device=dev),
            shape=(b,),
            device=dev,
        )
        # rows whose session ended at the last step: SlateEnv already holds their next user
        self._replaced = torch.zeros(b, dtype=torch.bool, device=dev)

    # ------------------------------------------------------------------ helpers
    def _observation_td(self, obs: Observation, **extra: torch.Tensor) -> TensorDictBase:
        # copies: a transform that edits the tensordict in place must not reach into SlateEnv's state
        fields = {key: getattr(obs, key).clone() for key in OBS_KEYS}
        return TensorDict({**fields, **extra}, batch_size=self.batch_size, device=self.device)

    def _not_done(self) -> dict[str, torch.Tensor]:
        b = self.env.batch_users
        return {
            key: torch.zeros(b, 1, dtype=torch.bool, device=self.device) for key in ("done", "terminated", "truncated")
        }

    def _restart_rows(self, rows: torch.Tensor) -> None:
        """Fresh users in ``rows`` mid-session (SlateEnv replaces users only when a session ends, so this
        sets its per-row state the way its own replacement does)."""
        env = self.env
        fresh = env._draw(int(rows.numel()))
        obs = env.observation.clone()
        for key in ("user", *OBS_KEYS):
            getattr(obs, key)[rows] = getattr(fresh, key)
        env._obs = obs
        env._temper = env._temper.index_fill(0, rows, env.temper0)
        env._return = env._return.index_fill(0, rows, 0.0)
        env._depth = env._depth.index_fill(0, rows, 0)

    # ------------------------------------------------------------------ EnvBase
    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs: Any) -> TensorDictBase:
        mask = None
        if tensordict is not None and "_reset" in tensordict:
            mask = tensordict.get("_reset").reshape(-1).to(self.device, torch.bool)
        if mask is None or self.env._obs is None:  # a full reset (or the first one): B fresh users
            obs = self.env.reset()
        else:
            stale = (mask & ~self._replaced).nonzero().squeeze(1)
            if stale.numel():
                self._restart_rows(stale)
            obs = self.env.observation
        self._replaced.zero_()
        return self._observation_td(obs, **self._not_done())

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        _, reward, done, info = self.env.step(tensordict.get("action"))
        self._replaced = done.clone()
        flag = done.unsqueeze(-1)
        return self._observation_td(
            info["final_obs"],
            reward=reward.unsqueeze(-1),
            done=flag,
            terminated=flag.clone(),
            truncated=torch.zeros_like(flag),
        )

    def _set_seed(self, seed: int | None) -> None:
        if seed is not None:
            self.env.generator.manual_seed(int(seed))

    def rand_action(self, tensordict: TensorDictBase | None = None) -> TensorDictBase:
        """K distinct items per user, uniformly (``action_spec.rand()`` may repeat an item)."""
        b, k, n = self.env.batch_users, self.env.slate_size, self.env.n_items
        if tensordict is None:
            tensordict = TensorDict({}, batch_size=self.batch_size, device=self.device)
        weights = torch.ones(b, n, device=self.device)
        tensordict.set("action", torch.multinomial(weights, k, replacement=False))
        return tensordict


def make_torchrl_env(
    run: str | Path,
    split: str = "train",
    world: World = "simulator",
    batch_users: int | None = None,
    seed: int = 0,
    reward: str | None = None,
    device: str | torch.device | None = None,
) -> SlateTorchRLEnv:
    """A SlateTorchRLEnv over a run directory (arguments as ``hsrl.simulator.make_env``)."""
    return SlateTorchRLEnv(
        make_env(run, split=split, world=world, batch_users=batch_users, seed=seed, reward=reward, device=device)
    )

"""A synthetic recommendation world with known ground truth, and a logger that records sessions in it.

Users have latent interest vectors and items latent topic vectors; the observable item features and
user profiles are noisy projections of them. Click probability rises with user-item affinity and item
quality and falls with boredom (items of the same topic in the recent history). Satisfaction (the
slate reward) drives leaving through the same temper rule as the simulator (DESIGN §5), so agents
trained in a learned simulator can also be scored in this true world (the sim-to-real gap).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hsrl.config import DataConfig, SyntheticConfig
from hsrl.data.schema import PAD, LogDataset, build_histories, split_users
from hsrl.errors import ArtifactError
from hsrl.io import atomic_path


@dataclass
class SyntheticWorld:
    """Ground-truth click model. All arrays are NumPy; ``click_probs`` works on torch tensors."""

    user_latent: np.ndarray  # (U, d)
    item_latent: np.ndarray  # (N, d), unit norm
    item_topic: np.ndarray  # (N,) int
    item_quality: np.ndarray  # (N,) logit offset
    affinity_scale: float = 4.0
    base_logit: float = -1.5
    boredom_per_repeat: float = 0.6
    boredom_window: int = 10
    position_bias: float = 0.0  # logit drop of slot k (0 first): position_bias * log2(1 + k)

    @property
    def n_users(self) -> int:
        return int(self.user_latent.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_latent.shape[0])

    def click_logits(
        self,
        users: torch.Tensor,
        hist_items: torch.Tensor,
        slate: torch.Tensor,
        slots: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """True click logits (B, W) of ``slate`` (B, W) for ``users`` (B,) with histories (B, H).

        ``slots`` (W,): the position each column is shown at (default: column j at slot j)."""
        device = slate.device
        u = torch.as_tensor(self.user_latent, dtype=torch.float32, device=device)[users]
        v = torch.as_tensor(self.item_latent, dtype=torch.float32, device=device)[slate]
        quality = torch.as_tensor(self.item_quality, dtype=torch.float32, device=device)[slate]
        topic = torch.as_tensor(self.item_topic, dtype=torch.long, device=device)
        affinity = (v * u.unsqueeze(1)).sum(-1)
        recent = hist_items[:, -self.boredom_window :]
        valid = recent != PAD
        recent_topic = torch.where(valid, topic[recent.clamp_min(0)], torch.full_like(recent, -1))
        repeats = (recent_topic.unsqueeze(1) == topic[slate].unsqueeze(2)).sum(-1).float()
        logits = self.base_logit + self.affinity_scale * affinity + quality - self.boredom_per_repeat * repeats
        if self.position_bias:
            slot = torch.arange(slate.shape[1], device=device) if slots is None else slots.to(device)
            logits = logits - self.position_bias * torch.log2(1.0 + slot.float())
        return logits

    def click_probs(
        self, users: torch.Tensor, hist_items: torch.Tensor, slate: torch.Tensor, slots: torch.Tensor | None = None
    ) -> torch.Tensor:
        return torch.sigmoid(self.click_logits(users, hist_items, slate, slots))

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                user_latent=self.user_latent,
                item_latent=self.item_latent,
                item_topic=self.item_topic,
                item_quality=self.item_quality,
                scalars=np.array(
                    [
                        self.affinity_scale,
                        self.base_logit,
                        self.boredom_per_repeat,
                        self.boredom_window,
                        self.position_bias,
                    ],
                    dtype=np.float64,
                ),
            )

    @classmethod
    def load(cls, path: str | Path) -> SyntheticWorld:
        """Read a world file (what ``save`` wrote)."""
        path = Path(path)
        if path.is_dir():
            raise ArtifactError(f"{path}: a folder; give the world file itself (a run's is RUN/world.npz)")
        if not path.is_file():
            raise ArtifactError(f"{path}: no synthetic world here (only synthetic datasets have one)")
        try:
            with np.load(path, allow_pickle=False) as z:
                s = z["scalars"]
                return cls(
                    user_latent=z["user_latent"],
                    item_latent=z["item_latent"],
                    item_topic=z["item_topic"],
                    item_quality=z["item_quality"],
                    affinity_scale=float(s[0]),
                    base_logit=float(s[1]),
                    boredom_per_repeat=float(s[2]),
                    boredom_window=int(s[3]),
                    position_bias=float(s[4]) if len(s) > 4 else 0.0,  # files written before the option
                )
        except (KeyError, ValueError, OSError) as exc:
            raise ArtifactError(f"{path}: corrupt synthetic world file ({exc})") from None


def make_world(cfg: SyntheticConfig, seed: int) -> tuple[SyntheticWorld, np.ndarray, np.ndarray]:
    """Draw a world plus its observable item features (N, F) and user profiles (U, P)."""
    rng = np.random.default_rng(seed)
    d = cfg.latent_dim
    n_topics = max(2, int(round(np.sqrt(cfg.n_items) / 2)))
    centers = rng.normal(size=(n_topics, d))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    item_topic = rng.integers(0, n_topics, size=cfg.n_items)
    item_latent = centers[item_topic] + 0.35 * rng.normal(size=(cfg.n_items, d))
    item_latent /= np.linalg.norm(item_latent, axis=1, keepdims=True)
    item_quality = 0.5 * rng.normal(size=cfg.n_items)
    # users like one or two topics: a mixture of centres plus noise, scaled to unit-ish norm
    primary = rng.integers(0, n_topics, size=cfg.n_users)
    secondary = rng.integers(0, n_topics, size=cfg.n_users)
    user_latent = centers[primary] + 0.6 * centers[secondary] + 0.4 * rng.normal(size=(cfg.n_users, d))
    user_latent /= np.linalg.norm(user_latent, axis=1, keepdims=True)
    proj = rng.normal(size=(d, cfg.feature_dim)) / np.sqrt(d)
    features = item_latent @ proj + cfg.feature_noise * rng.normal(size=(cfg.n_items, cfg.feature_dim)) / np.sqrt(
        cfg.feature_dim
    )
    # a quality hint is observable too (like a popularity or rating feature)
    features = np.concatenate([features, item_quality[:, None] + 0.3 * rng.normal(size=(cfg.n_items, 1))], axis=1)
    pproj = rng.normal(size=(d, cfg.profile_dim)) / np.sqrt(d)
    profiles = user_latent @ pproj + cfg.profile_noise * rng.normal(size=(cfg.n_users, cfg.profile_dim)) / np.sqrt(
        cfg.profile_dim
    )
    world = SyntheticWorld(
        user_latent=user_latent.astype(np.float32),
        item_latent=item_latent.astype(np.float32),
        item_topic=item_topic.astype(np.int64),
        item_quality=item_quality.astype(np.float32),
        position_bias=cfg.position_bias,
    )
    return world, features.astype(np.float32), profiles.astype(np.float32)


def log_sessions(
    world: SyntheticWorld,
    n_sessions: int,
    slate_size: int,
    history_length: int,
    behaviour_noise: float,
    seed: int,
    temper0: float = 20.0,
    click_cost: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Log ``n_sessions`` sessions per user under a popularity-plus-noise behaviour policy.

    Returns (imp_user, imp_time, imp_items, imp_feedback). Sessions of all users run in lock-step
    (one batched world call per step); a user's history carries over between their sessions.
    """
    rng = np.random.default_rng(seed + 1)
    gen = torch.Generator().manual_seed(seed + 2)
    n_users, n_items, k, h = world.n_users, world.n_items, slate_size, history_length
    popularity = world.item_quality.astype(np.float64)
    hist = torch.full((n_users, h), PAD, dtype=torch.long)
    users = torch.arange(n_users)
    rows_u, rows_t, rows_i, rows_f = [], [], [], []
    t = 0
    for _session in range(n_sessions):
        temper = np.full(n_users, temper0)
        active = np.ones(n_users, dtype=bool)
        while active.any():
            idx = np.flatnonzero(active)
            scores = popularity[None, :] + behaviour_noise * rng.gumbel(size=(len(idx), n_items))
            slate = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            slate_t = torch.as_tensor(slate, dtype=torch.long)
            probs = world.click_probs(users[idx], hist[idx], slate_t)
            clicks = torch.bernoulli(probs, generator=gen)
            rows_u.append(idx)
            rows_t.append(np.full(len(idx), t))
            rows_i.append(slate)
            rows_f.append(clicks.numpy())
            hist[idx] = torch.cat([hist[idx], slate_t], dim=1)[:, -h:]
            c = clicks.numpy()
            reward = (c - click_cost * (1 - c)).mean(1)
            temper[idx] -= (1 - reward) * k + 1
            active[idx[temper[idx] < 1]] = False
            t += 1
    return (
        np.concatenate(rows_u).astype(np.int64),
        np.concatenate(rows_t).astype(np.int64),
        np.concatenate(rows_i).astype(np.int64),
        np.concatenate(rows_f).astype(np.float32),
    )


def generate(config: DataConfig) -> tuple[LogDataset, SyntheticWorld]:
    """The synthetic dataset and the world that generated it (same seed -> identical output)."""
    syn = config.synthetic
    world, features, profiles = make_world(syn, config.seed)
    imp_user, imp_time, imp_items, imp_fb = log_sessions(
        world, syn.sessions_per_user, config.slate_size, config.history_length, syn.behaviour_noise, config.seed
    )
    hist_items, hist_fb = build_histories(imp_user, imp_time, imp_items, imp_fb, config.history_length)
    ds = LogDataset(
        item_ids=np.array([str(i) for i in range(syn.n_items)]),
        item_features=features,
        user_ids=np.array([str(u) for u in range(syn.n_users)]),
        user_split=split_users(syn.n_users, config.split, config.seed),
        imp_user=imp_user,
        imp_time=imp_time,
        imp_items=imp_items,
        imp_feedback=imp_fb,
        hist_items=hist_items,
        hist_feedback=hist_fb,
        user_profiles=profiles,
        item_text=None,
        meta={"name": "synthetic", "source": "embedded", "seed": config.seed, "has_world": True},
    )
    return ds, world


def read(config: DataConfig) -> LogDataset:
    """Reader entry point (the world is available through ``generate``)."""
    return generate(config)[0]

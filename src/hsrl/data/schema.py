"""The canonical logged-data form every reader produces and every later stage consumes (DESIGN §4).

Items are indexed 0..N-1 internally (``item_ids`` keeps the original ids), users 0..U-1
(``user_ids`` keeps the originals). One impression row = one shown slate of K items with K feedback
values, and the user's history *before* it: the last H items the user saw, with their feedback
(clicked or not), left padded with -1 so the most recent entry is at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hsrl.errors import ArtifactError, InputError
from hsrl.io import atomic_path

SCHEMA_VERSION = 1
DATASET_FILE, HEADER_FILE = "dataset.npz", "dataset.json"  # the files of a dataset folder

PAD = -1
SPLITS = ("train", "val", "test")


@dataclass
class LogDataset:
    """Items, users and logged impressions, with a user-level train/val/test split.

    Shapes: N items, F item features, U users, P profile features, M impressions, K slate size,
    H history length.
    """

    item_ids: np.ndarray  # (N,) original item ids (str)
    item_features: np.ndarray  # (N, F) float32
    user_ids: np.ndarray  # (U,) original user ids (str)
    user_split: np.ndarray  # (U,) int8: 0 train, 1 val, 2 test
    imp_user: np.ndarray  # (M,) int64 internal user index
    imp_time: np.ndarray  # (M,) int64 timestamp (or order)
    imp_items: np.ndarray  # (M, K) int64 internal item index
    imp_feedback: np.ndarray  # (M, K) float32 (click 0/1)
    hist_items: np.ndarray  # (M, H) int64, PAD-left-padded, most recent last
    hist_feedback: np.ndarray  # (M, H) float32, 0 where padded
    user_profiles: np.ndarray | None = None  # (U, P) float32
    item_text: list[str] | None = None  # (N,) e.g. "Title (1995) Comedy|Drama"
    meta: dict[str, Any] = field(default_factory=dict)  # name, source, feature names, ...

    # ------------------------------------------------------------------ shape helpers
    @property
    def n_items(self) -> int:
        return int(self.item_features.shape[0])

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def n_impressions(self) -> int:
        return int(self.imp_items.shape[0])

    @property
    def slate_size(self) -> int:
        return int(self.imp_items.shape[1])

    @property
    def history_length(self) -> int:
        return int(self.hist_items.shape[1])

    @property
    def feature_dim(self) -> int:
        return int(self.item_features.shape[1])

    @property
    def profile_dim(self) -> int:
        return 0 if self.user_profiles is None else int(self.user_profiles.shape[1])

    def users_in(self, split: str) -> np.ndarray:
        """Internal indices of the users of one split ('train', 'val' or 'test')."""
        return np.flatnonzero(self.user_split == SPLITS.index(split))

    def rows_in(self, split: str) -> np.ndarray:
        """Impression rows whose user belongs to ``split``."""
        return np.flatnonzero(self.user_split[self.imp_user] == SPLITS.index(split))

    def item_popularity(self, split: str = "train") -> np.ndarray:
        """Clicks per item in the logs of one split (the 'popular' baseline and popularity floor)."""
        rows = self.rows_in(split)
        counts = np.zeros(self.n_items, dtype=np.float64)
        np.add.at(counts, self.imp_items[rows].ravel(), self.imp_feedback[rows].ravel())
        return counts

    # ------------------------------------------------------------------ validation
    def validate(self, origin: str = "dataset") -> None:
        """Check shapes, dtypes, ranges and ids; raise InputError naming what is wrong."""
        n, u, m = self.n_items, self.n_users, self.n_impressions

        def fail(field_name: str, message: str, expected: str | None = None, row: int | None = None):
            raise InputError(origin, message, field=field_name, expected=expected, row=row)

        if self.item_features.ndim != 2 or n == 0:
            fail("item_features", "no items", "a non-empty (N, F) matrix")
        if not np.isfinite(self.item_features).all():
            bad = int(np.flatnonzero(~np.isfinite(self.item_features).all(axis=1))[0])
            fail("item_features", f"item '{self.item_ids[bad]}' has a NaN or infinite feature", "finite numbers")
        if len(self.item_ids) != n:
            fail("item_ids", f"{len(self.item_ids)} ids for {n} feature rows", "one id per item")
        if len(set(self.item_ids.tolist())) != n:
            fail("item_ids", "duplicate item id", "unique item ids")
        if len(set(self.user_ids.tolist())) != u:
            fail("user_ids", "duplicate user id", "unique user ids")
        if m == 0:
            fail("impressions", "no impressions", "at least one logged slate")
        k = self.slate_size
        for name, arr, shape in (
            ("imp_user", self.imp_user, (m,)),
            ("imp_time", self.imp_time, (m,)),
            ("imp_feedback", self.imp_feedback, (m, k)),
            ("hist_feedback", self.hist_feedback, (m, self.history_length)),
            ("user_split", self.user_split, (u,)),
        ):
            if arr.shape != shape:
                fail(name, f"shape {arr.shape}", f"shape {shape}")
        if self.imp_user.min() < 0 or self.imp_user.max() >= u:
            fail("imp_user", "user index out of range", f"0..{u - 1}")
        if self.imp_items.min() < 0 or self.imp_items.max() >= n:
            row = int(np.flatnonzero((self.imp_items < 0).any(1) | (self.imp_items >= n).any(1))[0])
            fail("imp_items", "unknown item index", f"0..{n - 1}", row=row)
        if self.hist_items.max(initial=PAD) >= n or self.hist_items.min(initial=PAD) < PAD:
            fail("hist_items", "unknown item index in a history", f"{PAD} (padding) or 0..{n - 1}")
        if not np.isfinite(self.imp_feedback).all():
            fail("imp_feedback", "NaN feedback", "finite numbers")
        if self.user_profiles is not None:
            if self.user_profiles.shape[0] != u:
                fail("user_profiles", f"{self.user_profiles.shape[0]} rows for {u} users", "one row per user")
            if not np.isfinite(self.user_profiles).all():
                fail("user_profiles", "NaN or infinite profile value", "finite numbers")
        if self.item_text is not None and len(self.item_text) != n:
            fail("item_text", f"{len(self.item_text)} texts for {n} items", "one text per item")
        if set(np.unique(self.user_split).tolist()) - {0, 1, 2}:
            fail("user_split", "unknown split code", "0 (train), 1 (val) or 2 (test)")

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        """Write the dataset folder ``folder`` atomically (arrays in one .npz, metadata in JSON); returns it.

        The folder is replaced as a whole, so one that holds anything but a dataset (a run directory given
        where its ``data/`` folder was meant) is refused rather than emptied."""
        target = Path(folder)
        if target.is_dir():
            foreign = sorted(p.name for p in target.iterdir() if p.name not in (DATASET_FILE, HEADER_FILE))
            if foreign:
                raise ArtifactError(
                    f"{target}: not a dataset folder (it holds {', '.join(foreign[:5])}); save writes the folder"
                    " itself and would replace it: give the dataset's own folder (a run's is RUN/data)"
                )
        arrays: dict[str, Any] = {
            "item_ids": self.item_ids.astype(str),
            "item_features": self.item_features.astype(np.float32),
            "user_ids": self.user_ids.astype(str),
            "user_split": self.user_split.astype(np.int8),
            "imp_user": self.imp_user.astype(np.int64),
            "imp_time": self.imp_time.astype(np.int64),
            "imp_items": self.imp_items.astype(np.int64),
            "imp_feedback": self.imp_feedback.astype(np.float32),
            "hist_items": self.hist_items.astype(np.int64),
            "hist_feedback": self.hist_feedback.astype(np.float32),
        }
        if self.user_profiles is not None:
            arrays["user_profiles"] = self.user_profiles.astype(np.float32)
        with atomic_path(target) as tmp:
            tmp.mkdir()
            np.savez_compressed(tmp / DATASET_FILE, **arrays)
            header = {"schema_version": SCHEMA_VERSION, "meta": self.meta, "item_text": self.item_text}
            (tmp / HEADER_FILE).write_text(json.dumps(header, indent=1, default=str))
        return target

    @classmethod
    def load(cls, folder: str | Path) -> LogDataset:
        """Read a dataset folder (what ``save`` wrote); a missing, corrupt or other-version dataset is an
        ArtifactError."""
        folder = Path(folder)
        npz_path, json_path = folder / DATASET_FILE, folder / HEADER_FILE
        if not npz_path.is_file() or not json_path.is_file():
            if (folder / "data" / DATASET_FILE).is_file():
                raise ArtifactError(f"{folder}: a run directory; the dataset folder is {folder / 'data'}")
            raise ArtifactError(f"{folder}: no prepared dataset here (run `hsrl data prepare` first)")
        try:
            header = json.loads(json_path.read_text())
            with np.load(npz_path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as exc:  # corrupt file: report it, never a traceback
            raise ArtifactError(f"{folder}: dataset files are corrupt ({exc})") from None
        version = header.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ArtifactError(
                f"{json_path}: dataset schema version {version}, this hsrl reads version {SCHEMA_VERSION};"
                " prepare the data again with `hsrl data prepare --force`"
            )
        return cls(
            item_ids=arrays["item_ids"],
            item_features=arrays["item_features"],
            user_ids=arrays["user_ids"],
            user_split=arrays["user_split"],
            imp_user=arrays["imp_user"],
            imp_time=arrays["imp_time"],
            imp_items=arrays["imp_items"],
            imp_feedback=arrays["imp_feedback"],
            hist_items=arrays["hist_items"],
            hist_feedback=arrays["hist_feedback"],
            user_profiles=arrays.get("user_profiles"),
            item_text=header.get("item_text"),
            meta=header.get("meta", {}),
        )

    # ------------------------------------------------------------------ summary
    def describe(self) -> dict[str, Any]:
        """Counts and rates for `hsrl data describe`."""
        hist_len = (self.hist_items != PAD).sum(axis=1)
        out: dict[str, Any] = {
            "dataset": self.meta.get("name", "?"),
            "users": self.n_users,
            "items": self.n_items,
            "impressions": self.n_impressions,
            "interactions": int(self.n_impressions * self.slate_size),
            **({"ratings": int(self.meta["ratings"])} if "ratings" in self.meta else {}),
            **self._unknown_items(),
            "slate_size": self.slate_size,
            "item_feature_dim": self.feature_dim,
            "profile_dim": self.profile_dim,
            "click_rate": float(self.imp_feedback.mean()),
            "history_length_mean": float(hist_len.mean()),
            "history_length_median": float(np.median(hist_len)),
            "history_length_max": int(hist_len.max()),
        }
        for i, s in enumerate(SPLITS):
            out[f"{s}_users"] = int((self.user_split == i).sum())
        return out

    def _unknown_items(self) -> dict[str, Any]:
        """What ``data.unknown_items=drop`` dropped (nothing to show under the error policy)."""
        report = self.meta.get("unknown_items")
        if not report:
            return {}
        out: dict[str, Any] = {
            "unknown_items": report.get("policy", "?"),
            "unknown_item_rows_dropped": int(report.get("rows_dropped", 0)),
        }
        for key in ("slates_dropped", "slate_rows_dropped", "history_ids_skipped"):
            if key in report:
                out[f"unknown_item_{key}"] = int(report[key])
        if report.get("examples"):
            out["unknown_item_examples"] = ", ".join(str(x) for x in report["examples"])
        return out


def split_users(n_users: int, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Assign users to train/val/test at random (seeded) in the given proportions; codes 0/1/2."""
    if n_users < 3:
        raise InputError(None, f"only {n_users} users", field="users", expected="at least 3 users to split")
    fr = np.asarray(fractions, dtype=np.float64)
    if (fr < 0).any() or fr.sum() <= 0:
        raise InputError(
            None, f"bad split fractions {fractions}", field="data.split", expected="three non-negative numbers"
        )
    fr = fr / fr.sum()
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_users)
    n_val = max(1, int(round(fr[1] * n_users))) if fr[1] > 0 else 0
    n_test = max(1, int(round(fr[2] * n_users))) if fr[2] > 0 else 0
    codes = np.zeros(n_users, dtype=np.int8)
    codes[order[:n_val]] = 1
    codes[order[n_val : n_val + n_test]] = 2
    return codes


def build_histories(
    imp_user: np.ndarray,
    imp_time: np.ndarray,
    imp_items: np.ndarray,
    imp_feedback: np.ndarray,
    history_length: int,
    prior_items: dict[int, np.ndarray] | None = None,
    prior_feedback: dict[int, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """History before each impression = the same user's earlier slates (items + feedback), last H.

    Used by readers whose logs are sequences of slates (synthetic, MovieLens, generic CSV). Within a
    user, impressions are ordered by (time, row). ``prior_*`` optionally gives each user's items seen
    before the log starts (feedback 0/1), placed before the first slate.
    """
    m, k = imp_items.shape
    h = history_length
    hist_items = np.full((m, h), PAD, dtype=np.int64)
    hist_fb = np.zeros((m, h), dtype=np.float32)
    order = np.lexsort((np.arange(m), imp_time, imp_user))
    users = imp_user[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], m]
    for s, e in zip(starts, ends):
        rows = order[s:e]
        user = int(users[s])
        seq_items = imp_items[rows].reshape(-1)
        seq_fb = imp_feedback[rows].reshape(-1).astype(np.float32)
        if prior_items is not None and user in prior_items:
            seq_items = np.concatenate([prior_items[user].astype(np.int64), seq_items])
            seq_fb = np.concatenate([prior_feedback[user].astype(np.float32), seq_fb])  # type: ignore[index]
        offset = len(seq_items) - (e - s) * k
        for j, row in enumerate(rows):
            end = offset + j * k
            start = max(0, end - h)
            n = end - start
            if n:
                hist_items[row, h - n :] = seq_items[start:end]
                hist_fb[row, h - n :] = seq_fb[start:end]
    return hist_items, hist_fb

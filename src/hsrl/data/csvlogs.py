"""Your own logs: interactions (CSV or Parquet) + item features -> LogDataset (DESIGN §4).

Interactions: columns ``user, item, time, feedback`` and optionally ``slate`` (a slate id). Without
slate ids each user's time-sorted interactions are cut into consecutive slates of K (as for
MovieLens; an incomplete tail is dropped); with them every (user, slate) group must have exactly K
rows. Items: an ``item`` column, numeric feature columns, optionally ``text``. ``feedback`` is a
click-like value in [0, 1].

The slate builders here are shared with the MovieLens reader, whose logs are plain rating sequences.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hsrl.config import DataConfig
from hsrl.data.schema import LogDataset, build_histories, split_users
from hsrl.data.tables import Table, read_any
from hsrl.errors import ConfigError, InputError

INTERACTION_COLUMNS = ("user", "item", "time", "feedback")


def natural_order(ids: np.ndarray) -> np.ndarray:
    """Indices that sort string ids numerically when they all are integers, else as text."""
    ids = np.asarray(ids, dtype=str)
    try:
        return np.argsort(ids.astype(np.int64), kind="stable")
    except ValueError:
        return np.argsort(ids, kind="stable")


def index_users(raw_users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique user ids, index of each row's user in them)."""
    uniq, inverse = np.unique(np.asarray(raw_users, dtype=str), return_inverse=True)
    order = natural_order(uniq)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return uniq[order], rank[inverse]


def consecutive_slates(
    user: np.ndarray, time: np.ndarray, item: np.ndarray, feedback: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut each user's interactions, sorted by (time, original row), into slates of K consecutive ones.

    Returns (imp_user, imp_time, imp_items, imp_feedback); a slate's time is its first interaction's.
    A user's last ``n mod K`` interactions (an incomplete slate) are dropped.
    """
    order = np.lexsort((np.arange(len(user)), time, user))
    u = user[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    counts = np.diff(np.r_[starts, len(u)])
    position = np.arange(len(u)) - np.repeat(starts, counts)
    complete = position < np.repeat(counts // k * k, counts)
    rows = order[complete]  # grouped by user, in time order, a multiple of K per user
    imp_items = item[rows].reshape(-1, k)
    imp_fb = feedback[rows].reshape(-1, k).astype(np.float32)
    return user[rows][::k].copy(), time[rows][::k].astype(np.int64), imp_items, imp_fb


def keyed_slates(
    user: np.ndarray,
    slate: np.ndarray,
    time: np.ndarray,
    item: np.ndarray,
    feedback: np.ndarray,
    k: int,
    table: Table,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group rows by (user, slate id); each group must hold exactly K rows (else an InputError at its
    first row). Within a slate rows keep (time, row) order; the slate's time is its earliest."""
    key = pd.factorize(pd.Series(user.astype(str), dtype=object) + "\x1f" + pd.Series(slate, dtype=object))[0]
    sizes = np.bincount(key)
    bad = np.flatnonzero(sizes != k)
    if bad.size:
        first_row = int(np.flatnonzero(key == bad[0])[0])
        who = table.text("user")[first_row]
        table.fail(first_row, "slate", f"slate '{slate[first_row]}' of user '{who}' has "
                   f"{sizes[bad[0]]} rows", f"exactly {k} rows per slate (data.slate_size)")
    order = np.lexsort((np.arange(len(key)), time, key))
    rows = order.reshape(-1, k)
    first = rows[:, 0]
    return user[first].copy(), time[rows].min(axis=1).astype(np.int64), item[rows], feedback[rows].astype(np.float32)


def assemble(
    config: DataConfig,
    *,
    item_ids: np.ndarray,
    item_features: np.ndarray,
    item_text: list[str] | None,
    user_ids: np.ndarray,
    imp_user: np.ndarray,
    imp_time: np.ndarray,
    imp_items: np.ndarray,
    imp_feedback: np.ndarray,
    user_profiles: np.ndarray | None,
    meta: dict,
    history_time: np.ndarray | None = None,
    prior_items: dict[int, np.ndarray] | None = None,
) -> LogDataset:
    """Drop users without a complete slate, build histories (with feedback) and the user split."""
    kept, imp_user = np.unique(imp_user, return_inverse=True)
    prior = None if prior_items is None else {int(j): prior_items[int(u)] for j, u in enumerate(kept) if int(u) in prior_items}
    hist_items, hist_fb = build_histories(
        imp_user,
        imp_time if history_time is None else history_time,
        imp_items,
        imp_feedback,
        config.history_length,
        prior_items=prior,
        prior_feedback=None if prior is None else {u: np.ones(len(v), dtype=np.float32) for u, v in prior.items()},
    )
    return LogDataset(
        item_ids=np.asarray(item_ids, dtype=str),
        item_features=np.asarray(item_features, dtype=np.float32),
        user_ids=np.asarray(user_ids, dtype=str)[kept],
        user_split=split_users(len(kept), config.split, config.seed),
        imp_user=imp_user.astype(np.int64),
        imp_time=np.asarray(imp_time, dtype=np.int64),
        imp_items=imp_items.astype(np.int64),
        imp_feedback=imp_feedback.astype(np.float32),
        hist_items=hist_items,
        hist_feedback=hist_fb,
        user_profiles=None if user_profiles is None else np.asarray(user_profiles, dtype=np.float32)[kept],
        item_text=item_text,
        meta=meta,
    )


def item_lookup(item_ids: np.ndarray, table: Table, column: str, values: np.ndarray) -> np.ndarray:
    """Internal indices of ``values`` (ids as strings); an id missing from the catalogue is an error."""
    index = pd.Index(np.asarray(item_ids, dtype=str))
    found = index.get_indexer(np.asarray(values, dtype=str))
    missing = np.flatnonzero(found < 0)
    if missing.size:
        table.fail(missing[0], column, f"unknown item id '{values[missing[0]]}'", "an id listed in the item file")
    return found.astype(np.int64)


def unique_ids(table: Table, column: str) -> np.ndarray:
    """A column of ids that must not repeat (the second occurrence is reported)."""
    ids = table.text(column)
    dup = pd.Index(ids).duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(ids == ids[i])[0])
        table.fail(i, column, f"duplicate id '{ids[i]}' (first at row {table.line(first)})", "each id once")
    return ids


def read_items(path: str) -> tuple[np.ndarray, np.ndarray, list[str] | None, list[str]]:
    """Item file: ``item`` + numeric feature columns (+ optional ``text``). Returns ids, features,
    texts, feature names."""
    table = read_any(path, required=["item"])
    ids = unique_ids(table, "item")
    names = [c for c in table.frame.columns if c not in ("item", "text")]
    if not names:
        raise InputError(str(table.path), "no feature columns besides 'item'", row=1, expected="numeric feature columns")
    features = np.stack([table.numbers(c) for c in names], axis=1)
    text = table.text("text", allow_empty=True).tolist() if "text" in table.frame.columns else None
    return ids, features, text, names


def _times(table: Table) -> np.ndarray:
    """Numeric times, or date-time strings converted to seconds."""
    cells = table.text("time")
    numbers = pd.to_numeric(pd.Series(cells, dtype=object), errors="coerce")
    if numbers.notna().all():
        return table.numbers("time", integer=False).astype(np.int64)
    stamps = pd.to_datetime(pd.Series(cells, dtype=object), errors="coerce", format="mixed")
    bad = np.flatnonzero(stamps.isna().to_numpy())
    if bad.size:
        table.fail(bad[0], "time", f"'{cells[bad[0]]}' is neither a number nor a date-time", "a number or a date-time")
    return (stamps.astype("datetime64[ns]").astype(np.int64) // 10**9).to_numpy()


def read(config: DataConfig) -> LogDataset:
    if not config.source:
        raise ConfigError("dataset 'csv' needs --source (an interactions .csv or .parquet file)")
    if not config.item_source:
        raise ConfigError("dataset 'csv' needs --items (an item file: 'item' column + numeric feature columns)")
    item_ids, features, text, feature_names = read_items(config.item_source)
    table = read_any(config.source, required=list(INTERACTION_COLUMNS))
    users = table.text("user")
    items = item_lookup(item_ids, table, "item", table.text("item"))
    time = _times(table)
    feedback = table.numbers("feedback")
    out_of_range = np.flatnonzero((feedback < 0) | (feedback > 1))
    if out_of_range.size:
        table.fail(out_of_range[0], "feedback", f"value {feedback[out_of_range[0]]:g}", "a number in [0, 1] (1 = click)")
    user_ids, user = index_users(users)
    k = config.slate_size
    if "slate" in table.frame.columns:
        imp = keyed_slates(user, table.text("slate"), time, items, feedback, k, table)
    else:
        imp = consecutive_slates(user, time, items, feedback, k)
    if len(imp[0]) == 0:
        table.fail(None, "user", f"no user has {k} interactions", f"at least one complete slate of {k} (data.slate_size)")
    meta = {
        "name": "csv",
        "source": str(config.source),
        "item_source": str(config.item_source),
        "interactions": len(table),
        "slate_ids": "slate" in table.frame.columns,
        "feature_names": feature_names,
    }
    return assemble(
        config, item_ids=item_ids, item_features=features, item_text=text, user_ids=user_ids,
        imp_user=imp[0], imp_time=imp[1], imp_items=imp[2], imp_feedback=imp[3], user_profiles=None, meta=meta,
    )  # fmt: skip

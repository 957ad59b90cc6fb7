"""Your own logs: interactions (CSV or Parquet) + item features -> LogDataset (DESIGN §4).

Interactions: columns ``user, item, time, feedback`` and optionally ``slate`` (a slate id). Without
slate ids each user's time-sorted interactions are cut into consecutive slates of K (as for
MovieLens; an incomplete tail is dropped); with them every (user, slate) group must have exactly K
rows. Items: an ``item`` column, numeric feature columns, optionally ``text``. ``feedback`` is a
click-like value in [0, 1]. CSV files are RFC 4180 (quoted fields may hold commas, newlines and
doubled quotes; a UTF-8 BOM is skipped), ``.tsv``/``.tab`` the same with tabs.

An interaction naming an item missing from the item file stops the read (``data.unknown_items=error``),
or with ``data.unknown_items=drop`` its row is dropped and every other row kept. With slate ids the
rest of such a slate is dropped too (a slate that lost a row is not a logged slate of K any more).
Every other check still applies to every row; what was dropped is in ``meta["unknown_items"]``.

The slate builders here are shared with the MovieLens reader, whose logs are plain rating sequences.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from hsrl.config import DataConfig
from hsrl.data.schema import LogDataset, build_histories, split_users
from hsrl.data.tables import Table, read_any
from hsrl.errors import ConfigError, InputError

INTERACTION_COLUMNS = ("user", "item", "time", "feedback")
DROP_HINT = "set data.unknown_items=drop to drop such rows"
UNKNOWN_EXAMPLES = 5  # unknown ids kept in the report


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


def slate_keys(user: np.ndarray, slate: np.ndarray) -> np.ndarray:
    """A dense code per (user, slate id) pair (a slate id is only unique within its user)."""
    return pd.factorize(pd.Series(user.astype(str), dtype=object) + "\x1f" + pd.Series(slate, dtype=object))[0]


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
    key = slate_keys(user, slate)
    sizes = np.bincount(key)
    bad = np.flatnonzero(sizes != k)
    if bad.size:
        first_row = int(np.flatnonzero(key == bad[0])[0])
        who = table.text("user")[first_row]
        table.fail(
            first_row,
            "slate",
            f"slate '{slate[first_row]}' of user '{who}' has {sizes[bad[0]]} rows",
            f"exactly {k} rows per slate (data.slate_size)",
        )
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
    prior = (
        None
        if prior_items is None
        else {int(j): prior_items[int(u)] for j, u in enumerate(kept) if int(u) in prior_items}
    )
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


def item_lookup(
    item_ids: np.ndarray,
    table: Table,
    column: str,
    values: np.ndarray,
    policy: Literal["error", "drop"] | None = None,
) -> np.ndarray:
    """Internal indices of ``values`` (ids as strings). An id missing from the catalogue is an error
    (naming data.unknown_items when the reader has that ``policy``), or -1 with ``policy='drop'`` (the
    caller drops its row)."""
    index = pd.Index(np.asarray(item_ids, dtype=str))
    found = index.get_indexer(np.asarray(values, dtype=str))
    missing = np.flatnonzero(found < 0)
    if missing.size and policy != "drop":
        hint = "" if policy is None else f"; {DROP_HINT}"
        i = missing[0]
        table.fail(i, column, f"unknown item id '{values[i]}'", f"an id listed in the item file{hint}")
    return found.astype(np.int64)


def unknown_report(unknown_ids: np.ndarray, rows_dropped: int, **counts: int) -> dict:
    """``meta["unknown_items"]`` of the drop policy: rows dropped, the first few unknown ids (file order)."""
    examples = pd.unique(pd.Series(np.asarray(unknown_ids, dtype=str), dtype=object))[:UNKNOWN_EXAMPLES]
    return {"policy": "drop", "rows_dropped": int(rows_dropped), "examples": [str(x) for x in examples], **counts}


def all_dropped(table: Table, column: str, report: dict, what: str = "row") -> None:
    """The drop policy left no row: say so, with the ids, instead of failing later on an empty log."""
    ids = ", ".join(f"'{x}'" for x in report["examples"])
    table.fail(None, column, f"every {what} names an item missing from the item file (e.g. {ids}); "
               "data.unknown_items=drop left nothing", f"{what}s whose items are in the item file")  # fmt: skip


def _drop_unknown(
    table: Table, found: np.ndarray, raw_items: np.ndarray, keys: np.ndarray | None
) -> tuple[np.ndarray, dict]:
    """Rows to keep under the drop policy and its report. With slate ``keys`` a slate that loses a row
    is dropped whole (counted as ``slates_dropped``, its other rows as ``slate_rows_dropped``)."""
    unknown = found < 0
    keep = ~unknown
    counts = {}
    if keys is not None:
        hit = np.zeros(int(keys.max(initial=-1)) + 1, dtype=bool)
        hit[keys[unknown]] = True
        counts = {"slates_dropped": int(hit.sum()), "slate_rows_dropped": int((hit[keys] & keep).sum())}
        keep &= ~hit[keys]
    report = unknown_report(raw_items[unknown], int(unknown.sum()), **counts)
    if not keep.any():
        all_dropped(table, "item", report, "slate" if keys is not None else "row")
    return keep, report


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
        raise InputError(
            str(table.path), "no feature columns besides 'item'", row=1, expected="numeric feature columns"
        )
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
    n_rows = len(table)
    users = table.text("user")
    raw_items = table.text("item")
    items = item_lookup(item_ids, table, "item", raw_items, config.unknown_items)
    time = _times(table)
    feedback = table.numbers("feedback")
    out_of_range = np.flatnonzero((feedback < 0) | (feedback > 1))
    if out_of_range.size:
        table.fail(
            out_of_range[0], "feedback", f"value {feedback[out_of_range[0]]:g}", "a number in [0, 1] (1 = click)"
        )
    has_slates = "slate" in table.frame.columns
    slates = table.text("slate") if has_slates else None
    report = None
    if config.unknown_items == "drop":
        keep, report = _drop_unknown(table, items, raw_items, slate_keys(users, slates) if slates is not None else None)
        if not keep.all():
            table, users, items = table.subset(keep), users[keep], items[keep]
            time, feedback = time[keep], feedback[keep]
            slates = None if slates is None else slates[keep]
    user_ids, user = index_users(users)
    k = config.slate_size
    if slates is not None:
        imp = keyed_slates(user, slates, time, items, feedback, k, table)
    else:
        imp = consecutive_slates(user, time, items, feedback, k)
    if len(imp[0]) == 0:
        table.fail(
            None, "user", f"no user has {k} interactions", f"at least one complete slate of {k} (data.slate_size)"
        )
    meta = {
        "name": "csv",
        "source": str(config.source),
        "item_source": str(config.item_source),
        "interactions": n_rows,  # rows read, before any dropped by data.unknown_items
        "slate_ids": has_slates,
        "feature_names": feature_names,
        **({"unknown_items": report} if report is not None else {}),
    }
    return assemble(
        config, item_ids=item_ids, item_features=features, item_text=text, user_ids=user_ids,
        imp_user=imp[0], imp_time=imp[1], imp_items=imp[2], imp_feedback=imp[3], user_profiles=None, meta=meta,
    )  # fmt: skip

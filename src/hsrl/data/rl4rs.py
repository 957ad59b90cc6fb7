"""RL4RS (NetEase, SIGIR 2023) -> LogDataset (DESIGN §4).

Session file (``--source``): ``@``-separated, header ``timestamp@session_id@sequence_id@exposed_items@
user_feedback@user_seqfeature@user_protrait@item_feature@behavior_policy_id``; list fields are
comma-separated, ``exposed_items``/``user_feedback`` hold K = 9 entries (feedback 0/1). Item file
(``--items``; default: ``item_info.csv`` beside the session file): space-separated ``item_id item_vec
price location special_item`` with a 40-d comma-separated ``item_vec``.

Choices:
- A session is one user episode: users = ``session_id``; its rows are steps in ``sequence_id`` order.
- History before a step = the session's ``user_seqfeature`` (taken from its first step) followed by the
  earlier slates of the session with their feedback. ``user_seqfeature`` is the user's past *clicked*
  item sequence in RL4RS (its simulators feed it as the click history), so those entries get
  feedback 1. Id 0 there is RL4RS padding ("no item") and is skipped when 0 is not a catalogue id.
- Item features = item_vec, log-price scaled to [0, 1], location one-hot, special_item one-hot (both are
  small category codes).
- Profiles = ``user_protrait`` of the session's first step, sign(x)·log1p(|x|) then standardised per
  column (the raw values span several orders of magnitude).
- ``item_feature`` (the exposed items' vectors again, most of the file's bytes) must be in the header but is
  not loaded: item vectors come from the item file. ``behavior_policy_id`` is kept in the metadata only.
- An item id missing from the item file is an error (``data.unknown_items=error``); with
  ``data.unknown_items=drop`` a step whose ``exposed_items`` holds one is dropped (the session keeps its
  other steps) and such ids in ``user_seqfeature`` are skipped; the counts are in ``meta["unknown_items"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from hsrl.config import DataConfig
from hsrl.data.csvlogs import DROP_HINT, all_dropped, assemble, index_users, unique_ids, unknown_report
from hsrl.data.schema import LogDataset
from hsrl.data.tables import Table, read_delimited
from hsrl.errors import ConfigError

SESSION_COLUMNS = (
    "timestamp", "session_id", "sequence_id", "exposed_items", "user_feedback",
    "user_seqfeature", "user_protrait", "item_feature", "behavior_policy_id",
)  # fmt: skip
ITEM_COLUMNS = ("item_id", "item_vec", "price", "location", "special_item")


def read_items(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """item_info.csv -> (ids as strings, ids as integers, (N, F) features, feature names)."""
    t = read_delimited(path, " ", required=ITEM_COLUMNS)
    ids = unique_ids(t, "item_id")
    int_ids = t.numbers("item_id", integer=True)  # the session file refers to items by these integers
    negative = np.flatnonzero(int_ids < 0)
    if negative.size:
        t.fail(negative[0], "item_id", f"negative id {int_ids[negative[0]]}", "a non-negative integer id")
    vec = t.lists("item_vec")
    price = t.numbers("price")
    negative = np.flatnonzero(price < 0)
    if negative.size:
        t.fail(negative[0], "price", f"negative price {price[negative[0]]:g}", "a price >= 0")
    log_price = np.log1p(price)
    span = max(log_price.max() - log_price.min(), 1e-9)
    scaled_price = (log_price - log_price.min()) / span
    location, loc_names = _one_hot(t.numbers("location", integer=True))
    special, special_names = _one_hot(t.numbers("special_item", integer=True))
    features = np.column_stack([vec, scaled_price, location, special]).astype(np.float32)
    names = [f"item_vec_{j}" for j in range(vec.shape[1])] + ["price"]
    names += [f"location:{v}" for v in loc_names] + [f"special_item:{v}" for v in special_names]
    return ids, int_ids, features, names


def _one_hot(codes: np.ndarray) -> tuple[np.ndarray, list[int]]:
    values = sorted(set(codes.tolist()))
    return (codes[:, None] == np.array(values)[None, :]).astype(np.float32), values


def _id_index(int_ids: np.ndarray) -> np.ndarray:
    """Dense integer id -> internal index table (-1 for ids not in the catalogue)."""
    lookup = np.full(int(int_ids.max()) + 1, -1, dtype=np.int64)
    lookup[int_ids] = np.arange(len(int_ids))
    return lookup


def _map_items(
    lookup: np.ndarray, ids: np.ndarray, table: Table, column: str, policy: Literal["error", "drop"] = "error"
) -> np.ndarray:
    """(rows, K) integer ids -> internal indices; an unknown id is reported at its row, or is -1 with
    ``policy='drop'``."""
    inside = (ids >= 0) & (ids < len(lookup))
    found = np.where(inside, lookup[np.clip(ids, 0, len(lookup) - 1)], -1)
    bad = np.argwhere(found < 0)
    if len(bad) and policy != "drop":
        r, c = bad[0]
        message = f"unknown item id {ids[r, c]} (entry {c + 1})"
        table.fail(int(r), column, message, f"an item_id of the item file; {DROP_HINT}")
    return found


def _prior_histories(
    table: Table, first_rows: np.ndarray, lookup: np.ndarray, policy: Literal["error", "drop"], skipped: list[int]
) -> dict[int, np.ndarray]:
    """Internal item indices of ``user_seqfeature`` on each session's first row, keyed by that row.
    With ``policy='drop'`` unknown ids are left out and appended to ``skipped``."""
    cells = table.text("user_seqfeature", allow_empty=True)
    skip_zero = lookup[0] < 0
    out: dict[int, np.ndarray] = {}
    for r in first_rows:
        cell = cells[r]
        parts = [p for p in cell.split(",") if p.strip() != ""] if cell else []
        try:
            ids = np.array([int(p) for p in parts], dtype=np.int64)
        except ValueError:
            bad = next(p for p in parts if not p.strip().lstrip("-").isdigit())
            table.fail(int(r), "user_seqfeature", f"non-integer item id '{bad.strip()}'", "comma-separated item ids")
        if skip_zero:
            ids = ids[ids != 0]
        found = _map_items(lookup, ids[None, :], table, "user_seqfeature", policy)[0] if ids.size else ids
        if policy == "drop" and (found < 0).any():
            skipped.extend(ids[found < 0].tolist())
            found = found[found >= 0]
        out[int(r)] = found
    return out


def _profiles(raw: np.ndarray) -> np.ndarray:
    squashed = np.sign(raw) * np.log1p(np.abs(raw))
    return (squashed - squashed.mean(axis=0)) / np.maximum(squashed.std(axis=0), 1e-6)


def read(config: DataConfig) -> LogDataset:
    if not config.source:
        raise ConfigError("dataset 'rl4rs' needs --source (an RL4RS session file, e.g. rl4rs_dataset_b_rl.csv)")
    source = Path(config.source).expanduser()
    item_path = Path(config.item_source).expanduser() if config.item_source else source.parent / "item_info.csv"
    if not config.item_source and not item_path.is_file():
        raise ConfigError(f"dataset 'rl4rs' needs --items (item_info.csv); none found beside {source}")
    item_ids, int_ids, features, feature_names = read_items(item_path)
    lookup = _id_index(int_ids)

    t = read_delimited(source, "@", required=SESSION_COLUMNS, skip=("item_feature",))
    n_rows, policy = len(t), config.unknown_items
    k = config.slate_size
    timestamp = t.numbers("timestamp", integer=True)
    sessions = t.text("session_id")
    step = t.numbers("sequence_id", integer=True)
    exposed_ids = t.lists("exposed_items", width=k, integer=True)
    exposed = _map_items(lookup, exposed_ids, t, "exposed_items", policy)
    feedback = t.lists("user_feedback", width=k, integer=True)
    bad = np.argwhere((feedback != 0) & (feedback != 1))
    if len(bad):
        r, c = bad[0]
        t.fail(int(r), "user_feedback", f"value {feedback[r, c]} (entry {c + 1})", "0 or 1 for each exposed item")
    portrait = t.lists("user_protrait")
    unknown = exposed < 0  # only with the drop policy
    dropped = unknown.any(axis=1)
    if dropped.all():
        all_dropped(t, "exposed_items", unknown_report(exposed_ids[unknown], int(dropped.sum())), "step")
    if dropped.any():
        keep = np.asarray(~dropped)
        t, timestamp, sessions, step = t.subset(keep), timestamp[keep], sessions[keep], step[keep]
        exposed, feedback, portrait = exposed[keep], feedback[keep], portrait[keep]

    user_ids, user = index_users(sessions)
    order = np.lexsort((np.arange(len(user)), step, user))
    dup = np.flatnonzero((user[order][1:] == user[order][:-1]) & (step[order][1:] == step[order][:-1]))
    if dup.size:
        r = int(order[dup[0] + 1])
        t.fail(r, "sequence_id", f"session '{sessions[r]}' has step {step[r]} twice", "one row per session step")
    first_rows = order[np.r_[True, user[order][1:] != user[order][:-1]]]  # each session's first step, by user
    skipped: list[int] = []
    prior_by_row = _prior_histories(t, first_rows, lookup, policy, skipped)
    prior = {int(user[r]): items for r, items in prior_by_row.items() if len(items)}
    meta = {
        "name": "rl4rs",
        "source": str(source),
        "item_source": str(item_path),
        "sessions": int(len(user_ids)),
        "steps": n_rows,  # rows read, before any dropped by data.unknown_items
        "behavior_policies": sorted(set(t.text("behavior_policy_id").tolist())),
        "feature_names": feature_names,
        "profile_names": [f"user_protrait_{j}" for j in range(portrait.shape[1])],
    }
    if policy == "drop":
        unknown_ids = np.concatenate([exposed_ids[unknown], np.asarray(skipped, dtype=np.int64)])
        meta["unknown_items"] = unknown_report(unknown_ids, int(dropped.sum()), history_ids_skipped=len(skipped))
    return assemble(
        config, item_ids=item_ids, item_features=features, item_text=None, user_ids=user_ids,
        imp_user=user, imp_time=timestamp, imp_items=exposed, imp_feedback=feedback.astype(np.float32),
        user_profiles=_profiles(portrait[first_rows]), meta=meta,
        history_time=step, prior_items=prior,
    )  # fmt: skip

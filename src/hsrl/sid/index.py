"""The Semantic ID index: item <-> SID lookup, the decoding trie, and a catalogue that changes (DESIGN §6).

A SID is ``depth = L + 1`` tokens: L semantic tokens from the residual codebooks and one
disambiguation token that numbers the items sharing the same L tokens (0, 1, 2, ... by item index at
build, then in order of arrival), so the mapping is one-to-one and every decodable SID is a real item.

The action space the policy sees is FIXED at build: ``vocab_sizes = [V] * L + [D]``. D (the
disambiguation capacity) is the power of two >= 2 × the largest collision group (room for new items),
at least 4, and capped near V (``disambiguation_capacity``) so the last policy head stays about as wide
as a codebook head even when the codebooks collide a lot (clustered data). An item
whose group is full *spills* to the nearest last-level code whose group has room (it keeps its first
L-1 tokens; counted as ``spilled`` in the stats): at build this only happens when the largest group
exceeds the cap, later when new items crowd a group. Only when no code under an item's (L-1)-token
prefix has room does the build or ``add_items`` fail, naming ``sid.disambiguation``.
Disambiguation tokens are never reused: a removed item's SID stays dead, so a stale policy output or a
cached SID never silently names another item.

The trie: for each semantic level l = 0..L-1 a sorted int64 array of the l-token prefixes (mixed-radix
keys) and a count matrix (prefixes, V) of ACTIVE items below each (prefix, token); a batch of prefixes
is answered with one ``torch.searchsorted`` and a row gather, so the cost grows only with log N. Rows
are never deleted (a prefix whose items are all removed keeps an all-zero row). The last level needs no
table of its own: the items of one L-token group are a contiguous run of the sorted SID keys, so its
mask is a gather of at most D keys per prefix. Memory: the level-l table holds (distinct l-prefixes) × V
int32 counts (64 MiB for L = 3, V = 256 at 10^6 items).

Not thread-safe: a service must serialise ``add_items``/``remove_items`` against reads (e.g. a lock).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hsrl.errors import ArtifactError, InputError
from hsrl.io import atomic_path
from hsrl.sid.embeddings import FeatureTransform, check_features
from hsrl.sid.rqkmeans import default_codes, quantize, squared_distances, train_codebooks

FORMAT_VERSION = 1
MIN_DISAMBIGUATION = 4
MAX_KEY = 2**62


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def disambiguation_capacity(max_group: int, codes: int, max_prefix: int = 0) -> int:
    """D = the power of two >= 2 × the largest collision group (room for new items), at least 4, and
    at most max(4, V, the power of two >= 2 × ceil(largest (L-1)-token prefix / V)) — the cap keeps the
    last head no wider than a codebook head unless the V codes under one prefix need more room."""
    want = _pow2(max(MIN_DISAMBIGUATION, 2 * int(max_group)))
    cap = max(MIN_DISAMBIGUATION, int(codes), _pow2(2 * -(-int(max_prefix) // int(codes))))
    return min(want, cap)


def _keys(tokens: np.ndarray, radices: list[int]) -> np.ndarray:
    """Mixed-radix int64 key of each row of ``tokens`` (n, l); 0 for l = 0."""
    key = np.zeros(tokens.shape[0], dtype=np.int64)
    for col, radix in enumerate(radices):
        key = key * radix + tokens[:, col]
    return key


def _missing(sorted_keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The distinct ``values`` not in ``sorted_keys`` (sorted), in O(m log N) rather than a set difference."""
    values = np.unique(values)
    if sorted_keys.size == 0:
        return values
    pos = np.searchsorted(sorted_keys, values).clip(max=sorted_keys.size - 1)
    return values[sorted_keys[pos] != values]


def _allocate_slots(
    before_last: np.ndarray,
    last_codebook: np.ndarray,
    sem: np.ndarray,
    radices: list[int],
    capacity: int,
    group_keys: np.ndarray,
    group_next: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Disambiguation tokens for items with semantic codes ``sem`` (m, L), first come first served.

    ``group_keys`` (sorted) / ``group_next`` are the existing L-token groups and their next free token.
    An item whose group is full proposes to its next-nearest last-level code (distance of
    ``before_last``, the residual after L-1 levels) until a group under its (L-1)-token prefix has
    room; its last column of ``sem`` is rewritten in place. Returns (tokens, spilled mask, new group
    keys, new group next); the inputs' tables are not modified, so a failure changes nothing.
    """
    m, v = sem.shape[0], last_codebook.shape[0]
    keys, nxt = group_keys.copy(), group_next.copy()
    tokens = np.full(m, -1, dtype=np.int64)

    def place(items: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Give ``items`` (in priority order) the next free tokens of ``groups``; mask of who got one."""
        nonlocal keys, nxt
        fresh = _missing(keys, groups)
        if fresh.size:
            at = np.searchsorted(keys, fresh)
            keys, nxt = np.insert(keys, at, fresh), np.insert(nxt, at, 0)
        row = np.searchsorted(keys, groups)
        order = np.lexsort((items, row))
        sorted_row = row[order]
        token = nxt[sorted_row] + np.arange(order.size) - np.searchsorted(sorted_row, sorted_row, side="left")
        fits = token < capacity
        tokens[items[order[fits]]] = token[fits]
        nxt += np.bincount(sorted_row[fits], minlength=nxt.size)
        got = np.zeros(items.size, dtype=bool)
        got[order[fits]] = True
        return got

    got = place(np.arange(m), _keys(sem, radices))
    spilled = ~got
    over = np.flatnonzero(spilled)
    if over.size:
        prefix = _keys(sem[over, :-1], radices[:-1]) * v
        # candidate codes nearest first; only the first few are ranked up front (most items find room
        # there), the rest of a row is ranked when an item gets that far
        near = min(v, 16)
        cand = np.empty((over.size, v), dtype=np.int16 if v < 2**15 else np.int32)
        ranked = np.full(over.size, near == v)
        for lo in range(0, over.size, 65536):
            dist = squared_distances(before_last[over[lo : lo + 65536]], last_codebook)
            top = np.argpartition(dist, near - 1, axis=1)[:, :near] if near < v else np.argsort(dist, axis=1)
            cand[lo : lo + dist.shape[0], :near] = np.take_along_axis(
                top, np.argsort(np.take_along_axis(dist, top, axis=1), axis=1, kind="stable"), axis=1
            )
        ptr = np.zeros(over.size, dtype=np.int64)
        todo = np.arange(over.size)
        while todo.size:
            deep = todo[(ptr[todo] >= near) & ~ranked[todo]]
            if deep.size:
                dist = squared_distances(before_last[over[deep]], last_codebook)
                cand[deep] = np.argsort(dist, axis=1, kind="stable")
                ranked[deep] = True
            stuck = todo[ptr[todo] >= v]
            if stuck.size:
                item = int(over[stuck[0]])
                raise InputError(
                    None,
                    f"no free Semantic ID under prefix {tuple(sem[item, :-1].tolist())}: its {v} last-level codes hold"
                    f" {capacity} items each",
                    row=item,
                    field="features",
                    expected="a larger sid.disambiguation, or more sid.levels / sid.codes (rebuild with --force)",
                )
            code = cand[todo, ptr[todo]]
            ok = place(over[todo], prefix[todo] + code)
            sem[over[todo[ok]], -1] = code[ok]
            ptr[todo[~ok]] += 1
            todo = todo[~ok]
    return tokens, spilled, keys, nxt


class _ItemRows:
    """A per-item array attribute kept with spare capacity: an add writes only the new rows (amortised
    O(m)) instead of re-allocating all N, which cost ~70 MB of fresh memory per add at 10^6 items."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.buffer = f"_{name}_buffer"

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(obj, self.buffer)[: obj._rows]

    def __set__(self, obj: Any, value: np.ndarray) -> None:
        setattr(obj, self.buffer, value)


@dataclass
class _Level:
    """One trie level: sorted prefix keys and the active-item count per (prefix, next token)."""

    keys: np.ndarray  # (P,) int64, sorted
    counts: np.ndarray  # (P, vocab) int32


class SemanticIDIndex:
    """Invertible item <-> SID lookup with a per-level trie over the active items."""

    codes = _ItemRows()  # (N, depth) int64
    active = _ItemRows()  # (N,) bool
    residual_sq = _ItemRows()  # (N,) float32
    spilled = _ItemRows()  # (N,) bool

    def __init__(
        self,
        transform: FeatureTransform,
        codebooks: list[np.ndarray],
        disambiguation: int,
        codes: np.ndarray,
        active: np.ndarray,
        residual_sq: np.ndarray,
        spilled: np.ndarray,
        embedding_var: float,
        version: int = 0,
        source: str = "features",
        build_config: dict[str, Any] | None = None,
    ) -> None:
        self.transform = transform
        self.codebooks = [np.ascontiguousarray(c, dtype=np.float32) for c in codebooks]
        self.disambiguation = int(disambiguation)
        self._rows = int(np.asarray(codes).shape[0])
        for name, arr in (("active", active), ("residual_sq", residual_sq), ("spilled", spilled)):
            if np.asarray(arr).shape[:1] != (self._rows,):
                raise ValueError(f"{name} has {np.asarray(arr).shape[:1]} rows, codes {self._rows}")
        self.codes = np.asarray(codes, dtype=np.int64)
        self.active = np.asarray(active, dtype=bool)
        self.residual_sq = np.asarray(residual_sq, dtype=np.float32)
        self.spilled = np.asarray(spilled, dtype=bool)
        self.embedding_var = float(embedding_var)
        self.version = int(version)
        self.source = source
        self.build_config = dict(build_config or {})
        self._check_arrays()
        self._rebuild_tables()
        if np.unique(self._item_keys).size != self.n_items:
            raise ValueError("two items share one SID")

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        features: np.ndarray,
        levels: int = 3,
        codes: int | None = None,
        balanced: bool = False,
        normalize: bool = True,
        seed: int = 0,
        kmeans_iters: int = 25,
        disambiguation: int | None = None,
        source: str = "features",
        align_to: np.ndarray | None = None,
        align: float = 0.0,
    ) -> SemanticIDIndex:
        """Train residual codebooks on ``features`` (N, F) and give every item a unique SID.

        ``codes`` None -> ``default_codes(N)``; ``disambiguation`` None -> ``disambiguation_capacity``
        of the largest collision group (a smaller given value makes the excess spill to neighbour codes).
        ``source`` records what the features are ("features" or "text"), so that callers embed new
        items the same way. ``align_to`` (N, C) per-item targets and ``align`` > 0: quantise the aligned
        embedding (``FeatureTransform.fit``), a frozen linear map of the features.
        """
        x_raw = check_features(features)
        n = x_raw.shape[0]
        v = default_codes(n) if codes is None else int(codes)
        if levels < 1:
            raise InputError(None, f"levels={levels}", field="sid.levels", expected="at least 1")
        if v < 2:
            raise InputError(None, f"codes={v}", field="sid.codes", expected="at least 2")
        if v > n:
            raise InputError(
                None, f"codes={v} per level but only {n} items", field="sid.codes", expected=f"at most {n}"
            )
        transform = FeatureTransform.fit(x_raw, normalize, align_to, align)
        x = transform(x_raw)
        del x_raw
        mean = x.mean(axis=0, dtype=np.float64)
        embedding_var = float(np.einsum("ij,ij->i", x, x).mean(dtype=np.float64) - mean @ mean)
        books, sem, residual = train_codebooks(x, levels, v, balanced, seed, kmeans_iters)
        del x  # only the residual is needed from here on (peak memory at 10^6 items)
        _, sizes = np.unique(_keys(sem, [v] * levels), return_counts=True)
        _, prefix_sizes = np.unique(_keys(sem[:, :-1], [v] * (levels - 1)), return_counts=True)
        d = (
            disambiguation_capacity(int(sizes.max()), v, int(prefix_sizes.max()))
            if disambiguation is None
            else int(disambiguation)
        )
        if float(v) ** levels * d >= MAX_KEY:
            raise InputError(
                None,
                f"{v}^{levels} x {d} SIDs do not fit an int64 key",
                field="sid.codes",
                expected="fewer codes or levels",
            )
        before_last = residual
        before_last += books[-1][sem[:, -1]]
        empty = np.zeros(0, dtype=np.int64)
        disamb, spilled, _, _ = _allocate_slots(before_last, books[-1], sem, [v] * levels, d, empty, empty)
        residual = before_last - books[-1][sem[:, -1]]
        del before_last
        config: dict[str, Any] = dict(
            levels=levels, codes=v, balanced=balanced, normalize=normalize, seed=seed, kmeans_iters=kmeans_iters
        )
        if transform.projection is not None:
            config["align"] = float(align)
        return cls(
            transform=transform,
            codebooks=books,
            disambiguation=d,
            codes=np.concatenate([sem, disamb[:, None]], axis=1),
            active=np.ones(n, dtype=bool),
            residual_sq=np.einsum("ij,ij->i", residual, residual),
            spilled=spilled,
            embedding_var=embedding_var,
            source=source,
            build_config=config,
        )

    # ------------------------------------------------------------------ shape
    @property
    def levels(self) -> int:
        return len(self.codebooks)

    @property
    def depth(self) -> int:
        return self.levels + 1

    @property
    def vocab_sizes(self) -> list[int]:
        return [int(c.shape[0]) for c in self.codebooks] + [self.disambiguation]

    @property
    def n_items(self) -> int:
        return int(self.codes.shape[0])

    @property
    def n_active(self) -> int:
        return int(self.active.sum())

    def embed(self, features: np.ndarray) -> np.ndarray:
        """The embedding the codebooks quantise (z-score with the build statistics, optional L2 norm)."""
        return self.transform(features)

    # ------------------------------------------------------------------ derived tables
    def _rebuild_tables(self) -> None:
        """Lookup, semantic trie levels and group counters from ``codes`` and ``active`` (build, load)."""
        vocab = self.vocab_sizes
        full = _keys(self.codes, vocab)
        order = np.argsort(full, kind="stable")
        self._item_keys = full[order]
        self._item_ids = order.astype(np.int64)
        self._trie: list[_Level] = []
        for level in range(self.levels):
            prefix = _keys(self.codes[:, :level], vocab[:level])
            keys, inverse = np.unique(prefix, return_inverse=True)
            if keys.size == 0:  # no items at all: one empty root row
                keys = np.zeros(1, dtype=np.int64)
            counts = np.zeros((keys.size, vocab[level]), dtype=np.int32)
            live = self.active
            np.add.at(counts, (inverse[live], self.codes[live, level]), 1)
            self._trie.append(_Level(keys.astype(np.int64), counts))
        group = _keys(self.codes[:, : self.levels], vocab[: self.levels])
        self._group_keys, inverse = np.unique(group, return_inverse=True)
        self._group_next = np.zeros(self._group_keys.size, dtype=np.int64)
        np.maximum.at(self._group_next, inverse, self.codes[:, -1] + 1)
        self._cache: dict[str, tuple[int, Any]] = {}

    def _tables(self, device: torch.device) -> dict[str, Any]:
        """Torch views (CPU: zero-copy) or copies (other devices) of the tables, cached per version."""
        name = str(device)
        hit = self._cache.get(name)
        if hit is not None and hit[0] == self.version:
            return hit[1]

        def put(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a).to(device)

        tables = {
            "vocab": torch.tensor(self.vocab_sizes, dtype=torch.int64, device=device),
            "item_keys": put(self._item_keys),
            "item_ids": put(self._item_ids),
            "active": put(self.active),
            "codes": put(self.codes),
            "trie": [(put(t.keys), put(t.counts)) for t in self._trie],
        }
        self._cache[name] = (self.version, tables)
        return tables

    @staticmethod
    def _torch_keys(tokens: torch.Tensor, vocab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixed-radix keys of (B, l) token rows and whether every token is inside its vocabulary."""
        tokens = tokens.long()
        width = tokens.shape[1]
        ok = ((tokens >= 0) & (tokens < vocab[:width])).all(dim=1)
        safe = torch.where(ok[:, None], tokens, torch.zeros_like(tokens))
        key = torch.zeros(tokens.shape[0], dtype=torch.int64, device=tokens.device)
        for col in range(width):
            key = key * vocab[col] + safe[:, col]
        return key, ok

    @staticmethod
    def _lookup(sorted_keys: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row of each key in a sorted key table, and whether it is there."""
        pos = torch.searchsorted(sorted_keys, key).clamp_(max=sorted_keys.numel() - 1)
        return pos, sorted_keys[pos] == key

    # ------------------------------------------------------------------ lookup and trie
    def item_of(self, sids: torch.Tensor) -> torch.Tensor:
        """Item index of each SID row (B, depth); -1 where the SID names no active item."""
        sids = torch.as_tensor(sids)
        if sids.dim() != 2 or sids.shape[1] != self.depth:
            raise ValueError(f"item_of expects (B, {self.depth}) SIDs, got shape {tuple(sids.shape)}")
        t = self._tables(sids.device)
        key, ok = self._torch_keys(sids, t["vocab"])
        pos, found = self._lookup(t["item_keys"], key)
        item = t["item_ids"][pos]
        good = ok & found & t["active"][item]
        return torch.where(good, item, torch.full_like(item, -1))

    def sid_of(self, items: torch.Tensor | np.ndarray) -> torch.Tensor:
        """SID (B, depth) of each item index (removed items keep their SID, which decodes to -1)."""
        items_t = torch.as_tensor(np.asarray(items) if not isinstance(items, torch.Tensor) else items).long()
        if items_t.numel() and (int(items_t.min()) < 0 or int(items_t.max()) >= self.n_items):
            raise InputError(None, "unknown item index", field="items", expected=f"0..{self.n_items - 1}")
        return self._tables(items_t.device)["codes"][items_t.reshape(-1)].reshape(*items_t.shape, self.depth)

    def valid_next(self, prefix: torch.Tensor) -> torch.Tensor:
        """(B, vocab_sizes[l]) mask of the tokens that extend each l-token prefix towards an active item.

        ``prefix`` is (B, l) with 0 <= l < depth ((B, 0) for the first level). A prefix that names no
        live subtree (unknown, removed, or a token out of range) gets an all-False row.
        """
        prefix = self._check_prefix(prefix)
        if prefix.shape[1] < self.levels:
            counts, present = self._level_rows(prefix)
            open_ = counts > 0  # no int64 copy of the (B, V) counts: the beam's hot path
            return open_ if bool(present.all()) else open_ & present[:, None]
        row, token, _item = self._live_children(prefix)
        out = torch.zeros(prefix.shape[0], self.disambiguation, dtype=torch.bool, device=prefix.device)
        out[row, token] = True
        return out

    def _check_prefix(self, prefix: torch.Tensor) -> torch.Tensor:
        prefix = torch.as_tensor(prefix)
        if prefix.dim() != 2 or not 0 <= prefix.shape[1] < self.depth:
            raise ValueError(
                f"valid_next expects (B, l) prefixes with 0 <= l < {self.depth}, got {tuple(prefix.shape)}"
            )
        return prefix

    def _level_rows(self, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored (B, V) counts row of each semantic-level prefix, and whether the prefix exists."""
        t = self._tables(prefix.device)
        key, ok = self._torch_keys(prefix, t["vocab"])
        keys, counts = t["trie"][prefix.shape[1]]
        pos, found = self._lookup(keys, key)
        return counts[pos], ok & found

    def child_counts(self, prefix: torch.Tensor) -> torch.Tensor:
        """(B, vocab_sizes[l]) number of ACTIVE items below each child of each l-token prefix.

        Decoding K distinct items without replacement needs the counts, not only the mask: a branch
        stays open while it holds items not yet placed in the slate. At the last level each child is
        one item, so the counts are 0/1.
        """
        prefix = self._check_prefix(prefix)
        if prefix.shape[1] < self.levels:
            counts, present = self._level_rows(prefix)
            return counts.long() * present[:, None]
        return (self.child_items(prefix) >= 0).long()

    def child_items(self, prefix: torch.Tensor) -> torch.Tensor:
        """(B, D) item index behind each last-level token of each L-token prefix; -1 where none is active.

        The items of one L-token group are the run of sorted SID keys in [key * D, key * D + D): two
        searchsorted give each prefix's run, and only the items inside the runs are gathered (O(items
        under the prefixes), where gathering D per prefix was 2.3 ms of a 9.6 ms beam at 10^6 items and
        512 prefixes). Semantic policy heads score these items by their features.
        """
        row, token, item = self._live_children(prefix)
        out = torch.full((prefix.shape[0], self.disambiguation), -1, dtype=torch.long, device=prefix.device)
        out[row, token] = item
        return out

    def _live_children(self, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row, last-level token, item) of every active item below (M, L) prefixes (see ``child_items``)."""
        prefix = torch.as_tensor(prefix)
        if prefix.dim() != 2 or prefix.shape[1] != self.levels:
            raise ValueError(f"child_items expects (B, {self.levels}) prefixes, got {tuple(prefix.shape)}")
        t = self._tables(prefix.device)
        key, ok = self._torch_keys(prefix, t["vocab"])
        d = self.disambiguation
        item_keys = t["item_keys"]
        start = torch.searchsorted(item_keys, key * d)
        length = (torch.searchsorted(item_keys, key * d + d) - start) * ok
        row = torch.repeat_interleave(torch.arange(key.numel(), device=prefix.device), length)
        first = torch.cumsum(length, 0) - length  # where each prefix's run starts among the gathered items
        pos = torch.arange(row.numel(), device=prefix.device) - first[row] + start[row]
        item = t["item_ids"][pos]
        live = t["active"][item]
        row, pos, item = row[live], pos[live], item[live]
        return row, item_keys[pos] - key[row] * d, item

    def copy(self) -> SemanticIDIndex:
        """An independent copy (array copies; the derived torch tables are rebuilt lazily)."""
        return copy.deepcopy(self, {id(self._cache): {}})  # the memo maps the cache to a fresh empty one

    # ------------------------------------------------------------------ catalogue changes
    def add_items(self, features: np.ndarray) -> np.ndarray:
        """Quantise new items with the frozen codebooks and transform, insert them; returns their indices."""
        with np.errstate(over="ignore", invalid="ignore"):  # checked right below
            x = self.transform(features)
        if not np.isfinite(x).all():  # finite but huge values overflow the z-score / normalisation
            row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise InputError(
                None,
                "a value too large to embed",
                row=row,
                field="features",
                expected="finite values well inside float32 range",
            )
        sem, residual = quantize(x, self.codebooks)
        last = self.codebooks[-1]
        before_last = residual + last[sem[:, -1]]
        vocab = self.vocab_sizes
        disamb, spilled, group_keys, group_next = _allocate_slots(
            before_last, last, sem, vocab[: self.levels], self.disambiguation, self._group_keys, self._group_next
        )
        residual[spilled] = before_last[spilled] - last[sem[spilled, -1]]
        m, start = sem.shape[0], self.n_items
        new_codes = np.concatenate([sem, disamb[:, None]], axis=1)
        new_ids = np.arange(start, start + m, dtype=np.int64)
        # lookup: merge the new full keys into the sorted table
        full = _keys(new_codes, vocab)
        order = np.argsort(full, kind="stable")
        at = np.searchsorted(self._item_keys, full[order])
        self._item_keys = np.insert(self._item_keys, at, full[order])
        self._item_ids = np.insert(self._item_ids, at, new_ids[order])
        # trie: insert unseen prefixes as zero rows, then count the new items
        for level, table in enumerate(self._trie):
            prefix = _keys(new_codes[:, :level], vocab[:level])
            fresh = _missing(table.keys, prefix)
            if fresh.size:
                at = np.searchsorted(table.keys, fresh)
                table.keys = np.insert(table.keys, at, fresh)
                table.counts = np.insert(table.counts, at, 0, axis=0)
            np.add.at(table.counts, (np.searchsorted(table.keys, prefix), new_codes[:, level]), 1)
        self._group_keys, self._group_next = group_keys, group_next
        self._append_rows(
            codes=new_codes,
            active=np.ones(m, dtype=bool),
            residual_sq=np.einsum("ij,ij->i", residual, residual),
            spilled=spilled,
        )
        self.version += 1
        return new_ids

    def _append_rows(self, **rows: np.ndarray) -> None:
        """Append m rows to every per-item array, doubling a buffer's capacity when it is full."""
        n = self._rows
        m = int(next(iter(rows.values())).shape[0])
        for name, new in rows.items():
            buffer = getattr(self, f"_{name}_buffer")
            if buffer.shape[0] < n + m:
                grown = np.empty((max(2 * buffer.shape[0], n + m, 1024), *buffer.shape[1:]), dtype=buffer.dtype)
                grown[:n] = buffer[:n]
                setattr(self, name, grown)
                buffer = grown
            buffer[n : n + m] = new
        self._rows = n + m

    def remove_items(self, items: np.ndarray) -> None:
        """Deactivate items: their SIDs never decode again and the trie forgets them (no retraining)."""
        ids = np.asarray(items)
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise InputError(None, f"item ids of type {ids.dtype}", field="items", expected="integer item indices")
        ids = ids.astype(np.int64).reshape(-1)
        if ids.size == 0:
            return
        bad = ids[(ids < 0) | (ids >= self.n_items)]
        if bad.size:
            raise InputError(
                None, f"unknown item index {int(bad[0])}", field="items", expected=f"0..{self.n_items - 1}"
            )
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise InputError(
                None, f"item {int(uniq[counts > 1][0])} listed twice", field="items", expected="distinct ids"
            )
        gone = ids[~self.active[ids]]
        if gone.size:
            raise InputError(None, f"item {int(gone[0])} is already removed", field="items", expected="active items")
        vocab = self.vocab_sizes
        codes = self.codes[ids]
        for level, table in enumerate(self._trie):
            row = np.searchsorted(table.keys, _keys(codes[:, :level], vocab[:level]))
            np.subtract.at(table.counts, (row, codes[:, level]), 1)
        self.active[ids] = False
        self.version += 1

    # ------------------------------------------------------------------ quality
    def stats(self) -> dict[str, Any]:
        """Code usage and entropy per level, collisions, reconstruction error, over the active items."""
        live = self.codes[self.active]
        n = live.shape[0]
        out: dict[str, Any] = {
            "items": self.n_items,
            "active_items": n,
            "levels": self.levels,
            "vocab_sizes": self.vocab_sizes,
            "source": self.source,
            "align": float(self.build_config.get("align", 0.0)),
            "index_version": self.version,
        }
        for level, v in enumerate(self.vocab_sizes[: self.levels]):
            counts = np.bincount(live[:, level], minlength=v)
            p = counts[counts > 0] / max(n, 1)
            entropy = float(-(p * np.log2(p)).sum())
            out[f"level{level + 1}_codes_used"] = int((counts > 0).sum())
            out[f"level{level + 1}_usage"] = float((counts > 0).mean())
            out[f"level{level + 1}_entropy_bits"] = entropy
            out[f"level{level + 1}_entropy_norm"] = entropy / float(np.log2(v))
        _, sizes = np.unique(_keys(live[:, : self.levels], self.vocab_sizes[: self.levels]), return_counts=True)
        _, full_sizes = np.unique(_keys(live, self.vocab_sizes), return_counts=True)
        out.update(
            collision_rate=float(sizes[sizes > 1].sum() / max(n, 1)),
            collision_rate_after=float(full_sizes[full_sizes > 1].sum() / max(n, 1)),
            collision_groups=int((sizes > 1).sum()),
            max_group_size=int(sizes.max(initial=0)),
            unique_sid_ratio=float(sizes.size / max(n, 1)),
            unique_sid_ratio_after=float(full_sizes.size / max(n, 1)),
            disambiguation_capacity=self.disambiguation,
            spilled_items=int(self.spilled[self.active].sum()),
            reconstruction_error=float(self.residual_sq[self.active].mean() / max(self.embedding_var, 1e-12))
            if n
            else 0.0,
        )
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """One versioned .npz file, written atomically."""
        path = Path(path)
        arrays = {
            "format_version": np.int64(FORMAT_VERSION),
            "codebooks": np.stack(self.codebooks),
            "mean": self.transform.mean,
            "std": self.transform.std,
            "normalize": np.bool_(self.transform.normalize),
            **({} if self.transform.projection is None else {"projection": self.transform.projection}),
            "disambiguation": np.int64(self.disambiguation),
            "codes": self.codes.astype(np.int32),
            "active": self.active,
            "residual_sq": self.residual_sq,
            "spilled": self.spilled,
            "embedding_var": np.float64(self.embedding_var),
            "version": np.int64(self.version),
            "meta": np.array(json.dumps({"source": self.source, "build_config": self.build_config})),
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SemanticIDIndex:
        """Read a saved index; a missing, corrupt or other-version file is an ArtifactError."""
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path}: no Semantic ID index here (run `hsrl sid build` first)")
        try:
            with np.load(path, allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
        except Exception as exc:  # corrupt or not an npz: a clear message, never a traceback
            raise ArtifactError(f"{path}: Semantic ID index is corrupt ({type(exc).__name__}: {exc})") from None
        if "format_version" not in a:
            raise ArtifactError(f"{path}: not a Semantic ID index (no format_version)")
        found = int(a["format_version"])
        if found != FORMAT_VERSION:
            raise ArtifactError(
                f"{path}: Semantic ID index format version {found}, this hsrl reads version {FORMAT_VERSION};"
                " rebuild it with `hsrl sid build RUN_DIR --force`"
            )
        try:
            meta = json.loads(str(a["meta"]))
            books = a["codebooks"]
            codes = a["codes"].astype(np.int64)
            index = cls(
                transform=FeatureTransform(a["mean"], a["std"], bool(a["normalize"]), a.get("projection")),
                codebooks=list(books),
                disambiguation=int(a["disambiguation"]),
                codes=codes,
                active=a["active"],
                residual_sq=a["residual_sq"],
                spilled=a["spilled"],
                embedding_var=float(a["embedding_var"]),
                version=int(a["version"]),
                source=meta["source"],
                build_config=meta["build_config"],
            )
        except Exception as exc:
            raise ArtifactError(f"{path}: Semantic ID index is corrupt ({exc})") from None
        return index

    def _check_arrays(self) -> None:
        """Shapes and token ranges agree (a loaded file may be corrupt); ValueError naming the problem."""
        n = self.n_items
        if self.codes.ndim != 2 or self.codes.shape[1] != self.depth:
            raise ValueError(f"codes shape {self.codes.shape}, expected (N, {self.depth})")
        if ((self.codes < 0) | (self.codes >= np.array(self.vocab_sizes))).any():
            raise ValueError("a token outside its vocabulary")
        for name, arr in (("active", self.active), ("residual_sq", self.residual_sq), ("spilled", self.spilled)):
            if arr.shape != (n,):
                raise ValueError(f"{name} shape {arr.shape}, expected ({n},)")
        projection = self.transform.projection
        if projection is not None and projection.shape[0] != self.transform.dim:
            raise ValueError("the feature transform's projection does not match its statistics")
        if self.transform.out_dim != self.codebooks[0].shape[1]:
            raise ValueError("the feature transform does not match the codebooks")

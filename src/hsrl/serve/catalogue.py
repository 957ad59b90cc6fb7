"""The live catalogue of the service: index + feature table + id map, and the durable log of its changes.

``LiveCatalogue`` is changed only under the write lock of its ``ReadWriteLock``; a recommendation holds
the read lock from resolving its history ids to mapping the decoded SIDs back to ids, so it sees one
catalogue version throughout. A lock was chosen over copy-on-write because a copy of the index at 10^6
items moves ~100 MB per change, while the changes themselves take milliseconds.

``ChangeLog`` makes changes durable: every add and delete is appended to ``changes.log`` (one
checksummed JSON line, fsync'ed) *before* it is applied and acknowledged, and replayed at start, so an
acknowledged change survives a crash and a deleted item (withdrawn, illegal, out of stock) never comes
back. A torn last line (a crash mid-write) is ignored and cut off; a damaged line followed by good ones
is an error. From time to time the catalogue is compacted into a snapshot directory named by its
version; ``CURRENT`` names the live one (replaced atomically), then the log keeps only later records.
Replicas would follow the same ordered log (README: scale-out).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hsrl.errors import ArtifactError, InputError
from hsrl.io import atomic_path
from hsrl.sid.index import SemanticIDIndex

LOG = "changes.log"
CURRENT = "CURRENT"
SNAPSHOT_INDEX = "index.npz"
SNAPSHOT_ITEMS = "items.npz"


class ReadWriteLock:
    """Many readers or one writer; a waiting writer stops new readers from entering (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class LiveCatalogue:
    """Index + feature table + id map. Removed items keep their feature row and id (a user's history
    may still name them); re-adding a removed id gives it a new internal index and SID."""

    def __init__(self, index: SemanticIDIndex, item_ids: np.ndarray, features: np.ndarray) -> None:
        self.lock = ReadWriteLock()
        self.index = index
        n, f = features.shape
        self._features = torch.empty(max(2 * n, 1024), f)
        self._features[:n] = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        self.item_ids: list[str] = [str(i) for i in item_ids]
        self.lookup: dict[str, int] = {item: i for i, item in enumerate(self.item_ids)}

    @property
    def version(self) -> int:
        return self.index.version

    @property
    def features(self) -> torch.Tensor:
        """The (N, F) feature table (a view; valid until the next change)."""
        return self._features[: len(self.item_ids)]

    def is_active(self, item: str) -> bool:
        idx = self.lookup.get(item)
        return idx is not None and bool(self.index.active[idx])

    def add(self, ids: list[str], features: np.ndarray, sid_input: np.ndarray) -> np.ndarray:
        """Insert new items (caller holds the write lock and has checked ``ids``); returns their indices."""
        new = self.index.add_items(sid_input)  # validates before it changes anything
        n, m = len(self.item_ids), len(ids)
        if n + m > self._features.shape[0]:
            grown = torch.empty(max(2 * self._features.shape[0], n + m), self._features.shape[1])
            grown[:n] = self._features[:n]
            self._features = grown
        self._features[n : n + m] = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        self.item_ids.extend(ids)
        self.lookup.update(zip(ids, new.tolist()))
        return new

    def remove(self, ids: list[str]) -> None:
        """Deactivate active items by id (caller holds the write lock and has checked them)."""
        self.index.remove_items(np.array([self.lookup[i] for i in ids], dtype=np.int64))

    def snapshot(self) -> tuple[SemanticIDIndex, np.ndarray, np.ndarray]:
        """Copies of the index, the ids and the features (under the lock: cheap next to writing them)."""
        return self.index.copy(), np.array(self.item_ids), self.features.numpy().copy()


# ---------------------------------------------------------------------- durable change log
def _encode(record: dict[str, Any]) -> bytes:
    body = json.dumps(record, separators=(",", ":"))
    return f"{zlib.crc32(body.encode()):08x} {body}\n".encode()


def _decode(line: bytes) -> dict[str, Any] | None:
    """The record of one complete line, or None when the line is damaged."""
    try:
        text = line.decode()
        crc, body = text[:8], text[9:].rstrip("\n")
        if text[8] != " " or int(crc, 16) != zlib.crc32(body.encode()):
            return None
        return json.loads(body)
    except (UnicodeDecodeError, ValueError, IndexError):
        return None


@dataclass
class ChangeLog:
    """Append-only, checksummed, fsync'ed record of catalogue changes under ``directory``."""

    directory: Path
    compact_every: int = 10_000  # records after which the catalogue is snapshotted and the log cut
    records: int = 0  # records in the log now
    _mutex: threading.Lock = field(default_factory=threading.Lock)
    _compacting: bool = False
    _broken: bool = False

    @property
    def path(self) -> Path:
        return self.directory / LOG

    # -------------------------------------------------------------- start-up
    def open(self, index: SemanticIDIndex, item_ids: np.ndarray, features: np.ndarray) -> LiveCatalogue:
        """The catalogue as of the last acknowledged change: the latest snapshot (else the export's
        catalogue) with every later log record applied."""
        self.directory.mkdir(parents=True, exist_ok=True)
        snapshot = self._current_snapshot()
        if snapshot is not None:
            index, item_ids, features = self._load_snapshot(snapshot, index)
        catalogue = LiveCatalogue(index, item_ids, features)
        good_bytes, records = 0, 0
        if self.path.exists():
            lines = self.path.read_bytes().splitlines(keepends=True)
            for number, line in enumerate(lines, 1):
                record = _decode(line) if line.endswith(b"\n") else None
                if record is None:
                    if number == len(lines):  # a torn last write: the change was never acknowledged
                        break
                    raise ArtifactError(
                        f"{self.path}: line {number} is damaged (checksum or format) and later lines follow"
                    )
                self._replay(catalogue, record, number)
                good_bytes += len(line)
                records += 1
            if good_bytes != self.path.stat().st_size:
                with open(self.path, "r+b") as fh:
                    fh.truncate(good_bytes)
                    os.fsync(fh.fileno())
        self.records = records
        return catalogue

    def _replay(self, catalogue: LiveCatalogue, record: dict[str, Any], number: int) -> None:
        version = int(record.get("version", -1))
        if version <= catalogue.version:  # already in the snapshot
            return
        if version != catalogue.version + 1:
            raise ArtifactError(
                f"{self.path}: line {number} brings catalogue version {version}, expected {catalogue.version + 1}"
            )
        try:
            if record["op"] == "add":
                features = np.asarray(record["features"], dtype=np.float32)
                sid_input = np.asarray(record.get("sid_input", record["features"]), dtype=np.float32)
                catalogue.add(list(record["ids"]), features, sid_input)
            elif record["op"] == "delete":
                catalogue.remove(list(record["ids"]))
            else:
                raise KeyError(f"op {record['op']!r}")
        except (KeyError, ValueError, TypeError, InputError) as exc:
            raise ArtifactError(f"{self.path}: line {number} cannot be applied ({type(exc).__name__}: {exc})") from None

    # -------------------------------------------------------------- changes (caller holds the write lock)
    @contextmanager
    def append(self, record: dict[str, Any]) -> Iterator[None]:
        """Write ``record`` durably, then run the block that applies it; if the block fails the record is
        cut off again, so the log never holds a change that was not applied."""
        data = _encode(record)
        with self._mutex:
            if self._broken:
                raise ArtifactError(f"{self.path}: an earlier failed write could not be undone; restart the service")
            start = self.path.stat().st_size if self.path.exists() else 0
            try:
                with open(self.path, "ab") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                yield
            except BaseException:
                # a partial or unapplied record must not stay: the next one would be glued to it
                try:
                    with open(self.path, "r+b") as fh:
                        fh.truncate(start)
                        os.fsync(fh.fileno())
                except OSError:
                    self._broken = True
                raise
            self.records += 1

    def due(self) -> bool:
        return self.records >= self.compact_every and not self._compacting

    # -------------------------------------------------------------- compaction
    def compact(self, catalogue: LiveCatalogue) -> int:
        """Snapshot the catalogue and cut the log to the records after it; returns the snapshot version.

        Crash-safe at every step: the snapshot is written under a new name, ``CURRENT`` is replaced
        atomically, and only then is the log rewritten (atomically) without the records it holds."""
        self._compacting = True
        try:
            with catalogue.lock.read():  # a consistent copy; writers wait only for the copy
                index, item_ids, features = catalogue.snapshot()
            version = index.version
            target = self.directory / f"snapshot-{version}"
            with atomic_path(target, durable=True) as tmp:  # on disk before CURRENT names it
                tmp.mkdir()
                index.save(tmp / SNAPSHOT_INDEX)
                with open(tmp / SNAPSHOT_ITEMS, "wb") as fh:
                    np.savez(fh, item_ids=item_ids.astype(str), features=features)
            with atomic_path(self.directory / CURRENT, durable=True) as tmp:
                tmp.write_text(target.name + "\n")
            with self._mutex:
                keep = []
                if self.path.exists():
                    for line in self.path.read_bytes().splitlines(keepends=True):
                        record = _decode(line)
                        if record is not None and int(record["version"]) > version:
                            keep.append(line)
                with atomic_path(self.path, durable=True) as tmp, open(tmp, "wb") as fh:
                    fh.writelines(keep)
                self.records = len(keep)
            for old in self.directory.glob("snapshot-*"):
                if old.name != target.name and old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
            return version
        finally:
            self._compacting = False

    def _current_snapshot(self) -> Path | None:
        pointer = self.directory / CURRENT
        if not pointer.is_file():
            return None
        snapshot = self.directory / pointer.read_text().strip()
        if not snapshot.is_dir():
            raise ArtifactError(f"{pointer}: names {snapshot.name}, which is missing")
        return snapshot

    @staticmethod
    def _load_snapshot(path: Path, export_index: SemanticIDIndex) -> tuple[SemanticIDIndex, np.ndarray, np.ndarray]:
        index = SemanticIDIndex.load(path / SNAPSHOT_INDEX)
        same = index.vocab_sizes == export_index.vocab_sizes and all(
            np.array_equal(a, b) for a, b in zip(index.codebooks, export_index.codebooks)
        )
        if not same:
            raise ArtifactError(
                f"{path}: the catalogue snapshot was built with other SID codebooks than the served export; "
                f"move {path.parent} away to start from the export's catalogue"
            )
        try:
            with np.load(path / SNAPSHOT_ITEMS, allow_pickle=False) as z:
                return index, z["item_ids"].astype(str), z["features"].astype(np.float32)
        except Exception as exc:
            raise ArtifactError(f"{path / SNAPSHOT_ITEMS}: corrupt snapshot ({type(exc).__name__}: {exc})") from None

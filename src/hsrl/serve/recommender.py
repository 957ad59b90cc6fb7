"""History -> K items: the one recommendation path of the HTTP service, the Python API and the benches.

``Recommender.recommend`` takes users as (history of (item id, feedback), profile) and returns their
slates with scores, SIDs and the catalogue version they were decoded against, all under one read lock
of the live catalogue. ``MicroBatcher`` gathers concurrent requests (up to ``max_users`` users or
``max_wait_ms`` after the first one) into one forward pass, so a service under load pays the encoder
and the beam once per batch instead of once per request; answers are the same as unbatched ones
(greedy decoding is per user).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from hsrl.agents.decoding import RecentExposure, SIDActor, beam_search, sample_slate
from hsrl.agents.hsrl import ItemTable
from hsrl.serve.catalogue import LiveCatalogue
from hsrl.simulator.observation import Observation

if TYPE_CHECKING:
    from hsrl.serve.export import ExportedPolicy

OBS_FIELDS = ("user", "profile", "hist_items", "hist_feedback")


class UnknownItem(LookupError):
    """A history names an id the catalogue has never had: (user, entry position in the request, id)."""

    def __init__(self, user: int, position: int, item: str) -> None:
        super().__init__(f"users.{user}.history.{position}.item: unknown item id '{item}'")
        self.user, self.position, self.item = user, position, item


@dataclass
class UserQuery:
    """One user's request: the most recent history entries (oldest first) and an optional profile."""

    items: Sequence[str]
    feedback: Sequence[float]
    profile: Sequence[float] | None = None
    offset: int = 0  # position of ``items[0]`` in the caller's full history (for error locations)


@dataclass
class Slates:
    """Decoded slates: per user the (id, score, SID) of each item, and the catalogue version used."""

    users: list[list[tuple[str, float, list[int]]]]
    version: int


class Recommender:
    """An exported (or training) policy over a live catalogue."""

    def __init__(
        self,
        net: SIDActor,
        catalogue: LiveCatalogue,
        slate_size: int,
        beam: int,
        history_length: int,
        profile_dim: int,
        exposure: bool,
    ) -> None:
        self.net = net
        self.catalogue = catalogue
        self.slate_size = slate_size
        self.beam = beam
        self.history_length = history_length
        self.profile_dim = profile_dim
        self.exposure = exposure

    @classmethod
    def from_export(cls, export: ExportedPolicy, catalogue: LiveCatalogue | None = None) -> Recommender:
        arch = export.arch
        catalogue = catalogue or LiveCatalogue(export.index, export.item_ids, export.features)
        return cls(
            export.net, catalogue, arch.slate_size, arch.beam, arch.history_length, arch.profile_dim, arch.exposure
        )

    # ------------------------------------------------------------------ tensors
    def observation(self, queries: Sequence[UserQuery]) -> Observation:
        """The batch's observation; history ids are resolved against the catalogue (hold its read lock)."""
        h = self.history_length
        lookup = self.catalogue.lookup
        histories = []
        for u, q in enumerate(queries):
            items = q.items[-h:] if len(q.items) > h else q.items
            skip = len(q.items) - len(items)
            rows = [lookup.get(i, -1) for i in items]
            if -1 in rows:
                j = rows.index(-1)
                raise UnknownItem(u, q.offset + skip + j, items[j])
            histories.append(rows)
        return Observation.from_histories(
            histories, h, [q.feedback for q in queries], [q.profile for q in queries], self.profile_dim
        )

    @torch.inference_mode()
    def decode(
        self, obs: Observation, k: int, greedy: bool = True, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Items (B, k) (-1 where fewer than k are active) and their log pi (B, k); hold the read lock."""
        catalogue = self.catalogue
        state = self.net.encoder(obs, catalogue.features)
        table = ItemTable(catalogue.features, self.net.encoder.item_map)
        recent = RecentExposure.from_obs(obs, catalogue.index, self.slate_size) if self.exposure else None
        if greedy:
            return beam_search(self.net.policy, catalogue.index, state, k, self.beam, table, recent)
        items, _tokens, logp = sample_slate(self.net.policy, catalogue.index, state, k, generator, table, recent)
        return items, logp.sum(-1)

    def render(self, items: torch.Tensor, scores: torch.Tensor) -> list[list[tuple[str, float, list[int]]]]:
        """(id, score, SID) per returned item; a row holds fewer than k when fewer items are active."""
        ids = self.catalogue.item_ids
        sids = self.catalogue.index.sid_of(items.clamp_min(0)).tolist()
        out = []
        for row, score_row, sid_row in zip(items.tolist(), scores.tolist(), sids):
            seen: set[int] = set()
            slate = []
            for idx, score, sid in zip(row, score_row, sid_row):
                if idx >= 0 and idx not in seen:
                    seen.add(idx)
                    slate.append((ids[idx], float(score), sid))
            out.append(slate)
        return out

    def recommend(
        self, queries: Sequence[UserQuery], k: int | None = None, greedy: bool = True, seed: int | None = None
    ) -> Slates:
        """K items for each user, all decoded against one catalogue version (beam search when ``greedy``,
        else sampled with ``seed``, 0 when omitted)."""
        k = self.slate_size if k is None else k
        if not 1 <= k <= self.slate_size:
            raise ValueError(f"k: {k} is outside 1..{self.slate_size} (the slate size)")
        if greedy:
            result = self.recommend_groups([queries], k)[0]
            if isinstance(result, Exception):
                raise result
            return result
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
        with self.catalogue.lock.read():
            items, scores = self.decode(self.observation(queries), k, greedy=False, generator=generator)
            return Slates(self.render(items, scores), self.catalogue.version)

    def recommend_groups(self, groups: Sequence[Sequence[UserQuery]], k: int) -> list[Slates | Exception]:
        """Greedy slates for several requests in one forward pass under one read lock (one catalogue
        version); a request whose queries cannot be resolved gets its exception in its place."""
        out: list[Slates | Exception | None] = [None] * len(groups)
        with self.catalogue.lock.read():
            good, observations = [], []
            for i, queries in enumerate(groups):
                try:
                    observations.append(self.observation(queries))
                    good.append(i)
                except Exception as exc:  # an unknown id or a malformed query fails its own request only
                    out[i] = exc
            if good:
                obs = Observation(*(torch.cat([getattr(o, f) for o in observations]) for f in OBS_FIELDS))
                items, scores = self.decode(obs, k)
                slates, version = self.render(items, scores), self.catalogue.version
                start = 0
                for i in good:
                    out[i] = Slates(slates[start : start + len(groups[i])], version)
                    start += len(groups[i])
        return out  # type: ignore[return-value]  # every entry is set above


# ---------------------------------------------------------------------- micro-batching
@dataclass
class _Job:
    queries: Sequence[UserQuery]
    k: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    greedy: bool = True
    seed: int | None = None
    queued: float = field(default_factory=time.perf_counter)


_WAKE = object()


def _notify(loop: asyncio.AbstractEventLoop, future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    """Settle ``future`` on its loop from the worker; a loop that has closed (client gone) is ignored."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled by a client that went away, or already failed
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class MicroBatcher:
    """One worker thread that serves queued requests in batches (DESIGN §10: dynamic micro-batching).

    A batch starts with the oldest waiting request and takes more while they fit ``max_users`` and
    arrive within ``max_wait_ms`` of it; greedy requests with the same k share one forward pass under one
    read lock (so every answer of the batch names the same catalogue version); sampled ones, which carry
    their own seed, run one by one. A request whose history names an unknown id fails alone. Catalogue
    changes (``write``) run on the same worker between batches, so a write waits for at most the batch in
    progress, however long the queue of reads.
    """

    def __init__(self, recommender: Recommender, max_users: int = 64, max_wait_ms: float = 1.0) -> None:
        self.recommender = recommender
        self.max_users = max_users
        self.max_wait = max_wait_ms / 1000.0
        self._queue: queue.Queue[Any] = queue.Queue()  # jobs, _WAKE (a write is waiting) or None (stop)
        self._writes: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.AbstractEventLoop, asyncio.Future]] = (
            queue.SimpleQueue()
        )
        self.batches = 0
        self.batched_users = 0
        self._thread: threading.Thread | None = None
        self.start()

    def start(self) -> None:
        """Start the worker (a no-op while it runs)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="hsrl-batcher", daemon=True)
            self._thread.start()

    async def recommend(
        self, queries: Sequence[UserQuery], k: int, greedy: bool = True, seed: int | None = None
    ) -> Slates:
        self._check_running()
        loop = asyncio.get_running_loop()
        job = _Job(queries, k, loop, loop.create_future(), greedy, seed)
        self._queue.put(job)
        return await job.future

    async def write(self, change: Callable[[], Any]) -> Any:
        """Run a catalogue change on the worker, between two batches, and return its result (or raise its
        error). Writes then never wait behind a queue of reads, only behind the batch in progress."""
        self._check_running()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._writes.put((change, loop, future))
        self._queue.put(_WAKE)
        return await future

    def _check_running(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the micro-batcher is not running (the service is shutting down)")

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=5)

    def _apply_writes(self) -> None:
        while True:
            try:
                change, loop, future = self._writes.get_nowait()
            except queue.Empty:
                return
            try:
                result, error = change(), None
            except BaseException as exc:  # handed to the request; the worker keeps serving
                result, error = None, exc
            _notify(loop, future, result, error)

    def _run(self) -> None:
        pending: list[_Job] = []
        while True:
            self._apply_writes()
            job = pending.pop(0) if pending else self._queue.get()
            if job is None:
                self._apply_writes()
                return
            if job is _WAKE:
                continue
            batch, users = [job], len(job.queries)
            deadline = job.queued + self.max_wait
            while users < self.max_users:
                try:
                    nxt = self._queue.get(timeout=max(deadline - time.perf_counter(), 0.0))
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                if nxt is _WAKE:  # a write is waiting: serve what is gathered, then apply it
                    break
                if users + len(nxt.queries) > self.max_users:
                    pending.append(nxt)
                    break
                batch.append(nxt)
                users += len(nxt.queries)
            try:
                self._serve(batch)
            except Exception as exc:  # never let the worker die: fail this batch, keep serving
                for job in batch:
                    _notify(job.loop, job.future, None, exc)

    def _serve(self, batch: list[_Job]) -> None:
        groups: dict[int, list[_Job]] = {}
        for job in batch:
            if job.greedy:
                groups.setdefault(job.k, []).append(job)
            else:
                self._serve_one(job)
        for k, jobs in groups.items():
            self._serve_greedy(k, jobs)

    def _serve_one(self, job: _Job) -> None:
        try:
            result, error = self.recommender.recommend(job.queries, job.k, job.greedy, job.seed), None
        except BaseException as exc:  # handed to the request; the worker keeps serving
            result, error = None, exc
        _notify(job.loop, job.future, result, error)

    def _serve_greedy(self, k: int, jobs: list[_Job]) -> None:
        try:
            results: list[Any] = self.recommender.recommend_groups([job.queries for job in jobs], k)
        except Exception as exc:
            results = [exc] * len(jobs)
        served = [r for r in results if not isinstance(r, Exception)]
        self.batches += bool(served)
        self.batched_users += sum(len(r.users) for r in served)
        for job, result in zip(jobs, results):
            failed = isinstance(result, Exception)
            _notify(job.loop, job.future, None if failed else result, result if failed else None)

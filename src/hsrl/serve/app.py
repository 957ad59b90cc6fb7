"""The recommendation service: FastAPI over an exported HSRL policy and a live catalogue (DESIGN §10).

Endpoints: ``POST /recommend`` (a batch of users -> K items each, one forward pass per request),
``POST /items`` (new items get SIDs from the frozen codebooks and are live at once), ``DELETE /items/{id}``,
``GET /items/{id}``, ``GET /health``; OpenAPI docs at ``/docs``.

Concurrency: catalogue changes are atomic with respect to requests through a writer-preferring
readers-writer lock (``ReadWriteLock``). A recommendation holds the read lock from resolving its history
ids to mapping the decoded SIDs back to ids, so it sees the whole catalogue before a change or the whole
catalogue after it; a change holds the write lock while it touches the index, the feature table and the
id map, after validating everything it can beforehand (so a rejected change alters nothing). A lock was
chosen over copy-on-write because a copy of the index at 10^6 items moves ~100 MB per change, while the
changes themselves take milliseconds.

Errors: every invalid request is a 4xx whose ``detail`` says what is wrong and where (unknown fields,
dimensions, NaN/inf, unknown ids, batch limits, duplicates, deleting twice); never a 500.
"""

from __future__ import annotations

import random
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

from hsrl.data.schema import PAD
from hsrl.errors import InputError
from hsrl.agents.decoding import RecentExposure, beam_search, sample_slate
from hsrl.agents.hsrl import ItemTable
from hsrl.serve.export import ExportedPolicy
from hsrl.simulator.observation import Observation

MAX_HISTORY_ENTRIES = 10_000


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


# ---------------------------------------------------------------------- request / response models
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HistoryEntry(Strict):
    item: str = Field(min_length=1, description="original item id")
    feedback: int = Field(ge=0, le=1, description="1 = clicked, 0 = shown and not clicked")


class UserRequest(Strict):
    history: list[HistoryEntry] = Field(default_factory=list, max_length=MAX_HISTORY_ENTRIES,
                                        description="oldest first; only the most recent entries the model reads are used")
    profile: list[FiniteFloat] | None = Field(None, description="user profile features (zeros when omitted)")


class RecommendRequest(Strict):
    users: list[UserRequest] = Field(min_length=1, description="a batch of users (one forward pass)")
    k: int | None = Field(None, ge=1, description="items per user (default and maximum: the slate size)")
    greedy: bool = Field(True, description="beam decoding (true) or sampling from the policy (false)")
    seed: int | None = Field(None, ge=0, description="sampling seed (greedy=false); random when omitted")


class ScoredItem(BaseModel):
    item: str
    score: float = Field(description="log pi(SID | user) under the policy")
    sid: list[int]


class UserSlate(BaseModel):
    items: list[ScoredItem]


class RecommendResponse(BaseModel):
    catalogue_version: int
    users: list[UserSlate]


class NewItem(Strict):
    id: str = Field(min_length=1)
    features: list[FiniteFloat]
    text: str | None = Field(None, description="item text (required when the index was built on text embeddings)")


class AddItemsRequest(Strict):
    items: list[NewItem] = Field(min_length=1)


class ItemInfo(BaseModel):
    id: str
    sid: list[int]
    active: bool


class ItemsResponse(BaseModel):
    catalogue_version: int
    items: list[ItemInfo]


# ---------------------------------------------------------------------- live catalogue
class LiveCatalogue:
    """Index + feature table + id map, changed only under the write lock of ``lock``.

    Removed items keep their feature row and id (a user's history may still name them); re-adding a
    removed id gives it a new internal index and SID.
    """

    def __init__(self, export: ExportedPolicy) -> None:
        self.lock = ReadWriteLock()
        self.index = export.index
        n, f = export.features.shape
        self._features = torch.empty(max(2 * n, 1024), f)
        self._features[:n] = torch.from_numpy(export.features)
        self.item_ids: list[str] = [str(i) for i in export.item_ids]
        self.lookup: dict[str, int] = {item: i for i, item in enumerate(self.item_ids)}

    @property
    def features(self) -> torch.Tensor:
        """The (N, F) feature table (a view; valid until the next change)."""
        return self._features[: len(self.item_ids)]

    def add(self, ids: list[str], features: np.ndarray, sid_input: np.ndarray) -> np.ndarray:
        """Insert new items (caller holds the write lock and has checked ``ids``); returns their indices."""
        new = self.index.add_items(sid_input)  # validates before it changes anything
        n, m = len(self.item_ids), len(ids)
        if n + m > self._features.shape[0]:
            grown = torch.empty(max(2 * self._features.shape[0], n + m), self._features.shape[1])
            grown[:n] = self._features[:n]
            self._features = grown
        self._features[n : n + m] = torch.from_numpy(features)
        self.item_ids.extend(ids)
        self.lookup.update(zip(ids, new.tolist()))
        return new

    def info(self, item: str) -> ItemInfo:
        idx = self.lookup.get(item)
        if idx is None:
            raise HTTPException(404, f"item '{item}' is not in the catalogue")
        return ItemInfo(id=item, sid=self.index.sid_of(np.array([idx]))[0].tolist(), active=bool(self.index.active[idx]))


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            parts.append(f"body is not valid JSON (at character {err['loc'][-1]}: {err.get('ctx', {}).get('error', '?')})")
            continue
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(export: ExportedPolicy, max_batch: int = 256, max_new_items: int = 10_000, seed: int = 0) -> FastAPI:
    """The FastAPI application serving ``export``; ``max_batch`` users per /recommend, ``max_new_items`` per POST /items."""
    arch = export.arch
    net = export.net
    catalogue = LiveCatalogue(export)
    seeds = random.Random(seed)
    app = FastAPI(
        title="hsrl",
        description="HSRL slate recommendation over Semantic IDs, with a live catalogue.",
        version=str(export.manifest.get("version")),
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _validation_message(exc)})

    @app.exception_handler(InputError)
    async def invalid_input(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Catalogue size, index version and what model is served."""
        with catalogue.lock.read():
            return {
                "status": "ok",
                "active_items": catalogue.index.n_active,
                "known_items": catalogue.index.n_items,
                "catalogue_version": catalogue.index.version,
                "model": {
                    "architecture": export.manifest["architecture"],
                    "source": export.manifest.get("source"),
                    "export_version": export.manifest.get("version"),
                },
                "limits": {"max_batch": max_batch, "max_new_items": max_new_items, "slate_size": arch.slate_size},
            }

    @app.post("/recommend", response_model=RecommendResponse)
    def recommend(req: RecommendRequest) -> RecommendResponse:
        """K items (original ids, with scores) for each user of the batch."""
        b, h = len(req.users), arch.history_length
        if b > max_batch:
            raise HTTPException(422, f"users: {b} users in one request, at most {max_batch}")
        k = arch.slate_size if req.k is None else req.k
        if k > arch.slate_size:
            raise HTTPException(422, f"k: {k} is more than the slate size {arch.slate_size}")
        profile = torch.zeros(b, arch.profile_dim)
        for u, user in enumerate(req.users):
            if user.profile is not None:
                if len(user.profile) != arch.profile_dim:
                    raise HTTPException(422, f"users.{u}.profile: {len(user.profile)} values, expected {arch.profile_dim}")
                profile[u] = torch.tensor(user.profile)
        if not torch.isfinite(profile).all():  # finite doubles may still overflow float32
            raise HTTPException(422, "users: a profile value is too large for float32")
        hist_fb = torch.zeros(b, h)
        for u, user in enumerate(req.users):
            recent = user.history[-h:]
            if recent:
                hist_fb[u, h - len(recent) :] = torch.tensor([float(e.feedback) for e in recent])
        generator = None
        if not req.greedy:
            generator = torch.Generator().manual_seed(req.seed if req.seed is not None else seeds.getrandbits(63))
        with catalogue.lock.read():
            hist_items = torch.full((b, h), PAD, dtype=torch.long)
            for u, user in enumerate(req.users):
                recent = user.history[-h:]
                offset = len(user.history) - len(recent)
                rows = []
                for j, entry in enumerate(recent):
                    idx = catalogue.lookup.get(entry.item)
                    if idx is None:
                        raise HTTPException(422, f"users.{u}.history.{offset + j}.item: unknown item id '{entry.item}'")
                    rows.append(idx)
                if rows:
                    hist_items[u, h - len(rows) :] = torch.tensor(rows)
            obs = Observation(torch.zeros(b, dtype=torch.long), profile, hist_items, hist_fb)
            with torch.no_grad():
                state = net.encoder(obs, catalogue.features)
            index = catalogue.index
            table = ItemTable(catalogue.features, net.encoder.item_map)  # semantic heads score items by features
            recent = RecentExposure.from_obs(obs, index, arch.slate_size) if arch.exposure else None
            if req.greedy:
                items, scores = beam_search(net.policy, index, state, k, arch.beam, table, recent)
            else:
                items, _tokens, token_logp = sample_slate(net.policy, index, state, k, generator, table, recent)
                scores = token_logp.sum(-1)
            sids = index.sid_of(items.clamp_min(0))
            slates = []
            for u in range(b):
                seen, out = set(), []
                for idx, score, sid in zip(items[u].tolist(), scores[u].tolist(), sids[u].tolist()):
                    if idx >= 0 and idx not in seen:  # fewer than k active items: return what exists
                        seen.add(idx)
                        out.append(ScoredItem(item=catalogue.item_ids[idx], score=score, sid=sid))
                slates.append(UserSlate(items=out))
            return RecommendResponse(catalogue_version=index.version, users=slates)

    @app.post("/items", response_model=ItemsResponse, status_code=201)
    def add_items(req: AddItemsRequest) -> ItemsResponse:
        """Add items: SIDs from the frozen codebooks, recommendable from the returned catalogue version on."""
        m = len(req.items)
        if m > max_new_items:
            raise HTTPException(422, f"items: {m} items in one request, at most {max_new_items}")
        ids = [it.id for it in req.items]
        if len(set(ids)) != m:
            dup = next(i for i in ids if ids.count(i) > 1)
            raise HTTPException(422, f"items: id '{dup}' appears twice in this request")
        for j, it in enumerate(req.items):
            if len(it.features) != arch.feature_dim:
                raise HTTPException(422, f"items.{j}.features: {len(it.features)} values, expected {arch.feature_dim}")
        with np.errstate(over="ignore"):
            features = np.array([it.features for it in req.items], dtype=np.float32)
        if not np.isfinite(features).all():  # finite doubles may still overflow float32
            raise HTTPException(422, "items: a feature value is too large for float32")
        if catalogue.index.source == "text":
            missing = [j for j, it in enumerate(req.items) if it.text is None]
            if missing:
                raise HTTPException(422, f"items.{missing[0]}.text: required, the index was built on item texts")
            from hsrl.sid.embeddings import text_embeddings

            sid_input = text_embeddings([it.text for it in req.items])
        else:
            sid_input = features
        with catalogue.lock.write():
            live = [i for i in ids if i in catalogue.lookup and catalogue.index.active[catalogue.lookup[i]]]
            if live:
                raise HTTPException(409, f"items: id '{live[0]}' is already in the catalogue (delete it first)")
            new = catalogue.add(ids, features, sid_input)
            sids = catalogue.index.sid_of(new).tolist()
            return ItemsResponse(
                catalogue_version=catalogue.index.version,
                items=[ItemInfo(id=i, sid=s, active=True) for i, s in zip(ids, sids)],
            )

    @app.delete("/items/{item_id:path}", response_model=ItemsResponse)
    def delete_item(item_id: str) -> ItemsResponse:
        """Remove an item: it is never recommended again (its SID stays reserved)."""
        with catalogue.lock.write():
            info = catalogue.info(item_id)
            if not info.active:
                raise HTTPException(409, f"item '{item_id}' is already deleted")
            catalogue.index.remove_items(np.array([catalogue.lookup[item_id]]))
            info.active = False
            return ItemsResponse(catalogue_version=catalogue.index.version, items=[info])

    @app.get("/items/{item_id:path}", response_model=ItemInfo)
    def get_item(item_id: str) -> ItemInfo:
        """An item's SID and whether it is active."""
        with catalogue.lock.read():
            return catalogue.info(item_id)

    return app

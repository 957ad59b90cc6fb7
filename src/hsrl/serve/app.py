"""The recommendation service: FastAPI over an exported HSRL policy and a live catalogue (DESIGN §10).

Endpoints: ``POST /recommend`` (a batch of users -> K items each), ``POST /items`` (new items get SIDs from
the frozen codebooks and are live at once), ``DELETE /items/{id}``, ``GET /items/{id}``, ``GET /health``;
OpenAPI docs at ``/docs``. Catalogue changes run on the batcher's worker between two batches (bounded write
latency under any read load); the catalogue's lock still guards them against the other readers.

The route only validates and renders: decoding is ``Recommender`` (the library's one recommendation
path), reached through a ``MicroBatcher`` that serves concurrent requests in one forward pass. Catalogue
changes take the catalogue's write lock, are written to the durable ``ChangeLog`` (when the service has a
state directory) before they are applied and acknowledged, and are replayed at start (``catalogue.py``).
Writes need the admin bearer token when one is set; bodies over ``max_body_bytes`` get 413.

Errors: every invalid request is a 4xx whose ``detail`` says what is wrong and where (unknown fields,
dimensions, NaN/inf, unknown ids, batch limits, duplicates, deleting twice); never a 500.
"""

from __future__ import annotations

import gc
import hmac
import random
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

from hsrl.errors import ArtifactError, InputError
from hsrl.serve.catalogue import ChangeLog, LiveCatalogue
from hsrl.serve.export import ExportedPolicy
from hsrl.serve.recommender import MicroBatcher, Recommender, UnknownItem, UserQuery

MAX_HISTORY_ENTRIES = 10_000
MAX_BODY_BYTES = 16 * 2**20  # 10^4 new items of 64 features in JSON are ~7 MB
MAX_PROFILE_VALUE = 1e6  # profiles are standardised features; far larger values only make the scores inf/NaN


# ---------------------------------------------------------------------- request / response models
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HistoryEntry(Strict):
    item: str = Field(min_length=1, description="original item id")
    feedback: int = Field(ge=0, le=1, description="1 = clicked, 0 = shown and not clicked")


class UserRequest(Strict):
    history: list[HistoryEntry] = Field(
        default_factory=list,
        max_length=MAX_HISTORY_ENTRIES,
        description="oldest first; only the most recent entries the model reads are used",
    )
    profile: list[FiniteFloat] | None = Field(None, description="user profile features (zeros when omitted)")


class RecommendRequest(Strict):
    users: list[UserRequest] = Field(min_length=1, description="a batch of users (one forward pass)")
    k: int | None = Field(None, ge=1, description="items per user (default and maximum: the slate size)")
    greedy: bool = Field(True, description="beam decoding (true) or sampling from the policy (false)")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="sampling seed (greedy=false); random when omitted")


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


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes (declared or streamed)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(send)
        if declared is not None:
            return await self.app(scope, receive, send)
        chunks, size = [], 0  # no length given (chunked): read it here, up to the limit
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                return await self._reject(send)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> dict:
            return replay.pop() if replay else await receive()

        return await self.app(scope, replayed, send)

    async def _reject(self, send: Any) -> None:
        body = f'{{"detail":"request body over {self.limit} bytes"}}'.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            parts.append(
                f"body is not valid JSON (at character {err['loc'][-1]}: {err.get('ctx', {}).get('error', '?')})"
            )
            continue
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(
    export: ExportedPolicy,
    max_batch: int = 256,
    max_new_items: int = 10_000,
    seed: int = 0,
    state_dir: str | Path | None = None,
    admin_token: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    batch_users: int = 64,
    batch_wait_ms: float = 1.0,
    compact_every: int = 10_000,
) -> FastAPI:
    """The FastAPI application serving ``export``.

    ``max_batch`` users per /recommend and ``max_new_items`` per POST /items; ``state_dir``: where catalogue
    changes are logged and replayed (None: in memory only); ``admin_token``: bearer token for writes;
    ``batch_users`` / ``batch_wait_ms``: the micro-batcher's limits (``batch_users=1`` serves one request
    at a time)."""
    arch = export.arch
    log = ChangeLog(Path(state_dir), compact_every) if state_dir is not None else None
    if log is not None:
        catalogue = log.open(export.index, export.item_ids, export.features)
    else:
        catalogue = LiveCatalogue(export.index, export.item_ids, export.features)
    # the catalogue holds millions of long-lived objects (ids, the id map); without this a full garbage
    # collection walks them all, a pause of ~0.1 s at 10^6 items that lands in the tail latency
    gc.collect()
    gc.freeze()
    recommender = Recommender.from_export(export, catalogue)
    batcher = MicroBatcher(recommender, max_users=max(batch_users, 1), max_wait_ms=batch_wait_ms)
    seeds = random.Random(seed)
    compacting = threading.Lock()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        batcher.start()  # again after an earlier shutdown of the same app
        yield
        batcher.close()

    app = FastAPI(
        title="hsrl",
        description="HSRL slate recommendation over Semantic IDs, with a live catalogue.",
        version=str(export.manifest.get("version")),
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.state.recommender, app.state.batcher, app.state.log = recommender, batcher, log

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _validation_message(exc)})

    @app.exception_handler(InputError)
    async def invalid_input(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    def admin(authorization: str | None = Header(None, description="Bearer token (when the server has one)")) -> None:
        if admin_token is None:
            return
        if not authorization or not authorization.lower().startswith("bearer "):
            raise HTTPException(
                401,
                "catalogue changes need 'Authorization: Bearer <admin token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(authorization[7:].strip().encode(), admin_token.encode()):
            raise HTTPException(403, "wrong admin token")

    async def durable(change: Any) -> Any:
        """Run a catalogue change on the batcher; a log that cannot be written is a 503, never a 500."""
        try:
            return await batcher.write(change)
        except (OSError, ArtifactError) as exc:
            raise HTTPException(
                503, f"the catalogue change was not made (its log record could not be written: {exc})"
            ) from None

    def maybe_compact() -> None:
        if log is not None and log.due() and compacting.acquire(blocking=False):

            def run() -> None:
                try:
                    log.compact(catalogue)
                finally:
                    compacting.release()

            threading.Thread(target=run, name="hsrl-compact", daemon=True).start()

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Catalogue size, index version and what model is served."""
        with catalogue.lock.read():
            return {
                "status": "ok",
                "active_items": catalogue.index.n_active,
                "known_items": catalogue.index.n_items,
                "catalogue_version": catalogue.version,
                "durable": log is not None,
                "log_records": log.records if log is not None else 0,
                "compacting": compacting.locked(),
                "model": {
                    "architecture": export.manifest["architecture"],
                    "source": export.manifest.get("source"),
                    "export_version": export.manifest.get("version"),
                },
                "limits": {
                    "max_batch": max_batch,
                    "max_new_items": max_new_items,
                    "slate_size": arch.slate_size,
                    "max_body_bytes": max_body_bytes,
                },
                "batching": {
                    "batch_users": batch_users,
                    "batch_wait_ms": batch_wait_ms,
                    "batches": batcher.batches,
                    "users": batcher.batched_users,
                },
            }

    @app.post("/recommend", response_model=RecommendResponse)
    async def recommend(req: RecommendRequest) -> Any:
        """K items (original ids, with scores) for each user of the batch."""
        b, h = len(req.users), arch.history_length
        if b > max_batch:
            raise HTTPException(422, f"users: {b} users in one request, at most {max_batch}")
        k = arch.slate_size if req.k is None else req.k
        if k > arch.slate_size:
            raise HTTPException(422, f"k: {k} is more than the slate size {arch.slate_size}")
        queries = []
        for u, user in enumerate(req.users):
            if user.profile is not None:
                if len(user.profile) != arch.profile_dim:
                    raise HTTPException(
                        422, f"users.{u}.profile: {len(user.profile)} values, expected {arch.profile_dim}"
                    )
                if any(abs(v) > MAX_PROFILE_VALUE for v in user.profile):
                    raise HTTPException(422, f"users.{u}.profile: values must be within ±{MAX_PROFILE_VALUE:g}")
            recent = user.history[-h:]
            queries.append(
                UserQuery(
                    [e.item for e in recent],
                    [float(e.feedback) for e in recent],
                    user.profile,
                    offset=len(user.history) - len(recent),
                )
            )
        seed_value = None if req.greedy else (req.seed if req.seed is not None else seeds.getrandbits(63))
        try:
            slates = await batcher.recommend(queries, k, req.greedy, seed_value)
        except UnknownItem as exc:
            raise HTTPException(422, str(exc)) from None
        return JSONResponse(
            {
                "catalogue_version": slates.version,
                "users": [
                    {"items": [{"item": i, "score": s, "sid": sid} for i, s, sid in user]} for user in slates.users
                ],
            }
        )

    @app.post("/items", response_model=ItemsResponse, status_code=201, dependencies=[Depends(admin)])
    async def add_items(req: AddItemsRequest) -> ItemsResponse:
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
        text = catalogue.index.source == "text"
        if text:
            missing = [j for j, it in enumerate(req.items) if it.text is None]
            if missing:
                raise HTTPException(422, f"items.{missing[0]}.text: required, the index was built on item texts")
            from hsrl.sid.embeddings import text_embeddings

            texts = [it.text for it in req.items if it.text is not None]  # every one is set (checked above)
            sid_input = await run_in_threadpool(text_embeddings, texts)
        else:
            sid_input = features

        def change() -> ItemsResponse:  # on the batcher's worker, between two batches
            with catalogue.lock.write():
                live = [i for i in ids if catalogue.is_active(i)]
                if live:
                    raise HTTPException(409, f"items: id '{live[0]}' is already in the catalogue (delete it first)")
                record = {"version": catalogue.version + 1, "op": "add", "ids": ids, "features": features.tolist()}
                if text:
                    record["sid_input"] = np.asarray(sid_input, dtype=np.float32).tolist()
                with log.append(record) if log is not None else nullcontext():
                    new = catalogue.add(ids, features, sid_input)
                sids = catalogue.index.sid_of(new).tolist()
                return ItemsResponse(
                    catalogue_version=catalogue.version,
                    items=[ItemInfo(id=i, sid=s, active=True) for i, s in zip(ids, sids)],
                )

        response = await durable(change)
        maybe_compact()
        return response

    @app.delete("/items/{item_id:path}", response_model=ItemsResponse, dependencies=[Depends(admin)])
    async def delete_item(item_id: str) -> ItemsResponse:
        """Remove an item: it is never recommended again (its SID stays reserved)."""

        def change() -> ItemsResponse:  # on the batcher's worker, between two batches
            with catalogue.lock.write():
                info = item_info(item_id)
                if not info.active:
                    raise HTTPException(409, f"item '{item_id}' is already deleted")
                with (
                    log.append({"version": catalogue.version + 1, "op": "delete", "ids": [item_id]})
                    if log is not None
                    else nullcontext()
                ):
                    catalogue.remove([item_id])
                info.active = False
                return ItemsResponse(catalogue_version=catalogue.version, items=[info])

        response = await durable(change)
        maybe_compact()
        return response

    @app.get("/items/{item_id:path}", response_model=ItemInfo)
    def get_item(item_id: str) -> ItemInfo:
        """An item's SID and whether it is active."""
        with catalogue.lock.read():
            return item_info(item_id)

    def item_info(item: str) -> ItemInfo:
        idx = catalogue.lookup.get(item)
        if idx is None:
            raise HTTPException(404, f"item '{item}' is not in the catalogue")
        return ItemInfo(
            id=item, sid=catalogue.index.sid_of(np.array([idx]))[0].tolist(), active=bool(catalogue.index.active[idx])
        )

    return app

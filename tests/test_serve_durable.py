"""The service's catalogue changes are durable (log, replay, torn records, compaction), writes are
protected (401/403/413), micro-batched answers equal unbatched ones, and the library call equals the route."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_serve import F, P, free_port, make_run, users

from hsrl.errors import ArtifactError
from hsrl.rundir import RunDir
from hsrl.serve.app import create_app
from hsrl.serve.catalogue import LOG
from hsrl.serve.export import load_export
from hsrl.serve.recommender import MicroBatcher, Recommender, UserQuery
from hsrl.workflow import export_run


@pytest.fixture()
def run(tmp_path) -> Path:
    make_run(tmp_path)
    export_run(tmp_path)
    return tmp_path


def start(run: Path, *extra: str) -> tuple[subprocess.Popen, httpx.Client]:
    port = free_port()
    cmd = [sys.executable, "-m", "hsrl.cli", "serve", str(run), "--port", str(port), "--threads", "1", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0)
    for _ in range(300):
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.stdout.read()}")
        try:
            if client.get("/health").status_code == 200:
                return proc, client
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("server did not come up within 30 s")


def state(client: httpx.Client, ids: list[str]) -> tuple[int, dict[str, bool]]:
    version = client.get("/health").json()["catalogue_version"]
    return version, {i: client.get(f"/items/{i}").json()["active"] for i in ids}


def test_acknowledged_changes_survive_sigkill_and_restart(run):
    proc, client = start(run)
    try:
        rng = np.random.default_rng(0)
        added = client.post(
            "/items", json={"items": [{"id": f"n{j}", "features": rng.normal(size=F).tolist()} for j in range(3)]}
        )
        assert added.status_code == 201
        assert client.delete("/items/5").status_code == 200
        assert client.delete("/items/n1").status_code == 200
        before = state(client, ["n0", "n1", "n2", "5", "6"])
        assert before[1] == {"n0": True, "n1": False, "n2": True, "5": False, "6": True}
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown hook runs
        proc.wait(10)
        client.close()
    proc, client = start(run)
    try:
        assert state(client, ["n0", "n1", "n2", "5", "6"]) == before
        # the removed original never comes back, even for a user whose history is all about it
        body = {"users": users(4, history=(("5", 1), ("4", 1), ("6", 1)))}
        for _ in range(3):
            got = {it["item"] for u in client.post("/recommend", json=body).json()["users"] for it in u["items"]}
            assert "5" not in got and "n1" not in got
    finally:
        proc.terminate()
        proc.wait(10)
        client.close()


def changes(client: TestClient, n: int) -> int:
    """n acknowledged changes (alternating adds and deletes of them); returns the final version."""
    rng = np.random.default_rng(n)
    version = 0
    for j in range(n):
        if j % 2 == 0:
            r = client.post("/items", json={"items": [{"id": f"x{j}", "features": rng.normal(size=F).tolist()}]})
        else:
            r = client.delete(f"/items/x{j - 1}")
        assert r.status_code in (200, 201), r.text
        version = r.json()["catalogue_version"]
    return version


def test_a_torn_last_record_is_ignored_and_a_damaged_middle_one_is_an_error(run):
    export = load_export(run / "serve")
    with TestClient(create_app(export, state_dir=RunDir(run).catalogue_dir)) as client:
        version = changes(client, 5)
    log = RunDir(run).catalogue_dir / LOG
    good = log.read_bytes()
    log.write_bytes(good + b'0badc0de {"version": 99, "op": "ad')  # a crash in the middle of a write
    export = load_export(run / "serve")
    with TestClient(create_app(export, state_dir=RunDir(run).catalogue_dir)) as client:
        assert client.get("/health").json()["catalogue_version"] == version
        assert client.get("/items/x4").json()["active"] is True and client.get("/items/x0").json()["active"] is False
    assert log.read_bytes() == good, "the torn tail is cut off so that new records follow good ones"
    lines = good.splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"delete"', b'"dalete"')  # checksum no longer matches
    log.write_bytes(b"".join(lines))
    with pytest.raises(ArtifactError, match="line 2 is damaged"):
        create_app(load_export(run / "serve"), state_dir=RunDir(run).catalogue_dir)


def test_compaction_snapshots_the_catalogue_and_cuts_the_log(run):
    export = load_export(run / "serve")
    with TestClient(create_app(export, state_dir=RunDir(run).catalogue_dir, compact_every=3)) as client:
        version = changes(client, 7)
        for _ in range(200):  # compaction runs in a background thread
            health = client.get("/health").json()
            if (RunDir(run).catalogue_dir / "CURRENT").exists() and not health["compacting"]:
                break
            time.sleep(0.05)
        records = health["log_records"]
    assert records < 7 and len((RunDir(run).catalogue_dir / LOG).read_bytes().splitlines()) == records
    snapshot = (RunDir(run).catalogue_dir / "CURRENT").read_text().strip()
    assert (RunDir(run).catalogue_dir / snapshot / "index.npz").is_file()
    with TestClient(create_app(load_export(run / "serve"), state_dir=RunDir(run).catalogue_dir)) as client:
        assert client.get("/health").json()["catalogue_version"] == version
        active = {f"x{j}": client.get(f"/items/x{j}").json()["active"] for j in range(0, 7, 2)}
        assert active == {"x0": False, "x2": False, "x4": False, "x6": True}


def test_writes_need_the_admin_token_and_big_bodies_get_413(run):
    app = create_app(load_export(run / "serve"), admin_token="s3cret", max_body_bytes=4096)
    item = {"items": [{"id": "t", "features": [0.1] * F}]}
    with TestClient(app) as client:
        assert client.post("/items", json=item).status_code == 401
        assert client.delete("/items/3").status_code == 401
        wrong = client.post("/items", json=item, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403 and "wrong admin token" in wrong.json()["detail"]
        assert client.post("/items", json=item, headers={"Authorization": "Bearer s3cret"}).status_code == 201
        assert client.delete("/items/3", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.post("/recommend", json={"users": users(1)}).status_code == 200  # reads stay open
        big = {"users": users(1, history=[(str(i % 50), 1) for i in range(400)])}
        too_big = client.post("/recommend", json=big)
        assert too_big.status_code == 413 and "4096 bytes" in too_big.json()["detail"]

        def chunks():  # no Content-Length: the limit still holds
            yield b'{"users": ['
            for _ in range(200):
                yield b'{"history": [], "profile": null},'
            yield b'{"history": []}]}'

        streamed = client.post("/recommend", content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413


def test_serving_beyond_loopback_needs_a_token(run, cli):
    result = cli("serve", str(run), "--host", "0.0.0.0", "--port", "0")
    assert result.code != 0 and "--admin-token" in result.out + result.err


def queries(n: int) -> list[UserQuery]:
    rng = np.random.default_rng(7)
    out = []
    for _u in range(n):
        hist = rng.choice(60, size=int(rng.integers(0, 9)), replace=False)
        out.append(
            UserQuery([str(i) for i in hist], rng.integers(0, 2, size=hist.size).tolist(), rng.normal(size=P).tolist())
        )
    return out


def test_micro_batched_answers_equal_unbatched_ones(run):
    rec = Recommender.from_export(load_export(run / "serve"))
    qs = queries(12)
    alone = [rec.recommend([q]).users[0] for q in qs]
    batcher = MicroBatcher(rec, max_users=64, max_wait_ms=200.0)

    async def together():
        return await asyncio.gather(*(batcher.recommend([q], k=rec.slate_size) for q in qs))

    try:
        batched = asyncio.run(together())
    finally:
        batcher.close()
    assert batcher.batches < len(qs), "the requests should have shared forward passes"
    assert [[i for i, _s, _sid in b.users[0]] for b in batched] == [[i for i, _s, _sid in a] for a in alone]
    for b, a in zip(batched, alone):
        assert np.allclose([s for _i, s, _ in b.users[0]], [s for _i, s, _ in a], atol=1e-4)


def test_the_library_call_and_the_route_give_the_same_items(run):
    export = load_export(run / "serve")
    rec = Recommender.from_export(export)
    qs = queries(5)
    body = {
        "users": [
            {"history": [{"item": i, "feedback": int(f)} for i, f in zip(q.items, q.feedback)], "profile": q.profile}
            for q in qs
        ],
        "k": 5,
    }
    with TestClient(create_app(load_export(run / "serve"))) as client:
        resp = client.post("/recommend", json=body)
    assert resp.status_code == 200, resp.text
    route = [[it["item"] for it in u["items"]] for u in resp.json()["users"]]
    assert route == [[i for i, _s, _sid in u] for u in rec.recommend(qs, k=5).users]


def test_the_readme_service_snippet_runs(run):
    """The README's library example of the service, run as written (only the run directory differs)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("- **One recommendation path.**") :]
    snippet = section[
        section.index("```python") + len("```python") : section.index("```", section.index("```python") + 9)
    ]
    snippet = "\n".join(line[2:] if line.startswith("  ") else line for line in snippet.splitlines())
    scope: dict = {}
    exec(snippet.replace('"runs/synthetic/serve"', repr(str(run / "serve"))), scope)
    slates = scope["slates"]
    assert slates.version == 0 and 1 <= len(slates.users[0]) <= 5
    assert all(isinstance(i, str) and isinstance(s, float) for i, s, _sid in slates.users[0])


def test_a_failed_log_write_leaves_no_fragment_and_the_next_change_is_kept(run, monkeypatch):
    """A write that fails half-way (disk full) must be cut off, or the next acknowledged record would be
    glued to the fragment and dropped as a torn line at restart."""
    import hsrl.serve.catalogue as catalogue_module

    export = load_export(run / "serve")
    with TestClient(create_app(export, state_dir=RunDir(run).catalogue_dir)) as client:
        assert client.delete("/items/1").status_code == 200
        real_fsync = catalogue_module.os.fsync
        calls = {"n": 0}

        def failing_fsync(fd):  # the append's fsync fails once (disk full); the clean-up's works
            calls["n"] += 1
            if calls["n"] == 1:
                raise OSError(28, "No space left on device")
            return real_fsync(fd)

        monkeypatch.setattr(catalogue_module.os, "fsync", failing_fsync)
        failed = client.delete("/items/2")
        monkeypatch.setattr(catalogue_module.os, "fsync", real_fsync)
        assert failed.status_code == 503 and "not made" in failed.json()["detail"]
        assert client.get("/items/2").json()["active"] is True, "a change whose record failed is not applied"
        assert client.delete("/items/3").status_code == 200
    with TestClient(create_app(load_export(run / "serve"), state_dir=RunDir(run).catalogue_dir)) as client:
        assert [client.get(f"/items/{i}").json()["active"] for i in ("1", "2", "3")] == [False, True, False]


def test_values_that_cannot_be_embedded_or_scored_are_4xx_not_500(run):
    with TestClient(create_app(load_export(run / "serve"), state_dir=RunDir(run).catalogue_dir)) as client:
        huge = client.post("/items", json={"items": [{"id": "h", "features": [3e38] * F}]})
        assert huge.status_code == 422 and "features" in huge.json()["detail"]
        assert client.get("/items/h").status_code == 404
        body = {"users": [{"history": [], "profile": [3e38] * P}]}
        profile = client.post("/recommend", json=body)
        assert profile.status_code == 422 and "profile" in profile.json()["detail"]
        seed = client.post("/recommend", json={"users": users(1), "greedy": False, "seed": 2**64})
        assert seed.status_code == 422
    # nothing was logged, so the service starts again
    with TestClient(create_app(load_export(run / "serve"), state_dir=RunDir(run).catalogue_dir)) as client:
        assert client.get("/health").json()["catalogue_version"] == 0


def test_an_app_served_twice_still_answers(run):
    app = create_app(load_export(run / "serve"))
    for _ in range(2):
        with TestClient(app) as client:
            assert client.post("/recommend", json={"users": users(1)}, timeout=10).status_code == 200

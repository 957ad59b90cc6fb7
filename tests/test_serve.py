"""The recommendation service against a real uvicorn process: export, recommend, live catalogue, bad requests,
catalogue changes concurrent with recommendations."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from hsrl.agents import HSRLAgent
from hsrl.config import AgentConfig, load_config, save_config
from hsrl.data.synthetic import generate
from hsrl.errors import ArtifactError
from hsrl.rundir import RunDir
from hsrl.serve.export import POLICY, load_export
from hsrl.sid.index import SemanticIDIndex
from hsrl.workflow import agent_dir, export_run

MAX_BATCH = 8
CFG = load_config(overrides=["data.synthetic.n_users=30", "data.synthetic.n_items=60", "data.history_length=10"])
DS = generate(CFG.data)[0]
F, P, K = DS.feature_dim, DS.profile_dim, DS.slate_size


def make_run(run: Path, with_agent: bool = True) -> None:
    """A tiny run directory: synthetic data, a SID index and an untrained HSRL agent."""
    cfg, ds = CFG, DS
    ds.save(run / "data")
    save_config(cfg, run)
    index = SemanticIDIndex.build(ds.item_features, levels=2, codes=4, seed=0)
    index.save(RunDir(run).index_file)
    if with_agent:
        feats = torch.as_tensor(ds.item_features)
        agent = HSRLAgent(feats, ds.slate_size, index, ds.profile_dim, ds.history_length, AgentConfig(), seed=0)
        agent.save(agent_dir(run, "hsrl", 0) / "agent.pt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("serve_run")
    make_run(run)
    return run


@pytest.fixture(scope="module")
def server(run_dir):
    """`hsrl serve RUN_DIR` in a subprocess on a free loopback port; yields (client, dataset info)."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "hsrl.cli",
        "serve",
        str(run_dir),
        "--port",
        str(port),
        "--max-batch",
        str(MAX_BATCH),
        "--threads",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0)
    try:
        for _ in range(300):  # at most ~30 s
            if proc.poll() is not None:
                pytest.fail(f"server exited: {proc.stdout.read()}")
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not come up within 30 s")
        yield client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def users(n: int, profile_dim: int = P, history=(("0", 1), ("1", 0), ("2", 1))) -> list[dict]:
    rng = np.random.default_rng(n)
    return [
        {"history": [{"item": i, "feedback": f} for i, f in history], "profile": rng.normal(size=profile_dim).tolist()}
        for _ in range(n)
    ]


def recommended(resp: httpx.Response) -> set[str]:
    assert resp.status_code == 200, resp.text
    return {it["item"] for u in resp.json()["users"] for it in u["items"]}


# ---------------------------------------------------------------------- export
def test_export_round_trip_and_clear_errors(tmp_path, cli):
    run = tmp_path / "run"
    make_run(run)
    out = export_run(run)
    policy = load_export(out)
    assert policy.index.n_items == DS.n_items and policy.features.shape == (DS.n_items, F)
    assert not any(isinstance(m, torch.optim.Optimizer) for m in vars(policy).values())
    # a corrupt file is caught by its checksum
    with open(out / POLICY, "ab") as fh:
        fh.write(b"garbage")
    with pytest.raises(ArtifactError, match="checksum"):
        load_export(out)
    res = cli("serve", run)
    assert res.code == 2 and "checksum" in res.err
    # a manifest that does not fit the weights
    export_run(run)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["architecture"]["history_length"] = 99
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="do not fit"):
        load_export(out)
    # an index rebuilt since the agent was trained (another seed: same vocabulary, other codes) is refused
    SemanticIDIndex.build(DS.item_features, levels=2, codes=4, seed=5).save(RunDir(run).index_file)
    with pytest.raises(ArtifactError, match="another Semantic ID index"):
        export_run(run)
    # a run without a trained agent
    bare = tmp_path / "bare"
    make_run(bare, with_agent=False)
    res = cli("serve", bare)
    assert res.code == 2 and "no HSRL checkpoint" in res.err and not RunDir(bare).export_dir.exists()


# ---------------------------------------------------------------------- service
def test_health_docs_and_greedy_recommendations(server, run_dir):
    assert (RunDir(run_dir).export_dir / "manifest.json").is_file()  # `hsrl serve` exported the policy itself
    health = server.get("/health").json()
    assert health["active_items"] == DS.n_items and health["model"]["architecture"]["slate_size"] == K
    assert server.get("/docs").status_code == 200
    assert "/recommend" in server.get("/openapi.json").json()["paths"]
    body = {"users": users(3)}
    first, second = server.post("/recommend", json=body), server.post("/recommend", json=body)
    assert first.status_code == 200 and first.json() == second.json()  # greedy decoding is deterministic
    for slate in first.json()["users"]:
        items = [it["item"] for it in slate["items"]]
        scores = [it["score"] for it in slate["items"]]
        assert len(items) == len(set(items)) == K and scores == sorted(scores, reverse=True)
        assert all(server.get(f"/items/{i}").json()["active"] for i in items)
    short = server.post("/recommend", json={"users": users(2), "k": 3}).json()
    assert [len(u["items"]) for u in short["users"]] == [3, 3]


@pytest.fixture(scope="module")
def item_features(run_dir) -> dict[str, list[float]]:
    """Features of the original items (the service does not expose them)."""
    from hsrl.data.schema import LogDataset

    ds = LogDataset.load(run_dir / "data")
    return {str(i): f.tolist() for i, f in zip(ds.item_ids, ds.item_features)}


def test_new_items_are_recommended_and_deleted_ones_never(server, item_features):
    before = server.get("/health").json()
    base = server.post("/recommend", json={"users": users(4)})
    top = sorted(recommended(base))
    # near-copies of what the policy recommends now: same SID prefixes, new disambiguation tokens
    rng = np.random.default_rng(0)
    new = [
        {"id": f"new-{i}-{c}", "features": (np.array(item_features[i]) + 0.01 * rng.normal(size=F)).tolist()}
        for i in top
        for c in range(2)
    ]
    added = server.post("/items", json={"items": new})
    assert added.status_code == 201, added.text
    assert added.json()["catalogue_version"] == before["catalogue_version"] + 1
    new_ids = {it["id"] for it in added.json()["items"]}
    assert server.get("/health").json()["active_items"] == DS.n_items + len(new)
    shown = set()
    for seed in range(15):
        shown |= recommended(server.post("/recommend", json={"users": users(8), "greedy": False, "seed": seed}))
        shown |= recommended(server.post("/recommend", json={"users": users(8)}))
    assert shown & new_ids, "no new item was ever recommended"
    # a new item in a history works at once (its features are known)
    some_new = sorted(shown & new_ids)[0]
    assert (
        server.post("/recommend", json={"users": [{"history": [{"item": some_new, "feedback": 1}]}]}).status_code == 200
    )
    for item in shown & new_ids:
        assert server.delete(f"/items/{item}").json()["items"][0]["active"] is False
    gone = shown & new_ids
    for seed in range(15):
        got = recommended(server.post("/recommend", json={"users": users(8), "greedy": False, "seed": 100 + seed}))
        got |= recommended(server.post("/recommend", json={"users": users(8)}))
        assert not got & gone
    assert server.get(f"/items/{some_new}").json()["active"] is False


BAD_REQUESTS = [
    ("unknown field", "post", "/recommend", {"users": users(1), "colour": "red"}, 422, "colour"),
    ("unknown user field", "post", "/recommend", {"users": [{"history": [], "age": 3}]}, 422, "age"),
    ("profile dimension", "post", "/recommend", {"users": [{"profile": [0.0, 1.0]}]}, 422, "profile"),
    (
        "unknown history item",
        "post",
        "/recommend",
        {"users": [{"history": [{"item": "nope", "feedback": 1}]}]},
        422,
        "nope",
    ),
    (
        "feedback not 0/1",
        "post",
        "/recommend",
        {"users": [{"history": [{"item": "0", "feedback": 2}]}]},
        422,
        "feedback",
    ),
    ("empty batch", "post", "/recommend", {"users": []}, 422, "users"),
    ("oversized batch", "post", "/recommend", {"users": users(MAX_BATCH + 1)}, 422, f"at most {MAX_BATCH}"),
    ("k too large", "post", "/recommend", {"users": users(1), "k": K + 1}, 422, "slate size"),
    ("k zero", "post", "/recommend", {"users": users(1), "k": 0}, 422, "k"),
    ("missing body", "post", "/recommend", None, 422, "body"),
    ("feature dimension", "post", "/items", {"items": [{"id": "x1", "features": [1.0, 2.0]}]}, 422, f"expected {F}"),
    (
        "duplicate new ids",
        "post",
        "/items",
        {"items": [{"id": "d", "features": [0.0] * F}, {"id": "d", "features": [0.0] * F}]},
        422,
        "twice",
    ),
    ("id already active", "post", "/items", {"items": [{"id": "3", "features": [0.0] * F}]}, 409, "already"),
    ("no items", "post", "/items", {"items": []}, 422, "items"),
    ("delete unknown", "delete", "/items/does-not-exist", None, 404, "not in the catalogue"),
    ("get unknown", "get", "/items/does-not-exist", None, 404, "not in the catalogue"),
]


@pytest.mark.parametrize("name,method,path,body,status,needle", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_4xx_with_a_message(server, name, method, path, body, status, needle):
    resp = server.request(method.upper(), path, json=body)
    assert resp.status_code == status, resp.text
    assert needle in resp.json()["detail"]


@pytest.mark.parametrize("where", ["profile", "features"])
def test_nan_and_inf_are_rejected(server, where):
    for bad in ("NaN", "Infinity"):
        if where == "profile":
            raw = '{{"users": [{{"profile": [{}{}]}}]}}'.format(bad, ", 0" * (P - 1))
            path = "/recommend"
        else:
            raw = '{{"items": [{{"id": "nan-item", "features": [{}{}]}}]}}'.format(bad, ", 0" * (F - 1))
            path = "/items"
        resp = server.post(path, content=raw, headers={"content-type": "application/json"})
        assert resp.status_code == 422 and "finite" in resp.json()["detail"], resp.text


def test_body_that_is_not_json(server):
    resp = server.post("/recommend", content="{users: oops", headers={"content-type": "application/json"})
    assert resp.status_code == 422 and "not valid JSON" in resp.json()["detail"]


def test_deleting_twice_is_a_conflict(server):
    assert server.post("/items", json={"items": [{"id": "twice", "features": [0.5] * F}]}).status_code == 201
    assert server.delete("/items/twice").status_code == 200
    again = server.delete("/items/twice")
    assert again.status_code == 409 and "already deleted" in again.json()["detail"]
    # a deleted id can come back as a new item with a new SID
    back = server.post("/items", json={"items": [{"id": "twice", "features": [0.5] * F}]})
    assert back.status_code == 201 and server.get("/items/twice").json()["active"] is True


def test_catalogue_changes_are_atomic_under_concurrent_recommendations(server):
    """Readers never fail and only ever get items active at the catalogue version they report."""
    added_at: dict[str, int] = {}
    deleted_at: dict[str, int] = {}
    results: list[tuple[int, set[str]]] = []
    errors: list[str] = []
    rng = np.random.default_rng(1)

    def writer() -> None:
        with httpx.Client(base_url=server.base_url, timeout=10.0) as c:
            for round_ in range(12):
                batch = [{"id": f"c{round_}-{j}", "features": rng.normal(size=F).tolist()} for j in range(4)]
                r = c.post("/items", json={"items": batch})
                if r.status_code != 201:
                    errors.append(r.text)
                    continue
                for it in r.json()["items"]:
                    added_at[it["id"]] = r.json()["catalogue_version"]
                victim = f"c{round_}-0"
                d = c.delete(f"/items/{victim}")
                if d.status_code != 200:
                    errors.append(d.text)
                else:
                    deleted_at[victim] = d.json()["catalogue_version"]
                # an original item leaves too; it stays valid in histories
                d = c.delete(f"/items/{10 + round_}")
                if d.status_code != 200:
                    errors.append(d.text)
                else:
                    deleted_at[str(10 + round_)] = d.json()["catalogue_version"]

    def reader(seed: int) -> None:
        with httpx.Client(base_url=server.base_url, timeout=10.0) as c:
            for i in range(15):
                body = {
                    "users": users(4, history=(("10", 1), ("11", 0), ("12", 1))),
                    "greedy": i % 2 == 0,
                    "seed": seed + i,
                }
                r = c.post("/recommend", json=body)
                if r.status_code != 200:
                    errors.append(r.text)
                    continue
                results.append((r.json()["catalogue_version"], recommended(r)))

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(s,)) for s in (0, 1000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(results) == 30 and len(deleted_at) == 24
    for version, items in results:
        for item in items:
            assert added_at.get(item, -1) <= version, f"{item} returned before it was added"
            assert version < deleted_at.get(item, version + 1), (
                f"{item} returned at version {version}, deleted at {deleted_at[item]}"
            )


def test_service_decodes_like_the_agent_including_exposure(tmp_path):
    """The HTTP route and ``HSRLAgent.act`` are one recommendation path: with exposure weights that matter
    (set by hand), the service's greedy slate for a history is exactly the agent's."""
    from fastapi.testclient import TestClient

    from hsrl.data.schema import PAD
    from hsrl.serve.app import create_app
    from hsrl.simulator.observation import Observation

    run = tmp_path / "run"
    make_run(run, with_agent=False)
    index = SemanticIDIndex.load(RunDir(run).index_file)
    feats = torch.as_tensor(DS.item_features)
    agent = HSRLAgent(feats, K, index, P, DS.history_length, AgentConfig(), seed=0)
    history = [(3, 1), (7, 0), (11, 1), (12, 0), (20, 1)]
    profile = torch.linspace(-1, 1, P)
    h = DS.history_length
    hist_items = torch.full((1, h), PAD, dtype=torch.long)
    hist_fb = torch.zeros(1, h)
    hist_items[0, -len(history) :] = torch.tensor([i for i, _ in history])
    hist_fb[0, -len(history) :] = torch.tensor([float(f) for _, f in history])
    obs = Observation(torch.zeros(1, dtype=torch.long), profile[None], hist_items, hist_fb)
    plain = agent.act(obs)
    with torch.no_grad():
        for layer in agent.net.policy.exposure_coef:
            layer.bias.normal_(0.0, 3.0, generator=torch.Generator().manual_seed(0))
    expected = agent.act(obs)
    assert not torch.equal(plain, expected), "the exposure weights should change this slate"
    agent.save(agent_dir(run, "hsrl", 0) / "agent.pt")
    client = TestClient(create_app(load_export(export_run(run))))
    body = {"users": [{"history": [{"item": str(i), "feedback": f} for i, f in history], "profile": profile.tolist()}]}
    resp = client.post("/recommend", json=body)
    assert resp.status_code == 200, resp.text
    assert [int(it["item"]) for it in resp.json()["users"][0]["items"]] == expected[0].tolist()

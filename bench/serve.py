"""The recommendation service under load with a 10^6-item catalogue that changes while it serves.

    .venv/bin/python bench/serve.py [--items 1000000 --rate 20 --seconds 30 --users-per-request 8]

Builds (once, under bench/results/serve_run/) a run directory with N clustered items (the index is
shared with bench/decode.py), a minimal log dataset and an untrained HSRL agent; starts `hsrl serve` on
loopback in a subprocess; then an open-loop load generator sends POST /recommend at a fixed rate
(bounded count and time) while a writer thread adds and deletes items. Latency is measured from each
request's scheduled start (so queueing counts) and from its actual send. Every returned item is checked
against the catalogue version the response reports (it must have been added at or before it and not
deleted at or before it). Prints the figures and writes bench/results/serve.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode import RESULTS, catalogue, trained_like  # noqa: E402  (the same cached 10^6-item index)

from hsrl.agents import HSRLAgent  # noqa: E402
from hsrl.config import AgentConfig, load_config, save_config  # noqa: E402
from hsrl.data.schema import LogDataset, build_histories  # noqa: E402
from hsrl.rundir import RunDir  # noqa: E402
from hsrl.workflow import agent_dir  # noqa: E402

PROFILE_DIM, HISTORY, SLATE = 8, 50, 9


def build_run(run: Path, n: int, dim: int) -> np.ndarray:
    """A run directory over N items: features + index, a small synthetic log, an untrained agent (with
    non-zero exposure coefficients, as a trained one has: the decoder does the work a trained one needs)."""
    features, index, _ = catalogue(n, dim, 3, 256)
    if (agent_dir(run, "hsrl", 0) / "agent.pt").is_file():
        return features
    rng = np.random.default_rng(0)
    users, per_user = 50, 4
    imp_user = np.repeat(np.arange(users), per_user)
    imp_time = np.tile(np.arange(per_user), users)
    imp_items = np.stack([rng.choice(n, SLATE, replace=False) for _ in imp_user])
    imp_fb = (rng.random(imp_items.shape) < 0.2).astype(np.float32)
    hist_items, hist_fb = build_histories(imp_user, imp_time, imp_items, imp_fb, HISTORY)
    ds = LogDataset(
        item_ids=np.array([f"i{i}" for i in range(n)]),
        item_features=features,
        user_ids=np.array([f"u{u}" for u in range(users)]),
        user_split=np.zeros(users, dtype=np.int8),
        imp_user=imp_user,
        imp_time=imp_time,
        imp_items=imp_items,
        imp_feedback=imp_fb,
        hist_items=hist_items,
        hist_feedback=hist_fb,
        user_profiles=rng.normal(size=(users, PROFILE_DIM)).astype(np.float32),
        meta={"name": f"bench-{n}"},
    )
    ds.validate()
    ds.save(RunDir(run).data_dir)
    save_config(load_config(overrides=[f"data.history_length={HISTORY}", f"data.slate_size={SLATE}"]), run)
    index.save(RunDir(run).index_file)
    agent = HSRLAgent(torch.from_numpy(features), SLATE, index, PROFILE_DIM, HISTORY, AgentConfig(), seed=0)
    trained_like(agent.net.policy)
    agent.save(agent_dir(run, "hsrl", 0) / "agent.pt")
    return features


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, *options: str) -> tuple[subprocess.Popen, str, dict]:
    """`hsrl serve RUN` on a free loopback port; returns the process, its base URL and its /health once up."""
    port = free_port()
    cmd = [sys.executable, "-m", "hsrl.cli", "serve", str(run), "--port", str(port), *options]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with httpx.Client(base_url=base, timeout=60.0) as c:
        while True:
            if server.poll() is not None:
                raise SystemExit(f"server exited: {server.stdout.read()}")
            try:
                return server, base, c.get("/health").json()
            except httpx.TransportError:
                if time.perf_counter() - started > 300:
                    server.kill()
                    raise SystemExit("server did not start within 300 s") from None
                time.sleep(0.2)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--rate", type=float, default=20.0, help="recommend requests per second (open loop)")
    ap.add_argument("--seconds", type=float, default=30.0, help="load duration")
    ap.add_argument("--users-per-request", type=int, default=8)
    ap.add_argument("--history", type=int, default=20, help="history entries per user in a request")
    ap.add_argument("--update-every", type=float, default=0.5, help="seconds between catalogue updates")
    ap.add_argument("--add", type=int, default=10, help="items added per update")
    ap.add_argument("--delete", type=int, default=5, help="items deleted per update")
    ap.add_argument("--concurrency", type=int, default=16, help="client threads (caps requests in flight)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per request in the server")
    ap.add_argument("--out", type=Path, default=RESULTS / "serve.json")
    args = ap.parse_args()
    run = RESULTS / f"serve_run_{args.items}"
    start = time.perf_counter()
    features = build_run(run, args.items, args.dim)
    shutil.rmtree(RunDir(run).catalogue_dir, ignore_errors=True)  # every bench starts from the exported catalogue
    print(f"run directory ready in {time.perf_counter() - start:.1f} s: {run}", flush=True)

    started = time.perf_counter()
    server, base, health = start_server(
        run, "--threads", str(args.threads), "--max-batch", str(max(64, args.users_per_request))
    )
    try:
        startup_s = time.perf_counter() - started
        print(f"server up in {startup_s:.1f} s with {health['active_items']:,} items", flush=True)
        result = load_test(base, features, health, args)
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
    result.update(startup_s=startup_s, args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def catalogue_writer(
    base: str,
    features: np.ndarray,
    args,
    stop: threading.Event,
    added_at: dict[str, int],
    deleted_at: dict[str, int],
    update_ms: list[float],
    errors: list[str],
    tag: str = "new",
    seed: int = 2,
    gone: set[str] | None = None,
) -> None:
    """Every ``args.update_every`` s until ``stop``: add ``args.add`` items (perturbed copies of existing ones)
    and delete ``args.delete`` (half of them new, half original), recording versions and latencies. ``tag``,
    ``seed`` and ``gone`` (originals deleted earlier, updated here) let several runs share one server."""
    n = features.shape[0]
    gone = set() if gone is None else gone
    wrng = np.random.default_rng(seed)
    added: list[str] = []
    with httpx.Client(base_url=base, timeout=60.0) as c:
        round_ = 0
        while not stop.wait(args.update_every):
            src = wrng.choice(n, args.add)
            feats = features[src] + 0.05 * wrng.standard_normal((args.add, features.shape[1]), dtype=np.float32)
            items = [{"id": f"{tag}{round_}-{j}", "features": f.tolist()} for j, f in enumerate(feats)]
            t = time.perf_counter()
            r = c.post("/items", json={"items": items})
            update_ms.append((time.perf_counter() - t) * 1e3)
            if r.status_code != 201:
                errors.append(f"add {r.status_code}: {r.text[:200]}")
            else:
                for it in r.json()["items"]:
                    added_at[it["id"]] = r.json()["catalogue_version"]
                    added.append(it["id"])
            victims = [added.pop(0) for _ in range(min(args.delete // 2, len(added)))]
            while len(victims) < args.delete:
                cand = f"i{int(wrng.integers(n))}"
                if cand not in gone and cand not in victims:  # deleted items stay valid in histories
                    victims.append(cand)
            for v in victims:
                t = time.perf_counter()
                d = c.delete(f"/items/{v}")
                update_ms.append((time.perf_counter() - t) * 1e3)
                if d.status_code != 200:
                    errors.append(f"delete {d.status_code}: {d.text[:200]}")
                else:
                    deleted_at[v] = d.json()["catalogue_version"]
                    gone.add(v)
            round_ += 1


def stale_items(returned: list[tuple[int, set[str]]], added_at: dict[str, int], deleted_at: dict[str, int]) -> int:
    """Items returned at a catalogue version before they were added or at/after they were deleted."""
    return sum(
        1
        for version, items in returned
        for item in items
        if added_at.get(item, -1) > version or deleted_at.get(item, version + 1) <= version
    )


def load_test(base: str, features: np.ndarray, health: dict, args) -> dict:
    n = args.items
    rng = np.random.default_rng(1)
    total = int(args.rate * args.seconds)
    bodies = []
    for _ in range(min(total, 64)):  # a pool of request bodies, reused round robin
        users = []
        for _ in range(args.users_per_request):
            hist = rng.choice(n, args.history, replace=False)
            users.append(
                {
                    "history": [{"item": f"i{i}", "feedback": int(rng.random() < 0.3)} for i in hist],
                    "profile": rng.normal(size=PROFILE_DIM).tolist(),
                }
            )
        bodies.append(json.dumps({"users": users}))
    added_at: dict[str, int] = {}
    deleted_at: dict[str, int] = {}
    errors: list[str] = []
    latency_sched, latency_send, versions, returned = [], [], [], []
    update_ms: list[float] = []
    stop = threading.Event()
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "c"):
            local.c = httpx.Client(base_url=base, timeout=60.0, headers={"content-type": "application/json"})
        return local.c

    def one(i: int, t0: float) -> None:
        scheduled = t0 + i / args.rate
        time.sleep(max(0.0, scheduled - time.perf_counter()))
        sent = time.perf_counter()
        try:
            r = client().post("/recommend", content=bodies[i % len(bodies)])
        except httpx.HTTPError as exc:
            errors.append(f"recommend: {type(exc).__name__}: {exc}")
            return
        done = time.perf_counter()
        if r.status_code != 200:
            errors.append(f"recommend {r.status_code}: {r.text[:200]}")
            return
        latency_sched.append((done - scheduled) * 1e3)
        latency_send.append((done - sent) * 1e3)
        payload = r.json()
        versions.append(payload["catalogue_version"])
        returned.append((payload["catalogue_version"], {it["item"] for u in payload["users"] for it in u["items"]}))

    load_before = os.getloadavg()
    w = threading.Thread(
        target=catalogue_writer, args=(base, features, args, stop, added_at, deleted_at, update_ms, errors)
    )
    t0 = time.perf_counter() + 0.2
    w.start()
    with ThreadPoolExecutor(args.concurrency) as pool:
        for f in [pool.submit(one, i, t0) for i in range(total)]:
            f.result(timeout=args.seconds + 300)
    elapsed = time.perf_counter() - t0
    stop.set()
    w.join(60)
    stale = stale_items(returned, added_at, deleted_at)
    with httpx.Client(base_url=base, timeout=60.0) as c:
        final = c.get("/health").json()
    ok = len(latency_sched)
    result = {
        "items_at_start": health["active_items"],
        "items_at_end": final["active_items"],
        "requests": total,
        "ok": ok,
        "errors": len(errors),
        "error_samples": errors[:5],
        "stale_items_returned": stale,
        "users_per_request": args.users_per_request,
        "target_rate_rps": args.rate,
        "throughput_rps": ok / elapsed,
        "users_per_second": ok * args.users_per_request / elapsed,
        "latency_ms_from_schedule": {
            "p50": percentile(latency_sched, 50),
            "p99": percentile(latency_sched, 99),
            "max": max(latency_sched, default=float("nan")),
        },
        "latency_ms_from_send": {"p50": percentile(latency_send, 50), "p99": percentile(latency_send, 99)},
        "catalogue_updates": len(update_ms),
        "catalogue_versions_seen": len(set(versions)),
        "update_latency_ms": {"p50": percentile(update_ms, 50), "p99": percentile(update_ms, 99)},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    print(
        f"{ok}/{total} requests ok in {elapsed:.1f} s ({args.users_per_request} users each), errors {len(errors)},"
        f" stale items {stale}"
    )
    print(
        f"throughput {result['throughput_rps']:.1f} req/s ({result['users_per_second']:.0f} users/s)"
        f" at target {args.rate} req/s"
    )
    print(
        f"latency from schedule p50 {result['latency_ms_from_schedule']['p50']:.1f} ms,"
        f" p99 {result['latency_ms_from_schedule']['p99']:.1f} ms;"
        f" from send p50 {result['latency_ms_from_send']['p50']:.1f} ms,"
        f" p99 {result['latency_ms_from_send']['p99']:.1f} ms"
    )
    print(
        f"catalogue updates during load: {len(update_ms)} (p50 {result['update_latency_ms']['p50']:.1f} ms,"
        f" p99 {result['update_latency_ms']['p99']:.1f} ms), {len(set(versions))} catalogue versions seen by readers;"
        f" items {health['active_items']:,} -> {final['active_items']:,}"
    )
    print(
        f"load average before {load_before[0]:.2f}, after {result['load_average_after'][0]:.2f} ({os.cpu_count()} cpus)"
    )
    return result


if __name__ == "__main__":
    main()

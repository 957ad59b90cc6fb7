"""`hsrl serve` under a compiled load generator (hey): throughput and tail latency at 10^6 items, with and
without catalogue updates.

    .venv/bin/python bench/load.py [--items 1000000 --seconds 30 --concurrency 1 4 16 64 --rates 250 500 750]

Installs Debian's ``hey`` if it is missing (apt-get, as root). Builds or reuses the 10^6-item run of
bench/serve.py, starts `hsrl serve` on loopback (fresh catalogue log), then for each scenario runs hey for
--seconds: closed loop at each --concurrency (every worker sends its next request when the last one
answered) and rate-limited at each --rate (hey -q: ``rate / workers`` per worker, so it approximates an
open loop as long as the server keeps up), each without and with catalogue updates (every 0.5 s: 10 adds
and 5 deletes). Requests are single-user POST /recommend with a realistic history (--history entries).
hey's per-request CSV gives throughput, p50/p99/p99.9 and errors; during updates a probe client checks
every returned item against the catalogue version of its response (stale items) and the writer's
latencies are recorded. Writes bench/results/load.json and bench/results/load.png. Not a test.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import PROFILE_DIM, RESULTS, build_run, catalogue_writer, percentile, stale_items, start_server  # noqa: E402

from hsrl.rundir import RunDir  # noqa: E402


def ensure_hey() -> str:
    path = shutil.which("hey")
    if path:
        return path
    print("hey not found: installing the Debian package (apt-get install -y hey)", flush=True)
    try:
        subprocess.run(["apt-get", "install", "-y", "-qq", "hey"], check=True, capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SystemExit(f"could not install hey ({exc}); install it yourself: apt-get install hey") from None
    path = shutil.which("hey")
    if not path:
        raise SystemExit("apt-get reported success but hey is not on PATH")
    return path


def body(n: int, history: int, rng: np.random.Generator) -> dict:
    hist = rng.choice(n, history, replace=False)
    return {
        "users": [
            {
                "history": [{"item": f"i{i}", "feedback": int(rng.random() < 0.3)} for i in hist],
                "profile": rng.normal(size=PROFILE_DIM).tolist(),
            }
        ]
    }


def run_hey(hey: str, url: str, body_file: Path, seconds: float, workers: int, per_worker_rate: float | None) -> dict:
    cmd = [
        hey,
        "-z",
        f"{seconds}s",
        "-c",
        str(workers),
        "-m",
        "POST",
        "-T",
        "application/json",
        "-D",
        str(body_file),
        "-o",
        "csv",
    ]
    if per_worker_rate:
        cmd += ["-q", f"{per_worker_rate:g}"]
    start = time.perf_counter()
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 120)
    elapsed = time.perf_counter() - start
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    if not rows:
        raise SystemExit(f"hey printed no results: {out.stderr[:500]}")
    latency = [float(r["response-time"]) * 1e3 for r in rows if r["status-code"] == "200"]
    offsets = [float(r["offset"]) for r in rows]
    duration = max(offsets) if offsets else elapsed
    errors = sum(r["status-code"] != "200" for r in rows)
    return {
        "requests": len(rows),
        "ok": len(latency),
        "errors": errors,
        "seconds": duration,
        "throughput_rps": len(latency) / max(duration, 1e-9),
        "latency_ms": {
            "p50": percentile(latency, 50),
            "p99": percentile(latency, 99),
            "p99.9": percentile(latency, 99.9),
            "max": max(latency, default=float("nan")),
        },
    }


def probe(base: str, bodies: list[str], stop: threading.Event, returned: list, errors: list[str]) -> None:
    """A slow reader (~20 req/s) whose answers are checked for stale items."""
    with httpx.Client(base_url=base, timeout=60.0, headers={"content-type": "application/json"}) as c:
        i = 0
        while not stop.wait(0.05):
            r = c.post("/recommend", content=bodies[i % len(bodies)])
            i += 1
            if r.status_code != 200:
                errors.append(f"probe {r.status_code}: {r.text[:200]}")
                continue
            payload = r.json()
            returned.append((payload["catalogue_version"], {it["item"] for u in payload["users"] for it in u["items"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30.0, help="duration of each scenario")
    ap.add_argument(
        "--history", type=int, default=35, help="history entries of the request's user (20-50 is realistic)"
    )
    ap.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 16, 64], help="closed-loop workers")
    ap.add_argument("--rates", type=float, nargs="*", default=[250, 500, 750], help="rate-limited scenarios (req/s)")
    ap.add_argument("--rate-workers", type=int, default=64, help="hey workers of the rate-limited scenarios")
    ap.add_argument("--updates", choices=["both", "off", "on"], default="both")
    ap.add_argument("--update-every", type=float, default=0.5)
    ap.add_argument("--add", type=int, default=10)
    ap.add_argument("--delete", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    ap.add_argument("--batch-users", type=int, default=64, help="server micro-batch size (1: no batching)")
    ap.add_argument("--batch-wait-ms", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=RESULTS / "load.json")
    args = ap.parse_args()
    hey = ensure_hey()
    run = RESULTS / f"serve_run_{args.items}"
    features = build_run(run, args.items, args.dim)
    shutil.rmtree(RunDir(run).catalogue_dir, ignore_errors=True)
    rng = np.random.default_rng(1)
    bodies = [json.dumps(body(args.items, args.history, rng)) for _ in range(32)]
    body_file = RESULTS / "load_body.json"
    body_file.write_text(bodies[0])
    started = time.perf_counter()
    server, base, health = start_server(
        run,
        "--threads",
        str(args.threads),
        "--batch-users",
        str(args.batch_users),
        "--batch-wait-ms",
        str(args.batch_wait_ms),
    )
    scenarios = []
    try:
        with httpx.Client(base_url=base, timeout=60.0) as c:
            for b in bodies[:4]:  # warm up: trie tables, allocator
                c.post("/recommend", content=b, headers={"content-type": "application/json"})
        print(
            f"server up in {time.perf_counter() - started:.1f} s with {health['active_items']:,} items; hey {hey}",
            flush=True,
        )
        plan = [("closed", c, None) for c in args.concurrency] + [("rate", args.rate_workers, r) for r in args.rates]
        updates = {"both": [False, True], "off": [False], "on": [True]}[args.updates]
        gone: set[str] = set()
        for number, (mode, workers, rate) in enumerate(plan):
            for with_updates in updates:
                stop = threading.Event()
                added_at: dict[str, int] = {}
                deleted_at: dict[str, int] = {}
                update_ms: list[float] = []
                errors: list[str] = []
                returned: list = []
                threads = []
                if with_updates:
                    threads = [
                        threading.Thread(
                            target=catalogue_writer,
                            args=(
                                base,
                                features,
                                args,
                                stop,
                                added_at,
                                deleted_at,
                                update_ms,
                                errors,
                                f"s{number}-",
                                2 + number,
                                gone,
                            ),
                        ),
                        threading.Thread(target=probe, args=(base, bodies, stop, returned, errors)),
                    ]
                for t in threads:
                    t.start()
                load_before = os.getloadavg()
                result = run_hey(
                    hey, f"{base}/recommend", body_file, args.seconds, workers, rate / workers if rate else None
                )
                stop.set()
                for t in threads:
                    t.join(60)
                result.update(
                    mode=mode,
                    workers=workers,
                    target_rps=rate,
                    updates=with_updates,
                    catalogue_updates=len(update_ms),
                    update_latency_ms={"p50": percentile(update_ms, 50), "p99": percentile(update_ms, 99)},
                    probe_answers=len(returned),
                    stale_items=stale_items(returned, added_at, deleted_at),
                    other_errors=len(errors),
                    error_samples=errors[:3],
                    load_average_before=load_before,
                )
                scenarios.append(result)
                lat = result["latency_ms"]
                print(
                    f"{mode:>6} c={workers:<3} {'' if rate is None else f'target {rate:>5.0f} '}"
                    f"updates={'on ' if with_updates else 'off'}"
                    f" {result['throughput_rps']:7.1f} req/s  p50 {lat['p50']:6.1f}  p99 {lat['p99']:6.1f}"
                    f"  p99.9 {lat['p99.9']:6.1f} ms  errors {result['errors'] + len(errors)}"
                    + (
                        f"  stale {result['stale_items']} / {len(returned)} probes  update p99 "
                        f"{result['update_latency_ms']['p99']:.1f} ms ({len(update_ms)})"
                        if with_updates
                        else ""
                    ),
                    flush=True,
                )
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
    out = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cpus": os.cpu_count(),
        "items": args.items,
        "scenarios": scenarios,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    plot(scenarios, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def plot(scenarios: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for updates, marker in ((False, "o"), (True, "s")):
        for mode, color in (("closed", "tab:blue"), ("rate", "tab:orange")):
            pts = [s for s in scenarios if s["updates"] == updates and s["mode"] == mode]
            if not pts:
                continue
            ax.plot(
                [s["throughput_rps"] for s in pts],
                [s["latency_ms"]["p99"] for s in pts],
                marker=marker,
                color=color,
                linestyle="-" if not updates else "--",
                label=f"{mode} loop, updates {'on' if updates else 'off'} (p99)",
            )
    ax.axhline(20, color="grey", linewidth=0.8, linestyle=":")
    ax.axvline(500, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("throughput (single-user requests / s)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_yscale("log")
    ax.set_title("hsrl serve at 10^6 items, 2 cores (hey on the same machine)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()

"""Response-model training throughput on 1 and N processes (DDP, gloo on CPU) on a large synthetic log.

    .venv/bin/python bench/ddp_training.py [--users 115000] [--nproc 1 2] [--epochs 1] [--run DIR]

Prepares a synthetic log with ``--users`` users (3 sessions each: about 8.7 impressions per user, so the
default is about 10^6 impressions) into DIR (default bench/results/runs/ddp), then trains the response
model with ``hsrl simulator train --force --nproc N`` in a fresh process per N, for ``--epochs`` epochs,
and prints/writes (bench/results/ddp_training.json) impressions per second of the optimisation steps
(validation aside), wall time (start-up, loading and validation included), val AUC and the
largest resident set of any process. ``--nproc 1`` runs twice: with one torch thread (hsrl's default per
process) and with one thread per core (the strongest single-process form); N processes get cores / N
threads each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
HSRL = [sys.executable, "-m", "hsrl"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=115_000)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--run", type=Path, default=RESULTS / "runs" / "ddp")
    args = parser.parse_args()
    if not (args.run / "data" / "dataset.npz").is_file():
        start = time.perf_counter()
        sets = ["--set", f"data.synthetic.n_users={args.users}", "--set", f"data.history_length={args.history}"]
        subprocess.run([*HSRL, "data", "prepare", "--out", str(args.run), *sets], check=True, stdout=subprocess.DEVNULL)
        print(f"prepared {args.run} in {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    cores = os.cpu_count() or 1
    runs = [(n, t) for n in args.nproc for t in ((1, cores) if n == 1 and cores > 1 else (max(1, cores // n),))]
    for nproc, threads in runs:
        start = time.perf_counter()
        # GNU time: the largest resident set of the command and the processes it waited for, in KiB
        done = subprocess.run(["/usr/bin/time", "-f", "%M", *HSRL, "simulator", "train", str(args.run), "--force",
                               "--nproc", str(nproc), "--set", f"simulator.epochs={args.epochs}"],
                              check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "HSRL_THREADS": str(threads)})  # fmt: skip
        wall = time.perf_counter() - start
        peak_kib = int(done.stderr.strip().splitlines()[-1])
        report = json.loads((args.run / "simulator" / "report.json").read_text())
        train = report["training"]
        row = {
            "nproc": nproc,
            "threads_per_process": threads,
            "train_rows": train["train_rows"],
            "epochs": train["epochs_run"],
            "train_impressions_per_second": round(train["train_impressions_per_second"]),
            "train_seconds": round(train["seconds"], 1),
            "wall_seconds": round(wall, 1),
            "val_auc": round(report["val"]["simulator"]["auc"], 4),
            "peak_rss_gib_largest_process": round(peak_kib / 2**20, 2),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    base = max((r for r in rows if r["nproc"] == 1), key=lambda r: r["train_impressions_per_second"], default=None)
    if base:  # against the fastest single process
        for r in rows:
            r["speedup_vs_best_1"] = round(r["train_impressions_per_second"] / base["train_impressions_per_second"], 2)
        print(
            "speed-up vs the fastest single process: "
            + ", ".join(f"{r['nproc']}x{r['threads_per_process']} threads: {r['speedup_vs_best_1']}x" for r in rows)
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"cpus": os.cpu_count(), "users": args.users, "history": args.history}
    (RESULTS / "ddp_training.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Response-model training time and fidelity on the synthetic default and on ML-100K.

    .venv/bin/python bench/response_training.py [--datasets synthetic ml-100k] [--threads N] [--runs DIR]

Prepares each dataset into DIR/<name> (default bench/results/runs) if needed, trains the response model
with the default simulator config, and prints/writes (bench/results/response_training.json) training
seconds, epochs, and val/test AUC of the simulator, the popularity floor and (synthetic) the true world.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from hsrl.commands.data import prepare_and_show
from hsrl.rundir import RunDir
from hsrl.simulator.response import fidelity_report, train_response_model

RESULTS = Path(__file__).resolve().parent / "results"


def bench(name: str, run_dir: Path) -> dict:
    if not (run_dir / "data" / "dataset.npz").is_file():
        prepare_and_show(run_dir, [f"data.dataset={name}"])
    run = RunDir(run_dir)
    ds = run.dataset()
    world = run.world() if run.has_world else None
    cfg = run.config().simulator
    start = time.perf_counter()
    model, summary = train_response_model(ds, cfg)
    seconds = time.perf_counter() - start
    report = fidelity_report(model, ds, world)
    out = {
        "dataset": name,
        "train_rows": summary["train_rows"],
        "seconds": round(seconds, 2),
        "epochs_run": summary["epochs_run"],
        "best_epoch": summary["best_epoch"],
        "seconds_per_epoch": round(seconds / summary["epochs_run"], 3),
    }
    for split in ("val", "test"):
        for scorer, metrics in report[split].items():
            if isinstance(metrics, dict):
                out[f"{split}_auc_{scorer}"] = round(metrics["auc"], 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["synthetic", "ml-100k"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--runs", type=Path, default=RESULTS / "runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.datasets:
        row = bench(name, args.runs / name)
        print(json.dumps(row))
        rows.append(row)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.machine(),
        "cpus": platform.processor(),
    }
    (RESULTS / "response_training.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Simulator fidelity on RL4RS-format logs with a known click model and page effects.

    .venv/bin/python bench/rl4rs_fidelity.py [--sessions 3000] [--slots off bias context] [--select]

Writes session logs over the real RL4RS catalogue (``../shared/data/rl4rs/item_info.csv``, CC BY-SA
4.0) with ``tests/fixtures/rl4rs_world.py`` (3 pages of 3, a per-user patience), prepares them with the
RL4RS reader into bench/results/runs/rl4rs_world, trains the response model per ``simulator.slots``
setting, and prints/writes (bench/results/rl4rs_fidelity.json) val/test AUC of the model, the three
floors and the true click model on the same rows, and the fidelity check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hsrl.commands.data import prepare_and_show
from hsrl.data.schema import LogDataset
from hsrl.rundir import RunDir
from hsrl.simulator.response import click_metrics, fidelity_report, select_response_model, train_response_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ITEM_INFO = ROOT.parent / "shared" / "data" / "rl4rs" / "item_info.csv"
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
from rl4rs_world import write_world_sessions  # noqa: E402


def true_probs(ds: LogDataset, truth: dict, rows: np.ndarray) -> np.ndarray:
    """The generating model's click probabilities of the dataset's rows (matched on session, timestamp)."""
    lookup = {(int(s), int(t)): i for i, (s, t) in enumerate(zip(truth["session"], truth["timestamp"]))}
    users = ds.user_ids[ds.imp_user[rows]].astype(np.int64)
    return truth["probs"][[lookup[(int(u), int(t))] for u, t in zip(users, ds.imp_time[rows])]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--slots", nargs="+", default=["off", "context"])
    parser.add_argument("--select", action="store_true", help="also run the built-in selection (slots=context)")
    parser.add_argument("--run", type=Path, default=RESULTS / "runs" / "rl4rs_world")
    args = parser.parse_args()
    args.run.mkdir(parents=True, exist_ok=True)
    log = args.run / "sessions.csv"
    if not log.is_file():
        write_world_sessions(ITEM_INFO, log, args.sessions)
    if not (args.run / "data" / "dataset.npz").is_file():
        prepare_and_show(args.run, ["data.dataset=rl4rs", f"data.source={log}", f"data.item_source={ITEM_INFO}"])
    ds = RunDir(args.run).dataset()
    with np.load(str(log) + ".truth.npz") as z:
        truth = {k: z[k] for k in z.files}
    base = RunDir(args.run).config().simulator
    trials = [(s, False) for s in args.slots] + ([("context", True)] if args.select else [])
    rows = []
    for slots, select in trials:
        cfg = base.model_copy(update={"slots": slots})
        model, summary = (select_response_model if select else train_response_model)(ds, cfg)
        report = fidelity_report(model, ds)
        row = {"slots": slots, "select": select, "epochs": summary["epochs_run"],
               "seconds": round(summary["seconds"], 1), "fidelity_ok": report["fidelity"]["ok"]}  # fmt: skip
        if select:
            row["chosen"] = summary["selection"]["chosen"]
        for split in ("val", "test"):
            r = ds.rows_in(split)
            report[split]["true_world"] = click_metrics(ds.imp_feedback[r], true_probs(ds, truth, r))
            for scorer in ("simulator", "popularity", "item_ctr", "slot_ctr", "true_world"):
                row[f"{split}_auc_{scorer}"] = round(report[split][scorer]["auc"], 4)
        print(json.dumps(row), flush=True)
        rows.append(row)
    (RESULTS / "rl4rs_fidelity.json").write_text(
        json.dumps({"sessions": args.sessions, "results": rows}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()

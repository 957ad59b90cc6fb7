"""What the response model's slot terms buy: synthetic worlds with and without a position effect.

    .venv/bin/python bench/slot_terms.py [--position-bias 0 1] [--slots off bias context] [--runs DIR]

For each world (``data.synthetic.position_bias``) the dataset is prepared into DIR/pbX (default
bench/results/runs), then the response model is trained once per ``simulator.slots`` setting with the
same seed; prints and writes (bench/results/slot_terms.json) val/test AUC of every model, the floors and
the true world, and the slot bias each model learned next to the world's own.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from hsrl.commands.data import prepare_and_show
from hsrl.rundir import RunDir
from hsrl.simulator.response import fidelity_report, train_response_model

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--position-bias", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--slots", nargs="+", default=["off", "bias", "context"])
    parser.add_argument("--runs", type=Path, default=RESULTS / "runs")
    args = parser.parse_args()
    rows = []
    for bias in args.position_bias:
        run = args.runs / f"pb{bias:g}"
        if not (run / "data" / "dataset.npz").is_file():
            prepare_and_show(run, ["data.dataset=synthetic", f"data.synthetic.position_bias={bias}"])
        ds, world = RunDir(run).dataset(), RunDir(run).world()
        base = RunDir(run).config().simulator
        for slots in args.slots:
            start = time.perf_counter()
            model, summary = train_response_model(ds, base.model_copy(update={"slots": slots}))
            report = fidelity_report(model, ds, world)
            learned = model.slot_bias.detach().numpy() if slots != "off" else np.zeros(ds.slate_size)
            row = {
                "position_bias": bias,
                "slots": slots,
                "seconds": round(time.perf_counter() - start, 1),
                "epochs": summary["epochs_run"],
                **{f"{split}_auc_{scorer}": round(report[split][scorer]["auc"], 4)
                   for split in ("val", "test") for scorer in ("simulator", "item_ctr", "slot_ctr", "true_world")},
                "learned_slot_bias": [round(float(v - learned[0]), 2) for v in learned],
                "true_slot_bias": [round(-bias * float(np.log2(1 + k)), 2) for k in range(ds.slate_size)],
            }  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "slot_terms.json").write_text(json.dumps({"torch": torch.__version__, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

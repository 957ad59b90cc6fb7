"""Quality table: every agent × seeds on held-out users, per dataset, with HSRL/baseline ratios.

    .venv/bin/python bench/quality.py --dataset synthetic --dataset ml-100k --seeds 3 [--set train.steps=...]

Runs the whole pipeline per dataset into bench/results/quality_<dataset>/ (reusing artefacts there),
prints the table and writes bench/results/quality.json. Not a test: figures for the closing notes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hsrl.cli import main as hsrl

RESULTS = Path(__file__).resolve().parent / "results"


def run(dataset: str, agents: str, seeds: int, overrides: list[str], force: bool) -> dict:
    out = RESULTS / f"quality_{dataset}"
    args = ["run", "--out", str(out), "--dataset", dataset, "--agents", agents, "--seeds", str(seeds)]
    for item in overrides:
        args += ["--set", item]
    if force:
        args.append("--force")
    start = time.perf_counter()
    code = hsrl(args)
    if code != 0:
        raise SystemExit(f"hsrl run failed for {dataset} (exit {code})")
    payload = json.loads((out / "results" / "results.json").read_text())
    payload["wall_seconds"] = time.perf_counter() - start
    return payload


def ratios(table: dict, of: str = "hsrl") -> dict[str, float]:
    mine = table[of]["total_reward"]["mean"]
    return {name: mine / agg["total_reward"]["mean"] for name, agg in table.items()
            if name != of and agg["total_reward"]["mean"] > 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", default=None)
    parser.add_argument("--agents", default="hsrl,hac,ddpg,td3,a2c,sl,random,popular,oracle")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    summary = {}
    for dataset in args.dataset or ["synthetic", "ml-100k"]:
        payload = run(dataset, args.agents, args.seeds, args.overrides, args.force)
        summary[dataset] = {
            "wall_seconds": payload["wall_seconds"],
            "aggregate": payload["aggregate"],
            "hsrl_ratio": {world: ratios(t) for world, t in payload["aggregate"].items() if "hsrl" in t},
        }
        print(f"\n{dataset}: wall {payload['wall_seconds']:.0f} s")
        for world, r in summary[dataset]["hsrl_ratio"].items():
            print(f"  HSRL total reward / other ({world}): " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {RESULTS / 'quality.json'}")


if __name__ == "__main__":
    main()

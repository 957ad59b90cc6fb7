"""Quality table: every agent × seeds on held-out users, per dataset, with HSRL/baseline ratios.

    .venv/bin/python bench/quality.py --dataset synthetic --dataset ml-100k --seeds 3 [--set train.steps=...]
    .venv/bin/python bench/quality.py --from-run synthetic=runs/clean --from-run ml-100k=runs/ml100k

Runs the whole pipeline per dataset into bench/results/quality_<dataset>/ (reusing artefacts there), or
reads the results of runs already evaluated (`--from-run`, e.g. after `hsrl compare`), prints HSRL's
ratios to every other agent and the quality bar against HAC (>= 1.15x with non-overlapping 95% CIs),
and writes bench/results/quality.json. Not a test: figures for the closing notes.
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


def quality_bar(table: dict, of: str = "hsrl", rival: str = "hac", factor: float = 1.15) -> dict | None:
    """HSRL >= factor x rival on the mean, and the two 95% CIs do not overlap."""
    if of not in table or rival not in table:
        return None
    a, b = table[of]["total_reward"], table[rival]["total_reward"]
    ratio = a["mean"] / b["mean"] if b["mean"] > 0 else float("inf")
    separated = a["mean"] - a["ci95"] > b["mean"] + b["ci95"]
    return {"ratio": ratio, "ci_separated": bool(separated), "met": bool(ratio >= factor and separated)}


def ratios(table: dict, of: str = "hsrl") -> dict[str, float]:
    mine = table[of]["total_reward"]["mean"]
    return {
        name: mine / agg["total_reward"]["mean"]
        for name, agg in table.items()
        if name != of and agg["total_reward"]["mean"] > 0
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", default=None)
    parser.add_argument("--agents", default="hsrl,hac,ddpg,td3,a2c,sl,random,popular,oracle")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--force", action="store_true")
    parser.add_argument(
        "--from-run",
        action="append",
        default=[],
        metavar="DATASET=RUN_DIR",
        help="read RUN_DIR/results/results.json instead of running",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    summary = {}
    done = dict(item.split("=", 1) for item in args.from_run)
    for dataset in list(done) or args.dataset or ["synthetic", "ml-100k"]:
        if dataset in done:
            payload = json.loads((Path(done[dataset]) / "results" / "results.json").read_text())
        else:
            payload = run(dataset, args.agents, args.seeds, args.overrides, args.force)
        summary[dataset] = {
            "wall_seconds": payload.get("wall_seconds"),
            "aggregate": payload["aggregate"],
            "hsrl_ratio": {world: ratios(t) for world, t in payload["aggregate"].items() if "hsrl" in t},
            "quality_bar": {world: quality_bar(t) for world, t in payload["aggregate"].items()},
        }
        wall = payload.get("wall_seconds")
        print(f"\n{dataset}" + (f": wall {wall:.0f} s" if wall else ""))
        for world, r in summary[dataset]["hsrl_ratio"].items():
            print(f"  HSRL total reward / other ({world}): " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))
            bar = summary[dataset]["quality_bar"][world]
            if bar:
                print(
                    f"  quality bar vs HAC ({world}): ratio {bar['ratio']:.2f}, CIs separated {bar['ci_separated']}"
                    f" -> {'met' if bar['met'] else 'NOT met'}"
                )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {RESULTS / 'quality.json'}")


if __name__ == "__main__":
    main()

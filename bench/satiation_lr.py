"""How fast should the simulator's satiation clusters learn? (``simulator.satiation_lr`` and
``simulator.cluster_sharpness``, synthetic data only)

    .venv/bin/python bench/satiation_lr.py runs/t12 [--key satiation_lr] [--values 1,3,10,30] [--sim-seeds 0,1,2]
                                                    [--episodes 300]

For each value of ``--key`` (the other settings at the run's config) and simulator seed, trains a
simulator on a copy of the run's data (in
bench/results/satiation_lr/RUN-KEY/, the key naming the source run and a hash of its config and data, so
another run never reuses these simulators; the run itself is not touched) and prints its validation AUC and log-loss
next to what top-K by its click probabilities scores in the true world (``bench/sim_gap.py``'s
simulator's oracle: what a perfect myopic learner of that simulator would reach), on validation users
(to choose a value) and on test users (to report it), with the share of slate items whose true topic was
in the previous slate. Writes bench/results/KEY.json (satiation_lr.json, cluster_sharpness.json). Not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from sim_gap import RESULTS, greedy_references, mean_and_ci

from hsrl.io import read_json
from hsrl.rundir import RunDir
from hsrl.workflow import EVAL_SPLIT, TEST_SPLIT
from hsrl.workflow.stages import train_simulator

GREEDY = "simulator's oracle"


def source_key(source: RunDir) -> str:
    """The source run's folder name and a hash of its config and dataset files: what the copies depend on."""
    digest = hashlib.sha256(source.config_file.read_bytes())
    for path in sorted(p for p in source.data_dir.rglob("*") if p.is_file()):
        digest.update(path.read_bytes())
    return f"{source.path.name}-{digest.hexdigest()[:10]}"


def simulator_with(source: RunDir, folder: Path, key: str, value: float, seed: int) -> Path:
    """A run in ``folder`` with the source's data, world and config, and its own simulator (kept between calls)."""
    run = RunDir(folder)
    if not run.simulator_file().is_file():
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for part in (source.data_dir, source.world_file, source.config_file):
            (shutil.copytree if part.is_dir() else shutil.copy2)(part, folder / part.name)
        cfg = run.config()
        sim = cfg.simulator.model_copy(update={key: value, "seed": seed, "select": False})
        train_simulator(folder, cfg.model_copy(update={"simulator": sim}))
    return folder


def true_oracle(run: Path, split: str, seeds: int, episodes: int) -> float:
    """Mean total reward of the privileged oracle in the true world on ``split``'s users."""
    results = greedy_references(run, split, seeds, episodes, names=("oracle",))["true"]["oracle"]
    return float(mean_and_ci(results)["total_reward"]["mean"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a prepared synthetic run (data and world.npz)")
    parser.add_argument("--key", default="satiation_lr", choices=["satiation_lr", "cluster_sharpness"])
    parser.add_argument("--values", default="1,3,10,30", help="values of --key, comma-separated")
    parser.add_argument("--sim-seeds", default="0,1,2", help="simulator seeds, comma-separated")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3, help="evaluation seeds per simulator")
    args = parser.parse_args()
    torch.set_num_threads(1)
    source = RunDir(args.run)
    if not source.has_world:
        raise SystemExit(f"{source}: not a synthetic run (no world.npz): there is no true world to judge in")
    key, rows = source_key(source), []
    # the true oracle depends on the world and the users only, not on the simulator: scored once per split
    oracle = {split: true_oracle(args.run, split, args.seeds, args.episodes) for split in (EVAL_SPLIT, TEST_SPLIT)}
    for value in (float(v) for v in args.values.split(",")):
        for seed in (int(s) for s in args.sim_seeds.split(",")):
            folder = RESULTS / "satiation_lr" / key / f"{args.key}{value:g}_seed{seed}"
            folder = simulator_with(source, folder, args.key, value, seed)
            val = read_json(RunDir(folder).simulator_report_file())["val"]["simulator"]
            row = {args.key: value, "simulator_seed": seed}
            row |= {"val_auc": val["auc"], "val_log_loss": val["log_loss"]}
            for split in (EVAL_SPLIT, TEST_SPLIT):
                refs = greedy_references(folder, split, args.seeds, args.episodes, names=(GREEDY,))["true"]
                row[split] = {GREEDY: mean_and_ci(refs[GREEDY])}
            rows.append(row)
            line = f"{args.key} {value:g} seed {seed}: val AUC {row['val_auc']:.4f}"
            line += f" log-loss {row['val_log_loss']:.4f}"
            for split in (EVAL_SPLIT, TEST_SPLIT):
                reward, repeats = row[split][GREEDY]["total_reward"], row[split][GREEDY]["topic_repeat_share"]["mean"]
                line += f" | {split} users: {reward['mean']:.3f} ± {reward['ci95']:.3f} (topic repeats {repeats:.3f},"
                line += f" true oracle {oracle[split]:.3f})"
            print(line, flush=True)
    print(f"mean over simulator seeds (true world, {GREEDY}):")
    for value in sorted({r[args.key] for r in rows}):
        mine = [r for r in rows if r[args.key] == value]
        cells = "  ".join(
            f"{s} users {np.mean([r[s][GREEDY]['total_reward']['mean'] for r in mine]):.3f}"
            for s in (EVAL_SPLIT, TEST_SPLIT)
        )
        print(f"  {args.key} {value:g}: val AUC {np.mean([r['val_auc'] for r in mine]):.4f}  {cells}")
    protocol = {"key": args.key, "values": args.values, "sim_seeds": args.sim_seeds, "episodes": args.episodes}
    protocol |= {"seeds": args.seeds}
    payload = {"run": str(args.run), "source_key": key, **protocol, "true_oracle": oracle, "rows": rows}
    (RESULTS / f"{args.key}.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()

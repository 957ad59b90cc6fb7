"""What one learning update costs, per learned agent, side by side in one process on one thread.

    .venv/bin/python bench/update_cost.py runs/synthetic [--agents hsrl,grpo,hac] [--updates 20]

The tuning protocol gives every agent the same env-step budget; this says what that budget costs each
one (an update per env step at the default). Each agent is built for the run, a replay buffer is filled
with `--fill` steps of its own exploration in the training simulator, then `--updates` updates on batches
of train.batch_size are timed (median). Agents are timed in turn, interleaved over `--rounds`, so that a
change in the machine's load falls on all of them. Writes bench/results/update_cost.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from hsrl import workflow
from hsrl.io import write_json
from hsrl.rundir import RunDir
from hsrl.train.buffer import ReplayBuffer
from hsrl.train.loop import collect_step

RESULTS = Path(__file__).resolve().parent / "results"


def filled(run: Path, spec: str, fill: int, seed: int = 0):
    cfg = RunDir(run).config()  # as the stages read it (keys added later at the value that built the run)
    env = workflow.env_for(run, cfg, "train", seed, world="simulator")
    agent = workflow.build_agent(spec, run, cfg, env, seed)
    buffer = ReplayBuffer(cfg.train.buffer_size, seed=seed)
    obs = env.reset()
    for _ in range(fill):
        obs = collect_step(agent, env, buffer, obs)
    return agent, buffer, cfg.train.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--agents", default="hsrl,grpo,hac,a2c,sl,ddpg,td3")
    parser.add_argument("--fill", type=int, default=40)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    specs = [a.strip() for a in args.agents.split(",") if a.strip()]
    built = {spec: filled(args.run, spec, args.fill) for spec in specs}
    times: dict[str, list[float]] = {spec: [] for spec in specs}
    for _ in range(args.rounds):
        for spec, (agent, buffer, batch) in built.items():
            for _ in range(args.updates):
                sample = buffer.sample(batch)
                start = time.perf_counter()
                agent.update(sample)
                times[spec].append(time.perf_counter() - start)
    base = statistics.median(times[specs[0]])
    rows = {spec: {"median_ms": 1000 * statistics.median(t), "vs_first": statistics.median(t) / base} for spec, t in
            times.items()}  # fmt: skip
    for spec, row in rows.items():
        print(f"{spec:>8}: {row['median_ms']:7.1f} ms per update ({row['vs_first']:.2f}x {specs[0]})")
    write_json(RESULTS / "update_cost.json", {"run": str(args.run), "updates": args.updates, "rows": rows})


if __name__ == "__main__":
    main()

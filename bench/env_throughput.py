"""SlateEnv throughput: user-steps per second with the learned simulator and with the true world.

    .venv/bin/python bench/env_throughput.py [--run DIR] [--batch 32] [--steps 300] [--threads N] [--device cpu]

B users, K = 9, H = 50 (the synthetic default), uniformly random distinct slates (drawn beforehand, so
only the environment is timed). Prepares and trains the synthetic default into DIR if needed. Prints
and writes bench/results/env_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hsrl.commands.data import prepare_and_show
from hsrl.rundir import RunDir
from hsrl.simulator.env import make_env

RESULTS = Path(__file__).resolve().parent / "results"


def throughput(run: Path, world: str, batch: int, steps: int, device: str) -> dict:
    env = make_env(run, world=world, batch_users=batch, seed=0, device=device)
    gen = torch.Generator().manual_seed(0)
    slates = [
        torch.rand(batch, env.n_items, generator=gen).argsort(1)[:, : env.slate_size].to(device) for _ in range(steps)
    ]
    env.reset()
    for slate in slates[:10]:  # warm-up
        env.step(slate)
    env.pop_episodes()
    start = time.perf_counter()
    for slate in slates:
        env.step(slate)
    if device != "cpu":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    episodes = env.pop_episodes()
    return {
        "world": world,
        "device": device,
        "batch_users": batch,
        "slate_size": env.slate_size,
        "history_length": env.history_length,
        "user_steps_per_s": round(batch * steps / seconds),
        "ms_per_step": round(1000 * seconds / steps, 3),
        "episodes": int(len(episodes["return"])),
        "mean_return_random_slates": float(episodes["return"].mean()) if len(episodes["return"]) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=RESULTS / "runs" / "synthetic")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.run / "data" / "dataset.npz").is_file():
        prepare_and_show(args.run)
    if not (args.run / "simulator" / "model.pt").is_file():
        from hsrl.workflow import train_simulator

        train_simulator(args.run, RunDir(args.run).config())
    rows = [throughput(args.run, world, args.batch, args.steps, args.device) for world in ("simulator", "true")]
    for row in rows:
        print(json.dumps(row))
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": args.threads}
    (RESULTS / "env_throughput.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

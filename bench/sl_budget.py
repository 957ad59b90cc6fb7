"""Is the click-model baseline short of budget or of structure? SL trained on the logs for longer and longer
(issue 11's question: why does every learned click model sit far below the simulator's own greedy policy?)

    .venv/bin/python bench/sl_budget.py runs/t12 [--steps 1000,3000,6000,10000] [--spec sl]

One SL agent (logs only: its updates draw logged impressions, no simulator interaction) is trained on the
run's training users; after each budget in --steps its greedy slates are scored on 256 test-user episodes in
the training simulator and in the true world (synthetic runs). The last line is the simulator's myopic
optimum (top-K by its own click probabilities) in that simulator: a click model of the *same logs* with the
simulator's structure. If SL's score stops rising well below it, more training will not close the gap; its
scorer's structure must change. Writes bench/results/sl_budget.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hsrl.agents import OracleGreedyAgent
from hsrl.eval.evaluate import evaluate
from hsrl.rundir import RunDir
from hsrl.workflow import TEST_SPLIT, TRAIN_SPLIT, build_agent, env_for

RESULTS = Path(__file__).resolve().parent / "results"
EPISODES, EVAL_SEED = 256, 30_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--steps", default="1000,3000,6000,10000", help="cumulative update counts to score at")
    parser.add_argument("--spec", default="sl", help="a logs-only SL spec (sl.replay must stay 0)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = RunDir(args.run)
    cfg = run.config()
    worlds = ["simulator", "true"] if run.has_world else ["simulator"]
    agent = build_agent(args.spec, run, cfg, env_for(run, cfg, TRAIN_SPLIT, 0), 0)
    batch = {"slate": torch.zeros(cfg.train.batch_size, cfg.data.slate_size, dtype=torch.long)}  # its size only

    def score(policy: object) -> dict[str, float]:
        return {
            w: float(
                evaluate(policy, env_for(run, cfg, TEST_SPLIT, EVAL_SEED, w), EPISODES, seed=EVAL_SEED)["total_reward"]
            )
            for w in worlds
        }

    rows, done, start = [], 0, time.perf_counter()
    for target in sorted(int(s) for s in args.steps.split(",")):
        while done < target:
            agent.update(batch)
            done += 1
        rows.append({"updates": done, **score(agent)})
        print(f"SL after {done:>6} updates: " + ", ".join(f"{w} {rows[-1][w]:.2f}" for w in worlds)
              + f"  ({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
    env = env_for(run, cfg, TEST_SPLIT, EVAL_SEED, "simulator")
    greedy = score(OracleGreedyAgent(env.item_features, env.slate_size, env.response.click_probs))
    print("the simulator's myopic optimum: " + ", ".join(f"{w} {v:.2f}" for w, v in greedy.items()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"run": str(args.run), "spec": args.spec, "episodes": EPISODES, "rows": rows, "simulator_greedy": greedy}
    (RESULTS / "sl_budget.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()

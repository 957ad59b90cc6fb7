"""How far can a policy trained in the learned simulator get in the true world? (synthetic data only)

    .venv/bin/python bench/sim_gap.py runs/synthetic [--episodes 500] [--seeds 3]

Prints, on test users and judged by the true world, three greedy references: the true oracle (top-K by
the world's own click probabilities), the fatigue-blind oracle (the same without the repeat-topic
fatigue term) and the *simulator's* oracle (top-K by the learned simulator's click probabilities for the
same users and histories). The last is what a perfect myopic learner of the simulator would score in the
true world: a yardstick for the learned agents' true-world scores, whose gap to the true oracle is the
simulator's, not the agent's. Writes bench/results/sim_gap.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hsrl.agents import OracleGreedyAgent
from hsrl.config import load_run_config
from hsrl.eval.evaluate import evaluate, summary
from hsrl.eval.metrics import mean_ci
from hsrl.workflow import TEST_SPLIT, build_agent, diagnostic_groups, env_for

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_run_config(args.run)
    rows: dict[str, list[dict]] = {"oracle": [], "oracle:fatigue=blind": [], "simulator's oracle": []}
    groups = diagnostic_groups(args.run)
    for seed in range(args.seeds):
        true_env = env_for(args.run, cfg, TEST_SPLIT, 20_000 + seed, "true")
        simulator = env_for(args.run, cfg, TEST_SPLIT, 0, "simulator").response
        agents = {
            "oracle": build_agent("oracle", args.run, cfg, true_env, seed),
            "oracle:fatigue=blind": build_agent("oracle:fatigue=blind", args.run, cfg, true_env, seed),
            "simulator's oracle": OracleGreedyAgent(true_env.item_features, true_env.slate_size, simulator.click_probs),
        }
        for name, agent in agents.items():
            rows[name].append(summary(evaluate(agent, true_env, args.episodes, seed=20_000 + seed, groups=groups)))
    out = {}
    print(f"true world, test users, {args.seeds} seeds x {args.episodes} episodes (mean ± 95% CI)")
    for name, results in rows.items():
        out[name] = {
            m: dict(zip(("mean", "ci95"), mean_ci([r[m] for r in results])))
            for m in ("total_reward", "depth", "click_rate", "topic_repeat_share")
        }
        cells = "  ".join(f"{m} {v['mean']:.3f} ± {v['ci95']:.3f}" for m, v in out[name].items())
        print(f"{name:>22}: {cells}")
    ratio = out["simulator's oracle"]["total_reward"]["mean"] / out["oracle"]["total_reward"]["mean"]
    print(f"simulator's oracle / true oracle: {ratio:.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sim_gap.json").write_text(json.dumps({"run": str(args.run), "results": out, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()

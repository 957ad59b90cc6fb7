"""How far can a policy trained in the learned simulator get in the true world? (synthetic data only)

    .venv/bin/python bench/sim_gap.py runs/synthetic [--episodes 500] [--seeds 3] [--worlds true,simulator]
                                                     [--split test|val]

Prints, on test users (``--split val``: validation users, for choosing a simulator setting without
reading the test users) and judged by the true world (and by the training simulator), three greedy
references: the true oracle (top-K by the world's own click probabilities), the fatigue-blind oracle
(the same without the repeat-topic fatigue term) and the *simulator's* oracle (top-K by the learned
simulator's click probabilities for the same users and histories). In the true world the last is what a
perfect myopic learner of the simulator would score: a yardstick for the learned agents' true-world
scores, whose gap to the true oracle is the simulator's, not the agent's. Judged by the training
simulator itself, it is the myopic optimum of the environment the agents train in: a yardstick for their
simulator scores. Writes bench/results/sim_gap.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hsrl.agents import Agent, OracleGreedyAgent
from hsrl.agents.world_model import ClickProbs
from hsrl.config import RunConfig
from hsrl.eval.evaluate import evaluate, summary
from hsrl.eval.metrics import mean_ci
from hsrl.rundir import RunDir
from hsrl.simulator import SlateEnv
from hsrl.workflow import EVAL_SPLIT, TEST_SPLIT, build_agent, diagnostic_groups, env_for

RESULTS = Path(__file__).resolve().parent / "results"


METRICS = ("total_reward", "depth", "click_rate", "topic_repeat_share")
NAMES = ("oracle", "oracle:fatigue=blind", "simulator's oracle")


def reference(
    name: str, run: Path, cfg: RunConfig, env: SlateEnv, seed: int, simulator_probs: ClickProbs | None
) -> Agent:
    """One of ``NAMES``: the true oracle and its fatigue-blind variant act on ``env``'s world; the
    simulator's oracle ranks by the learned simulator's click probabilities."""
    if name == "simulator's oracle":
        assert simulator_probs is not None, "the simulator's oracle needs the run's simulator"
        return OracleGreedyAgent(env.item_features, env.slate_size, simulator_probs)
    return build_agent(name, run, cfg, env, seed)


def greedy_references(
    run: Path,
    split: str = TEST_SPLIT,
    seeds: int = 3,
    episodes: int = 500,
    worlds: tuple[str, ...] = ("true",),
    names: tuple[str, ...] = NAMES,
) -> dict[str, dict[str, list[dict]]]:
    """Per world and reference (those of ``NAMES`` in ``names``), one evaluation summary per seed (seed s:
    users and clicks of seed 20000 + s, the same for every reference)."""
    cfg = RunDir(run).config()  # as the stages read it (keys added later at the value that built the run)
    rows: dict[str, dict[str, list[dict]]] = {w: {n: [] for n in names} for w in worlds}
    groups = diagnostic_groups(run)
    # only the simulator's oracle reads the learned simulator: a run without one can score the true oracles
    needs_simulator = "simulator's oracle" in names
    simulator_probs = env_for(run, cfg, split, 0, "simulator").response.click_probs if needs_simulator else None
    for seed in range(seeds):
        true_env = env_for(run, cfg, split, 20_000 + seed, "true")
        agents = {name: reference(name, run, cfg, true_env, seed, simulator_probs) for name in names}
        for world in worlds:
            judge = true_env if world == "true" else env_for(run, cfg, split, 20_000 + seed, world)
            for name, agent in agents.items():
                scored = evaluate(agent, judge, episodes, seed=20_000 + seed, groups=groups)
                rows[world][name].append(summary(scored))
    return rows


def mean_and_ci(results: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and 95 % CI over seeds of each of ``METRICS``."""
    return {m: dict(zip(("mean", "ci95"), mean_ci([r[m] for r in results]))) for m in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--worlds", default="true,simulator", help="judges, comma-separated: true, simulator")
    parser.add_argument("--split", default=TEST_SPLIT, choices=[TEST_SPLIT, EVAL_SPLIT], help="users to score")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = greedy_references(args.run, args.split, args.seeds, args.episodes, tuple(args.worlds.split(",")))
    out: dict[str, dict] = {}
    for world, by_name in rows.items():
        print(
            f"judged by the {world} world, {args.split} users, {args.seeds} seeds x {args.episodes} episodes"
            " (mean ± 95% CI)"
        )
        out[world] = {name: mean_and_ci(results) for name, results in by_name.items()}
        for name, stats in out[world].items():
            cells = "  ".join(f"{m} {v['mean']:.3f} ± {v['ci95']:.3f}" for m, v in stats.items())
            print(f"{name:>22}: {cells}")
    ratio = None
    if "true" in out:
        reward = {name: v["total_reward"]["mean"] for name, v in out["true"].items()}
        ratio = reward["simulator's oracle"] / reward["oracle"]
        print(f"true world: simulator's oracle / true oracle: {ratio:.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"run": str(args.run), "split": args.split, "results_by_world": out, "ratio_true": ratio}
    (RESULTS / "sim_gap.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()

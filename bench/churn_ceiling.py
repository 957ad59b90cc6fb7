"""How much can a policy gain from new items that it knows only by their content? (synthetic data only)

    .venv/bin/python bench/churn_ceiling.py runs/t13 [--seeds 3] [--holdout 0.2]

The synthetic world's click logit is affinity(user latent, item latent) + item quality − fatigue. Item
quality is a per-item offset that no feature shows: a learned agent can only learn it from the clicks on
that item, so for an item added after training it knows none of it. This scores, in the true world and on
the test users of ``hsrl churn`` (same hold-out, same evaluation seeds), the privileged greedy oracle
before and after the held-out items arrive, and the same oracle with item quality hidden:

* ``oracle``: the world's own click model (``hsrl churn``'s oracle row);
* ``new items' quality unknown``: the held-out items' quality replaced by the kept items' mean, i.e. the
  best a policy can do that knows everything but what only clicks on a new item reveal;
* ``no item's quality known``: every item's quality at the mean (content and fatigue only).

The second one's gain after the reveal is what a greedy policy earns from new items it knows perfectly by
content alone (a reference, not a bound: a policy that plans ahead may do better than a greedy one). Writes
bench/results/churn_ceiling.json. Not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sim_gap import RESULTS

from hsrl.agents import OracleGreedyAgent
from hsrl.agents.registry import hide_new_quality, true_click_probs
from hsrl.data.synthetic import SyntheticWorld
from hsrl.eval.evaluate import evaluate, summary
from hsrl.eval.metrics import mean_ci
from hsrl.rundir import RunDir
from hsrl.simulator.catalogue import CatalogueView
from hsrl.workflow import TEST_SPLIT, draw_holdout, env_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a synthetic run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--episodes", type=int, default=None, help="default: the run's eval.episodes")
    args = parser.parse_args()

    run = RunDir(args.run)
    cfg, world = run.config(), run.world()
    held = draw_holdout(args.run, args.holdout)
    quality = world.item_quality
    no_quality = dataclasses.replace(world, item_quality=np.full_like(quality, quality.mean()))
    scorers: dict[str, Callable[[CatalogueView], SyntheticWorld]] = {  # the world each oracle scores with
        "oracle": lambda view: world,
        "new items' quality unknown": lambda view: hide_new_quality(world, view),  # oracle:new_quality=hidden
        "no item's quality known": lambda view: no_quality,
    }
    episodes = args.episodes or cfg.eval.episodes
    rows: dict[str, dict[str, list[float]]] = {name: {"before": [], "after": []} for name in scorers}
    for seed in range(args.seeds):
        env_seed = 20_000 + seed  # the seeds `hsrl churn` evaluates with
        for name, scorer in scorers.items():
            env = CatalogueView(env_for(args.run, cfg, TEST_SPLIT, env_seed, "true"), held.order, held.n_kept)
            agent = OracleGreedyAgent(env.item_features, env.slate_size, true_click_probs(scorer(env), env))
            for phase in ("before", "after"):
                if phase == "after":
                    env.reveal()
                    agent.set_catalogue(env.item_features)
                result = summary(evaluate(agent, env, episodes, seed=env_seed))
                rows[name][phase].append(float(result["total_reward"]))
            print(name, seed, {p: round(v[-1], 3) for p, v in rows[name].items()}, flush=True)
    table = {
        name: {phase: dict(zip(("mean", "ci95"), mean_ci(values))) for phase, values in got.items()}
        for name, got in rows.items()
    }
    print(f"\ntrue world, {held.held.size} of {held.n_items} items new, {args.seeds} seeds, {episodes} episodes")
    print(f"{'reference':30s} {'before':>14s} {'after':>14s} {'gain':>7s}")
    for name, cells in table.items():
        b, a = cells["before"], cells["after"]
        print(
            f"{name:30s} {b['mean']:6.3f} ± {b['ci95']:.3f} {a['mean']:6.3f} ± {a['ci95']:.3f} "
            f"{a['mean'] - b['mean']:+7.3f}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"seeds": args.seeds, "episodes": episodes, "table": table, "per_seed": rows}
    (RESULTS / "churn_ceiling.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()

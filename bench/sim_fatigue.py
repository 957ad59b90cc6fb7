"""Which part of the learned simulator limits a policy trained in it: its fatigue or its static preferences?
(synthetic data only)

    .venv/bin/python bench/sim_fatigue.py runs/t13 [--episodes 300] [--seeds 3]

Two measurements on test users, against the synthetic ground truth:

1. **Fatigue response**: the change of a candidate's click logit when the last 9 history items (not
   clicked) are of the candidate's true topic rather than of other topics, per topic, averaged over
   users and draws; the world gives ``-boredom_per_repeat x 9``, the simulator its total change and the
   part of it from its satiation term.
2. **Hybrid greedy references** in the true world: top-K by click probabilities whose logit is the
   simulator's static part (its logit less its satiation term) plus the world's fatigue, and the world's
   static part plus the simulator's satiation term; beside top-K by the simulator and by the world
   (``bench/sim_gap.py``'s simulator's oracle and oracle). The first says what a perfect picture of fatigue
   would be worth with this simulator's preferences, the second what this picture of fatigue costs.

Writes bench/results/sim_fatigue.json. Not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sim_gap import RESULTS

from hsrl.agents import OracleGreedyAgent
from hsrl.data.schema import PAD
from hsrl.eval.evaluate import evaluate, summary
from hsrl.eval.metrics import mean_ci
from hsrl.rundir import RunDir
from hsrl.simulator.observation import Observation
from hsrl.workflow import TEST_SPLIT, diagnostic_groups, env_for

Logits = Callable[[Observation, torch.Tensor, torch.Tensor | None], torch.Tensor]


@torch.no_grad()
def fatigue_response(run: Path, draws: int = 4) -> dict[str, float]:
    """Mean logit change (world, simulator total, simulator satiation term) of a candidate whose topic
    fills the last 9 history items, against the same history with 9 items of other topics there."""
    cfg = RunDir(run).config()
    env = env_for(run, cfg, TEST_SPLIT, 20_000, "true")
    world, model = env.response.world, env_for(run, cfg, TEST_SPLIT, 0, "simulator").response
    topic = torch.as_tensor(world.item_topic)
    obs = env.reset(seed=1)
    users, gen = obs.hist_items.shape[0], torch.Generator().manual_seed(0)
    diffs: dict[str, list[float]] = {"world": [], "simulator": [], "satiation term": []}
    for t in range(int(topic.max()) + 1):
        same, other = torch.nonzero(topic == t).squeeze(1), torch.nonzero(topic != t).squeeze(1)
        for _ in range(draws):
            bored, fresh = obs.hist_items.clone(), obs.hist_items.clone()
            bored[:, -9:] = same[torch.randint(len(same), (users, 9), generator=gen)]
            fresh[:, -9:] = other[torch.randint(len(other), (users, 9), generator=gen)]
            feedback = obs.hist_feedback.clone()
            feedback[:, -9:] = 0.0
            cand = same[torch.randint(len(same), (users, 1), generator=gen)]
            scorers = {
                "world": lambda h, c=cand: world.click_logits(obs.user, h, c),
                "simulator": lambda h, c=cand, f=feedback: model(obs.profile, h, f, c),
                "satiation term": lambda h, c=cand: model.satiation(h, h != PAD, c),
            }
            for name, score in scorers.items():
                diffs[name].append(float((score(bored) - score(fresh)).mean()))
    return {k: float(np.mean(v)) for k, v in diffs.items()}


def hybrid_logits(run: Path) -> dict[str, Logits]:
    """Click logits of the four greedy references (world, simulator and the two hybrids)."""
    cfg = RunDir(run).config()
    world = RunDir(run).world()
    blind = dataclasses.replace(world, boredom_per_repeat=0.0)
    model = env_for(run, cfg, TEST_SPLIT, 0, "simulator").response

    def true(o: Observation, s: torch.Tensor, slots: torch.Tensor | None) -> torch.Tensor:
        return world.click_logits(o.user, o.hist_items, s, slots)

    def true_fatigue(o: Observation, s: torch.Tensor, slots: torch.Tensor | None) -> torch.Tensor:
        return true(o, s, slots) - blind.click_logits(o.user, o.hist_items, s, slots)

    def sim(o: Observation, s: torch.Tensor, slots: torch.Tensor | None) -> torch.Tensor:
        return model(o.profile, o.hist_items, o.hist_feedback, s, slots)

    def sim_fatigue(o: Observation, s: torch.Tensor, slots: torch.Tensor | None) -> torch.Tensor:
        return model.satiation(o.hist_items, o.hist_items != PAD, s)

    def sim_static_world_fatigue(o: Observation, s: torch.Tensor, slots: torch.Tensor | None) -> torch.Tensor:
        return sim(o, s, slots) - sim_fatigue(o, s, slots) + true_fatigue(o, s, slots)

    def world_static_sim_fatigue(o: Observation, s: torch.Tensor, slots: torch.Tensor | None) -> torch.Tensor:
        return true(o, s, slots) - true_fatigue(o, s, slots) + sim_fatigue(o, s, slots)

    return {
        "oracle (world)": true,
        "simulator's oracle": sim,
        "simulator static + world fatigue": sim_static_world_fatigue,
        "world static + simulator fatigue": world_static_sim_fatigue,
    }


def hybrid_references(run: Path, seeds: int, episodes: int) -> dict[str, dict[str, dict[str, float]]]:
    """Mean ± CI over seeds of total reward and topic repeats of each greedy reference in the true world."""
    cfg = RunDir(run).config()
    groups = diagnostic_groups(run)
    rows: dict[str, list[dict]] = {}
    for name, logits in hybrid_logits(run).items():

        def probs(o: Observation, s: torch.Tensor, slots: Any = None, f: Logits = logits) -> torch.Tensor:
            with torch.no_grad():
                return torch.sigmoid(f(o, s, slots))

        for seed in range(seeds):
            env = env_for(run, cfg, TEST_SPLIT, 20_000 + seed, "true")
            agent = OracleGreedyAgent(env.item_features, env.slate_size, probs)
            scored = evaluate(agent, env, episodes, seed=20_000 + seed, groups=groups)
            rows.setdefault(name, []).append(summary(scored))
    metrics = ("total_reward", "topic_repeat_share")
    return {
        name: {m: dict(zip(("mean", "ci95"), mean_ci([r[m] for r in results]))) for m in metrics}
        for name, results in rows.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a synthetic run with its simulator")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not RunDir(args.run).has_world:
        raise SystemExit(f"{args.run}: not a synthetic run (no world.npz): there is no ground truth to compare with")
    response = fatigue_response(args.run)
    print("logit change of a candidate after 9 not-clicked items of its topic (vs 9 of other topics), test users:")
    print("  " + "  ".join(f"{k} {v:+.2f}" for k, v in response.items()))
    refs = hybrid_references(args.run, args.seeds, args.episodes)
    print(f"greedy references judged by the true world, test users, {args.seeds} seeds x {args.episodes} episodes:")
    for name, stats in refs.items():
        reward, repeats = stats["total_reward"], stats["topic_repeat_share"]["mean"]
        print(f"  {name:>34}: total reward {reward['mean']:.3f} ± {reward['ci95']:.3f}  topic repeats {repeats:.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"run": str(args.run), "episodes": args.episodes, "seeds": args.seeds, "fatigue_response": response}
    (RESULTS / "sim_fatigue.json").write_text(json.dumps(payload | {"references": refs}, indent=2))


if __name__ == "__main__":
    main()

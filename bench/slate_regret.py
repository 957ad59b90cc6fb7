"""How good is each agent's slate *for one step*, on the states it visits itself? (issue 11's split of the
gap into a click-model error and a policy error)

    .venv/bin/python bench/slate_regret.py runs/t12 [--agents hsrl:tuned,grpo:tuned,sl:tuned] [--seeds 2]

Each trained agent (``NAME:tuned`` reads RUN/tuned/) acts greedily in the training simulator on test users
for --steps steps. At every step its slate's expected clicks under that simulator (the sum of the
simulator's click probabilities over its slots) are compared with those of the simulator's myopic optimum
for the same state (top-K by the simulator's own click probabilities, the "simulator's oracle" of
bench/sim_gap.py), and the overlap of the two slates is counted. The agent's own slate is then served,
so the states are the agent's. A ratio near 1 says the agent ranks as well as a perfect click model of its
training environment could, one step ahead; a low one says its per-item scoring is what is missing.
Writes bench/results/slate_regret.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hsrl.agents import OracleGreedyAgent
from hsrl.agents.registry import base_name
from hsrl.rundir import RunDir
from hsrl.tuning import load_tuned
from hsrl.workflow import TEST_SPLIT, env_for, load_agent

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--agents", default="hsrl:tuned,grpo:tuned,sl:tuned")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = RunDir(args.run)
    specs = [a.strip() for a in args.agents.split(",") if a.strip()]
    tuned = [base_name(s) for s in specs if s.endswith(":tuned")]
    cfg = load_tuned(run, run.config(), tuned) if tuned else run.config()
    out: dict[str, dict[str, float]] = {}
    for spec in specs:
        own, best, overlap = [], [], []
        for seed in range(args.seeds):
            env = env_for(run, cfg, TEST_SPLIT, 30_000 + seed, "simulator")
            model = env.response
            agent = load_agent(spec, run, cfg, env, seed)
            greedy = OracleGreedyAgent(env.item_features, env.slate_size, model.click_probs)
            obs = env.reset()
            with torch.no_grad():
                for _ in range(args.steps):
                    slate, ideal = agent.act(obs, greedy=True), greedy.act(obs, greedy=True)
                    own.append(float(model.click_probs(obs, slate).sum(1).mean()))
                    best.append(float(model.click_probs(obs, ideal).sum(1).mean()))
                    shared = (slate.unsqueeze(2) == ideal.unsqueeze(1)).any(2).float().mean(1)
                    overlap.append(float(shared.mean()))
                    obs = env.step(slate)[0]
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        out[spec] = {
            "expected_clicks": mean(own),
            "optimum_expected_clicks": mean(best),
            "ratio": mean(own) / mean(best),
            "overlap_with_optimum": mean(overlap),
        }
        row = out[spec]
        print(
            f"{spec:>12}: expected clicks per slate {row['expected_clicks']:.3f} vs the simulator's myopic optimum"
            f" {row['optimum_expected_clicks']:.3f} (ratio {row['ratio']:.2f});"
            f" slate overlap {row['overlap_with_optimum']:.2f}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"run": str(args.run), "seeds": args.seeds, "steps": args.steps, "rows": out}
    (RESULTS / "slate_regret.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()

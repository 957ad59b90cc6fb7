"""Scoring agents on held-out test users: every agent × seed × judge, aggregates, learning curves and the
comparisons with the reference agent, written to the run's ``results/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hsrl.agents import registry
from hsrl.agents.registry import base_name
from hsrl.config import RunConfig
from hsrl.eval.evaluate import evaluate, summary
from hsrl.eval.report import aggregate, versions, write_report
from hsrl.rundir import RunDir, RunLike
from hsrl.workflow.build import TEST_SPLIT, diagnostic_groups, env_for, load_agent
from hsrl.workflow.checkpoints import agent_dir
from hsrl.workflow.progress import SILENT, Progress, Results


def evaluate_agents(
    run_dir: RunLike,
    cfg: RunConfig,
    agents: list[str],
    seeds: int,
    worlds: list[str],
    episodes: int,
) -> dict[str, Any]:
    """Every agent × seed × world on held-out test users; per-seed metrics and aggregates."""
    per_seed: dict[str, dict[str, list[dict[str, Any]]]] = {}
    aggregates: dict[str, dict[str, Any]] = {}
    ceiling: dict[str, Any] = {}
    groups = diagnostic_groups(run_dir)
    for world in worlds:
        per_seed[world] = {}
        aggregates[world] = {}
        for name in agents:
            rows = []
            for seed in range(seeds):
                env = env_for(run_dir, cfg, TEST_SPLIT, seed=20_000 + seed, world=world)
                ceiling = env.ceiling()
                agent = load_agent(name, run_dir, cfg, env, seed)
                result = evaluate(agent, env, episodes, groups=groups)
                rows.append(summary(result) | {"seed": seed})
            per_seed[world][name] = rows
            aggregates[world][name] = aggregate(rows, ceiling["total_reward"])
    curves: dict[str, Any] = {}
    for name in agents:
        if not registry.get(base_name(name)).learned:
            continue
        curves[name] = []
        for seed in range(seeds):
            path = agent_dir(run_dir, name, seed, cfg) / "metrics.jsonl"
            if path.is_file():
                records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
                curves[name].append([(r["step"], r["eval_total_reward"]) for r in records if "eval_total_reward" in r])
    from hsrl.eval.report import add_statistics

    payload = {
        "dataset": RunDir(run_dir).dataset().meta.get("name", "?"),
        "config": cfg.model_dump(mode="json"),
        "versions": versions(),
        "ceiling": ceiling,
        "agents": agents,
        "privileged": [a for a in agents if registry.get(base_name(a)).privileged],
        "per_seed": per_seed,
        "aggregate": aggregates,
        "curves": curves,
    }
    return add_statistics(payload)  # IQM and comparisons with the reference agent, world by world


def write_results(run_dir: RunLike, payload: dict[str, Any]) -> dict[str, Path]:
    return write_report(RunDir(run_dir).results_dir, payload)


def evaluate_stage(
    run_dir: RunLike,
    cfg: RunConfig,
    agents: list[str],
    seeds: int,
    worlds: list[str],
    progress: Progress = SILENT,
) -> Results:
    """``evaluate_agents`` on ``eval.episodes`` episodes, written to the run's ``results/``."""
    with progress.working("evaluating on test users ..."):
        payload = evaluate_agents(run_dir, cfg, agents, seeds, worlds, cfg.eval.episodes)
    return Results(payload, write_results(run_dir, payload))

"""Scoring agents on held-out test users: every agent × seed × judge, aggregates, learning curves and the
comparisons with the reference agent, written to the run's ``results/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hsrl.agents import registry
from hsrl.agents.registry import base_name
from hsrl.config import RunConfig
from hsrl.engine import run_jobs
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
    engine: str = "local",
    address: str | None = None,
) -> dict[str, Any]:
    """Every agent × seed × world on held-out test users; per-seed metrics and aggregates. The jobs run
    side by side (``eval.jobs`` workers, as training does); each is seeded by itself, so the figures do
    not depend on how many run at once."""
    groups = diagnostic_groups(run_dir)
    jobs = [
        (run_dir, cfg, name, seed, world, episodes, groups)
        for world in worlds
        for name in agents
        for seed in range(seeds)
    ]
    scored = dict(run_jobs(score_on_test_users, jobs, cfg.eval.jobs, engine, address))
    per_seed: dict[str, dict[str, list[dict[str, Any]]]] = {w: {} for w in worlds}
    aggregates: dict[str, dict[str, Any]] = {w: {} for w in worlds}
    ceiling: dict[str, Any] = {}
    numbers = iter(range(len(jobs)))
    for world in worlds:
        for name in agents:
            rows = []
            for _ in range(seeds):
                row, ceiling = scored[next(numbers)]
                rows.append(row)
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


def score_on_test_users(
    run_dir: RunLike, cfg: RunConfig, name: str, seed: int, world: str, episodes: int, groups: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One job of ``evaluate_agents``: agent ``name``'s seed ``seed`` on ``episodes`` test episodes of
    ``world`` (evaluation seed 20_000 + seed); its summary row and the world's ceiling."""
    env = env_for(run_dir, cfg, TEST_SPLIT, seed=20_000 + seed, world=world)
    agent = load_agent(name, run_dir, cfg, env, seed)
    return summary(evaluate(agent, env, episodes, groups=groups)) | {"seed": seed}, env.ceiling()


def write_results(run_dir: RunLike, payload: dict[str, Any]) -> dict[str, Path]:
    return write_report(RunDir(run_dir).results_dir, payload)


def evaluate_stage(
    run_dir: RunLike,
    cfg: RunConfig,
    agents: list[str],
    seeds: int,
    worlds: list[str],
    progress: Progress = SILENT,
    engine: str = "local",
    address: str | None = None,
) -> Results:
    """``evaluate_agents`` on ``eval.episodes`` episodes, written to the run's ``results/``."""
    with progress.working("evaluating on test users ..."):
        payload = evaluate_agents(run_dir, cfg, agents, seeds, worlds, cfg.eval.episodes, engine, address)
    return Results(payload, write_results(run_dir, payload))

"""Catalogue churn as a stage: a hold-out drawn from the run's items, Semantic IDs of the kept items,
agents trained without the held-out ones, and each agent scored before and after they arrive."""

from __future__ import annotations

import copy
from typing import Any

from hsrl.agents import registry
from hsrl.agents.registry import base_name
from hsrl.config import RunConfig
from hsrl.errors import ConfigError
from hsrl.eval.churn import PHASES, HeldOut
from hsrl.eval.evaluate import evaluate, summary
from hsrl.eval.report import aggregate, versions
from hsrl.rundir import RunDir, RunLike
from hsrl.sid.build import build_for_dataset, index_features
from hsrl.sid.index import SemanticIDIndex
from hsrl.simulator.catalogue import CatalogueView
from hsrl.workflow.build import TEST_SPLIT, diagnostic_groups, env_for, load_agent
from hsrl.workflow.checkpoints import require_reusable
from hsrl.workflow.progress import SILENT, Progress, Results
from hsrl.workflow.stages import alignment_targets
from hsrl.workflow.training import train_stage


def draw_holdout(run_dir: RunLike, share: float, seed: int = 0) -> HeldOut:
    """The seeded hold-out of a share of the run's items (a ConfigError for a share that holds out none
    or all of them)."""
    run = RunDir(run_dir)
    run.require_dataset()
    try:
        return HeldOut.draw(run.dataset().n_items, share, seed)
    except ValueError as exc:
        raise ConfigError(f"--holdout {share}: {exc}") from None


def churn_index(run_dir: RunLike, cfg: RunConfig, holdout: HeldOut) -> SemanticIDIndex:
    """Semantic IDs of the kept items only (codebooks never see the held-out ones); built once."""
    run = RunDir(run_dir)
    folder = run.churn_root(holdout)
    holdout.check(folder)  # a folder written for another catalogue is an error, not a silent mix
    path = RunDir(folder).index_file  # a hold-out's folder is laid out as a run of its own
    if path.is_file():
        return SemanticIDIndex.load(path)
    kept = holdout.order[: holdout.n_kept]  # alignment is fitted on these rows only
    index = build_for_dataset(run.dataset(), cfg.sid, kept, align_to=alignment_targets(run, cfg))
    holdout.save(folder)
    index.save(path)
    return index


def evaluate_churn(
    run_dir: RunLike,
    cfg: RunConfig,
    agents: list[str],
    seeds: int,
    worlds: list[str],
    episodes: int,
    holdout: HeldOut,
) -> dict[str, Any]:
    """Each agent × seed × world before and after the held-out items join its catalogue (same users)."""
    ds = RunDir(run_dir).dataset()
    uses_sids = any(registry.get(base_name(a)).uses_index for a in agents)
    new_features = index_features(ds, cfg.sid)[0][holdout.held] if uses_sids else None
    kept_index = churn_index(run_dir, cfg, holdout) if uses_sids else None
    groups = diagnostic_groups(run_dir, holdout.order)  # view indices, before and after the reveal
    per_seed: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    aggregates: dict[str, dict[str, dict[str, Any]]] = {}
    for world in worlds:
        per_seed[world], aggregates[world] = {}, {}
        for name in agents:
            rows: dict[str, list[dict[str, Any]]] = {phase: [] for phase in PHASES}
            for seed in range(seeds):
                env_seed = 20_000 + seed
                env = CatalogueView(env_for(run_dir, cfg, TEST_SPLIT, env_seed, world), holdout.order, holdout.n_kept)
                uses_index = registry.get(base_name(name)).uses_index
                index = copy.deepcopy(kept_index) if uses_index else None  # add_items mutates
                agent = load_agent(name, run_dir, cfg, env, seed, holdout, index)
                rows["before"].append(
                    summary(evaluate(agent, env, episodes, seed=env_seed, groups=groups)) | {"seed": seed}
                )
                env.reveal()  # the trained policy as it is; HSRL's new SIDs come from the frozen codebooks
                if index is not None and new_features is not None:
                    index.add_items(new_features)
                agent.set_catalogue(env.item_features, index)
                after = evaluate(agent, env, episodes, new_items=holdout.new_items(), seed=env_seed, groups=groups)
                rows["after"].append(summary(after) | {"seed": seed})
            per_seed[world][name] = rows
            aggregates[world][name] = {phase: aggregate(rows[phase]) for phase in PHASES}
    return {
        "dataset": ds.meta.get("name", "?"),
        "config": cfg.model_dump(mode="json"),
        "versions": versions(),
        "holdout": {
            "share": holdout.share,
            "seed": holdout.seed,
            "n_items": holdout.n_items,
            "held": int(holdout.held.size),
            "held_items": holdout.held.tolist(),
        },
        "agents": agents,
        "seeds": seeds,
        "privileged": [a for a in agents if registry.get(base_name(a)).privileged],
        "per_seed": per_seed,
        "aggregate": aggregates,
    }


def churn_stage(
    run_dir: RunLike,
    cfg: RunConfig,
    agents: list[str],
    seeds: int,
    worlds: list[str],
    holdout: HeldOut,
    force: bool = False,
    engine: str = "local",
    address: str | None = None,
    progress: Progress = SILENT,
) -> Results:
    """Catalogue churn on a run whose simulator and index exist (``ensure_stages``): the kept items'
    index, the agents trained without the held-out items (reused where they fit the config), each scored
    before and after the reveal; written to the hold-out's ``results/``."""
    from hsrl.eval.churn import write_churn

    run = RunDir(run_dir)
    with progress.working(f"Semantic IDs of the {holdout.n_kept} kept items ..."):
        churn_index(run, cfg, holdout)  # once, before the worker processes need it
    require_reusable(run, cfg, agents, seeds, force, holdout)
    train_stage(run, cfg, agents, seeds, force, holdout, engine, address, progress)
    with progress.working("evaluating before and after the new items arrive ..."):
        payload = evaluate_churn(run, cfg, agents, seeds, worlds, cfg.eval.episodes, holdout)
    paths = write_churn(RunDir(run.churn_root(holdout)).results_dir, payload)
    return Results(payload, paths)

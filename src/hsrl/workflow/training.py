"""Training agents: one agent-seed (``train_agent``, on the same setup the tuning trials use:
``make_trainer``) and every learned agent-seed of a stage, side by side in worker processes or Ray
tasks (``train_stage``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsrl.agents import registry
from hsrl.agents.base import CHECKPOINT_VERSION, read_checkpoint
from hsrl.agents.registry import base_name
from hsrl.config import RunConfig
from hsrl.rundir import AGENT_FILE, RunLike
from hsrl.simulator.catalogue import CatalogueView
from hsrl.train.loop import Trainer
from hsrl.workflow.build import EVAL_SPLIT, TRAIN_SPLIT, build_agent, env_for
from hsrl.workflow.checkpoints import agent_dir, check_trained_with
from hsrl.workflow.progress import SILENT, Progress

if TYPE_CHECKING:
    from hsrl.eval.churn import HeldOut


def make_trainer(
    run_dir: RunLike,
    spec: str,
    cfg: RunConfig,
    seed: int,
    out_dir: Path,
    show_progress: bool = False,
    holdout: HeldOut | None = None,
    callbacks: list[Any] | None = None,
) -> Trainer:
    """A fresh agent of ``spec`` and its trainer: training users of the run's training world, seed ``seed``,
    periodic scores on validation users (seed 10_000 + seed). One setup for ``train_agent`` and the tuning
    trials, so a tuned trial trains exactly as the final run of the same values and seed would."""
    from hsrl.workflow.churn import churn_index

    def make(split: str, env_seed: int) -> Any:
        env = env_for(run_dir, cfg, split, env_seed)
        return CatalogueView(env, holdout.order, holdout.n_kept) if holdout else env

    env = make(TRAIN_SPLIT, seed)
    agent = build_agent(spec, run_dir, cfg, env, seed, churn_index(run_dir, cfg, holdout) if holdout else None)
    return Trainer(
        agent,
        env,
        cfg.train.model_copy(update={"seed": seed}),
        out_dir=out_dir,
        eval_env=lambda: make(EVAL_SPLIT, 10_000 + seed),
        show_progress=show_progress,
        callbacks=callbacks,
    )


def train_agent(
    run_dir: RunLike,
    name: str,
    cfg: RunConfig,
    seed: int,
    force: bool = False,
    show_progress: bool = False,
    holdout: HeldOut | None = None,
) -> Path:
    """Train one learned agent for one seed in the training-user simulator; returns its checkpoint.

    With ``holdout`` the agent never sees the held-out items (catalogue churn) and is stored under the
    hold-out's folder."""
    out = agent_dir(run_dir, name, seed, cfg, holdout)
    final = out / AGENT_FILE
    if final.is_file() and not force:
        check_trained_with(final, read_checkpoint(final, formats=(1, CHECKPOINT_VERSION)), name, cfg)
        return final
    trainer = make_trainer(run_dir, name, cfg, seed, out, show_progress, holdout)
    start = time.perf_counter()
    trainer.fit(resume=not force)
    trainer.agent.save(final)
    (out / "train_seconds.txt").write_text(f"{time.perf_counter() - start:.2f}\n")
    return final


def train_one(
    run_dir: RunLike, name: str, cfg: RunConfig, seed: int, force: bool, holdout: HeldOut | None = None
) -> Path:
    """One seed in a worker (the engine gives it one torch thread: seeds share the cores)."""
    return train_agent(run_dir, name, cfg, seed, force=force, show_progress=False, holdout=holdout)


def train_stage(
    run_dir: RunLike,
    cfg: RunConfig,
    agents: list[str],
    seeds: int,
    force: bool,
    holdout: HeldOut | None = None,
    engine: str = "local",
    address: str | None = None,
    progress: Progress = SILENT,
) -> list[tuple[str, int, Path]]:
    """Train every learned agent for every seed; agent-seeds run side by side (eval.jobs workers) as local
    processes or Ray tasks (``engine``; ``address``: an existing Ray cluster). Returns (spec, seed,
    checkpoint) of each, in the order they finished.

    ``holdout`` (a ``HeldOut``): train on the catalogue without the held-out items (catalogue churn)."""
    from hsrl.engine import default_workers, run_jobs

    jobs, seen = [], set()
    for name in agents:
        for seed in range(seeds):
            folder = agent_dir(run_dir, name, seed, cfg, holdout)
            if registry.get(base_name(name)).learned and folder not in seen:  # decode-only variants share weights
                seen.add(folder)
                jobs.append((name, seed))
    trained: list[tuple[str, int, Path]] = []
    workers = min(len(jobs), default_workers(cfg.eval.jobs))
    if workers <= 1 and engine == "local":
        for name, seed in jobs:
            path = train_agent(run_dir, name, cfg, seed, force=force, show_progress=progress.show_bars, holdout=holdout)
            progress.note(f"trained {name} seed {seed}: {path}", "done")
            trained.append((name, seed, path))
        return trained
    if engine == "ray" and cfg.eval.jobs <= 0:
        workers, where = 0, "Ray (one job per CPU of the cluster)"
    else:
        where = f"{workers} Ray workers" if engine == "ray" else f"{workers} processes"
    progress.note(f"training {len(jobs)} agent-seeds on {where}")
    with progress.counting("agent-seeds", len(jobs)) as counter:
        args = [(run_dir, name, cfg, seed, force, holdout) for name, seed in jobs]
        for number, path in run_jobs(train_one, args, workers, engine, address):
            name, seed = jobs[number]
            counter.note(f"trained {name} seed {seed}: {path}", "done")
            counter.advance()
            trained.append((name, seed, path))
    return trained

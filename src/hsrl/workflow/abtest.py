"""A simulated A/B test between two agents of a run, on disjoint halves of its test users."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hsrl.agents import registry
from hsrl.agents.registry import base_name
from hsrl.config import RunConfig
from hsrl.errors import ArtifactError
from hsrl.rundir import RunDir, RunLike
from hsrl.simulator.env import World
from hsrl.workflow.build import TEST_SPLIT, env_for, load_agent
from hsrl.workflow.checkpoints import checkpoint, require_trained


def ab_test_agents(
    run_dir: RunLike,
    cfg: RunConfig,
    control: str,
    treatment: str,
    world: World,
    episodes: int,
    seed: int = 0,
    seeds: int = 1,
) -> dict[str, Any]:
    """Control vs treatment on disjoint halves of the test users, once per training seed 0..seeds-1 (the
    checkpoints of that seed; user split and environment seed ``seed + s``), lifts over all of them."""
    from hsrl.eval.abtest import ab_test

    run = RunDir(run_dir)

    def arm_env(users: np.ndarray, env_seed: int) -> Any:
        return run.env(
            split=TEST_SPLIT,
            world=world,
            batch_users=cfg.env.batch_users,
            seed=30_000 + env_seed,
            reward=cfg.env.reward,
            users=users,
            config=cfg.env,
        )

    probe = env_for(run, cfg, TEST_SPLIT, seed=0, world=world)
    arms = [[load_agent(spec, run, cfg, probe, s) for s in range(seeds)] for spec in (control, treatment)]
    users = run.dataset().users_in(TEST_SPLIT)
    report = ab_test(arm_env, arms[0], arms[1], users, episodes, seed)
    report["world"] = world
    for row in (report, *report["per_seed"]):
        row["control"]["agent"], row["treatment"]["agent"] = control, treatment
    return report


def require_ab_trained(run_dir: RunLike, cfg: RunConfig, arms: list[str], seeds: int) -> None:
    """Both arms trained for seeds 0..seeds-1; the error says how many seeds the test could run on now."""
    try:
        require_trained(run_dir, cfg, arms, seeds)
    except ArtifactError as exc:
        learned = [a for a in arms if registry.get(base_name(a)).learned]
        have = next(
            (s for s in range(seeds) if not all(checkpoint(run_dir, a, s, cfg).is_file() for a in learned)), seeds
        )
        hint = f"; or test the {have} seed(s) trained for both arms: `--seeds {have}`" if have else ""
        raise ArtifactError(f"{exc} (the A/B test uses seeds 0..{seeds - 1}{hint})") from None


def write_ab_test(run_dir: RunLike, report: dict[str, Any]) -> Path:
    """``results/abtest_CONTROL_vs_TREATMENT.json``."""
    from hsrl.io import write_json

    control, treatment = report["control"]["agent"], report["treatment"]["agent"]
    path = RunDir(run_dir).results_dir / f"abtest_{control}_vs_{treatment}.json".replace(":", "_")
    write_json(path, report)
    return path

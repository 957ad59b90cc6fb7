"""The experiment pipeline behind the commands (``hsrl data/sid/simulator/train/evaluate/compare/churn/
abtest/serve/run``): functions of a run directory (a path or a ``hsrl.rundir.RunDir``) and its config that
build its stages and return reports, printing nothing (``progress`` hooks say what they are doing).

- ``stages``: the data, the simulator and its judge, the Semantic ID index, the serving export, and
  ``ensure_stages`` (what agents need, built where missing);
- ``checkpoints``: where each agent variant's checkpoints live, and when one may be reused;
- ``build``: the run's environments, fresh agents (the registry's factories) and trained ones;
- ``training``: one agent-seed, or every agent-seed of a stage side by side (``hsrl.engine``);
- ``evaluation``, ``churn``, ``abtest``: scoring agents on test users, under catalogue churn, in an A/B test;
- ``progress``: the hooks, the ``StageReport`` and ``Results`` the stages return.

Agents per seed live under ``RUN_DIR/agents/NAME/seedS/`` and results under ``RUN_DIR/results/``
(``hsrl.rundir`` owns the layout).
"""

from __future__ import annotations

from typing import Any

from hsrl.agents import registry
from hsrl.agents.registry import agent_config, base_name, option_value, parse_agent, true_click_probs
from hsrl.simulator.env import make_env
from hsrl.workflow.abtest import ab_test_agents, require_ab_trained, write_ab_test
from hsrl.workflow.build import (
    EVAL_SPLIT,
    TEST_SPLIT,
    TRAIN_SPLIT,
    build_agent,
    diagnostic_groups,
    env_for,
    load_agent,
    load_index,
)
from hsrl.workflow.checkpoints import (
    ABLATION,
    EVAL_ONLY,
    agent_dir,
    check_reusable,
    check_trained_with,
    checkpoint,
    config_drift,
    missing_checkpoints,
    require_reusable,
    require_trained,
)
from hsrl.workflow.churn import churn_index, churn_stage, draw_holdout, evaluate_churn
from hsrl.workflow.evaluation import evaluate_agents, evaluate_stage, write_results
from hsrl.workflow.progress import SILENT, Counter, Progress, Results, StageReport
from hsrl.workflow.stages import (
    WORLDS,
    alignment_targets,
    build_index,
    check_same_data,
    ensure_stages,
    export_run,
    index_stats,
    prepare_data,
    prepare_export,
    resolve_worlds,
    simulator_report,
    train_simulator,
    with_tuned,
)
from hsrl.workflow.training import make_trainer, train_agent, train_one, train_stage

__all__ = [
    "ABLATION",
    "EVAL_ONLY",
    "EVAL_SPLIT",
    "SILENT",
    "TEST_SPLIT",
    "TRAIN_SPLIT",
    "WORLDS",
    "Counter",
    "Progress",
    "Results",
    "StageReport",
    "ab_test_agents",
    "agent_config",
    "agent_dir",
    "base_name",
    "build_agent",
    "alignment_targets",
    "build_index",
    "check_reusable",
    "check_same_data",
    "check_trained_with",
    "checkpoint",
    "churn_index",
    "churn_stage",
    "config_drift",
    "diagnostic_groups",
    "draw_holdout",
    "ensure_stages",
    "env_for",
    "evaluate_agents",
    "evaluate_churn",
    "evaluate_stage",
    "export_run",
    "index_stats",
    "load_agent",
    "load_index",
    "make_env",
    "make_trainer",
    "missing_checkpoints",
    "option_value",
    "parse_agent",
    "prepare_data",
    "prepare_export",
    "registry",
    "require_ab_trained",
    "require_reusable",
    "require_trained",
    "resolve_worlds",
    "simulator_report",
    "train_agent",
    "train_one",
    "train_simulator",
    "train_stage",
    "true_click_probs",
    "with_tuned",
    "write_ab_test",
    "write_results",
]


def __getattr__(name: str) -> Any:
    """``AGENTS`` (every registered agent) and ``LEARNED``, read from the registry when asked for."""
    if name == "AGENTS":
        return registry.names()
    if name == "LEARNED":
        return registry.learned_names()
    raise AttributeError(f"module 'hsrl.workflow' has no attribute '{name}'")

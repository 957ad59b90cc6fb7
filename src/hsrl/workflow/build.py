"""The run's environments and agents: an environment per split, seed and judge (``env_for``), a fresh
agent of a spec (``build_agent``, the registry's factory on the run's artefacts), a trained one from its
checkpoint (``load_agent``) and the item groups of the dynamics diagnostics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch

from hsrl.agents import Agent, registry
from hsrl.agents.base import CHECKPOINT_VERSION, read_checkpoint
from hsrl.agents.registry import agent_config, base_name
from hsrl.config import RunConfig
from hsrl.errors import ArtifactError
from hsrl.rundir import RunDir, RunLike
from hsrl.workflow.checkpoints import check_trained_with, checkpoint

if TYPE_CHECKING:
    from hsrl.eval.churn import HeldOut
    from hsrl.sid.index import SemanticIDIndex
    from hsrl.simulator.catalogue import CatalogueView
    from hsrl.simulator.env import SlateEnv, World

TRAIN_SPLIT, EVAL_SPLIT, TEST_SPLIT = "train", "val", "test"


def load_index(run_dir: RunLike) -> SemanticIDIndex:
    return RunDir(run_dir).index()


def env_for(run_dir: RunLike, cfg: RunConfig, split: str, seed: int, world: str | None = None) -> SlateEnv:
    """The run's environment for one split, seed and judge (default: the config's ``env.world``), under the
    ``env`` section of ``cfg``."""
    return RunDir(run_dir).env(split=split, world=cast("World", world or cfg.env.world), seed=seed, config=cfg.env)


def build_agent(
    spec: str,
    run_dir: RunLike,
    cfg: RunConfig,
    env: SlateEnv | CatalogueView,
    seed: int,
    index: SemanticIDIndex | None = None,
) -> Agent:
    """A fresh agent of kind ``spec`` (a registered name, optionally with ``:key=value+...`` options);
    the registry's factory of that agent builds it (``hsrl.agents.registry.build``) on the run's artefacts.

    ``env`` may be a ``CatalogueView`` (catalogue churn): logged data is then re-indexed to its items,
    and ``index`` is the Semantic ID index of those items (default: the run's index).
    """
    return registry.build(spec, RunDir(run_dir), cfg, env, seed, index)


def diagnostic_groups(run_dir: RunLike, order: Any = None) -> dict[str, torch.Tensor]:
    """Item groups for the dynamics diagnostics: the level-1 token of the run's Semantic IDs
    (``repeat_share``) and, on synthetic data, the true topic (``topic_repeat_share``). Over the world's
    item indices, or a ``CatalogueView``'s when given its ``order``. Read once per evaluation."""
    run = RunDir(run_dir)
    groups = {}
    if run.index_file.is_file():
        groups["repeat_share"] = torch.as_tensor(run.index().codes[:, 0])
    if run.has_world:
        groups["topic_repeat_share"] = torch.as_tensor(run.world().item_topic)
    if order is not None:
        groups = {name: g[torch.as_tensor(order)] for name, g in groups.items()}
    return groups


def load_agent(
    name: str,
    run_dir: RunLike,
    cfg: RunConfig,
    env: SlateEnv | CatalogueView,
    seed: int,
    holdout: HeldOut | None = None,
    index: SemanticIDIndex | None = None,
) -> Agent:
    """A trained agent from its checkpoint (references are built), on ``env``'s catalogue and device.

    The spec's agent section is the one built with (decode-only options share the plain agent's weights);
    ``index`` replaces the checkpoint's Semantic ID index (catalogue churn grows its own copy)."""
    if not registry.get(base_name(name)).learned:
        return build_agent(name, run_dir, cfg, env, seed, index)
    path = checkpoint(run_dir, name, seed, cfg, holdout)
    blob = read_checkpoint(path, formats=(1, CHECKPOINT_VERSION))  # read once, whatever its format
    check_trained_with(path, blob, name, cfg)
    if blob["version"] == 1:  # an older hsrl's file, without its constructor inputs: rebuilt from the run
        agent = build_agent(name, run_dir, cfg, env, seed, index)
        try:
            agent.load_state_dict(blob["state"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ArtifactError(f"{path}: checkpoint does not fit this agent/catalogue ({exc})") from None
        return agent
    agent = Agent.from_checkpoint(blob, path, config=agent_config(name, cfg), device=env.item_features.device)
    agent.set_catalogue(env.item_features, index)
    return agent

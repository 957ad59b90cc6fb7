"""The experiment workflow behind `hsrl train`, `hsrl evaluate` and `hsrl run`.

It wires the stages together through the run directory: the prepared dataset, the trained
simulator (or the true world), the Semantic ID index, agents per seed under
``RUN_DIR/agents/NAME/seedS/``, and evaluation results under ``RUN_DIR/results/``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, cast

import torch

from hsrl.agents import Agent, registry
from hsrl.agents.base import CHECKPOINT_VERSION, read_checkpoint
from hsrl.agents.registry import agent_config, base_name, fatigue_blind_probs, option_value, parse_agent  # noqa: F401  (names used by importers)
from hsrl.config import RunConfig
from hsrl.errors import ArtifactError
from hsrl.eval.churn import PHASES, HeldOut
from hsrl.eval.evaluate import evaluate, summary
from hsrl.eval.report import aggregate, versions, write_report
from hsrl.rundir import INDEX_FILE, RunDir
from hsrl.sid.build import build_for_dataset, index_features
from hsrl.sid.index import SemanticIDIndex
from hsrl.simulator.catalogue import CatalogueView
from hsrl.simulator.env import World, make_env
from hsrl.train.loop import Trainer

INDEX_PATH = INDEX_FILE  # the name the churn folders reuse
TRAIN_SPLIT, EVAL_SPLIT, TEST_SPLIT = "train", "val", "test"


EVAL_ONLY = ("decode", "beam")  # agent options that change decoding, not training: share checkpoints
# one factor at a time around the run's HSRL config (a spec equal to the config shares its checkpoints):
# what each part is worth, without a full factorial grid that 2 cores cannot train in a session
ABLATION = [
    *(f"hsrl:token_heads={h}" for h in ("semantic", "free")),
    *(f"hsrl:credit={c}" for c in ("item", "token", "slate")),
    "hsrl:exposure=false",
    "hsrl:click_loss=0",
    "hsrl:residual=soft",
    "hsrl:decode=score_all",
]


def _same_value(current: Any, option: str) -> bool:
    """Does a spec option (``credit=item``, ``exposure=false``, ``click_loss=1``) repeat the config's value?"""
    import yaml

    try:
        parsed = yaml.safe_load(option)
    except yaml.YAMLError:
        return False
    return parsed == current or str(current) == option


def agent_dir(
    run_dir: Path, spec: str, seed: int, cfg: RunConfig | None = None, holdout: HeldOut | None = None
) -> Path:
    """Checkpoints of one agent variant. Options that only change decoding, or that repeat the run's own
    config (``hsrl:residual=hard`` when residual is already hard), share the plain agent's weights.
    Agents trained without a hold-out's items (catalogue churn) live in that hold-out's folder."""
    name, options = parse_agent(spec)
    tuned = options.pop(registry.TUNED, None) is not None
    # an option is "the same" when it repeats what the agent would use anyway (its tuned values, if tuned)
    ref = None if cfg is None else agent_config(f"{name}:{registry.TUNED}", cfg) if tuned else cfg.agent
    same = {k for k, v in options.items() if ref is not None and _same_value(option_value(ref, name, k), v)}
    kept = [f"{k}={v}" for k, v in sorted(options.items()) if k not in EVAL_ONLY and k not in same]
    if tuned:  # named after the tuned values: re-tuning never reuses the old weights
        kept.insert(0, f"tuned-{registry.tuned_tag(spec, cfg)}" if cfg is not None else "tuned")
    folder = name + ("-" + "-".join(kept) if kept else "")
    root = holdout.root(run_dir) if holdout is not None else Path(run_dir)
    return RunDir(root).agent_dir(folder, seed)


def config_drift(saved: dict[str, Any], spec: str, cfg: RunConfig) -> list[str]:
    """The options of the spec's agent whose value when its checkpoint was trained (``saved``, that
    agent section) differs from what the spec gives now, or that did not exist then: the shared fields
    (but the decode-only ones) and the agent's own section, never another agent's. Old keys in ``saved``
    are migrated first (e.g. per-coordinate DDPG noise, converted exactly)."""
    from hsrl.config import AgentConfig, Section

    name = base_name(spec)
    now = agent_config(spec, cfg)
    try:
        then = AgentConfig.model_validate(saved)
    except ValueError:
        return ["the saved agent section (no longer a valid config)"]
    sections = {k for k, f in AgentConfig.model_fields.items() if isinstance(getattr(now, k), Section)}
    drift = []
    for key in AgentConfig.model_fields:
        if key in ("name", *EVAL_ONLY) or (key in sections and key != name):
            continue
        if key in sections:
            own, own_then = getattr(now, key), getattr(then, key)
            raw: dict[str, Any] = saved[key] if isinstance(saved.get(key), dict) else {}
            for sub in type(own).model_fields:
                if getattr(own, sub) != getattr(own_then, sub) or (sub not in raw and not _renamed(key, sub, raw)):
                    drift.append(f"{key}.{sub}")
        elif getattr(now, key) != getattr(then, key) or key not in saved:
            drift.append(key)
    return drift


def _renamed(section: str, key: str, raw: dict[str, Any]) -> bool:
    """Was ``key`` saved under its old name (converted by the config's migration)?"""
    from hsrl.config import PER_COORDINATE_NOISE

    return section in ("ddpg", "td3") and any(new == key and old in raw for old, new in PER_COORDINATE_NOISE.items())


def check_trained_with(path: Path, blob: dict[str, Any], spec: str, cfg: RunConfig) -> None:
    """A checkpoint is reused (trained or scored) only under the config it was trained with."""
    saved = blob.get("inputs", {}).get("config") if blob.get("version") != 1 else None
    if saved is None:
        return  # an older format without its config: nothing to compare
    drift = config_drift(saved, spec, cfg)
    if drift:
        raise ArtifactError(
            f"{path}: trained with another config of {base_name(spec)} than the one asked for now (differs or was not"
            f" there yet: {', '.join(drift)}); retrain it with --force, or restore that config"
        )


def check_reusable(
    run_dir: Path, cfg: RunConfig, agents: list[str], seeds: int, holdout: HeldOut | None = None
) -> None:
    """Every checkpoint that training would reuse fits today's config (else an error naming it and --force).
    Commands call it before they write anything, so a refused run leaves the run directory as it was."""
    for spec in agents:
        if not registry.get(base_name(spec)).learned:
            continue
        for seed in range(seeds):
            path = agent_dir(run_dir, spec, seed, cfg, holdout) / "agent.pt"
            if path.is_file():
                check_trained_with(path, read_checkpoint(path, formats=(1, CHECKPOINT_VERSION)), spec, cfg)


def load_index(run_dir: Path) -> SemanticIDIndex:
    return RunDir(run_dir).index()


def env_for(run_dir: Path, cfg: RunConfig, split: str, seed: int, world: str | None = None):
    """The run's environment for one split, seed and judge (default: the config's ``env.world``)."""
    return make_env(
        run_dir,
        split=split,
        world=cast(World, world or cfg.env.world),
        batch_users=cfg.env.batch_users,
        seed=seed,
        reward=cfg.env.reward,
    )


def build_agent(
    spec: str, run_dir: Path, cfg: RunConfig, env, seed: int, index: SemanticIDIndex | None = None
) -> Agent:
    """A fresh agent of kind ``spec`` (a registered name, optionally with ``:key=value+...`` options);
    the registry's factory of that agent builds it (``hsrl.agents.registry.build``).

    ``env`` may be a ``CatalogueView`` (catalogue churn): logged data is then re-indexed to its items,
    and ``index`` is the Semantic ID index of those items (default: the run's index).
    """
    return registry.build(spec, run_dir, cfg, env, seed, index)


def diagnostic_groups(run_dir: Path, order: Any = None) -> dict[str, torch.Tensor]:
    """Item groups for the dynamics diagnostics: the level-1 token of the run's Semantic IDs
    (``repeat_share``) and, on synthetic data, the true topic (``topic_repeat_share``). Over the world's
    item indices, or a ``CatalogueView``'s when given its ``order``. Read once per evaluation."""
    from hsrl.data.synthetic import WORLD_FILE

    groups = {}
    if (Path(run_dir) / INDEX_PATH).is_file():
        groups["repeat_share"] = torch.as_tensor(load_index(run_dir).codes[:, 0])
    if (Path(run_dir) / WORLD_FILE).is_file():
        groups["topic_repeat_share"] = torch.as_tensor(RunDir(run_dir).world().item_topic)
    if order is not None:
        groups = {name: g[torch.as_tensor(order)] for name, g in groups.items()}
    return groups


def make_trainer(
    run_dir: Path,
    spec: str,
    cfg: RunConfig,
    seed: int,
    out_dir: Path,
    show_progress: bool = True,
    holdout: HeldOut | None = None,
    callbacks: list[Any] | None = None,
) -> Trainer:
    """A fresh agent of ``spec`` and its trainer: training users of the run's training world, seed ``seed``,
    periodic scores on validation users (seed 10_000 + seed). One setup for ``train_agent`` and the tuning
    trials, so a tuned trial trains exactly as the final run of the same values and seed would."""

    def make(split: str, env_seed: int):
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
    run_dir: Path,
    name: str,
    cfg: RunConfig,
    seed: int,
    force: bool = False,
    show_progress: bool = True,
    holdout: HeldOut | None = None,
) -> Path:
    """Train one learned agent for one seed in the training-user simulator; returns its checkpoint.

    With ``holdout`` the agent never sees the held-out items (catalogue churn) and is stored under the
    hold-out's folder."""
    out = agent_dir(run_dir, name, seed, cfg, holdout)
    final = out / "agent.pt"
    if final.is_file() and not force:
        check_trained_with(final, read_checkpoint(final, formats=(1, CHECKPOINT_VERSION)), name, cfg)
        return final
    trainer = make_trainer(run_dir, name, cfg, seed, out, show_progress, holdout)
    start = time.perf_counter()
    trainer.fit(resume=not force)
    trainer.agent.save(final)
    (out / "train_seconds.txt").write_text(f"{time.perf_counter() - start:.2f}\n")
    return final


def load_agent(
    name: str,
    run_dir: Path,
    cfg: RunConfig,
    env,
    seed: int,
    holdout: HeldOut | None = None,
    index: SemanticIDIndex | None = None,
) -> Agent:
    """A trained agent from its checkpoint (references are built), on ``env``'s catalogue and device.

    The spec's agent section is the one built with (decode-only options share the plain agent's weights);
    ``index`` replaces the checkpoint's Semantic ID index (catalogue churn grows its own copy)."""
    if not registry.get(base_name(name)).learned:
        return build_agent(name, run_dir, cfg, env, seed, index)
    path = agent_dir(run_dir, name, seed, cfg, holdout) / "agent.pt"
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


def churn_index(run_dir: Path, cfg: RunConfig, holdout: HeldOut) -> SemanticIDIndex:
    """Semantic IDs of the kept items only (codebooks never see the held-out ones); built once."""
    holdout.check(run_dir)  # a folder written for another catalogue is an error, not a silent mix
    path = holdout.root(run_dir) / INDEX_PATH
    if path.is_file():
        return SemanticIDIndex.load(path)
    index = build_for_dataset(RunDir(run_dir).dataset(), cfg.sid, holdout.order[: holdout.n_kept])
    holdout.save(run_dir)
    index.save(path)
    return index


def evaluate_churn(
    run_dir: Path, cfg: RunConfig, agents: list[str], seeds: int, worlds: list[str], episodes: int, holdout: HeldOut
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


def evaluate_agents(
    run_dir: Path,
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
                import json

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


def ab_test_agents(
    run_dir: Path,
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

    def arm_env(users, env_seed):
        return make_env(
            run_dir,
            split=TEST_SPLIT,
            world=world,
            batch_users=cfg.env.batch_users,
            seed=30_000 + env_seed,
            reward=cfg.env.reward,
            users=users,
        )

    probe = env_for(run_dir, cfg, TEST_SPLIT, seed=0, world=world)
    arms = [[load_agent(spec, run_dir, cfg, probe, s) for s in range(seeds)] for spec in (control, treatment)]
    users = RunDir(run_dir).dataset().users_in(TEST_SPLIT)
    report = ab_test(arm_env, arms[0], arms[1], users, episodes, seed)
    report["world"] = world
    for row in (report, *report["per_seed"]):
        row["control"]["agent"], row["treatment"]["agent"] = control, treatment
    return report


def write_results(run_dir: Path, payload: dict[str, Any]) -> dict[str, Path]:
    return write_report(RunDir(run_dir).results_dir, payload)


def __getattr__(name: str) -> Any:
    """``AGENTS`` (every registered agent) and ``LEARNED``, read from the registry when asked for."""
    if name == "AGENTS":
        return registry.names()
    if name == "LEARNED":
        return registry.learned_names()
    raise AttributeError(f"module 'hsrl.workflow' has no attribute '{name}'")

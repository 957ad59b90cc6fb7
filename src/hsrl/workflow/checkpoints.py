"""Where each agent variant's checkpoints live, and when a checkpoint may be reused: only under the
config it was trained with (``check_trained_with``), checked before a command writes anything."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsrl.agents import registry
from hsrl.agents.base import CHECKPOINT_VERSION, read_checkpoint
from hsrl.agents.registry import agent_config, base_name, option_value, parse_agent
from hsrl.config import RunConfig
from hsrl.errors import ArtifactError
from hsrl.rundir import AGENT_FILE, RunDir, RunLike

if TYPE_CHECKING:
    from hsrl.eval.churn import HeldOut

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
    run_dir: RunLike, spec: str, seed: int, cfg: RunConfig | None = None, holdout: HeldOut | None = None
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
    run = RunDir(run_dir)
    root = RunDir(run.churn_root(holdout)) if holdout is not None else run
    return root.agent_dir(folder, seed)


def checkpoint(
    run_dir: RunLike, spec: str, seed: int, cfg: RunConfig | None = None, holdout: HeldOut | None = None
) -> Path:
    """The trained agent's file in its ``agent_dir``."""
    return agent_dir(run_dir, spec, seed, cfg, holdout) / AGENT_FILE


def config_drift(saved: dict[str, Any], spec: str, cfg: RunConfig) -> list[str]:
    """The options of the spec's agent whose value when its checkpoint was trained (``saved``, that
    agent section) differs from what the spec gives now, or that did not exist then: the shared fields
    (but the decode-only ones) and the agent's own section, never another agent's. Old keys in ``saved``
    are migrated first (e.g. per-coordinate DDPG noise, converted exactly)."""
    from hsrl.config import AgentConfig, Section

    name = base_name(spec)
    now = agent_config(spec, cfg)
    try:
        then = AgentConfig.model_validate(_with_old_behaviour(saved))
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
                absent = sub not in raw and not _known_absent(key, sub, raw, own)
                if getattr(own, sub) != getattr(own_then, sub) or absent:
                    drift.append(f"{key}.{sub}")
        elif getattr(now, key) != getattr(then, key) or (key not in saved and not _known_absent("", key, {}, now)):
            drift.append(key)
    return drift


def _with_old_behaviour(saved: dict[str, Any]) -> dict[str, Any]:
    """``saved`` with every key added since given the value it had before (not today's default, which may
    differ: distill is on by default now, and a checkpoint without the key was trained without it)."""
    from hsrl.config import ADDED_WITH_OLD_BEHAVIOUR

    out = {**ADDED_WITH_OLD_BEHAVIOUR.get("agent", {}), **saved}
    for path, added in ADDED_WITH_OLD_BEHAVIOUR.items():
        section = path.removeprefix("agent.")
        if path.startswith("agent.") and isinstance(out.get(section), dict):
            out[section] = {**added, **out[section]}
    return out


def _known_absent(section: str, key: str, raw: dict[str, Any], now: Any) -> bool:
    """A key missing from a saved section that still matches: saved under its old name (converted by the
    config's migration), or added later with a value that reproduces the old behaviour, the one asked for now."""
    from hsrl.config import ADDED_WITH_OLD_BEHAVIOUR, PER_COORDINATE_NOISE

    added = ADDED_WITH_OLD_BEHAVIOUR.get(f"agent.{section}" if section else "agent", {})
    if key in added:
        return bool(getattr(now, key) == added[key])
    return any(new == key and old in raw for old, new in PER_COORDINATE_NOISE.items())  # DDPG/TD3 noise keys


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
    run_dir: RunLike, cfg: RunConfig, agents: list[str], seeds: int, holdout: HeldOut | None = None
) -> None:
    """Every checkpoint that training would reuse fits today's config (else an error naming it and --force).
    Commands call it before they write anything, so a refused run leaves the run directory as it was."""
    for spec in agents:
        if not registry.get(base_name(spec)).learned:
            continue
        for seed in range(seeds):
            path = checkpoint(run_dir, spec, seed, cfg, holdout)
            if path.is_file():
                check_trained_with(path, read_checkpoint(path, formats=(1, CHECKPOINT_VERSION)), spec, cfg)


def require_reusable(
    run_dir: RunLike, cfg: RunConfig, agents: list[str], seeds: int, force: bool, holdout: HeldOut | None = None
) -> None:
    """Without ``force``, checkpoints are reused: each must fit today's config (checked before any write)."""
    if not force and RunDir(run_dir).has_dataset:
        check_reusable(run_dir, cfg, agents, seeds, holdout)


def missing_checkpoints(run_dir: RunLike, cfg: RunConfig, agents: list[str], seeds: int) -> list[tuple[str, int]]:
    """(spec, seed) of every learned agent-seed without a trained checkpoint."""
    return [
        (name, seed)
        for name in agents
        if registry.get(base_name(name)).learned
        for seed in range(seeds)
        if not checkpoint(run_dir, name, seed, cfg).is_file()
    ]


def require_trained(run_dir: RunLike, cfg: RunConfig, agents: list[str], seeds: int) -> None:
    """Scoring never trains agents: name every missing checkpoint up front, before any stage is built."""
    missing = missing_checkpoints(run_dir, cfg, agents, seeds)
    if missing:
        listed = ", ".join(f"{name} seed {seed}" for name, seed in missing)
        todo = ",".join(dict.fromkeys(name for name, _ in missing))
        raise ArtifactError(
            f"{run_dir}: no trained agent for {listed}; `hsrl compare {run_dir} --agents {todo} --seeds {seeds}`"
            " trains what is missing and evaluates (or `hsrl train` one agent)"
        )

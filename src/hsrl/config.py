"""Typed run configuration: defaults in code, YAML files on top, ``--set a.b=value`` overrides last.

Every stage reads its own section; the merged config is saved as ``config.yaml`` in the run directory
so that a run can be reproduced and later stages use what earlier ones used.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hsrl.errors import ConfigError

CONFIG_FILE = "config.yaml"  # what save_config writes in the folder it is given (hsrl.rundir places it)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticConfig(Section):
    """The ground-truth world of the embedded default dataset (DESIGN §4)."""

    n_users: int = Field(1500, ge=10)
    n_items: int = Field(300, ge=10)
    latent_dim: int = Field(8, ge=2)
    feature_dim: int = Field(16, ge=2)
    profile_dim: int = Field(8, ge=1)
    feature_noise: float = Field(0.1, ge=0.0)
    profile_noise: float = Field(0.1, ge=0.0)
    sessions_per_user: int = Field(3, ge=1)
    behaviour_noise: float = Field(1.0, ge=0.0, description="temperature of the popularity+noise logger")
    position_bias: float = Field(
        0.0,
        ge=0.0,
        description="click logit falls by position_bias * log2(1 + slot) (slot 0 first); 0 = order does not matter",
    )


class DataConfig(Section):
    dataset: Literal["synthetic", "ml-100k", "ml-1m", "rl4rs", "csv"] = "synthetic"
    source: str | None = Field(None, description="path to the raw files (ML, RL4RS, csv); None = fetch/embedded")
    item_source: str | None = Field(None, description="item feature file (RL4RS item_info.csv, csv items)")
    slate_size: int = Field(9, ge=1)
    history_length: int = Field(50, ge=1)
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    click_threshold: float = Field(4.0, description="MovieLens: rating >= threshold counts as a click")
    text_features: bool = False
    unknown_items: Literal["error", "drop"] = Field(
        "error",
        description="logged rows naming an item missing from the item file (csv, rl4rs): error = stop at the first;"
        " drop = drop those rows (a whole slate with slate ids) and report how many in the dataset summary",
    )
    seed: int = 0
    synthetic: SyntheticConfig = SyntheticConfig()


class SimulatorConfig(Section):
    """User response model (DESIGN §5); defaults tuned on the synthetic default and ML-100K."""

    dim: int = Field(32, ge=4)
    heads: int = Field(4, ge=1)
    clusters: int = Field(
        32,
        ge=1,
        description="soft item clusters of the satiation term (k-means start; 32 > 16 > 9 on the synthetic default)",
    )
    satiation_lr: float = Field(
        3.0,
        gt=0,
        description="learning-rate factor of the satiation term's per-item cluster memberships and cluster links"
        " (1 = the common rate, before 2026-12). On the synthetic default 3 lifts top-K by the simulator from 3.34"
        " to 3.70 in the true world (0.68 -> 0.75 x the oracle; 10: 3.70, 30: 3.70, 100: 2.11;"
        " bench/satiation_lr.py, 3 simulator seeds); no AUC change on ML-100K (configs/ml100k.yaml keeps 1)",
    )
    cluster_sharpness: float = Field(
        0.5,
        gt=0,
        description="how close to one-hot the satiation clusters start: a factor on the k-means start's soft"
        " nearest-centroid assignment (1 = before 2026-12). Softer starts let each item's memberships move: on the"
        " synthetic default 0.5 lifts val AUC 0.8160 -> 0.8191 and top-K by the simulator in the true world 3.66 ->"
        " 3.82 on val users, 3.70 -> 3.95 on test users (3 simulator seeds; 0.25: 0.8181, 3.82, 4.00;"
        " bench/satiation_lr.py --key cluster_sharpness); configs/ml100k.yaml keeps 1",
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="0.1 gave the same AUC on both datasets, 30% slower")
    epochs: int = Field(30, ge=1, description="at most; training stops early on validation AUC")
    batch_size: int = Field(256, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    lr_decay: float = Field(0.3, gt=0, le=1, description="learning rate factor after an epoch without a better val AUC")
    patience: int = Field(4, ge=1, description="epochs without a better validation AUC before stopping")
    slots: Literal["off", "bias", "context"] = Field(
        "context",
        description="slot terms: off = slate order ignored; bias = a learned logit per slot; context = bias plus a"
        " per-slot scale of the content score and a per-slot read-out of the user vector (examination varies by user)",
    )

    @field_validator("slots", mode="before")
    @classmethod
    def _off_is_not_false(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false

    select: bool = Field(
        False, description="train a handful of settings (lr, weight decay, dropout, width) and keep the best val AUC"
    )
    fidelity_margin: float = Field(
        0.01, ge=0.0, description="val/test AUC the simulator must beat every floor by, else it is flagged"
    )
    seed: int = 0


class EnvConfig(Section):
    batch_users: int = Field(32, ge=1)
    reward: Literal["mean_with_cost", "sweet_point"] = "mean_with_cost"
    click_cost: float = 0.1
    sweet_target: float = Field(0.9, description="sweet_point reward: the mean_with_cost value that scores best")
    temper: float = Field(20.0, gt=0)
    world: Literal["simulator", "true"] = "simulator"


class SIDConfig(Section):
    levels: int = Field(3, ge=1)
    codes: int | None = Field(None, ge=2, description="codes per level; None = chosen from the catalogue size")
    balanced: bool = False
    normalize: bool = True
    kmeans_iters: int = Field(25, ge=1)
    seed: int = 0
    disambiguation: int | None = Field(
        None, ge=1, description="capacity D of the last (disambiguation) token; None = 2x the largest collision group"
    )
    text: bool = Field(False, description="build on item-text embeddings (needs the 'text' extra) instead of features")
    align: float = Field(
        3.0,
        ge=0,
        description="weight of the aligned block in what the codebooks quantise: a ridge map of the features onto"
        " the training simulator's satiation clusters (which items bore together), fitted on the indexed items"
        " and frozen, so new items are still coded from features; needs the simulator first; 0 = features only"
        " (the reference). 3: level-1 codes share 0.60 adjusted mutual information with the true topics of the"
        " synthetic default, against 0.39 from features",
    )


# The learned baselines' own hyper-parameters, one section each (``agent.hac.actor_lr``), tuned on the
# synthetic default at the HSRL budget (2000 env steps of 32 users). gamma, tau, weight decay and the
# encoder shape are HSRL's (the ``agent`` section itself).


class SLConfig(Section):
    lr: float = Field(1e-3, gt=0, description="Adam lr of the click scorer trained on logged slates")
    replay: float = Field(
        0.0,
        ge=0,
        description="weight of the BCE on replayed slates (its own slates in the training simulator, every shown"
        " slot, clicked or skipped: the per-item click signal HSRL's click loss reads); 0 = logs only. Above 0"
        " SL explores by sampling its slates from its click logits instead of serving the greedy one",
    )
    satiation: bool = Field(
        False,
        description="add a per-candidate satiation term to the click logit: the cosine similarity of the"
        " candidate's features to each history entry, weighted by a learned weight per history position and"
        " feedback (the kind of term the learned simulator has); false = the dot-product scorer alone",
    )


class A2CConfig(Section):
    actor_lr: float = Field(3e-3, gt=0)
    critic_lr: float = Field(1e-3, gt=0)
    entropy: float = Field(0.01, ge=0, description="entropy bonus of the softmax over item ids")
    clip: float = Field(0.2, gt=0, description="ratio clip on replayed transitions (as HSRL)")
    click_loss: float = Field(
        1.0,
        ge=0,
        description="weight of the BCE of each shown slot's click on its item's logit, skipped slots included "
        "(HSRL's click loss, default agent.click_loss's); 0 = off",
    )
    supervision: float = Field(
        0.0,
        ge=0,
        description="weight of the log-likelihood of clicked items on replayed slates (HSRL's, default "
        "agent.supervision's, 0 since distill: the teacher ranks what the clicks only confirm); 0 = off",
    )


# keys added to a section (by its dotted path) after artefacts were made without them, with the value that
# reproduces what those artefacts did. An agent section's: a checkpoint without the key is reusable under
# that value (any other added key makes it stale). A run-level section's (``sid``, ``simulator``): a run's
# saved config without the key reads as that value once the run has the artefact (its index, its
# simulator). Either way, a tuning study's hash does not change at that value.
ADDED_WITH_OLD_BEHAVIOUR: dict[str, dict[str, Any]] = {
    "simulator": {"satiation_lr": 1.0, "cluster_sharpness": 1.0},
    "agent": {"distill": 0.0, "distill_temperature": 0.5, "distill_states": 0},
    "agent.sl": {"replay": 0.0, "satiation": False},
    "sid": {"align": 0.0},
}

# DDPG/TD3 noise used to be a per-coordinate std on the unit action (so its angle grew with the dimension:
# 0.1 was 14 degrees at dim 8, 30 at dim 32, 48 at dim 128); the *_size keys are sizes of the whole
# perturbation, whatever the dimension. A config.yaml (or spec) with an old key is converted exactly, with the
# agent's dim: size = per-coordinate std x sqrt(dim), so an old run explores as it did.
PER_COORDINATE_NOISE: dict[str, str] = {"noise": "noise_size", "target_noise": "target_noise_size",
                                        "noise_clip": "noise_clip_size"}  # fmt: skip


class DDPGConfig(Section):
    actor_lr: float = Field(1e-3, gt=0)
    critic_lr: float = Field(1e-3, gt=0)
    noise_size: float = Field(
        0.57,
        ge=0,
        description="exploration: RMS length of the Gaussian noise on the unit action (std noise_size/sqrt(dim) per"
        " coordinate), a turn of about atan(noise_size) in any dimension; 0.57 (30 degrees) is the old per-coordinate"
        " 0.1 at dim 32. Measured (tiny world, dim 32, 5 seeds, x random): 0.3 1.2, 0.57 1.7, 0.8 2.2, 1.0 1.7",
    )


class TD3Config(DDPGConfig):
    target_noise_size: float = Field(
        0.5,
        ge=0,
        description="target policy smoothing: RMS length of the noise on the unit target action (per coordinate"
        " target_noise_size/sqrt(dim)), about atan(0.5) = 27 degrees. Was a per-coordinate 0.2 (48 degrees at dim"
        " 32); measured (tiny world, dim 32, 600 steps, 5 seeds): 0.2 2.2x random, 0.5 2.7x, the old 48 degrees 2.3x",
    )
    noise_clip_size: float = Field(
        1.25,
        ge=0,
        description="clip of the smoothing noise, scaled like it (noise_clip_size/sqrt(dim) per coordinate): 2.5x"
        " target_noise_size, the TD3 paper's ratio (0.5 / 0.2). Was 0.5 per coordinate",
    )
    policy_delay: int = Field(2, ge=1, description="critic updates per actor/target update")


class HACConfig(Section):
    actor_lr: float = Field(1e-4, gt=0)
    critic_lr: float = Field(1e-3, gt=0)
    noise: float = Field(0.1, ge=0, description="std of the Gaussian noise on the hyper-action")
    hyper_coef: float = Field(0.1, ge=0, description="weight of the hyper/effect-action alignment loss")
    behavior_lr: float = Field(1e-3, ge=0, description="Adam lr of the supervision (BCE) step; 0 = off")


class GRPOConfig(Section):
    """GRPO (``hsrl.agents.grpo``): HSRL's SID policy, warm-started on logged clicks, then fine-tuned with
    group-relative advantages of slates scored by the training simulator. Its network shape and decoding
    are the shared agent section's (dim, layers, heads, residual, token_heads, exposure, decode, beam)."""

    lr: float = Field(2e-3, gt=0, description="Adam lr of the RL phase (HSRL's tuned actor lr)")
    group: int = Field(8, ge=2, description="G: slates sampled per replayed state, advantages normalised within")
    states: int = Field(
        32,
        ge=1,
        description="replayed states per GRPO step (of train.batch_size): 32 x G=8 = 256 scored slates cost 2.3x an"
        " HSRL update, all 128 states 7.1x (bench/update_cost.py: 462 and 1424 ms vs 201 ms)",
    )
    epochs: int = Field(2, ge=1, description="passes over each sampled group batch (the first has ratios of 1)")
    clip: float = Field(0.2, gt=0, description="PPO ratio clip against the sampling policy")
    kl: float = Field(0.05, ge=0, description="weight of the KL (k3 estimate) to the frozen reference policy")
    entropy: float = Field(0.0, ge=0, description="entropy bonus of the per-level token distributions")
    warm_start: int = Field(
        200,
        ge=0,
        description="first updates: SID likelihood of the training users' logged clicks; then the"
        " reference is frozen and RL begins (0 = the reference is the untrained policy)",
    )
    warm_lr: float = Field(2e-3, gt=0, description="Adam lr of the warm start")


# agent.baseline.<old key> (hsrl <= 0.1 configs) -> (its section, its key) now
MOVED_BASELINE_KEYS: dict[str, tuple[str, str]] = {
    "sl_lr": ("sl", "lr"),
    **{f"a2c_{k}": ("a2c", k) for k in ("actor_lr", "critic_lr", "entropy", "clip")},
    **{f"ddpg_{k}": ("ddpg", k) for k in ("actor_lr", "critic_lr")},  # TD3 read these too
    # the old per-coordinate keys (agent.ddpg.noise, ...), which a config still accepts and converts exactly
    "ddpg_noise": ("ddpg", "noise"),
    "td3_target_noise": ("td3", "target_noise"),
    "td3_noise_clip": ("td3", "noise_clip"),
    "td3_policy_delay": ("td3", "policy_delay"),
    **{f"hac_{k}": ("hac", k) for k in ("actor_lr", "critic_lr", "noise", "hyper_coef", "behavior_lr")},
}
_SECTIONS: dict[str, type[Section]] = {"sl": SLConfig, "a2c": A2CConfig, "ddpg": DDPGConfig, "td3": TD3Config,
                                       "hac": HACConfig}  # fmt: skip
# the old flat keys' defaults are the new sections' (no baseline changed with the move), except the DDPG/TD3
# noise sizes, whose meaning and defaults changed later (per-coordinate std -> size independent of dim): an old
# config.yaml holds these old values, and still loads as one that kept every default
OLD_BASELINE_DEFAULTS: dict[str, Any] = {
    **{
        old: _SECTIONS[section].model_fields[key].default
        for old, (section, key) in MOVED_BASELINE_KEYS.items()
        if key in _SECTIONS[section].model_fields
    },
    "ddpg_noise": 0.1,
    "td3_target_noise": 0.2,
    "td3_noise_clip": 0.5,
}


def _new_key(old: str) -> str:
    section, key = MOVED_BASELINE_KEYS[old]
    return f"agent.{section}.{key}" + (f" (and agent.td3.{key})" if section == "ddpg" else "")


class AgentConfig(Section):
    """Agent hyper-parameters (DESIGN §7 defaults)."""

    name: str = "hsrl"
    dim: int = 32
    layers: int = 2
    heads: int = 4
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="0: dropout makes PPO ratios noisy (tuned)")
    residual: Literal["hard", "soft"] = "hard"
    credit: Literal["item", "token", "slate"] = Field(
        "item",
        description="item: each slot its own target, split over its tokens; token: one slate target split over "
        "every slot's tokens; slate: every token gets the slate advantage (the reference)",
    )
    token_heads: Literal["semantic", "free"] = Field(
        "free",
        description="free: per-token rows (the reference; measured better at this budget); semantic: token logits "
        "and embeddings from the frozen codebook centroids and, at the last level, the item features",
    )
    exposure: bool = Field(
        True, description="HSRL: token logits also read how much of each SID branch the user was just shown and clicked"
    )
    click_loss: float = Field(
        1.0,
        ge=0,
        description="HSRL: weight of the BCE of each shown slot's click on its tokens' logits (learns from skips too)",
    )
    distill: float = Field(
        10.0,
        ge=0,
        description="weight of the cross-entropy between the agent's distribution over items and the TRAINING "
        "simulator's click probabilities of every item in the replayed state (softmax of their logits / "
        "distill_temperature); 0 = off. Applies where the agent trains in the run's training simulator "
        "(env.world=simulator, the default), never the judge or the true world. 10 chosen on validation users "
        "for HSRL (2.31 at 0, 3.54 at 10), offered to every learned agent and searched in every study",
    )
    distill_temperature: float = Field(0.5, gt=0, description="temperature of the distill targets")
    distill_states: int = Field(
        0,
        ge=0,
        description="replayed states per update that the distill term reads (the first of the random batch; "
        "0 = all): a knob for large catalogues. On the synthetic default 32 of 128 made HSRL's update 2x "
        "faster and cost 0.29 of validation reward (3.27 vs 3.56, seed 0)",
    )
    decode: Literal["trie", "score_all"] = "trie"
    gamma: float = 0.9
    tau: float = 0.01
    actor_lr: float = Field(2e-3, gt=0, description="tuned on the synthetic default (reference: 1e-3)")
    critic_lr: float = 1e-3
    weight_decay: float = 1e-5
    entropy: float = Field(0.01, ge=0, description="tuned (reference: 0.1, which kept the policy near uniform)")
    clip: float = 0.2
    normalize_advantage: bool = True
    supervision: float = Field(
        0.0,
        ge=0,
        description="HSRL: weight of the clicked-SID likelihood on replayed slates; 0 since distill is on by default"
        " (validation users: 3.54 without it, 2.96 at 8.8, distill 5), 3 before",
    )
    replay_window: int = Field(3200, ge=1, description="HSRL: learn from the most recent transitions only")
    beam: int = 16
    sl: SLConfig = SLConfig()
    a2c: A2CConfig = A2CConfig()
    ddpg: DDPGConfig = DDPGConfig()
    td3: TD3Config = TD3Config()
    hac: HACConfig = HACConfig()
    grpo: GRPOConfig = GRPOConfig()

    @model_validator(mode="before")
    @classmethod
    def _per_coordinate_noise(cls, data: Any) -> Any:
        """agent.ddpg.noise (a per-coordinate std) -> agent.ddpg.noise_size = noise x sqrt(dim); TD3's too."""
        if not isinstance(data, dict):
            return data
        dim = data.get("dim", cls.model_fields["dim"].default)
        for section in ("ddpg", "td3"):
            own = data.get(section)
            if isinstance(own, dict) and own.keys() & PER_COORDINATE_NOISE.keys():
                converted = {k: v for k, v in own.items() if k not in PER_COORDINATE_NOISE}
                for old, new in PER_COORDINATE_NOISE.items():
                    if old in own:
                        converted[new] = float(own[old]) * float(dim) ** 0.5
                data = {**data, section: converted}
        return data

    @model_validator(mode="before")
    @classmethod
    def _moved_baseline_keys(cls, data: Any) -> Any:
        """The flat ``agent.baseline.hac_actor_lr`` keys became one section per agent: name the new key."""
        if isinstance(data, dict) and "baseline" in data:
            old = data["baseline"] if isinstance(data["baseline"], dict) else {}
            if old.keys() <= OLD_BASELINE_DEFAULTS.keys() and all(old[k] == OLD_BASELINE_DEFAULTS[k] for k in old):
                # the config.yaml an older hsrl saved holds every key at its default: nothing to carry over
                return {k: v for k, v in data.items() if k != "baseline"}
            moved = [
                f"agent.baseline.{k} is now {_new_key(k)}"
                for k in old
                if k in MOVED_BASELINE_KEYS and old[k] != OLD_BASELINE_DEFAULTS.get(k)
            ]
            detail = (
                "; ".join(moved)
                or "each baseline has its own section: agent.sl, agent.a2c, agent.ddpg, agent.td3, agent.hac"
            )
            raise ValueError(f"the agent.baseline section is gone: {detail}")
        return data


class TrainConfig(Section):
    steps: int = Field(
        1000, ge=1, description="env steps of B users; the default keeps `hsrl run` within minutes on 2 cores"
    )
    batch_size: int = Field(
        128, ge=1, description="replay batch per update (reference: 64; 128 learned faster per second)"
    )
    buffer_size: int = 100_000
    start_steps: int = 100
    updates_per_step: int = 1
    eval_every: int = Field(
        40, ge=1, description="steps between validation scores: a learning-curve point each (25 at the default steps)"
    )
    eval_episodes: int = Field(
        32, ge=1, description="validation episodes per score: one batch of the default 32 users (25 scores: +2.7% time)"
    )
    log_every: int = Field(
        40, ge=1, description="steps between metrics records: mean return of the training episodes ended since the last"
    )
    log: Literal["jsonl", "tensorboard"] = Field(
        "jsonl", description="tensorboard: records also go to a SummaryWriter in the agent folder (extra 'tensorboard')"
    )
    checkpoint_every: int = 1000
    seed: int = 0


class EvalConfig(Section):
    seeds: int = Field(5, ge=1, description="training and evaluation seeds per agent (`make run` sets 3)")
    jobs: int = Field(0, ge=0, description="seeds trained in parallel processes; 0 = one per CPU core")
    episodes: int = Field(500, ge=1)
    agents: list[str] = ["hsrl", "hac", "random", "popular", "oracle"]


class RunConfig(Section):
    data: DataConfig = DataConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    env: EnvConfig = EnvConfig()
    sid: SIDConfig = SIDConfig()
    agent: AgentConfig = AgentConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    tuned: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per learned agent, the option values `hsrl tune` chose (RUN/tuned/NAME.yaml), filled by a"
        " command's --tuned flag and used by the agent specs NAME:tuned",
    )


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{key}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """Turn ``["sid.levels=4", "data.dataset=ml-100k"]`` into a nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected KEY=VALUE, e.g. sid.levels=4")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': value is not valid YAML ({exc})") from None
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def _validate(tree: dict[str, Any], origin: str) -> RunConfig:
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            lines.append(f"{loc}: {err['msg']}")
        raise ConfigError(f"{origin}: invalid config: " + "; ".join(lines)) from None


def load_config(
    files: Sequence[str | Path] | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    base: RunConfig | None = None,
) -> RunConfig:
    """Defaults (or ``base``) <- each YAML file in order <- overrides."""
    tree: dict[str, Any] = base.model_dump(mode="json") if base is not None else {}
    origin = "defaults"
    for f in files or []:
        tree = _merge(tree, _read_yaml(Path(f)))
        origin = str(f)
    if overrides:
        over = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides))
        tree = _merge(tree, over)
        origin = "overrides" if origin == "defaults" else f"{origin} + overrides"
    return _validate(tree, origin)


def save_config(config: RunConfig, run_dir: str | Path) -> Path:
    """Write ``config.yaml`` into ``run_dir`` (``hsrl.rundir.RunDir.save_config`` is the pipeline's way in)."""
    from hsrl.io import atomic_path

    path = Path(run_dir) / CONFIG_FILE
    with atomic_path(path) as tmp:
        # not the tuned values: they are read from RUN/tuned/ when used, so a copy here could only go stale
        tmp.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude={"tuned"}), sort_keys=False))
    return path


def load_run_config(run_dir: str | Path, overrides: list[str] | None = None, built: Collection[str] = ()) -> RunConfig:
    """The config saved in a run directory (defaults if none yet), with overrides applied.

    A saved config is a full dump, so a key it lacks in a run-level section was added after it was
    written: when the run already has that section's artefact (``built``: ``sid`` for its index,
    ``simulator`` for its checkpoint), the key reads as the value that built it
    (``ADDED_WITH_OLD_BEHAVIOUR``), not as today's default."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return load_config(None, overrides)
    tree = _read_yaml(path)
    for section in built:
        if isinstance(tree.get(section), dict):
            for key, old in ADDED_WITH_OLD_BEHAVIOUR.get(section, {}).items():
                tree[section].setdefault(key, old)
    origin = str(path)
    if overrides:
        tree = _merge(tree, parse_overrides(list(overrides)))
        origin = f"{path} + overrides"
    return _validate(tree, origin)

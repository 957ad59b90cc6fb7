"""One table of every agent: name -> class, learned or reference, privileged, factory, option schema.

The CLI (`hsrl train/evaluate/compare/churn`), the workflow and the Python API all read this table, so
an agent exists everywhere once it has a class and one ``register(...)`` entry::

    register("mine", MyAgent)                     # learned/privileged are read from the class
    register("mine", MyAgent, factory=lambda ctx: MyAgent(ctx.features, ctx.slate_size, ctx.dataset()))

A factory receives one ``BuildContext`` (the run's artefacts, config with the spec's options applied, the
environment, the seed, the Semantic ID index) and returns a fresh, untrained agent; whatever special input
an agent needs (logged slates, train popularity, the world's click model, the index) it takes from there.
The run is handed down loaded (``RunArtefacts``: a ``hsrl.rundir.RunDir`` from the pipeline, or anything
with its loaders): the registry never builds a path itself. ``hsrl.build_agent`` takes a run directory.
Without a factory the class is called as ``cls(features, slate_size)``, or for ``EncoderAgent`` subclasses
``cls(features, slate_size, profile_dim, history_length, config.agent, seed)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import TYPE_CHECKING, Any, Protocol

import torch
from pydantic import BaseModel

from hsrl.agents.a2c import A2CItemAgent
from hsrl.agents.base import Agent
from hsrl.agents.ddpg import DDPGAgent
from hsrl.agents.encoder_agent import EncoderAgent
from hsrl.agents.grpo import GRPOAgent
from hsrl.agents.hac import HACAgent
from hsrl.agents.heuristics import OracleGreedyAgent, PopularAgent, RandomAgent
from hsrl.agents.hsrl import HSRLAgent
from hsrl.agents.supervised import LoggedSlates, SupervisedAgent
from hsrl.agents.td3 import TD3Agent
from hsrl.agents.world_model import ItemTeacher, simulator_reward, training_click_model
from hsrl.config import A2CConfig, AgentConfig, DDPGConfig, GRPOConfig, HACConfig, RunConfig, SLConfig, TD3Config
from hsrl.errors import ConfigError

if TYPE_CHECKING:
    from hsrl.data.schema import LogDataset
    from hsrl.data.synthetic import SyntheticWorld
    from hsrl.sid.index import SemanticIDIndex
    from hsrl.sid.protocols import SIDIndex
    from hsrl.simulator.catalogue import CatalogueView
    from hsrl.simulator.env import SlateEnv
    from hsrl.simulator.observation import Observation
    from hsrl.simulator.response import UserResponseModel

TRAIN_SPLIT = "train"


class RunArtefacts(Protocol):
    """What a factory may read of a run: its loaders (``hsrl.rundir.RunDir`` has them)."""

    @property
    def has_world(self) -> bool: ...

    def dataset(self) -> LogDataset: ...

    def world(self) -> SyntheticWorld: ...

    def index(self) -> SemanticIDIndex: ...

    def simulator(self, judge: bool = False, device: Any = "cpu") -> UserResponseModel: ...

    def config(self) -> RunConfig: ...


# ---------------------------------------------------------------------- what a factory gets
@dataclass
class BuildContext:
    """Everything an agent factory may read. ``config.agent`` already holds the spec's options; ``run``
    is the run's artefacts (None: an agent built without a run, from its environment alone)."""

    run: RunArtefacts | None
    config: RunConfig
    env: SlateEnv | CatalogueView  # the training environment, or a churn view of it
    seed: int = 0
    index: SIDIndex | None = None  # the Semantic IDs to use (default: the run's)
    spec: str = ""
    options: dict[str, str] = field(default_factory=dict)  # the spec's options (oracle:fatigue=blind)
    _dataset: LogDataset | None = field(default=None, repr=False)

    @property
    def features(self) -> torch.Tensor:
        return self.env.item_features

    @property
    def slate_size(self) -> int:
        return int(self.env.slate_size)

    @property
    def view(self) -> CatalogueView | None:
        """The ``CatalogueView`` the agent is built for (catalogue churn), else None."""
        from hsrl.simulator.catalogue import CatalogueView

        return self.env if isinstance(self.env, CatalogueView) else None

    def need_run(self, what: str) -> RunArtefacts:
        if self.run is None:
            raise ConfigError(f"agent '{self.spec}' needs a run directory ({what})")
        return self.run

    def dataset(self) -> LogDataset:
        """The run's prepared logs (read once per context)."""
        if self._dataset is None:
            self._dataset = self.need_run("its logged data").dataset()
        return self._dataset

    def sid_index(self) -> SIDIndex:
        if self.index is not None:
            return self.index
        return self.need_run("its Semantic ID index").index()


Factory = Callable[[BuildContext], Agent]


@dataclass(frozen=True)
class AgentEntry:
    """One agent: ``options`` is the pydantic section of its hyper-parameters (``agent.<name>`` for the
    baselines, the ``agent`` section itself for HSRL); ``choices`` are spec options that are not config
    fields (``oracle:fatigue=aware|blind``); ``uses_index``: the agent decodes Semantic IDs (catalogue
    churn hands it the index that grows)."""

    name: str
    cls: type[Agent]
    factory: Factory
    learned: bool
    privileged: bool
    options: type[BaseModel] | None = None
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    uses_index: bool = False


_TABLE: dict[str, AgentEntry] = {}


def default_factory(cls: type[Agent]) -> Factory:
    """The constructor call every shared-encoder agent has, or the bare one of a reference agent."""

    def make(ctx: BuildContext) -> Agent:
        if issubclass(cls, EncoderAgent):
            env = ctx.env
            return cls(ctx.features, ctx.slate_size, env.profile_dim, env.history_length, ctx.config.agent, ctx.seed)
        return cls(ctx.features, ctx.slate_size)

    return make


def register(
    name: str,
    cls: type[Agent],
    factory: Factory | None = None,
    *,
    learned: bool | None = None,
    privileged: bool | None = None,
    options: type[BaseModel] | None = None,
    choices: Mapping[str, tuple[str, ...]] | None = None,
    uses_index: bool = False,
    replace: bool = False,
) -> AgentEntry:
    """Add an agent under ``name`` (a new name, unless ``replace``); returns its entry."""
    if not name or any(c in name for c in ":,+= "):
        raise ValueError(f"agent name '{name}': no ':', ',', '+', '=' or spaces (they separate agent specs)")
    if name in _TABLE and not replace:
        raise ValueError(f"agent '{name}' is already registered (replace=True to redefine it)")
    entry = AgentEntry(
        name=name,
        cls=cls,
        factory=factory or default_factory(cls),
        learned=cls.learned if learned is None else learned,
        privileged=cls.privileged if privileged is None else privileged,
        options=options,
        choices=dict(choices or {}),
        uses_index=uses_index,
    )
    _TABLE[name] = entry
    return entry


def unregister(name: str) -> None:
    _TABLE.pop(name, None)


def get(name: str) -> AgentEntry:
    try:
        return _TABLE[name]
    except KeyError:
        raise ConfigError(f"unknown agent '{name}' (expected one of: {', '.join(_TABLE)})") from None


def names() -> tuple[str, ...]:
    return tuple(_TABLE)


def learned_names() -> tuple[str, ...]:
    return tuple(n for n, e in _TABLE.items() if e.learned)


def reference_names() -> tuple[str, ...]:
    return tuple(n for n, e in _TABLE.items() if not e.learned)


def name_of(agent: Agent) -> str:
    """The registry name of an agent's class (a checkpoint records it), else its ``name`` attribute."""
    for name, entry in _TABLE.items():
        if entry.cls is type(agent):
            return name
    return agent.name


# ---------------------------------------------------------------------- specs: NAME:key=value+...
TUNED = "tuned"  # the spec flag NAME:tuned


def parse_agent(spec: str) -> tuple[str, dict[str, str]]:
    """``"hsrl:residual=soft+credit=slate"`` -> ("hsrl", {"residual": "soft", "credit": "slate"}).

    ``tuned`` (no value) is the one flag: the values ``hsrl tune`` chose for that agent (``hac:tuned``)."""
    name, _, rest = spec.partition(":")
    options: dict[str, str] = {}
    for item in filter(None, rest.split("+")):
        key, eq, value = item.partition("=")
        if not eq and key.strip() == TUNED:
            options[TUNED] = "true"
            continue
        if not eq:
            raise ConfigError(f"agent '{spec}': option '{item}' is not KEY=VALUE")
        options[key.strip()] = value.strip()
    return name.strip(), options


def base_name(spec: str) -> str:
    return parse_agent(spec)[0]


def build(
    spec: str,
    run: RunArtefacts | None = None,
    config: RunConfig | None = None,
    env: Any = None,
    seed: int = 0,
    index: SemanticIDIndex | None = None,
) -> Agent:
    """A fresh agent of kind ``spec`` (a registered name, optionally with ``:key=value+...`` options) on
    ``env``, with the artefacts of ``run`` (a ``hsrl.rundir.RunDir``; ``hsrl.build_agent`` takes a run
    directory and fills in its config and training environment).

    ``config`` defaults to the run's (``run.config()``), else the defaults. ``env`` may be a
    ``CatalogueView`` (catalogue churn): logged data is then re-indexed to its items, and ``index`` is the
    Semantic ID index of those items (default: the run's index).
    """
    name, options = parse_agent(spec)
    entry = get(name)
    if isinstance(run, str | PathLike) and not hasattr(run, "dataset"):  # a RunDir is path-like too
        raise ConfigError(
            f"agent '{spec}': registry.build takes a run's artefacts (hsrl.rundir.RunDir(path)), not the path "
            f"{str(run)!r}; hsrl.build_agent(spec, path) takes a run directory"
        )
    if config is None:
        config = run.config() if run is not None else RunConfig()
    if env is None:
        raise ConfigError(f"agent '{spec}': give the environment it acts in (hsrl.build_agent builds the run's)")
    config = config.model_copy(update={"agent": agent_config(spec, config)})
    ctx = BuildContext(run, config, env, seed, index, spec, options)
    agent = entry.factory(ctx)
    if entry.learned and config.agent.distill > 0:
        agent.teacher = _teacher(ctx, name)
    return agent


# ---------------------------------------------------------------------- the agents of this package
def _teacher(ctx: BuildContext, agent: str) -> ItemTeacher | None:
    """The training simulator's click model as ``agent.distill``'s targets where ``ctx.env`` is the run's
    training simulator; None anywhere else (an agent built to act on test users, or to train in the true
    world, has no teacher: the judge and the true world never are one), as GRPO's reward model is checked."""
    if ctx.run is None:
        return None
    try:
        _, click_probs = training_click_model(ctx.env, ctx.run.simulator, agent)
    except ConfigError:
        return None
    return ItemTeacher(click_probs, ctx.config.agent.distill_temperature, ctx.config.agent.distill_states)


def _hsrl(ctx: BuildContext) -> Agent:
    env = ctx.env
    return HSRLAgent(
        ctx.features, ctx.slate_size, ctx.sid_index(), env.profile_dim, env.history_length, ctx.config.agent, ctx.seed
    )


def _sl(ctx: BuildContext) -> Agent:
    """SL learns from the training users' logged slates (re-indexed to a churn view's catalogue)."""
    logs = LoggedSlates.from_dataset(ctx.dataset(), TRAIN_SPLIT, device=ctx.features.device)
    view = ctx.view
    logs = logs.restricted(view.local_items) if view is not None else logs
    env = ctx.env
    return SupervisedAgent(
        ctx.features, ctx.slate_size, env.profile_dim, env.history_length, logs, ctx.config.agent, ctx.seed
    )


def _grpo(ctx: BuildContext) -> Agent:
    """GRPO scores its sampled slates with the TRAINING simulator's click model (``ctx.env`` must be the
    run's training simulator: ``simulator_reward`` refuses the true world and the judge) and warm-starts
    on the training users' logged clicks (re-indexed to a churn view's catalogue, as SL's)."""
    env = ctx.env
    run = ctx.need_run("its training simulator")
    reward = simulator_reward(env, run.simulator)  # checked to be the training simulator, not the judge
    logs = None
    if ctx.config.agent.grpo.warm_start > 0:
        logs = LoggedSlates.from_dataset(ctx.dataset(), TRAIN_SPLIT, device=ctx.features.device)
        logs = logs.restricted(ctx.view.local_items) if ctx.view is not None else logs
    index = ctx.sid_index()
    cfg = ctx.config.agent
    return GRPOAgent(
        ctx.features, ctx.slate_size, index, env.profile_dim, env.history_length, cfg, ctx.seed, reward, logs
    )


def _random(ctx: BuildContext) -> Agent:
    return RandomAgent(ctx.features, ctx.slate_size, ctx.seed)


def _popular(ctx: BuildContext) -> Agent:
    """The training users' click counts, in the view's item order under catalogue churn."""
    pop = torch.as_tensor(ctx.dataset().item_popularity(TRAIN_SPLIT), device=ctx.features.device)
    view = ctx.view
    return PopularAgent(ctx.features, ctx.slate_size, view.local_values(pop) if view is not None else pop)


def _oracle(ctx: BuildContext) -> Agent:
    """Privileged: the judging environment's own click model, or the true world's with a part hidden:
    ``fatigue=blind`` drops its repeat-topic fatigue, ``new_quality=hidden`` (catalogue churn) gives the
    items added later the kept items' mean quality (what no feature of a new item shows)."""
    blind, hidden = ctx.options.get("fatigue") == "blind", ctx.options.get("new_quality") == "hidden"
    if not (blind or hidden):
        return OracleGreedyAgent(ctx.features, ctx.slate_size, ctx.env.response.click_probs)
    spec = "+".join(f"{k}={v}" for k, v in ctx.options.items())
    run = ctx.need_run("the true world")
    if not run.has_world:
        raise ConfigError(f"oracle:{spec} needs the synthetic world's ground truth (synthetic data only)")
    world = run.world()
    if blind:
        world = dataclasses.replace(world, boredom_per_repeat=0.0)
    if hidden:
        if ctx.view is None:
            raise ConfigError(
                f"oracle:{spec} hides the quality of the items added under catalogue churn: use it with `hsrl churn`"
            )
        world = hide_new_quality(world, ctx.view)
    return OracleGreedyAgent(ctx.features, ctx.slate_size, true_click_probs(world, ctx.env))


def hide_new_quality(world: SyntheticWorld, view: CatalogueView) -> SyntheticWorld:
    """The world with the quality of the items ``view`` does not show yet set to the mean of those it shows.

    Quality is a per-item click offset that no feature reveals: a policy that never saw clicks on an item
    knows its content at best, so the greedy oracle of this world is the level content alone reaches on them."""
    order = view.order.cpu().numpy()
    quality = world.item_quality.copy()
    quality[order[view.visible :]] = quality[order[: view.visible]].mean()
    return dataclasses.replace(world, item_quality=quality)


def true_click_probs(world: SyntheticWorld, env: SlateEnv | CatalogueView) -> Callable[..., torch.Tensor]:
    """``world``'s click probabilities of env-indexed slates for env's current users. Under a churn view the
    world reads its own item indices and the full histories (the view hides items not yet shown)."""
    from hsrl.simulator.catalogue import CatalogueView

    if not isinstance(env, CatalogueView):
        return lambda obs, slate, slots=None: world.click_probs(obs.user, obs.hist_items, slate, slots)
    view = env

    def click_probs(obs: Observation, slate: torch.Tensor, slots: torch.Tensor | None = None) -> torch.Tensor:
        now = view.env.observation  # the same users, in the world's item indices
        return world.click_probs(now.user, now.hist_items, view.order[slate], slots)

    return click_probs


register("hsrl", HSRLAgent, _hsrl, options=AgentConfig, uses_index=True)
register("sl", SupervisedAgent, _sl, options=SLConfig)
register("a2c", A2CItemAgent, options=A2CConfig)
register("ddpg", DDPGAgent, options=DDPGConfig)
register("td3", TD3Agent, options=TD3Config)
register("hac", HACAgent, options=HACConfig)
register("grpo", GRPOAgent, _grpo, options=GRPOConfig, uses_index=True)
register("random", RandomAgent, _random)
register("popular", PopularAgent, _popular)
register(
    "oracle",
    OracleGreedyAgent,
    _oracle,
    choices={"fatigue": ("aware", "blind"), "new_quality": ("known", "hidden")},
)


def agent_config(spec: str, cfg: RunConfig) -> AgentConfig:
    """The agent section with the spec's options applied (validated like any override)."""
    import yaml

    from hsrl.config import load_config

    name, spec_options = parse_agent(spec)
    # a spec's values are text (parsed as YAML, like --set); tuned values are typed already
    options: dict[str, Any] = {}
    for key, text in spec_options.items():
        if key == TUNED:
            continue
        try:
            options[key] = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            options[key] = text
    if TUNED in spec_options:  # the chosen values first, the spec's own options over them
        options = {**tuned_options(spec, cfg), **options}
    allowed = get(name).choices  # options of a reference agent that are not config fields: words, as written
    if allowed:
        for key, value in spec_options.items():
            if key not in allowed or value not in allowed[key]:
                choices = "; ".join(f"{k}={'|'.join(v)}" for k, v in allowed.items())
                raise ConfigError(f"agent '{spec}': unknown option {key}={value} (expected {choices})")
        return cfg.agent
    if not options:
        return cfg.agent
    tree: dict[str, Any] = {}
    for key, value in options.items():
        node = tree.setdefault("agent", {})
        *sections, leaf = option_path(cfg.agent, name, key)
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    return load_config(overrides=tree, base=cfg).agent


def tuned_options(spec: str, cfg: RunConfig) -> dict[str, Any]:
    """The option values ``hsrl tune`` chose for the spec's agent (``cfg.tuned``, which a command's
    ``--tuned`` flag fills from the run's tuned files); a clear error where there are none."""
    name = base_name(spec)
    if not get(name).learned:
        raise ConfigError(f"agent '{spec}': only learned agents are tuned ({name} has no hyper-parameters)")
    if name not in cfg.tuned:
        raise ConfigError(
            f"agent '{spec}': no tuned values for {name} (run `hsrl tune RUN --agent {name}`, then pass --tuned)"
        )
    return dict(cfg.tuned[name])


def tuned_tag(spec: str, cfg: RunConfig) -> str:
    """A short fingerprint of the tuned values a ``NAME:tuned`` spec uses: its checkpoint folder is named
    after it, so that re-tuning an agent never reuses weights trained with the old values."""
    import hashlib
    import json

    values = json.dumps(tuned_options(spec, cfg), sort_keys=True, default=str)
    return hashlib.sha256(values.encode()).hexdigest()[:8]


def option_path(agent_cfg: AgentConfig, name: str, key: str) -> list[str]:
    """Where spec option ``key`` of agent ``name`` lives in the agent section: the agent's own section when
    it has that key (``hac:actor_lr`` is ``agent.hac.actor_lr``), else the shared fields (``agent.gamma``)."""
    own = getattr(agent_cfg, name, None)
    return [name, key] if isinstance(own, BaseModel) and key in type(own).model_fields else [key]


def option_value(agent_cfg: AgentConfig, name: str, key: str) -> Any:
    """The configured value of spec option ``key`` of agent ``name`` (None for an unknown key)."""
    node: Any = agent_cfg
    for part in option_path(agent_cfg, name, key):
        node = getattr(node, part, None)
    return node

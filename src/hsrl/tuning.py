"""One tuning protocol for every learned agent (``hsrl tune``).

The claim "HSRL is better" is worth what the baselines are, so every learned agent is searched the same
way: a declared space (``configs/search/NAME.yaml``), the same number of trials, the same env-step budget
and training loop, Optuna's TPE sampler, trials that fall behind the median stopped early on their
periodic validation score (Optuna's median pruner), and selection on **validation users in the training
simulator only**: test users, the judge and the true world are never read here. Trial 0 is the agent's
current configuration, so a study can only keep or improve it on validation.

A study lives in the run directory (``RUN/tuned/NAME.study.log``, an Optuna journal): a study interrupted
at any point (a session ending) resumes where it stopped, and the trial that was running is run again
with the same values. The chosen values go to ``RUN/tuned/NAME.yaml``; a command's ``--tuned`` flag reads
them and the agent spec ``NAME:tuned`` trains with them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hsrl.config import RunConfig
from hsrl.errors import ConfigError
from hsrl.rundir import RunDir, RunLike

# the search spaces shipped with hsrl (a source checkout, which is how `make setup` installs it)
SEARCH_DIR = Path(__file__).resolve().parents[2] / "configs" / "search"
SHIPPED_DIR = SEARCH_DIR.parent / "tuned"  # DATASET/NAME.yaml: studies run on the shipped configs, see its README
TRIALS = 8  # per agent: with the pruner, one study of HSRL on the synthetic default fits in ~30 min on 2 cores
EPISODES = 256  # validation episodes that score a finished trial (the periodic scores use train.eval_episodes)
SMOOTH = 3  # the pruner compares the mean of the last SMOOTH periodic validation scores (32 episodes each)
TRAIN_SPLIT, VAL_SPLIT = "train", "val"
# trials train with seed SEED_BASE + --seed: never a seed that compare trains and reports (0..seeds-1),
# whose seed-0 run would otherwise be the winning trial itself, the best of `trials` noisy runs
SEED_BASE = 1000


@dataclass(frozen=True)
class Param:
    """One searched option: a float or int range (``log`` for a log scale) or a list of ``choices``."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] | None = None

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        assert self.low is not None and self.high is not None
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log)

    def describe(self) -> str:
        if self.choices is not None:
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        return f"[{self.low:g}, {self.high:g}]" + (" log" if self.log else "") + (" int" if self.integer else "")


def space_file(agent: str) -> Path:
    return SEARCH_DIR / f"{agent}.yaml"


def load_space(path: str | Path, agent: str, cfg: RunConfig) -> dict[str, Param]:
    """A search space file: ``key: {low, high[, log, int]}`` or ``key: {choices: [...]}`` per option of
    ``agent`` (its own section's keys, e.g. hac's ``actor_lr`` is ``agent.hac.actor_lr``). Every key must
    be a real option of that agent and every value valid for it; errors name the file and the key."""
    from hsrl.agents import registry

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no search space for '{agent}' (expected a YAML file of option ranges)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: expected a mapping of option -> range (e.g. actor_lr: {{low: 1e-4, high: 1e-2}})")
    if not registry.get(agent).learned:
        raise ConfigError(f"{path}: '{agent}' is not a learned agent (nothing to tune)")
    space: dict[str, Param] = {}
    for key, spec in raw.items():
        where = f"{path}: {key}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected {{low, high}} or {{choices: [...]}}, got {spec!r}")
        unknown = set(spec) - {"low", "high", "log", "int", "choices"}
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))} (low, high, log, int, choices)")
        if registry.option_value(cfg.agent, agent, str(key)) is None:
            raise ConfigError(f"{where}: '{key}' is not an option of {agent} (not a field of its config section)")
        if "choices" in spec:
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices or set(spec) - {"choices"}:
                raise ConfigError(f"{where}: choices must be a non-empty list, alone")
            param = Param(str(key), choices=tuple(choices))
            samples = list(choices)
        else:
            try:
                low, high = float(spec["low"]), float(spec["high"])
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"{where}: a range needs numeric low and high") from None
            if not low < high or (spec.get("log") and low <= 0):
                raise ConfigError(f"{where}: need low < high (and low > 0 on a log scale), got {low:g}..{high:g}")
            param = Param(str(key), low, high, bool(spec.get("log", False)), bool(spec.get("int", False)))
            samples = [low, high]
        for value in samples:  # every end of the range must make a valid config
            try:
                registry.agent_config(f"{agent}:{key}={value}", cfg)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {value!r} is not a valid value ({exc})") from None
        space[str(key)] = param
    return space


def current_values(agent: str, space: dict[str, Param], cfg: RunConfig, path: str | Path = "") -> dict[str, Any]:
    """The agent's configured value of every searched option: trial 0 of every study, so it must lie in
    the space (an error naming the key otherwise: widen the range or change the config)."""
    from hsrl.agents import registry

    values = {key: registry.option_value(cfg.agent, agent, key) for key in space}
    for key, param in space.items():
        value = values[key]
        inside = value in param.choices if param.choices is not None else param.low <= value <= param.high
        if not inside:
            raise ConfigError(
                f"{path}: {key}: the configured value {value!r} of {agent} is outside {param.describe()}; trial 0 of"
                " every study is the current config, so widen the space or change the value"
            )
    return values


def protocol_config(cfg: RunConfig, agent: str) -> dict[str, Any]:
    """The parts of the config ``agent``'s study scores depend on: every section but evaluation and the
    tuned values, and of the agent section the shared fields and that agent's own section only. A key
    added later changes no hash at the value that reproduces the old behaviour, nor (``sid`` keys) for an
    agent that never reads the Semantic IDs."""
    from hsrl.agents import registry
    from hsrl.config import ADDED_WITH_OLD_BEHAVIOUR, Section

    tree = cfg.model_dump(mode="json", exclude={"eval", "tuned"})
    others = {k for k, v in cfg.agent if isinstance(v, Section) and k != agent}
    tree["agent"] = {k: v for k, v in tree["agent"].items() if k not in others}
    ignores_sids = not registry.get(agent).uses_index
    for path, added in ADDED_WITH_OLD_BEHAVIOUR.items():
        own: dict[str, Any] = tree
        for part in path.split("."):
            own = own.get(part, {})
        for key, value in added.items():
            if key in own and (own[key] == value or (path == "sid" and ignores_sids)):
                del own[key]
    return tree


def _storage(path: Path) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


def _pruner(steps: int) -> Any:
    import optuna

    # the first trials run in full (a median of nothing prunes nothing useful); no trial is judged before
    # 30% of the budget, where the learning curves of these agents still cross
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=int(0.3 * steps))


def run_trial(
    run_dir: str, config: dict[str, Any], agent: str, number: int, trial_id: int, values: dict[str, Any],
    storage: str, seed: int, episodes: int,
) -> dict[str, Any]:  # fmt: skip
    """One trial, in a worker: train ``agent`` with ``values`` on training users in the training
    simulator, report its smoothed periodic validation score (the pruner may stop it there), then score it
    on ``episodes`` validation episodes. Returns the outcome; the main process tells the study."""
    import optuna

    from hsrl import workflow
    from hsrl.agents import registry
    from hsrl.eval.evaluate import evaluate, summary

    # the trial's values as the agent's tuned values: typed, validated like any config (no string round trip)
    cfg = RunConfig.model_validate(config | {"tuned": {agent: values}})
    run = Path(run_dir)
    spec = f"{agent}:{registry.TUNED}"
    study = optuna.load_study(study_name=agent, storage=_storage(Path(storage)), pruner=_pruner(cfg.train.steps))
    trial = optuna.trial.Trial(study, trial_id)
    seed = SEED_BASE + seed
    scores: list[float] = []

    def report(record: dict[str, Any]) -> None:
        if "eval_total_reward" not in record:
            return
        scores.append(float(record["eval_total_reward"]))
        trial.report(sum(scores[-SMOOTH:]) / len(scores[-SMOOTH:]), int(record["step"]))
        if trial.should_prune():
            raise optuna.TrialPruned()

    # env.world is the training simulator (tune checks it): the trainer's train and validation worlds
    trainer = workflow.make_trainer(run, spec, cfg, seed, RunDir(run).trial_dir(agent, number), False, None, [report])
    learner = trainer.agent
    start = time.perf_counter()
    outcome: dict[str, Any] = {"number": number, "values": values, "scores": scores}
    try:
        trainer.fit()
    except optuna.TrialPruned:
        return outcome | {"state": "pruned", "step": trainer.step, "seconds": time.perf_counter() - start}
    except Exception as exc:  # a diverging config is a failed trial, not the end of the study
        import traceback

        return outcome | {"state": "fail", "step": trainer.step, "seconds": time.perf_counter() - start,
                          "error": "".join(traceback.format_exception_only(exc)).strip()}  # fmt: skip
    val_env = workflow.env_for(run, cfg, VAL_SPLIT, 10_500 + seed, world="simulator")
    value = summary(evaluate(learner, val_env, episodes))["total_reward"]
    return outcome | {"state": "complete", "value": float(value), "step": trainer.step,
                      "seconds": time.perf_counter() - start}  # fmt: skip


def tune(
    run_dir: str | Path,
    cfg: RunConfig,
    agent: str,
    trials: int = TRIALS,
    space_path: str | Path | None = None,
    workers: int = 0,
    engine: str = "local",
    address: str | None = None,
    seed: int = 0,
    episodes: int = EPISODES,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the study of ``agent`` until it has ``trials`` finished trials; write the chosen
    values to ``RUN/tuned/NAME.yaml`` and return the study summary. ``on_trial`` sees each outcome."""

    if cfg.env.world != "simulator":
        raise ConfigError(
            f"env.world={cfg.env.world}: agents are tuned in the training simulator only (selection never reads the"
            " true world); train in the simulator to tune"
        )
    run = RunDir(Path(run_dir).resolve())  # absolute: workers elsewhere (Ray) see the same paths
    run.require_dataset()
    space_path = space_path or space_file(agent)
    space = load_space(space_path, agent, cfg)
    defaults = current_values(agent, space, cfg, space_path)
    run.tuned_dir.mkdir(parents=True, exist_ok=True)
    with _study_lock(run.tuned_dir / f"{agent}.lock", agent):
        return _tune(run, cfg, agent, trials, space, defaults, workers, engine, address, seed, episodes, on_trial)


def _study_lock(path: Path, agent: str) -> Any:
    """One ``hsrl tune`` per agent and run at a time: a second would take the first's trials for cut-off ones."""
    import contextlib
    import fcntl

    @contextlib.contextmanager
    def held() -> Any:
        with open(path, "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(f"{path}: another `hsrl tune` of {agent} is running on this run") from None
            yield

    return held()


def _tune(
    run: RunDir, cfg: RunConfig, agent: str, trials: int, space: dict[str, Param], defaults: dict[str, Any],
    workers: int, engine: str, address: str | None, seed: int, episodes: int,
    on_trial: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:  # fmt: skip
    import optuna

    from hsrl.engine import Pool
    from hsrl.io import atomic_path, write_json

    storage_path = run.study_file(agent)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=3, multivariate=True, constant_liar=True)
    study = optuna.create_study(
        study_name=agent, storage=_storage(storage_path), sampler=sampler, pruner=_pruner(cfg.train.steps),
        direction="maximize", load_if_exists=True,
    )  # fmt: skip
    _check_study(study, storage_path, space, cfg, seed, episodes, agent)
    states = optuna.trial.TrialState
    for stale in study.get_trials(deepcopy=False, states=(states.RUNNING,)):  # a session that ended mid-trial
        study.tell(stale.number, state=states.FAIL)
        study.set_user_attr(f"cut_{stale.number}", True)  # not an outcome: not counted among the trials
        study.enqueue_trial(dict(stale.params))  # run again with the same values: every study gets `trials`
    if not study.trials:
        study.enqueue_trial(defaults)
        study.set_user_attr("protocol", _protocol(space, cfg, seed, episodes, agent))
    finished = (states.COMPLETE, states.PRUNED, states.FAIL)
    start = time.perf_counter()
    config = cfg.model_dump(mode="json", exclude={"tuned"})
    with Pool(workers, engine, address) as pool:
        running: dict[int, Any] = {}
        while True:
            done = len(_outcomes(study, finished))
            while pool.free and done + len(running) < trials:
                trial = study.ask()
                values = {key: param.suggest(trial) for key, param in space.items()}
                job = pool.submit(
                    run_trial, str(run.path), config, agent, trial.number, trial._trial_id, values,
                    str(storage_path), seed, episodes,
                )  # fmt: skip
                running[job] = trial
            if not running:
                break
            job, outcome = pool.next_done()
            trial = running.pop(job)
            if outcome["state"] == "complete":
                study.tell(trial, outcome["value"])
            elif outcome["state"] == "pruned":
                study.tell(trial, state=states.PRUNED)
            else:  # counted, not retried: the same values would fail again
                study.tell(trial, state=states.FAIL)
                study.set_user_attr(f"error_{trial.number}", outcome["error"])
            write_json(run.tuned_dir / f"{agent}.trials.json", _trials(study))
            if on_trial is not None:
                on_trial(outcome)
    report = _summary(study, agent, space, trials, time.perf_counter() - start)
    with atomic_path(run.tuned_file(agent)) as tmp:
        header = (
            f"# hsrl tune {run.path} --agent {agent}: chosen on validation users in the training simulator\n"
            "# (never test users, the judge or the true world); `--tuned` trains the spec "
            f"{agent}:tuned with `values`\n"
        )
        tmp.write_text(header + yaml.safe_dump(report, sort_keys=False))
    return report


def _config_hash(cfg: RunConfig, agent: str) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(protocol_config(cfg, agent), sort_keys=True).encode()).hexdigest()[:12]


def _protocol(space: dict[str, Param], cfg: RunConfig, seed: int, episodes: int, agent: str) -> dict[str, Any]:
    """What a study's scores depend on; a study resumes, and its values are used, only under the same."""
    return {
        "space": {k: p.describe() for k, p in space.items()},
        "steps": cfg.train.steps,
        "batch_users": cfg.env.batch_users,
        "seed": seed,
        "training_seed": SEED_BASE + seed,
        "episodes": episodes,
        "config": _config_hash(cfg, agent),  # data, simulator, env, SIDs, the agent's options, training loop
    }


def _outcomes(study: Any, states: tuple[Any, ...]) -> list[Any]:
    """Trials that ran to an outcome (a trial cut off by a session ending is not one: it is run again)."""
    return [t for t in study.get_trials(deepcopy=False, states=states) if not study.user_attrs.get(f"cut_{t.number}")]


def _check_study(
    study: Any, path: Path, space: dict[str, Param], cfg: RunConfig, seed: int, episodes: int, agent: str
) -> None:
    """A study resumes only under the protocol it started with: another space, budget or seed is a new study."""
    started = study.user_attrs.get("protocol")
    now = _protocol(space, cfg, seed, episodes, agent)
    if started is not None and started != now:
        changed = ", ".join(k for k in now if now[k] != started.get(k))
        raise ConfigError(
            f"{path}: this study was started with another {changed}; resume it with the same settings, or delete"
            " the file (and the agent's tuned.yaml) to start a new study"
        )


def _trials(study: Any) -> list[dict[str, Any]]:
    return [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.value,
            "values": t.params,
            "last_step": t.last_step,
            **({"cut_off": True} if study.user_attrs.get(f"cut_{t.number}") else {}),
            **({"error": study.user_attrs[f"error_{t.number}"]} if f"error_{t.number}" in study.user_attrs else {}),
        }
        for t in study.get_trials(deepcopy=False)
    ]


def _summary(study: Any, agent: str, space: dict[str, Param], trials: int, seconds: float) -> dict:
    import optuna

    states = optuna.trial.TrialState
    complete = _outcomes(study, (states.COMPLETE,))
    if not complete:
        raise ConfigError(f"study of {agent}: no trial finished (all {trials} were pruned or failed)")
    best = max(complete, key=lambda t: t.value)
    first = study.get_trials(deepcopy=False)[0]
    defaults = [t for t in complete if t.params == first.params]  # trial 0, or its re-run after a cut
    return {
        "agent": agent,
        "values": {k: best.params[k] for k in space},
        "study": {
            "trials": len(_outcomes(study, (states.COMPLETE, states.PRUNED, states.FAIL))),
            "complete": len(complete),
            "pruned": len(_outcomes(study, (states.PRUNED,))),
            "failed": len(_outcomes(study, (states.FAIL,))),
            "best_trial": best.number,
            "best_value": float(best.value),
            "default_value": float(defaults[0].value) if defaults and not math.isnan(defaults[0].value) else None,
            "seconds_this_session": round(seconds, 1),
            **study.user_attrs["protocol"],
        },
    }


def load_tuned(run_dir: RunLike, cfg: RunConfig, agents: list[str]) -> RunConfig:
    """``cfg`` with the tuned values of every learned agent among ``agents`` (from ``RUN/tuned/NAME.yaml``,
    copied there from the study shipped for the dataset when it was run under this config); an agent
    without either is an error that names the file and the command that writes it."""
    from hsrl.agents import registry

    tuned = dict(cfg.tuned)
    for name in dict.fromkeys(registry.base_name(a) for a in agents):
        if not registry.get(name).learned:
            continue
        path = RunDir(run_dir).tuned_file(name)
        if not path.is_file() and not _adopt_shipped(RunDir(run_dir), cfg, name):
            raise ConfigError(f"{path}: no tuned values for {name}; run `hsrl tune {run_dir} --agent {name}` first")
        data = _read_tuned(path, name)
        values = data["values"]
        chosen_under = (data.get("study") or {}).get("config")
        if chosen_under is not None and chosen_under != _config_hash(cfg, name):
            raise ConfigError(
                f"{path}: these values were chosen under another config of this run (data, simulator, env, agent"
                f" or training sections differ from now); tune again (`hsrl tune {run_dir} --agent {name}`) or"
                " restore that config"
            )
        tuned[name] = values
    out = cfg.model_copy(update={"tuned": tuned})
    for name in tuned:
        try:
            registry.agent_config(f"{name}:{registry.TUNED}", out)
        except ConfigError as exc:
            raise ConfigError(f"{RunDir(run_dir).tuned_file(name)}: {exc}") from None
    return out


def _read_tuned(path: Path, name: str) -> dict[str, Any]:
    """A tuned file's contents, its ``values`` checked to be a mapping."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("values"), dict):
        raise ConfigError(f"{path}: expected a 'values' mapping of {name}'s options")
    return data


def _adopt_shipped(run: RunDir, cfg: RunConfig, name: str) -> bool:
    """Copy the study shipped for this dataset (``configs/tuned/DATASET/NAME.yaml`` and its trials) into
    ``RUN/tuned/``, if it was run under this very config (same hash); the run then holds every value it
    used. False when there is none that applies (another config, or no study shipped)."""
    import shutil

    from hsrl.io import atomic_path

    shipped = SHIPPED_DIR / cfg.data.dataset / f"{name}.yaml"
    if not shipped.is_file() or (_read_tuned(shipped, name).get("study") or {}).get("config") != _config_hash(
        cfg, name
    ):
        return False
    run.tuned_dir.mkdir(parents=True, exist_ok=True)
    for source in (shipped.with_name(f"{name}.trials.json"), shipped):  # the values last: they mark it done
        if source.is_file():
            with atomic_path(run.tuned_dir / source.name) as tmp:
                shutil.copyfile(source, tmp)
    return True


def tuned_specs(agents: list[str]) -> list[str]:
    """Each learned agent's spec with the ``tuned`` flag (``hac`` -> ``hac:tuned``); references unchanged."""
    from hsrl.agents import registry

    out = []
    for spec in agents:
        name, options = registry.parse_agent(spec)
        if not registry.get(name).learned or registry.TUNED in options:
            out.append(spec)
            continue
        rest = spec.partition(":")[2]
        out.append(f"{name}:{registry.TUNED}" + (f"+{rest}" if rest else ""))
    return out

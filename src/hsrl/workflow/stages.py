"""The stages before the agents, each a function of the run directory and its config that returns a
``StageReport`` (printing nothing): the data (``prepare_data``), the simulator and its judge
(``train_simulator``, ``simulator_report``), the Semantic ID index (``build_index``), the serving export
(``export_run``, ``prepare_export``), and ``ensure_stages``, which builds whatever of them the agents need
and the run lacks. Their config is resolved by the caller (saved config <- files <- overrides)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsrl.config import RunConfig
from hsrl.errors import ArtifactError, ConfigError
from hsrl.rundir import RunDir, RunLike
from hsrl.workflow.progress import SILENT, Progress, StageReport

if TYPE_CHECKING:
    from hsrl.serve.export import ExportedPolicy

WORLDS = ("simulator", "judge", "true")


# ---------------------------------------------------------------------- data
def check_same_data(run_dir: RunLike, requested: Any) -> None:
    """A run holds one dataset: asking for another one (other source, other options) in it stops instead
    of silently reusing the old data under a config that names the new one."""
    run = RunDir(run_dir)
    if not run.config_file.is_file():
        return
    saved = run.config().data.model_dump(mode="json")
    wanted = requested.model_dump(mode="json")
    diff = [k for k in wanted if wanted[k] != saved.get(k)]
    if diff:
        key = diff[0]
        raise ConfigError(
            f"{run.path} already holds data prepared with data.{key}={saved.get(key)!r}, not {wanted[key]!r}; use"
            " another --out, or --force to prepare it again (then retrain the later stages with --force too)"
        )


def prepare_data(run_dir: RunLike, cfg: RunConfig, force: bool = False, progress: Progress = SILENT) -> StageReport:
    """Read, validate and save the dataset (and the synthetic world) of ``cfg.data`` into the run, and the
    config beside it; kept when it is there (unless ``force``). ``value``: the LogDataset."""
    from hsrl.data.schema import LogDataset

    run = RunDir(run_dir)
    if run.has_dataset and not force:
        check_same_data(run, cfg.data)
        return StageReport("data", [run.data_dir], True, cfg, value=LogDataset.load(run.data_dir))
    with progress.working(f"reading {cfg.data.dataset} ..."):
        if cfg.data.dataset == "synthetic":
            from hsrl.data.synthetic import generate

            ds, world = generate(cfg.data)
            ds.validate("synthetic")
        else:
            from hsrl.data import load

            ds, world = load(cfg.data), None
    ds.save(run.data_dir)
    if world is not None:
        world.save(run.world_file)
    run.save_config(cfg)
    return StageReport("data", [run.data_dir], False, cfg, ds.describe(), ds)


# ---------------------------------------------------------------------- Semantic IDs
def build_index(run_dir: RunLike, cfg: RunConfig, force: bool = False, progress: Progress = SILENT) -> StageReport:
    """Build the Semantic ID index of the run's items (kept when it is there, unless ``force``), its
    statistics beside it; ``details``: the statistics, ``value``: the index."""
    from hsrl.io import write_json
    from hsrl.sid.build import build_for_dataset
    from hsrl.sid.index import SemanticIDIndex

    run = RunDir(run_dir)
    path = run.index_file
    if path.is_file() and not force:
        return StageReport("sid", [path], True, cfg, value=SemanticIDIndex.load(path))
    ds = run.dataset()
    align_to = alignment_targets(run, cfg)
    with progress.working(f"building Semantic IDs for {ds.n_items} items ..."):
        index = build_for_dataset(ds, cfg.sid, where=str(run.data_dir), align_to=align_to)
    stats = {**index.stats(), **topic_agreement(run, index)}
    index.save(path)
    write_json(run.sid_stats_file, stats)
    run.save_config(cfg)
    return StageReport("sid", [path], False, cfg, stats, index)


def alignment_targets(run_dir: RunLike, cfg: RunConfig) -> Any:
    """The training simulator's item clusters (N, C) when ``sid.align`` asks for them, else None; a
    missing simulator is an ArtifactError naming the command that trains it."""
    if cfg.sid.align <= 0:
        return None
    run = RunDir(run_dir)
    if not run.simulator_file().is_file():
        raise ArtifactError(
            f"{run.simulator_file()}: sid.align={cfg.sid.align} aligns the Semantic IDs with the trained simulator's"
            f" item clusters, and there is no simulator yet (run `hsrl simulator train {run}` first, or build on"
            f" the features alone: `hsrl sid build {run} --align 0`)"
        )
    return run.simulator().item_clusters()


def topic_agreement(run: RunDir, index: Any) -> dict[str, float]:
    """On synthetic data, how well the level-1 codes match the true topics that fatigue acts on (adjusted
    mutual information, 1 = the same partition): a report only, never an input to any stage."""
    if not run.has_world:
        return {}
    from sklearn.metrics import adjusted_mutual_info_score

    topics = run.world().item_topic
    if len(topics) != index.n_items:
        return {}
    return {"level1_topic_ami": float(adjusted_mutual_info_score(topics, index.codes[:, 0]))}


def index_stats(run_dir: RunLike) -> tuple[Path, dict[str, Any]]:
    """The index's file and its statistics (an ArtifactError naming the command when there is none)."""
    run = RunDir(run_dir)
    index = run.index()
    return run.index_file, {**index.stats(), **topic_agreement(run, index)}


# ---------------------------------------------------------------------- the simulator
def train_simulator(
    run_dir: RunLike,
    cfg: RunConfig,
    force: bool = False,
    judge: bool = False,
    select: bool | None = None,
    nproc: int = 1,
    progress: Progress = SILENT,
) -> StageReport:
    """Train (unless a checkpoint exists and not ``force``), save model.pt and report.json; ``details``:
    the fidelity report (empty on the ranks of a launcher's group but 0, which write nothing).

    ``judge``: the second simulator, same data and settings but another seed (RUN_DIR/simulator_judge),
    so agents can be judged by a model they were not trained against; it reuses the settings the
    main simulator's selection kept (saved in the run's config). ``select`` (default
    ``simulator.select``): the small built-in selection on validation AUC, whose kept setting goes into
    the returned (and saved) config. ``nproc`` > 1: DDP on that many local processes; under torchrun the
    launcher's group is joined instead and only rank 0 writes."""
    from hsrl.io import write_json
    from hsrl.simulator import distributed
    from hsrl.simulator.response import (
        JUDGE_SEED_OFFSET,
        fidelity_report,
        save_checkpoint,
        select_response_model,
        train_response_model,
    )

    run = RunDir(run_dir)
    model_file, report_file = run.simulator_file(judge), run.simulator_report_file(judge)
    if model_file.is_file() and report_file.is_file() and not force:
        return replace(simulator_report(run, cfg, judge=judge), skipped=True)
    launched = distributed.launched_world_size()
    do_select = (select if select is not None else cfg.simulator.select) and not judge
    if launched > 1 and nproc > 1:
        raise ConfigError(f"--nproc {nproc} inside a launcher's group of {launched}: use one or the other")
    if (launched > 1 or nproc > 1) and do_select:
        raise ConfigError(f"--select runs in one process; the kept setting goes into {run.config_file.name}, so a"
                          " later `--force --nproc N` trains it on N processes")  # fmt: skip
    run.require_dataset()
    dataset = run.dataset() if nproc == 1 else None  # with --nproc: read after the workers
    world = run.world() if run.has_world else None
    sim = cfg.simulator
    if judge:  # the main simulator's kept setting is already in the config (selection writes it there)
        sim = sim.model_copy(update={"seed": sim.seed + JUDGE_SEED_OFFSET, "select": False})
    rank = 0
    shown = progress if launched <= 1 else SILENT
    with shown.counting("training simulator", sim.epochs) as bar:

        def on_epoch(stats: Any) -> None:
            bar.advance(f"loss {stats.train_loss:.4f}  val AUC {stats.val_auc:.4f}")

        def on_trial(label: str, trial: dict[str, Any]) -> None:
            bar.note(f"  {label}: val AUC {trial['best_val_auc']:.4f} ({trial['epochs_run']} epochs)")
            bar.reset()

        if do_select:
            assert dataset is not None  # one process: read above
            model, training = select_response_model(dataset, sim, on_trial=on_trial, on_epoch=on_epoch)
        elif nproc > 1:
            model, training = distributed.train_distributed(run.data_dir, sim, nproc, on_epoch, scratch_dir=run.path)
        elif launched > 1:
            assert dataset is not None
            rank, device = distributed.join_launched_group()
            model, training = train_response_model(dataset, sim, on_epoch if rank == 0 else None, device)
            distributed.leave_group()
        else:
            assert dataset is not None
            model, training = train_response_model(dataset, sim, on_epoch, distributed.backend_and_device()[1])
    if rank != 0:
        return StageReport("judge" if judge else "simulator", [model_file, report_file], False, cfg)
    dataset = dataset if dataset is not None else run.dataset()
    report = fidelity_report(model, dataset, world, margin=sim.fidelity_margin)
    report["training"] = training
    save_checkpoint(model, model_file, training)
    write_json(report_file, report)
    if do_select:  # the selection is resolved into the config: later stages and retrains use the kept setting
        changes = training["selection"]["changes"]
        cfg = cfg.model_copy(update={"simulator": cfg.simulator.model_copy(update={**changes, "select": False})})
        progress.note(f"kept setting saved to {run.config_file}: {changes or 'the configured one'}")
    if not judge:
        run.save_config(cfg)
    return StageReport("judge" if judge else "simulator", [model_file, report_file], False, cfg, report)


def simulator_report(
    run_dir: RunLike, cfg: RunConfig | None = None, recompute: bool = False, judge: bool = False
) -> StageReport:
    """Check that the checkpoint loads and fits the dataset, then read (or recompute and save) its fidelity
    report; ``cfg`` (default: the run's) gives the fidelity margin."""
    from hsrl.io import read_json, write_json
    from hsrl.simulator.response import fidelity_report

    run = RunDir(run_dir)
    cfg = cfg if cfg is not None else run.config()
    model = run.simulator(judge=judge)  # checked against the dataset
    path = run.simulator_report_file(judge)
    stage, files = ("judge" if judge else "simulator"), [run.simulator_file(judge), path]
    if recompute or not path.is_file():
        world = run.world() if run.has_world else None
        report = fidelity_report(model, run.dataset(), world, margin=cfg.simulator.fidelity_margin)
        report["training"] = read_json(path).get("training") if path.is_file() else None
        write_json(path, report)
        return StageReport(stage, files, False, cfg, report)
    try:
        report = read_json(path)
    except ValueError as exc:
        raise ArtifactError(f"{path}: corrupt report ({exc})") from None
    return StageReport(stage, files, True, cfg, report)


# ---------------------------------------------------------------------- judges, tuned values, on-demand stages
def resolve_worlds(run_dir: RunLike, world: str | None) -> list[str]:
    """simulator | judge | true, a comma list of them, both (simulator + true world where there is one;
    the default) or all (both + the judge simulator). Missing simulators are built by ``ensure_stages``."""
    run = RunDir(run_dir)
    has_world = run.has_world
    if world in (None, "both", "all"):
        names = ["simulator"] + (["judge"] if world == "all" else []) + (["true"] if has_world else [])
    else:
        names = [w.strip() for w in world.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORLDS]
    if unknown or not names:
        raise ConfigError(f"unknown world '{world}' (expected {', '.join(WORLDS)}, a comma list of them, both or all)")
    if "true" in names and not has_world:
        run.require_dataset()  # no data at all is the message to give, not "not synthetic"
        raise ConfigError(f"{run.path}: the true world exists only for synthetic data")
    return names


def with_tuned(run_dir: RunLike, cfg: RunConfig, names: list[str], tuned: bool) -> tuple[RunConfig, list[str]]:
    """``tuned`` makes every learned agent NAME the spec NAME:tuned; every NAME:tuned spec gets the values
    in RUN/tuned/NAME.yaml (read now, never from an older copy: the saved config does not keep them)."""
    from hsrl.agents import registry
    from hsrl.tuning import load_tuned, tuned_specs

    names = tuned_specs(names) if tuned else names
    wanted = [n for n in names if registry.TUNED in registry.parse_agent(n)[1]]
    return (load_tuned(run_dir, cfg, wanted) if wanted else cfg), names


def ensure_stages(
    run_dir: RunLike,
    cfg: RunConfig,
    worlds: Iterable[str],
    force: bool = False,
    progress: Progress = SILENT,
) -> RunConfig:
    """Build what agents need on top of the data, where missing (everything with ``force``): the simulator
    (and the judge) for the ``worlds`` used, and the Semantic ID index. One place, so every command that
    trains or scores agents works on a run that has only its data; the data itself is never guessed.
    Each stage built is ``progress.finished``; returns the config after them (a simulator's selection
    keeps its setting there)."""
    run = RunDir(run_dir)
    run.require_dataset()
    worlds = set(worlds)
    simulators = (("simulator", False, "simulator"), ("judge", True, "judge simulator"))
    trained_agents = any(run.agents_dir.glob("*/seed*/agent.pt"))
    if cfg.sid.align > 0 and (force or not run.index_file.is_file()):
        worlds.add("simulator")  # the aligned Semantic IDs are built on its item clusters
    for world, judge, what in simulators:
        if world in worlds and (force or not run.simulator_file(judge).is_file()):
            if not force:
                progress.note(f"{run.simulator_dir(judge)}: no {what} yet; training it now")
                if trained_agents and world == "simulator":
                    progress.note(f"warning: the agents in {run.agents_dir} were trained in a simulator that is gone;"
                                  " the new one may differ (retrain them with --force)", "warning")  # fmt: skip
            report = train_simulator(run, cfg, force=force, judge=judge, progress=progress)
            cfg = report.config
            progress.finished(report)
    if force or not run.index_file.is_file():
        if not force:
            progress.note(f"{run.index_file.parent}: no Semantic ID index yet; building it now")
        report = build_index(run, cfg, force=force, progress=progress)
        cfg = report.config
        progress.finished(report)
    return cfg


# ---------------------------------------------------------------------- serving
def export_run(run_dir: RunLike, seed: int = 0) -> Path:
    """Write the run's serving export (RUN_DIR/serve/) from the seed's HSRL checkpoint; returns it."""
    from hsrl.serve.export import export_policy

    run = RunDir(run_dir)
    ckpt = run.agent_file("hsrl", seed)
    if not ckpt.is_file():
        raise ArtifactError(f"{ckpt}: no HSRL checkpoint for seed {seed} (train one with `hsrl train {run.path}`)")
    return export_policy(ckpt, run.index(), run.dataset(), run.export_dir, seed)


def prepare_export(run_dir: RunLike, seed: int | None = None, force: bool = False) -> tuple[ExportedPolicy, bool]:
    """The run's serving export, loaded (written first from the seed's checkpoint when absent or
    ``force``); and whether it was written now."""
    from hsrl.serve.export import load_export

    run = RunDir(run_dir)
    out = run.export_dir
    exported = force or not out.exists()
    if exported:
        export_run(run, 0 if seed is None else seed)
    policy = load_export(out)
    exported_seed = (policy.manifest.get("source") or {}).get("seed")
    if seed is not None and exported_seed != seed:
        raise ArtifactError(f"{out}: exported from seed {exported_seed}, not {seed} (add --force to re-export)")
    return policy, exported

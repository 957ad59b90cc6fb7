"""`hsrl simulator train|report` (user response model and its fidelity)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hsrl.commands.common import ConfigOpt, ForceOpt, RunDirArg, SetOpt, console, new_group, run_config
from hsrl.config import save_config
from hsrl.errors import ArtifactError, ConfigError
from hsrl.rundir import RunDir

app = new_group("Train the user response model and report its fidelity.")

SCORERS = (
    ("simulator", "simulator"),
    ("popularity", "popularity"),
    ("item_ctr", "item CTR"),
    ("slot_ctr", "slot CTR"),
    ("true_world", "true world"),
)


def print_fidelity(report: dict[str, Any]) -> None:
    """A loud warning when the simulator does not beat every floor by the margin (report["fidelity"])."""
    check = report.get("fidelity")
    if not check:
        return
    if check["ok"]:
        console.print(
            f"[green]fidelity check passed[/]: the simulator beats every floor by >= {check['margin']:.2f} AUC"
        )
        return
    lines = [f"  {f['split']}: simulator AUC {f['simulator_auc']:.4f} vs {f['floor']} {f['floor_auc']:.4f}"
             for f in check["failing"]]  # fmt: skip
    console.print(
        "[bold red]WARNING: the simulator does not beat every floor by "
        f"{check['margin']:.2f} AUC[/] — agents trained or judged in it would meet a world no better than a "
        "per-item or per-slot click rate:\n" + "\n".join(lines) + "\n  try `--select` (a small search on "
        "validation AUC), more data, or other simulator settings (--set simulator.KEY=VALUE)."
    )


def print_report(report: dict[str, Any]) -> None:
    """The fidelity table: one row per split and scorer, then the training summary and the floor check."""
    caption = "floors: popularity (train click count), item CTR (smoothed train click rate), slot CTR (per position)"
    if any("true_world" in (report.get(s) or {}) for s in ("val", "test")):
        caption += "; true world: the achievable ceiling"
    table = Table(title=f"simulator fidelity ({report.get('dataset', '?')})", caption=caption)
    for col in ("split", "scorer", "AUC", "logloss", "ECE", "pred CTR", "log CTR", "rows"):
        table.add_column(col, justify="left" if col in ("split", "scorer") else "right", no_wrap=True)
    for split in ("val", "test"):
        entry = report.get(split)
        if not entry:
            continue
        for key, label in SCORERS:
            m = entry.get(key)
            if m is None:
                continue
            cells = [m.get(k) for k in ("auc", "log_loss", "ece", "predicted_rate", "logged_rate")]
            table.add_row(split, label, *("-" if c is None else f"{c:.4f}" for c in cells), str(entry["rows"]))
    console.print(table)
    train = report.get("training")
    if train:
        console.print(
            f"trained {train['epochs_run']} epochs in {train['seconds']:.1f}s;"
            f" best epoch {train['best_epoch']} (val AUC {train['best_val_auc']:.4f})"
            + (f" on {train['processes']} processes" if train.get("processes", 1) > 1 else "")
        )
        selection = train.get("selection")
        if selection:
            trials = ", ".join(f"{t['setting']} {t['best_val_auc']:.4f}" for t in selection["trials"])
            console.print(f"selection on val AUC: {trials}; kept: {selection['chosen']}")
    print_fidelity(report)


def train_simulator(
    run_dir: Path,
    overrides: list[str] | None = None,
    config: list[Path] | None = None,
    force: bool = False,
    judge: bool = False,
    select: bool | None = None,
    nproc: int = 1,
) -> dict[str, Any]:
    """Train (unless a checkpoint exists and not ``force``), save model.pt and report.json; return the report.

    ``judge``: the second simulator, same data and settings but another seed (RUN_DIR/simulator_judge),
    so agents can be judged by a model they were not trained against; it reuses the settings the
    main simulator's selection kept (written into config.yaml). ``select`` (default
    ``simulator.select``): the small built-in selection on validation AUC. ``nproc`` > 1: DDP on that
    many local processes; under torchrun the launcher's group is joined instead and only rank 0 writes."""
    from hsrl.data.schema import LogDataset
    from hsrl.data.synthetic import WORLD_FILE, SyntheticWorld
    from hsrl.io import write_json
    from hsrl.rundir import JUDGE_DIR, MODEL_FILE, SIM_DIR
    from hsrl.simulator import distributed
    from hsrl.simulator.response import (
        JUDGE_SEED_OFFSET,
        REPORT_FILE,
        fidelity_report,
        save_checkpoint,
        select_response_model,
        train_response_model,
    )  # fmt: skip

    cfg = run_config(run_dir, config, overrides)
    folder = Path(run_dir) / (JUDGE_DIR if judge else SIM_DIR)
    if (folder / MODEL_FILE).is_file() and (folder / REPORT_FILE).is_file() and not force:
        console.print(f"[yellow]{folder / MODEL_FILE} exists; skipping (use --force to retrain).[/]")
        return show_report(run_dir, judge=judge)
    launched = distributed.launched_world_size()
    do_select = (select if select is not None else cfg.simulator.select) and not judge
    if launched > 1 and nproc > 1:
        raise ConfigError(f"--nproc {nproc} inside a launcher's group of {launched}: use one or the other")
    if (launched > 1 or nproc > 1) and do_select:
        raise ConfigError("--select runs in one process; the kept setting goes into config.yaml, so a later"
                          " `--force --nproc N` trains it on N processes")  # fmt: skip
    RunDir(run_dir).require_dataset()
    dataset = LogDataset.load(run_dir) if nproc == 1 else None  # with --nproc: read after the workers
    world = SyntheticWorld.load(run_dir) if (Path(run_dir) / WORLD_FILE).is_file() else None
    sim = cfg.simulator
    if judge:  # the main simulator's kept setting is already in config.yaml (selection writes it there)
        sim = sim.model_copy(update={"seed": sim.seed + JUDGE_SEED_OFFSET, "select": False})
    rank = 0
    columns = (TextColumn("training simulator{task.fields[trial]}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=True, disable=launched > 1) as progress:
        task = progress.add_task("train", total=sim.epochs, status="", trial="")

        def on_epoch(stats: Any) -> None:
            progress.update(task, advance=1, status=f"loss {stats.train_loss:.4f}  val AUC {stats.val_auc:.4f}")

        def on_trial(label: str, trial: dict[str, Any]) -> None:
            progress.console.print(f"  {label}: val AUC {trial['best_val_auc']:.4f} ({trial['epochs_run']} epochs)")
            progress.reset(task, total=sim.epochs, status="", trial="")

        if do_select:
            assert dataset is not None  # one process: read above
            model, training = select_response_model(dataset, sim, on_trial=on_trial, on_epoch=on_epoch)
        elif nproc > 1:
            model, training = distributed.train_distributed(run_dir, sim, nproc, on_epoch)
        elif launched > 1:
            assert dataset is not None
            rank, device = distributed.join_launched_group()
            model, training = train_response_model(dataset, sim, on_epoch if rank == 0 else None, device)
            distributed.leave_group()
        else:
            assert dataset is not None
            model, training = train_response_model(dataset, sim, on_epoch, distributed.backend_and_device()[1])
    if rank != 0:
        return {}
    dataset = dataset if dataset is not None else LogDataset.load(run_dir)
    report = fidelity_report(model, dataset, world, margin=sim.fidelity_margin)
    report["training"] = training
    save_checkpoint(model, folder / MODEL_FILE, training)
    write_json(folder / REPORT_FILE, report)
    if do_select:  # the selection is resolved into the config: later stages and retrains use the kept setting
        changes = training["selection"]["changes"]
        cfg = cfg.model_copy(update={"simulator": cfg.simulator.model_copy(update={**changes, "select": False})})
        console.print(f"kept setting saved to {Path(run_dir) / 'config.yaml'}: {changes or 'the configured one'}")
    if not judge:
        save_config(cfg, run_dir)
    console.print(f"[green]wrote[/] {folder / MODEL_FILE}, {folder / REPORT_FILE}")
    print_report(report)
    return report


JudgeOpt = Annotated[
    bool, typer.Option("--judge", help="The second simulator (seed + 1, RUN_DIR/simulator_judge) that judges agents.")
]


SelectOpt = Annotated[
    bool | None,
    typer.Option("--select/--no-select", help="Try a handful of settings (lr, weight decay, dropout, width, patience) "
                 "and keep the best validation AUC (default: simulator.select)."),
]  # fmt: skip
NprocOpt = Annotated[
    int,
    typer.Option("--nproc", min=1, help="Train with DDP on N local processes, each on its shard of the impressions "
                 "(gloo on CPU, NCCL on GPU). Under torchrun leave it at 1: the launcher's group is joined."),
]  # fmt: skip


@app.command("train")
def train(
    run_dir: RunDirArg,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    judge: JudgeOpt = False,
    select: SelectOpt = None,
    nproc: NprocOpt = 1,
) -> None:
    """Train the user response model on train users, select on val AUC, report on val and test users.

    The report compares it with three floors (popularity, item CTR, slot CTR) and warns when it does not
    beat each by simulator.fidelity_margin AUC. Equivalent multi-process form:
    `torchrun --nproc-per-node 2 -m hsrl simulator train RUN_DIR`."""
    train_simulator(run_dir, list(set_ or []), config, force, judge, select, nproc)


def show_report(run_dir: Path, recompute: bool = False, judge: bool = False) -> dict[str, Any]:
    """Check that the checkpoint loads and fits the dataset, then print (or recompute) its fidelity report."""
    from hsrl.data.schema import LogDataset
    from hsrl.data.synthetic import WORLD_FILE, SyntheticWorld
    from hsrl.io import read_json, write_json
    from hsrl.rundir import JUDGE_DIR, MODEL_FILE, SIM_DIR
    from hsrl.simulator.response import REPORT_FILE, fidelity_report, load_checkpoint

    folder = Path(run_dir) / (JUDGE_DIR if judge else SIM_DIR)
    dataset = LogDataset.load(run_dir)
    model = load_checkpoint(folder / MODEL_FILE, expect=dataset)
    path = folder / REPORT_FILE
    if recompute or not path.is_file():
        world = SyntheticWorld.load(run_dir) if (Path(run_dir) / WORLD_FILE).is_file() else None
        with console.status("computing the fidelity report ..."):
            report = fidelity_report(model, dataset, world, margin=run_config(run_dir).simulator.fidelity_margin)
        report["training"] = read_json(path).get("training") if path.is_file() else None
        write_json(path, report)
    else:
        try:
            report = read_json(path)
        except ValueError as exc:
            raise ArtifactError(f"{path}: corrupt report ({exc})") from None
    try:
        print_report(report)
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: corrupt report ({type(exc).__name__}: {exc}); use --recompute") from None
    return report


@app.command("report")
def report(
    run_dir: RunDirArg,
    recompute: Annotated[bool, typer.Option("--recompute", help="Recompute the metrics from the checkpoint.")] = False,
    judge: JudgeOpt = False,
) -> None:
    """Print the fidelity report of the trained simulator (RUN_DIR/simulator/report.json)."""
    show_report(run_dir, recompute, judge)

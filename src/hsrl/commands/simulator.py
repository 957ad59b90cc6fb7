"""`hsrl simulator train|report` (user response model and its fidelity)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hsrl.commands.common import ConfigOpt, ForceOpt, RunDirArg, SetOpt, console, new_group, run_config
from hsrl.config import save_config
from hsrl.errors import ArtifactError

app = new_group("Train the user response model and report its fidelity.")

SCORERS = (
    ("simulator", "simulator"),
    ("popularity", "popularity"),
    ("item_ctr", "item CTR"),
    ("true_world", "true world"),
)


def print_report(report: dict[str, Any]) -> None:
    """The fidelity table: one row per split and scorer."""
    caption = "floors: popularity (train click count), item CTR (smoothed train click rate)"
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
        )


def train_simulator(
    run_dir: Path,
    overrides: list[str] | None = None,
    config: list[Path] | None = None,
    force: bool = False,
    judge: bool = False,
) -> dict[str, Any]:
    """Train (unless a checkpoint exists and not ``force``), save model.pt and report.json; return the report.

    ``judge``: the second simulator, same data and settings but another seed (RUN_DIR/simulator_judge),
    so agents can be judged by a model they were not trained against."""
    from hsrl.data.schema import LogDataset
    from hsrl.data.synthetic import WORLD_FILE, SyntheticWorld
    from hsrl.io import write_json
    from hsrl.simulator.response import (
        JUDGE_DIR, JUDGE_SEED_OFFSET, MODEL_FILE, REPORT_FILE, SIM_DIR, fidelity_report, save_checkpoint,
        train_response_model,
    )

    cfg = run_config(run_dir, config, overrides)
    folder = Path(run_dir) / (JUDGE_DIR if judge else SIM_DIR)
    if (folder / MODEL_FILE).is_file() and (folder / REPORT_FILE).is_file() and not force:
        console.print(f"[yellow]{folder / MODEL_FILE} exists; skipping (use --force to retrain).[/]")
        return show_report(run_dir, judge=judge)
    dataset = LogDataset.load(run_dir)
    world = SyntheticWorld.load(run_dir) if (Path(run_dir) / WORLD_FILE).is_file() else None
    sim = cfg.simulator.model_copy(update={"seed": cfg.simulator.seed + JUDGE_SEED_OFFSET}) if judge else cfg.simulator
    columns = (TextColumn("training simulator"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("train", total=sim.epochs, status="")

        def on_epoch(stats: Any) -> None:
            progress.update(task, advance=1, status=f"loss {stats.train_loss:.4f}  val AUC {stats.val_auc:.4f}")

        model, training = train_response_model(dataset, sim, on_epoch=on_epoch)
    report = fidelity_report(model, dataset, world)
    report["training"] = training
    save_checkpoint(model, folder / MODEL_FILE, training)
    write_json(folder / REPORT_FILE, report)
    if not judge:
        save_config(cfg, run_dir)
    console.print(f"[green]wrote[/] {folder / MODEL_FILE}, {folder / REPORT_FILE}")
    print_report(report)
    return report


JudgeOpt = Annotated[
    bool, typer.Option("--judge", help="The second simulator (seed + 1, RUN_DIR/simulator_judge) that judges agents.")
]


@app.command("train")
def train(
    run_dir: RunDirArg, config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False, judge: JudgeOpt = False
) -> None:
    """Train the user response model on train users, select on val AUC, report on val and test users."""
    train_simulator(run_dir, list(set_ or []), config, force, judge)


def show_report(run_dir: Path, recompute: bool = False, judge: bool = False) -> dict[str, Any]:
    """Check that the checkpoint loads and fits the dataset, then print (or recompute) its fidelity report."""
    from hsrl.data.schema import LogDataset
    from hsrl.data.synthetic import WORLD_FILE, SyntheticWorld
    from hsrl.io import read_json, write_json
    from hsrl.simulator.response import JUDGE_DIR, MODEL_FILE, REPORT_FILE, SIM_DIR, fidelity_report, load_checkpoint

    folder = Path(run_dir) / (JUDGE_DIR if judge else SIM_DIR)
    dataset = LogDataset.load(run_dir)
    model = load_checkpoint(folder / MODEL_FILE, expect=dataset)
    path = folder / REPORT_FILE
    if recompute or not path.is_file():
        world = SyntheticWorld.load(run_dir) if (Path(run_dir) / WORLD_FILE).is_file() else None
        with console.status("computing the fidelity report ..."):
            report = fidelity_report(model, dataset, world)
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

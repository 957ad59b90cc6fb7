"""`hsrl simulator train|report` (user response model and its fidelity)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hsrl.commands.common import ConfigOpt, ForceOpt, RunDirArg, SetOpt, console, new_group, run_config
from hsrl.config import save_config
from hsrl.errors import ArtifactError

app = new_group("Train the user response model and report its fidelity.")

SCORERS = (
    ("simulator", "simulator"),
    ("popularity", "popularity (floor)"),
    ("true_world", "true world (ceiling)"),
)


def print_report(report: dict[str, Any]) -> None:
    """The fidelity table: one row per split and scorer."""
    table = Table(title=f"simulator fidelity ({report.get('dataset', '?')})")
    for col in ("split", "scorer", "AUC", "log-loss", "ECE", "pred. rate", "logged rate", "rows"):
        table.add_column(col, justify="left" if col in ("split", "scorer") else "right")
    for split in ("val", "test"):
        entry = report.get(split)
        if not entry:
            continue
        for key, label in SCORERS:
            m = entry.get(key)
            if m is None:
                continue
            table.add_row(
                split, label, f"{m['auc']:.4f}", f"{m['log_loss']:.4f}", f"{m['ece']:.4f}",
                f"{m['predicted_rate']:.4f}", f"{m['logged_rate']:.4f}", str(entry["rows"]),
            )
    console.print(table)
    train = report.get("training")
    if train:
        console.print(
            f"trained {train['epochs_run']} epochs in {train['seconds']:.1f}s;"
            f" best epoch {train['best_epoch']} (val AUC {train['best_val_auc']:.4f})"
        )


def train_simulator(
    run_dir: Path, overrides: list[str] | None = None, config: list[Path] | None = None, force: bool = False
) -> dict[str, Any]:
    """Train (unless a checkpoint exists and not ``force``), save model.pt and report.json; return the report."""
    from hsrl.data.schema import LogDataset
    from hsrl.data.synthetic import WORLD_FILE, SyntheticWorld
    from hsrl.io import read_json, write_json
    from hsrl.simulator.response import (
        MODEL_FILE, REPORT_FILE, SIM_DIR, fidelity_report, save_checkpoint, train_response_model,
    )

    cfg = run_config(run_dir, config, overrides)
    folder = Path(run_dir) / SIM_DIR
    if (folder / MODEL_FILE).is_file() and (folder / REPORT_FILE).is_file() and not force:
        console.print(f"[yellow]{folder / MODEL_FILE} exists; skipping (use --force to retrain).[/]")
        report = read_json(folder / REPORT_FILE)
        print_report(report)
        return report
    dataset = LogDataset.load(run_dir)
    world = SyntheticWorld.load(run_dir) if (Path(run_dir) / WORLD_FILE).is_file() else None
    sim = cfg.simulator
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
    save_config(cfg, run_dir)
    console.print(f"[green]wrote[/] {folder / MODEL_FILE}, {folder / REPORT_FILE}")
    print_report(report)
    return report


@app.command("train")
def train(run_dir: RunDirArg, config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Train the user response model on train users, select on val AUC, report on val and test users."""
    train_simulator(run_dir, list(set_ or []), config, force)


@app.command("report")
def report(run_dir: RunDirArg) -> None:
    """Print the fidelity report of a trained simulator (RUN_DIR/simulator/report.json)."""
    from hsrl.io import read_json
    from hsrl.simulator.response import REPORT_FILE, SIM_DIR

    path = Path(run_dir) / SIM_DIR / REPORT_FILE
    if not path.is_file():
        raise ArtifactError(f"{path}: no fidelity report (run `hsrl simulator train {run_dir}` first)")
    try:
        print_report(read_json(path))
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: corrupt report ({type(exc).__name__}: {exc})") from None

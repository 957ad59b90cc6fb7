"""`hsrl data prepare|describe`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hsrl.commands.common import (
    ConfigOpt,
    ForceOpt,
    RunDirArg,
    SetOpt,
    console_progress,
    new_group,
    print_mapping,
    run_config,
    say,
)
from hsrl.rundir import RunDir

if TYPE_CHECKING:
    from hsrl.workflow.progress import StageReport

app = new_group("Prepare and describe logged data (synthetic, MovieLens, RL4RS, your own CSV/Parquet).")

# the data options of `hsrl data prepare` and `hsrl run` (one definition, one meaning)
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset", "-d", help="synthetic | ml-100k | ml-1m | rl4rs | csv (default: the run's, else synthetic)."
    ),
]
SourceOpt = Annotated[
    str | None,
    typer.Option("--source", help="Raw data: a file or folder (MovieLens files, RL4RS session CSV, csv/parquet logs)."),
]
ItemsOpt = Annotated[
    str | None, typer.Option("--items", help="Item feature file (RL4RS item_info.csv; csv/parquet item features).")
]


def data_overrides(
    dataset: str | None, source: str | None, items: str | None, sets: list[str] | None = None
) -> list[str]:
    """``--set`` overrides, then ``--dataset/--source/--items`` as ``data.*`` overrides (the flags win)."""
    overrides = list(sets or [])
    for key, value in (("dataset", dataset), ("source", source), ("item_source", items)):
        if value is not None:
            overrides.append(f"data.{key}={value}")
    return overrides


def prepare_and_show(
    out: Path, overrides: list[str] | None = None, config: list[Path] | None = None, force: bool = False
) -> None:
    """Resolve the config, prepare the data (``hsrl.workflow.prepare_data``) and show what was done."""
    from hsrl.workflow import prepare_data

    show_data(prepare_data(out, run_config(out, config, overrides), force, console_progress()))


def show_data(report: StageReport) -> None:
    if report.skipped:
        say(f"{report.path} exists; skipping (use --force to redo).", "skip")
        return
    say(f"wrote {report.path}", "done")
    print_mapping(report.config.data.dataset, report.details)


@app.command("prepare")
def prepare(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write data/ into.")] = Path(
        "runs/synthetic"
    ),
    dataset: DatasetOpt = None,
    source: SourceOpt = None,
    items: ItemsOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Read, validate and save a dataset into RUN_DIR/data (atomically: nothing half-written on error).

    Your own logs: --dataset csv --source interactions.csv --items items.csv; `hsrl run` takes the same
    options and goes on through every stage.
    """
    prepare_and_show(out, data_overrides(dataset, source, items, set_), config, force)


@app.command("describe")
def describe(run_dir: RunDirArg) -> None:
    """Users, items, impressions, click rate and history lengths of a prepared dataset."""
    print_mapping(str(run_dir), RunDir(run_dir).dataset().describe())

"""`hsrl data prepare|describe`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hsrl.commands.common import ConfigOpt, ForceOpt, RunDirArg, SetOpt, console, new_group, print_mapping, run_config
from hsrl.config import save_config
from hsrl.rundir import RunDir

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


def _same_data_or_stop(out: Path, requested: Any) -> None:
    """A run holds one dataset: asking for another one (other source, other options) in it stops instead
    of silently reusing the old data under a config that names the new one."""
    from hsrl.config import CONFIG_FILE, load_run_config
    from hsrl.errors import ConfigError

    if not (out / CONFIG_FILE).is_file():
        return
    saved = load_run_config(out).data.model_dump(mode="json")
    wanted = requested.model_dump(mode="json")
    diff = [k for k in wanted if wanted[k] != saved.get(k)]
    if diff:
        key = diff[0]
        raise ConfigError(
            f"{out} already holds data prepared with data.{key}={saved.get(key)!r}, not {wanted[key]!r}; use another"
            " --out, or --force to prepare it again (then retrain the later stages with --force too)"
        )


def prepare_data(out: Path, overrides: list[str] | None = None, config: list[Path] | None = None, force: bool = False):
    """Read, validate and save the dataset (and the synthetic world) into ``out``; returns the LogDataset."""
    from hsrl.data import load
    from hsrl.data.schema import DATA_DIR, LogDataset

    cfg = run_config(out, config, overrides)
    if RunDir(out).has_dataset and not force:
        _same_data_or_stop(out, cfg.data)
        console.print(f"[yellow]{out / DATA_DIR} exists; skipping (use --force to redo).[/]")
        return LogDataset.load(out)
    with console.status(f"reading {cfg.data.dataset} ..."):
        if cfg.data.dataset == "synthetic":
            from hsrl.data.synthetic import WORLD_FILE, generate

            ds, world = generate(cfg.data)
            ds.validate("synthetic")
        else:
            ds, world = load(cfg.data), None
    ds.save(out)
    if world is not None:
        world.save(out / WORLD_FILE)
    save_config(cfg, out)
    console.print(f"[green]wrote[/] {out / DATA_DIR}")
    print_mapping(cfg.data.dataset, ds.describe())
    return ds


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
    prepare_data(out, data_overrides(dataset, source, items, set_), config, force)


@app.command("describe")
def describe(run_dir: RunDirArg) -> None:
    """Users, items, impressions, click rate and history lengths of a prepared dataset."""
    from hsrl.data.schema import LogDataset

    print_mapping(str(run_dir), LogDataset.load(run_dir).describe())

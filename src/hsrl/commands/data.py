"""`hsrl data prepare|describe`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hsrl.commands.common import ConfigOpt, ForceOpt, RunDirArg, SetOpt, console, new_group, print_mapping, run_config
from hsrl.config import save_config

app = new_group("Prepare and describe logged data (synthetic, MovieLens, RL4RS, your own CSV/Parquet).")


def prepare_data(out: Path, overrides: list[str] | None = None, config: list[Path] | None = None, force: bool = False):
    """Read, validate and save the dataset (and the synthetic world) into ``out``; returns the LogDataset."""
    from hsrl.data import load
    from hsrl.data.schema import DATA_DIR, LogDataset

    cfg = run_config(out, config, overrides)
    if (out / DATA_DIR / "dataset.npz").is_file() and not force:
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
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write data/ into.")] = Path("runs/synthetic"),
    dataset: Annotated[
        Optional[str], typer.Option("--dataset", "-d", help="synthetic | ml-100k | ml-1m | rl4rs | csv")
    ] = None,
    source: Annotated[
        Optional[str],
        typer.Option("--source", help="Raw data: a file or folder (MovieLens files, RL4RS session CSV, csv/parquet logs)."),
    ] = None,
    items: Annotated[
        Optional[str], typer.Option("--items", help="Item feature file (RL4RS item_info.csv; csv/parquet item features).")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Read, validate and save a dataset into RUN_DIR/data (atomically: nothing half-written on error)."""
    overrides = list(set_ or [])
    if dataset is not None:
        overrides.append(f"data.dataset={dataset}")
    if source is not None:
        overrides.append(f"data.source={source}")
    if items is not None:
        overrides.append(f"data.item_source={items}")
    prepare_data(out, overrides, config, force)


@app.command("describe")
def describe(run_dir: RunDirArg) -> None:
    """Users, items, impressions, click rate and history lengths of a prepared dataset."""
    from hsrl.data.schema import LogDataset

    print_mapping(str(run_dir), LogDataset.load(run_dir).describe())

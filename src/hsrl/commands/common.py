"""Options, config loading and printing shared by every subcommand."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hsrl.config import RunConfig, load_config, load_run_config

console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[list[Path] | None, typer.Option("--config", "-c", help="YAML config file(s), applied in order.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override a config value: --set sid.levels=4 (repeatable).")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo the stage even if its artefact exists.")]
RunDirArg = Annotated[Path, typer.Argument(help="Run directory (artefacts are read from and written to it).")]


def new_group(help_text: str) -> typer.Typer:
    return typer.Typer(help=help_text, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def run_config(run_dir: Path, config_files: list[Path] | None = None, overrides: list[str] | None = None) -> RunConfig:
    """The run's config: saved RUN_DIR/config.yaml (if any) <- given files <- overrides."""
    base = load_run_config(run_dir) if (Path(run_dir) / "config.yaml").is_file() else None
    return load_config(config_files, overrides, base=base)


def print_mapping(title: str, mapping: dict[str, Any]) -> None:
    """Print a flat key/value mapping as a two-column table."""
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in mapping.items():
        table.add_row(str(key), f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)

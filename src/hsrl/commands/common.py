"""Options, config loading and printing shared by every subcommand."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hsrl.config import RunConfig, load_config
from hsrl.rundir import RunDir

if TYPE_CHECKING:
    from rich.progress import Progress as Bar

    from hsrl.workflow.progress import Kind, StageReport

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
    """The run's config: its saved config (if any) <- given files <- overrides."""
    run = RunDir(run_dir)
    base = run.config() if run.config_file.is_file() else None
    return load_config(config_files, overrides, base=base)


def print_mapping(title: str, mapping: dict[str, Any]) -> None:
    """Print a flat key/value mapping as a two-column table."""
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in mapping.items():
        table.add_row(str(key), f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


STYLES = {"info": "cyan", "warning": "yellow", "skip": "yellow"}


def say(text: str, kind: Kind = "info", where: Console | None = None) -> None:
    """One line of a stage: ``done`` lines start with a green verb ("wrote", "trained"), the others in colour."""
    out = where or console
    if kind == "done":
        verb, _, rest = text.partition(" ")
        out.print(f"[green]{escape(verb)}[/] {escape(rest)}")
    else:
        out.print(escape(text), style=STYLES[kind])


class _Counter:
    def __init__(self, bar: Bar, task: Any, total: int) -> None:
        self.bar, self.task, self.total = bar, task, total

    def advance(self, status: str = "") -> None:
        self.bar.update(self.task, advance=1, status=status)

    def reset(self, status: str = "") -> None:
        self.bar.reset(self.task, total=self.total, status=status)

    def note(self, text: str, kind: Kind = "info") -> None:
        say(text, kind, self.bar.console)


def console_progress() -> Any:
    """The pipeline's progress hooks rendered on the console (status spinners, bars, coloured lines, and
    the report of each stage that ``ensure_stages`` built on the way)."""
    from hsrl.workflow.progress import Progress

    class ConsoleProgress(Progress):
        show_bars = True

        def note(self, text: str, kind: Kind = "info") -> None:
            say(text, kind)

        @contextmanager
        def working(self, text: str) -> Iterator[None]:
            with console.status(text):
                yield

        @contextmanager
        def counting(self, text: str, total: int) -> Iterator[Any]:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            columns = (TextColumn(escape(text)), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                       TimeElapsedColumn())  # fmt: skip
            with Progress(*columns, console=console, transient=True) as bar:
                yield _Counter(bar, bar.add_task(text, total=total, status=""), total)

        def finished(self, report: StageReport) -> None:
            show_stage(report)

    return ConsoleProgress()


def show_stage(report: StageReport) -> None:
    """What a stage did, as its own command shows it."""
    if report.stage in ("simulator", "judge"):
        from hsrl.commands.simulator import show_simulator

        show_simulator(report)
    elif report.stage == "sid":
        from hsrl.commands.sid import show_index

        show_index(report)
    elif report.stage == "data":
        from hsrl.commands.data import show_data

        show_data(report)

"""The ``hsrl`` command: one subcommand group per pipeline stage (DESIGN §10).

Every stage reads and writes a run directory, saves the merged config there, and skips work whose
artefact already exists unless ``--force``. User errors print one clear line and exit with code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import click
import typer

from hsrl.commands import data as data_cmd
from hsrl.commands import serve as serve_cmd
from hsrl.commands import sid as sid_cmd
from hsrl.commands import simulator as simulator_cmd
from hsrl.commands.common import ConfigOpt, SetOpt, console, err_console
from hsrl.errors import HsrlError

app = typer.Typer(
    name="hsrl",
    help="Hierarchical Semantic RL for slate recommendation over Semantic IDs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_cmd.app, name="data")
app.add_typer(simulator_cmd.app, name="simulator")
app.add_typer(sid_cmd.app, name="sid")
app.command("serve")(serve_cmd.serve)


@app.command("run")
def run(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory.")] = Path("runs/synthetic"),
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="synthetic | ml-100k | ml-1m | rl4rs | csv")] = "synthetic",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Redo every stage.")] = False,
) -> None:
    """The whole pipeline on one dataset (synthetic default): data -> simulator -> SIDs -> agents -> report."""
    overrides = [f"data.dataset={dataset}", *(set_ or [])]
    data_cmd.prepare_data(out, overrides, config, force)
    console.print(f"[green]done[/]: {out}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; HsrlError and usage errors become one message and a non-zero exit, no traceback."""
    try:
        app(args=argv, prog_name="hsrl", standalone_mode=False)
    except HsrlError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 1
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()

"""The ``hsrl`` command: one subcommand group per pipeline stage (DESIGN §10).

Every stage reads and writes a run directory, saves the merged config there, and skips work whose
artefact already exists unless ``--force``. User errors print one clear line and exit with code 2.
"""

from __future__ import annotations

import sys

import click
import typer

from hsrl.commands import data as data_cmd
from hsrl.commands import experiment as experiment_cmd
from hsrl.commands import serve as serve_cmd
from hsrl.commands import sid as sid_cmd
from hsrl.commands import simulator as simulator_cmd
from hsrl.commands import tune as tune_cmd
from hsrl.commands.common import err_console
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
experiment_cmd.register(app)
tune_cmd.register(app)


def set_threads() -> None:
    """hsrl's networks are small: one intra-op thread per process is as fast as several and does not
    thrash when processes share the cores (seeds train in parallel). HSRL_THREADS overrides.

    Through OMP_NUM_THREADS, which torch reads when it is first imported, so that commands that never
    need torch (``--help``, ``data describe``) do not pay for importing it."""
    import os

    threads = str(max(1, int(os.environ.get("HSRL_THREADS", "1"))))
    os.environ["OMP_NUM_THREADS"] = threads
    if "torch" in sys.modules:  # already imported (e.g. the CLI called in-process by the tests)
        sys.modules["torch"].set_num_threads(int(threads))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; HsrlError and usage errors become one message and a non-zero exit, no traceback."""
    set_threads()
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

"""`hsrl sid build|describe` (Semantic ID codebooks and index, DESIGN §6)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

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

if TYPE_CHECKING:
    from hsrl.workflow.progress import StageReport

app = new_group("Build and describe the Semantic ID index (residual k-means codebooks).")


def _printable(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: (" ".join(map(str, v)) if isinstance(v, list) else v) for k, v in stats.items()}


def show_index(report: StageReport) -> None:
    if report.skipped:
        say(f"{report.path} exists; skipping (use --force to redo).", "skip")
        return
    say(f"wrote {report.path}", "done")
    print_mapping("Semantic IDs", _printable(report.details))


@app.command("build")
def build(
    run_dir: RunDirArg,
    levels: Annotated[
        int | None, typer.Option("--levels", "-L", help="Semantic levels L (tokens before disambiguation).")
    ] = None,
    codes: Annotated[
        int | None, typer.Option("--codes", "-V", help="Codes per level V (default: from the catalogue size).")
    ] = None,
    balanced: Annotated[
        bool | None, typer.Option("--balanced/--plain", help="Capacity-constrained k-means (even code use).")
    ] = None,
    text: Annotated[
        bool | None, typer.Option("--text/--features", help="Embed item texts (needs the 'text' extra).")
    ] = None,
    align: Annotated[
        float | None,
        typer.Option(
            "--align",
            help="Weight of the block aligned with the trained simulator's item clusters (0: features only).",
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Residual k-means codebooks + invertible SID lookup for the items of RUN_DIR/data -> RUN_DIR/sid/."""
    overrides = list(set_ or [])
    options = (("levels", levels), ("codes", codes), ("balanced", balanced), ("text", text), ("align", align))
    for key, value in options:
        if value is not None:
            overrides.append(f"sid.{key}={str(value).lower() if isinstance(value, bool) else value}")
    from hsrl.workflow import build_index

    show_index(build_index(run_dir, run_config(run_dir, config, overrides), force, console_progress()))


@app.command("describe")
def describe(run_dir: RunDirArg) -> None:
    """Code usage, entropy, collisions and reconstruction error of RUN_DIR/sid/index.npz."""
    from hsrl.workflow import index_stats

    path, stats = index_stats(run_dir)
    print_mapping(str(path), _printable(stats))

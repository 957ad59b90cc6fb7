"""`hsrl sid build|describe` (Semantic ID codebooks and index, DESIGN §6)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hsrl.commands.common import ConfigOpt, ForceOpt, RunDirArg, SetOpt, console, new_group, print_mapping, run_config
from hsrl.config import save_config
from hsrl.errors import ArtifactError

app = new_group("Build and describe the Semantic ID index (residual k-means codebooks).")

STATS_FILE = "stats.json"  # beside the index


def index_path(run_dir: Path) -> Path:
    from hsrl.rundir import RunDir

    return RunDir(run_dir).index_file


def _printable(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: (" ".join(map(str, v)) if isinstance(v, list) else v) for k, v in stats.items()}


def build_index(
    run_dir: Path, overrides: list[str] | None = None, config: list[Path] | None = None, force: bool = False
):
    """Build RUN_DIR/sid/index.npz from RUN_DIR/data (skipped if present unless ``force``); returns the index."""
    from hsrl.data.schema import LogDataset
    from hsrl.io import write_json
    from hsrl.sid import SemanticIDIndex
    from hsrl.sid.build import build_for_dataset

    cfg = run_config(run_dir, config, overrides)
    path = index_path(run_dir)
    if path.is_file() and not force:
        console.print(f"[yellow]{path} exists; skipping (use --force to redo).[/]")
        return SemanticIDIndex.load(path)
    ds = LogDataset.load(run_dir)
    with console.status(f"building Semantic IDs for {ds.n_items} items ..."):
        index = build_for_dataset(ds, cfg.sid, where=str(Path(run_dir) / "data"))
    stats = index.stats()
    index.save(path)
    write_json(path.parent / STATS_FILE, stats)
    save_config(cfg, run_dir)
    console.print(f"[green]wrote[/] {path}")
    print_mapping("Semantic IDs", _printable(stats))
    return index


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
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Residual k-means codebooks + invertible SID lookup for the items of RUN_DIR/data -> RUN_DIR/sid/."""
    overrides = list(set_ or [])
    for key, value in (("levels", levels), ("codes", codes), ("balanced", balanced), ("text", text)):
        if value is not None:
            overrides.append(f"sid.{key}={str(value).lower() if isinstance(value, bool) else value}")
    build_index(run_dir, overrides, config, force)


@app.command("describe")
def describe(run_dir: RunDirArg) -> None:
    """Code usage, entropy, collisions and reconstruction error of RUN_DIR/sid/index.npz."""
    from hsrl.sid import SemanticIDIndex

    path = index_path(run_dir)
    if not path.is_file():
        raise ArtifactError(f"{path}: no Semantic ID index here (run `hsrl sid build {run_dir}` first)")
    print_mapping(str(path), _printable(SemanticIDIndex.load(path).stats()))

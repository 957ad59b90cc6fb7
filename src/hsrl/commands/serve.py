"""`hsrl serve RUN_DIR`: export the run's HSRL policy if needed, then serve it over HTTP (DESIGN §10)."""

from __future__ import annotations

from typing import Annotated

import typer

from hsrl.commands.common import RunDirArg, console, say
from hsrl.errors import ConfigError
from hsrl.rundir import RunDir


def serve(
    run_dir: RunDirArg,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Agent seed to export (default: the existing export, else 0).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-export the policy even if RUN_DIR/serve exists.")] = False,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Most users per /recommend request.")] = 256,
    max_new_items: Annotated[int, typer.Option("--max-new-items", help="Most items per POST /items request.")] = 10_000,
    threads: Annotated[
        int | None, typer.Option("--threads", help="torch threads for the forward passes (default: torch's).")
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(
            "--admin-token",
            envvar="HSRL_ADMIN_TOKEN",
            help="Bearer token required by POST/DELETE /items (required when --host is not loopback).",
        ),
    ] = None,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", help="Larger request bodies get 413.")] = 16.0,
    batch_users: Annotated[
        int, typer.Option("--batch-users", help="Micro-batching: most users per forward pass (1: no batching).")
    ] = 64,
    batch_wait_ms: Annotated[
        float, typer.Option("--batch-wait-ms", help="Micro-batching: longest wait for more requests after the first.")
    ] = 1.0,
    ephemeral: Annotated[
        bool, typer.Option("--ephemeral", help="Keep catalogue changes in memory only (no RUN_DIR/catalogue log).")
    ] = False,
) -> None:
    """Serve RUN_DIR's HSRL policy: POST /recommend, POST/DELETE/GET /items, GET /health, docs at /docs.

    Catalogue changes are appended to RUN_DIR/catalogue/changes.log (fsync'ed) before they are
    acknowledged and replayed at start, so they survive a crash or restart."""
    import ipaddress

    import torch
    import uvicorn

    from hsrl.serve.app import create_app
    from hsrl.workflow import prepare_export

    for name, value in (
        ("--max-batch", max_batch),
        ("--max-new-items", max_new_items),
        ("--threads", threads or 1),
        ("--batch-users", batch_users),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1 (got {value})")
    if not 0 <= port < 65536:
        raise ConfigError(f"--port must be 0..65535 (got {port})")
    if max_body_mb <= 0 or batch_wait_ms < 0:
        raise ConfigError("--max-body-mb must be positive and --batch-wait-ms not negative")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not admin_token:
        raise ConfigError(
            f"--host {host} listens beyond loopback: give --admin-token (or HSRL_ADMIN_TOKEN) to protect"
            " catalogue changes"
        )
    if threads is not None:
        torch.set_num_threads(threads)
    run = RunDir(run_dir)
    policy, exported = prepare_export(run, seed, force)
    if exported:
        say(f"exported {run.export_dir}", "done")
    app = create_app(
        policy,
        max_batch=max_batch,
        max_new_items=max_new_items,
        seed=seed or 0,
        state_dir=None if ephemeral else run.catalogue_dir,
        admin_token=admin_token,
        max_body_bytes=int(max_body_mb * 2**20),
        batch_users=batch_users,
        batch_wait_ms=batch_wait_ms,
    )
    state = "in memory only" if ephemeral else f"logged to {run.catalogue_dir}"
    console.print(
        f"serving {run_dir} ({policy.index.n_active} items,"
        f" catalogue version {app.state.recommender.catalogue.version}, "
        f"changes {state}) on http://{host}:{port}  (docs: /docs)"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")

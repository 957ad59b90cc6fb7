"""`hsrl simulator train|report` (user response model and its fidelity)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from hsrl.commands.common import (
    ConfigOpt,
    ForceOpt,
    RunDirArg,
    SetOpt,
    console,
    console_progress,
    new_group,
    run_config,
    say,
)
from hsrl.errors import ArtifactError

if TYPE_CHECKING:
    from hsrl.workflow.progress import StageReport

app = new_group("Train the user response model and report its fidelity.")

SCORERS = (
    ("simulator", "simulator"),
    ("popularity", "popularity"),
    ("item_ctr", "item CTR"),
    ("slot_ctr", "slot CTR"),
    ("true_world", "true world"),
)


def print_fidelity(report: dict[str, Any]) -> None:
    """A loud warning when the simulator does not beat every floor by the margin (report["fidelity"])."""
    check = report.get("fidelity")
    if not check:
        return
    if check["ok"]:
        console.print(
            f"[green]fidelity check passed[/]: the simulator beats every floor by >= {check['margin']:.2f} AUC"
        )
        return
    lines = [f"  {f['split']}: simulator AUC {f['simulator_auc']:.4f} vs {f['floor']} {f['floor_auc']:.4f}"
             for f in check["failing"]]  # fmt: skip
    console.print(
        "[bold red]WARNING: the simulator does not beat every floor by "
        f"{check['margin']:.2f} AUC[/] — agents trained or judged in it would meet a world no better than a "
        "per-item or per-slot click rate:\n" + "\n".join(lines) + "\n  try `--select` (a small search on "
        "validation AUC), more data, or other simulator settings (--set simulator.KEY=VALUE)."
    )


def print_report(report: dict[str, Any]) -> None:
    """The fidelity table: one row per split and scorer, then the training summary and the floor check."""
    caption = "floors: popularity (train click count), item CTR (smoothed train click rate), slot CTR (per position)"
    if any("true_world" in (report.get(s) or {}) for s in ("val", "test")):
        caption += "; true world: the achievable ceiling"
    table = Table(title=f"simulator fidelity ({report.get('dataset', '?')})", caption=caption)
    for col in ("split", "scorer", "AUC", "logloss", "ECE", "pred CTR", "log CTR", "rows"):
        table.add_column(col, justify="left" if col in ("split", "scorer") else "right", no_wrap=True)
    for split in ("val", "test"):
        entry = report.get(split)
        if not entry:
            continue
        for key, label in SCORERS:
            m = entry.get(key)
            if m is None:
                continue
            cells = [m.get(k) for k in ("auc", "log_loss", "ece", "predicted_rate", "logged_rate")]
            table.add_row(split, label, *("-" if c is None else f"{c:.4f}" for c in cells), str(entry["rows"]))
    console.print(table)
    train = report.get("training")
    if train:
        console.print(
            f"trained {train['epochs_run']} epochs in {train['seconds']:.1f}s;"
            f" best epoch {train['best_epoch']} (val AUC {train['best_val_auc']:.4f})"
            + (f" on {train['processes']} processes" if train.get("processes", 1) > 1 else "")
        )
        selection = train.get("selection")
        if selection:
            trials = ", ".join(f"{t['setting']} {t['best_val_auc']:.4f}" for t in selection["trials"])
            console.print(f"selection on val AUC: {trials}; kept: {selection['chosen']}")
    print_fidelity(report)


def show_simulator(report: StageReport) -> None:
    """A simulator stage: skipped or written, then its fidelity report (nothing from a rank but 0)."""
    if not report.details:
        return
    if report.skipped:
        say(f"{report.path} exists; skipping (use --force to retrain).", "skip")
    else:
        say("wrote " + ", ".join(map(str, report.files)), "done")
    _print_checked(report)


def _print_checked(report: StageReport) -> None:
    try:
        print_report(report.details)
    except (KeyError, TypeError) as exc:
        raise ArtifactError(
            f"{report.files[-1]}: corrupt report ({type(exc).__name__}: {exc}); use --recompute"
        ) from None


JudgeOpt = Annotated[
    bool, typer.Option("--judge", help="The second simulator (seed + 1, RUN_DIR/simulator_judge) that judges agents.")
]


SelectOpt = Annotated[
    bool | None,
    typer.Option("--select/--no-select", help="Try a handful of settings (lr, weight decay, dropout, width, patience) "
                 "and keep the best validation AUC (default: simulator.select)."),
]  # fmt: skip
NprocOpt = Annotated[
    int,
    typer.Option("--nproc", min=1, help="Train with DDP on N local processes, each on its shard of the impressions "
                 "(gloo on CPU, NCCL on GPU). Under torchrun leave it at 1: the launcher's group is joined."),
]  # fmt: skip


@app.command("train")
def train(
    run_dir: RunDirArg,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    judge: JudgeOpt = False,
    select: SelectOpt = None,
    nproc: NprocOpt = 1,
) -> None:
    """Train the user response model on train users, select on val AUC, report on val and test users.

    The report compares it with three floors (popularity, item CTR, slot CTR) and warns when it does not
    beat each by simulator.fidelity_margin AUC. Equivalent multi-process form:
    `torchrun --nproc-per-node 2 -m hsrl simulator train RUN_DIR`."""
    from hsrl.workflow import train_simulator

    cfg = run_config(run_dir, config, list(set_ or []))
    show_simulator(train_simulator(run_dir, cfg, force, judge, select, nproc, console_progress()))


@app.command("report")
def report(
    run_dir: RunDirArg,
    recompute: Annotated[bool, typer.Option("--recompute", help="Recompute the metrics from the checkpoint.")] = False,
    judge: JudgeOpt = False,
) -> None:
    """Print the fidelity report of the trained simulator (RUN_DIR/simulator/report.json)."""
    from hsrl.rundir import RunDir
    from hsrl.workflow import simulator_report

    computes = recompute or not RunDir(run_dir).simulator_report_file(judge).is_file()
    with console.status("computing the fidelity report ...") if computes else nullcontext():
        report = simulator_report(run_dir, recompute=recompute, judge=judge)
    _print_checked(report)

"""`hsrl tune`: search one learned agent's hyper-parameters under the common protocol (hsrl.tuning)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hsrl.commands.common import ConfigOpt, RunDirArg, SetOpt, console, run_config
from hsrl.tuning import EPISODES, TRIALS

EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="local: worker processes on this machine; ray: Ray tasks (the 'scale' extra), on a local Ray "
        "instance or the cluster at --address / RAY_ADDRESS.",
    ),
]
AddressOpt = Annotated[
    str | None, typer.Option("--address", help="Ray cluster address (implies --engine ray); default RAY_ADDRESS.")
]
TunedOpt = Annotated[
    bool,
    typer.Option(
        "--tuned",
        help="Train and score each learned agent with the values `hsrl tune` chose (RUN/tuned/NAME.yaml): "
        "the spec NAME becomes NAME:tuned.",
    ),
]


def engine_of(engine: str, address: str | None) -> str:
    return "ray" if address else engine


def register(app: typer.Typer) -> None:
    @app.command("tune")
    def tune_cmd(
        run_dir: RunDirArg,
        agent: Annotated[str, typer.Option("--agent", help="Learned agent to tune (hsrl, hac, sl, a2c, ...).")],
        trials: Annotated[int, typer.Option("--trials", min=1, help="Finished trials the study should have.")] = TRIALS,
        space: Annotated[
            Path | None, typer.Option("--space", help="Search space file (default: configs/search/AGENT.yaml).")
        ] = None,
        jobs: Annotated[int, typer.Option("--jobs", min=0, help="Trials at once; 0 = one per CPU core.")] = 0,
        engine: EngineOpt = "local",
        address: AddressOpt = None,
        seed: Annotated[
            int, typer.Option("--seed", help="Every trial trains with seed 1000 + SEED (never a seed compare reports).")
        ] = 0,
        episodes: Annotated[
            int, typer.Option("--episodes", min=1, help="Validation episodes that score a finished trial.")
        ] = EPISODES,
        config: ConfigOpt = None,
        set_: SetOpt = None,
    ) -> None:
        """Tune AGENT on validation users in the training simulator (Optuna TPE, median pruning); resumable.

        Every agent gets the same protocol: trial 0 is its current config, the same trials and env-step
        budget (train.steps), selection on validation users only. Writes RUN_DIR/tuned/AGENT.yaml (used by
        --tuned on compare, churn, abtest and evaluate); the study itself (RUN_DIR/tuned/AGENT.study.log)
        resumes where it stopped when the command is run again.
        """
        from hsrl.commands.experiment import _agents, ensure_stages
        from hsrl.errors import ConfigError
        from hsrl.rundir import RunDir
        from hsrl.tuning import tune

        cfg = run_config(run_dir, config, set_)
        names = _agents(cfg, agent)
        from hsrl.agents import registry

        if len(names) != 1 or ":" in names[0] or not registry.get(names[0]).learned:
            raise ConfigError(f"--agent {agent}: name one learned agent, without options (e.g. --agent hac)")
        RunDir(run_dir).require_dataset()
        cfg = ensure_stages(run_dir, cfg, ["simulator"])

        def show(outcome: dict[str, Any]) -> None:
            value = f"{outcome['value']:.3f}" if outcome["state"] == "complete" else "-"
            values = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in
                               outcome["values"].items())  # fmt: skip
            console.print(
                f"trial {outcome['number']}: {outcome['state']} at step {outcome['step']}, val reward {value}"
                f" ({outcome['seconds']:.0f} s) {values}"
            )

        console.print(f"tuning {agent} on validation users in the training simulator: {trials} trials")
        with console.status(f"tuning {agent} ..."):
            report = tune(
                run_dir, cfg, agent, trials, space, jobs, engine_of(engine, address), address, seed, episodes, show
            )
        study = report["study"]
        default = study["default_value"]
        console.print(
            f"[green]best[/] trial {study['best_trial']}: val reward {study['best_value']:.3f}"
            + (f" (defaults: {default:.3f})" if default is not None else "")
            + f"; {study['complete']} complete, {study['pruned']} pruned of {study['trials']}"
        )
        console.print("chosen: " + ", ".join(f"{k}={v}" for k, v in report["values"].items()))
        console.print(f"wrote {RunDir(run_dir).tuned_file(agent)}")

"""`hsrl train`, `hsrl evaluate`, `hsrl compare`, `hsrl run`, ...: agents on top of the prepared stages.

Only the data has to be prepared by hand (`hsrl data prepare`, or `hsrl run --dataset`): the commands
that train or score agents build a missing simulator or Semantic ID index themselves
(``hsrl.workflow.ensure_stages``). The commands parse options and render; the pipeline does the work.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.table import Table

from hsrl.commands.common import ConfigOpt, ForceOpt, RunDirArg, SetOpt, console, console_progress, run_config
from hsrl.commands.data import DatasetOpt, ItemsOpt, SourceOpt
from hsrl.commands.tune import AddressOpt, EngineOpt, TunedOpt, engine_of
from hsrl.config import RunConfig
from hsrl.rundir import RunDir, RunLike

if TYPE_CHECKING:
    from hsrl.simulator.env import World
    from hsrl.workflow.progress import Results

AgentsOpt = Annotated[
    str | None, typer.Option("--agents", "-a", help="Comma-separated agents (default: eval.agents of the config).")
]
SeedsOpt = Annotated[int | None, typer.Option("--seeds", help="Seeds per agent (default: eval.seeds).")]
WorldOpt = Annotated[
    str | None,
    typer.Option(
        "--world",
        help="Judge: simulator | judge (second simulator, other seed) | true (synthetic data only), a comma list, "
        "both (simulator + true; default) or all.",
    ),
]


def _agents(cfg: RunConfig, agents: str | None, ablation: bool = False) -> list[str]:
    """Agent specs: names (hsrl, hac, ...) optionally with options, e.g. hsrl:residual=soft+credit=slate."""
    from hsrl.agents import registry
    from hsrl.errors import ConfigError
    from hsrl.workflow import ABLATION, agent_config, base_name

    names = [a.strip() for a in agents.split(",") if a.strip()] if agents else list(cfg.eval.agents)
    if ablation:
        names += [a for a in ABLATION if a not in names]
    known = registry.names()  # every registered agent, built-in or added with registry.register
    unknown = [a for a in names if base_name(a) not in known]
    if unknown:
        raise ConfigError(f"unknown agent(s) {', '.join(unknown)} (expected: {', '.join(known)})")
    for spec in names:
        agent_config(spec, cfg)  # options are validated before any work starts
    return names


def ensure_stages(
    run_dir: RunLike,
    cfg: RunConfig,
    worlds: Iterable[str],
    force: bool = False,
) -> RunConfig:
    """``hsrl.workflow.ensure_stages`` with its progress shown; the config after the stages built."""
    from hsrl.workflow import ensure_stages as ensure

    return ensure(run_dir, cfg, worlds, force, console_progress())


def show_results(results: Results) -> None:
    print_results(results.payload)
    console.print("wrote " + ", ".join(str(p) for p in results.paths.values()))


def print_results(payload: dict) -> None:
    from rich.markup import escape

    from hsrl.eval.report import fmt, fmt_ci

    ceiling = payload.get("ceiling") or {}
    for world, table in payload["aggregate"].items():
        t = Table(
            title=f"{payload['dataset']} — judged by: {world} — test users, mean ± 95% CI over seeds "
            f"(ceiling {ceiling.get('total_reward', float('nan')):.2f})"
        )
        for col in (
            "agent",
            "total reward",
            "depth",
            "avg reward",
            "click rate",
            "coverage",
            "diversity",
            "of ceiling",
            "episodes",
        ):
            t.add_column(col, justify="right" if col != "agent" else "left")
        for name, agg in table.items():
            label = f"{name} (privileged)" if name in payload.get("privileged", []) else name
            t.add_row(
                label,
                fmt(agg["total_reward"]),
                fmt(agg["depth"]),
                fmt(agg["avg_reward"], 3),
                fmt(agg["click_rate"], 3),
                fmt(agg["coverage"], 3),
                fmt(agg["diversity"], 3),
                fmt(agg["share_of_ceiling"], 3) if "share_of_ceiling" in agg else "-",
                str(agg["episodes"]),
            )
        console.print(t)
        ref = payload.get("reference")
        if ref is None or not any("vs_reference" in agg for agg in table.values()):
            continue
        s = Table(title=f"judged by: {world} — total reward against {ref}, paired by seed (95% CIs)")
        for col in ("agent", f"Δ vs {ref}", "IQM", f"P(> {ref})", "pairs"):
            s.add_column(col, justify="right" if col != "agent" else "left")
        for name, agg in table.items():
            q, vs = agg["iqm"], agg.get("vs_reference")
            if vs is None:
                s.add_row(
                    name, "reference" if name == ref else "-", escape(f"{q['mean']:.2f} {fmt_ci(q['ci'])}"), "-", "-"
                )
                continue
            d, p = vs["paired_difference"], vs["probability_of_improvement"]
            s.add_row(
                name,
                escape(f"{d['mean']:+.2f} {fmt_ci(d['ci'])}"),
                escape(f"{q['mean']:.2f} {fmt_ci(q['ci'])}"),
                escape(f"{p['point']:.2f} {fmt_ci(p['ci'])}"),
                str(d["n"]),
            )
        console.print(s)


def register(app: typer.Typer) -> None:
    """Add train / evaluate / run to the top-level app."""

    @app.command("train")
    def train(
        run_dir: RunDirArg,
        agent: Annotated[str, typer.Option("--agent", help="Learned agent to train.")] = "hsrl",
        seeds: SeedsOpt = None,
        config: ConfigOpt = None,
        set_: SetOpt = None,
        force: ForceOpt = False,
        tuned: TunedOpt = False,
    ) -> None:
        """Train an agent in the simulator on training users (one run per seed; resumes from checkpoints).

        A missing simulator or Semantic ID index is built first (the data must be prepared)."""
        from hsrl.workflow import require_reusable, train_stage, with_tuned

        cfg = run_config(run_dir, config, set_)
        cfg, names = with_tuned(run_dir, cfg, _agents(cfg, agent), tuned)
        require_reusable(run_dir, cfg, names, seeds or cfg.eval.seeds, force)
        cfg = ensure_stages(run_dir, cfg, [cfg.env.world])
        RunDir(run_dir).save_config(cfg)
        train_stage(run_dir, cfg, names, seeds or cfg.eval.seeds, force, progress=console_progress())

    @app.command("evaluate")
    def evaluate_cmd(
        run_dir: RunDirArg,
        agents: AgentsOpt = None,
        seeds: SeedsOpt = None,
        world: WorldOpt = None,
        config: ConfigOpt = None,
        set_: SetOpt = None,
        tuned: TunedOpt = False,
    ) -> None:
        """Score trained agents and references on held-out test users; writes RUN_DIR/results/.

        Agents are not trained here (`hsrl compare` does that); a missing simulator or Semantic ID index is
        built first.
        """

        from hsrl.workflow import evaluate_stage, require_trained, resolve_worlds, with_tuned

        cfg = run_config(run_dir, config, set_)
        cfg, names = with_tuned(run_dir, cfg, _agents(cfg, agents), tuned)
        n_seeds = seeds or cfg.eval.seeds
        RunDir(run_dir).require_dataset()
        require_trained(run_dir, cfg, names, n_seeds)
        worlds = resolve_worlds(run_dir, world)
        cfg = ensure_stages(run_dir, cfg, worlds)
        show_results(evaluate_stage(run_dir, cfg, names, n_seeds, worlds, console_progress()))

    @app.command("abtest")
    def abtest(
        run_dir: RunDirArg,
        control: Annotated[str, typer.Option("--control", help="Control policy (agent spec).")] = "popular",
        treatment: Annotated[str, typer.Option("--treatment", help="Treatment policy (agent spec).")] = "hsrl",
        world: Annotated[str, typer.Option("--world", help="simulator | judge | true")] = "simulator",
        episodes: Annotated[int, typer.Option("--episodes", help="Sessions per arm and training seed.")] = 1000,
        seeds: Annotated[
            int | None,
            typer.Option("--seeds", min=1, help="Training seeds 0..N-1, one test each (default: eval.seeds)."),
        ] = None,
        seed: Annotated[
            int,
            typer.Option(
                "--seed", help="Base seed: training seed s splits users and seeds the environment with seed + s."
            ),
        ] = 0,
        config: ConfigOpt = None,
        set_: SetOpt = None,
        tuned: TunedOpt = False,
    ) -> None:
        """Simulated A/B test on disjoint halves of the test users: CVR and cost lifts with bootstrap CIs.

        Repeated for each training seed (its checkpoints, its own random halves of the users); the lift CIs
        resample seeds, then sessions within each seed. A missing simulator or Semantic ID index is built first.
        """
        from hsrl.errors import ConfigError
        from hsrl.workflow import ab_test_agents, require_ab_trained, resolve_worlds, with_tuned, write_ab_test

        cfg = run_config(run_dir, config, set_)
        cfg, arms = with_tuned(run_dir, cfg, _agents(cfg, f"{control},{treatment}"), tuned)
        control, treatment = arms
        n_seeds = seeds or cfg.eval.seeds
        RunDir(run_dir).require_dataset()
        worlds = resolve_worlds(run_dir, world)
        if len(worlds) != 1:
            raise ConfigError(f"--world {world}: an A/B test runs in one world (simulator, judge or true)")
        require_ab_trained(run_dir, cfg, arms, n_seeds)
        cfg = ensure_stages(run_dir, cfg, worlds)
        with console.status(f"running both arms for {n_seeds} training seed(s) ..."):
            report = ab_test_agents(
                run_dir, cfg, control, treatment, cast("World", worlds[0]), episodes, seed, seeds=n_seeds
            )
        t = Table(
            title=f"A/B test ({world}): {control} (control) vs {treatment} (treatment), "
            f"{n_seeds} training seed(s), sessions pooled"
        )
        for col in ("arm", "agent", "users", "sessions", "CVR", "impressions/session", "total reward"):
            t.add_column(col)
        for arm in ("control", "treatment"):
            r = report[arm]
            t.add_row(
                arm,
                r["agent"],
                str(r["users"]),
                str(r["sessions"]),
                f"{r['cvr']:.4f}",
                f"{r['cost_per_session']:.2f}",
                f"{r['total_reward']:.3f}",
            )
        console.print(t)

        def lift(cell: dict) -> str:
            lo, hi = cell["ci95"]
            return f"{100 * cell['point']:+.2f} % (95 % CI {100 * lo:+.2f} % .. {100 * hi:+.2f} %)"

        for key, label in (("cvr_lift", "CVR lift"), ("cost_lift", "cost lift")):
            console.print(
                f"{label}: {lift(report[key])}"
                + (" (two-stage bootstrap: seeds, then sessions)" if n_seeds > 1 else "")
            )
        if n_seeds > 1:
            for row in report["per_seed"]:
                console.print(
                    f"  seed {row['seed']}: CVR lift {lift(row['cvr_lift'])}, cost lift {lift(row['cost_lift'])}"
                )
        console.print(f"wrote {write_ab_test(run_dir, report)}")

    @app.command("compare")
    def compare(
        run_dir: RunDirArg,
        agents: AgentsOpt = None,
        seeds: SeedsOpt = None,
        world: WorldOpt = None,
        ablation: Annotated[
            bool,
            typer.Option(
                "--ablation",
                help="Add HSRL's one-factor ablation: token heads, credit, exposure, click loss, residual, decoding.",
            ),
        ] = False,
        config: ConfigOpt = None,
        set_: SetOpt = None,
        force: ForceOpt = False,
        tuned: TunedOpt = False,
        engine: EngineOpt = "local",
        address: AddressOpt = None,
    ) -> None:
        """Agents x seeds side by side in one run: build what is missing (simulator, Semantic IDs, agents),
        then evaluate all on test users. Needs only prepared data (`hsrl data prepare`).

        Agent options: NAME:key=value+key=value, e.g. hsrl:residual=soft+credit=slate; NAME:tuned (or
        --tuned for every learned agent) uses the values `hsrl tune` chose.
        """
        from hsrl.workflow import evaluate_stage, require_reusable, resolve_worlds, train_stage, with_tuned

        cfg = run_config(run_dir, config, set_)
        cfg, names = with_tuned(run_dir, cfg, _agents(cfg, agents, ablation), tuned)  # validated before any write
        RunDir(run_dir).require_dataset()
        worlds = resolve_worlds(run_dir, world)
        n_seeds = seeds or cfg.eval.seeds
        require_reusable(run_dir, cfg, names, n_seeds, force)
        RunDir(run_dir).save_config(cfg)
        start = time.perf_counter()
        cfg = ensure_stages(run_dir, cfg, [*worlds, cfg.env.world])
        progress = console_progress()
        train_stage(run_dir, cfg, names, n_seeds, force, None, engine_of(engine, address), address, progress)
        show_results(
            evaluate_stage(run_dir, cfg, names, n_seeds, worlds, progress, engine_of(engine, address), address)
        )
        console.print(f"[green]done[/] in {time.perf_counter() - start:.0f} s")

    @app.command("churn")
    def churn(
        run_dir: RunDirArg,
        agents: AgentsOpt = None,
        seeds: SeedsOpt = None,
        world: WorldOpt = None,
        holdout: Annotated[
            float, typer.Option("--holdout", help="Share of items held out, then added at evaluation.")
        ] = 0.2,
        holdout_seed: Annotated[int, typer.Option("--holdout-seed", help="Seed of the held-out draw.")] = 0,
        config: ConfigOpt = None,
        set_: SetOpt = None,
        force: ForceOpt = False,
        tuned: TunedOpt = False,
        engine: EngineOpt = "local",
        address: AddressOpt = None,
    ) -> None:
        """Catalogue churn: items held out of the SID codebooks and of training, added at evaluation time.

        Every agent is scored on test users before and after the new items join its catalogue (no
        retraining); writes RUN_DIR/churn/holdoutS-seedN/results/{results.json,churn.md}. A missing
        simulator or Semantic ID index is built first.
        """
        from hsrl.eval.report import fmt
        from hsrl.workflow import churn_stage, draw_holdout, resolve_worlds, with_tuned

        cfg = run_config(run_dir, config, set_)
        cfg, names = with_tuned(run_dir, cfg, _agents(cfg, agents), tuned)
        n_seeds = seeds or cfg.eval.seeds
        worlds = resolve_worlds(run_dir, world)
        held = draw_holdout(run_dir, holdout, holdout_seed)
        cfg = ensure_stages(run_dir, cfg, [*worlds, cfg.env.world])
        start = time.perf_counter()
        results = churn_stage(
            run_dir, cfg, names, n_seeds, worlds, held, force, engine_of(engine, address), address, console_progress()
        )
        payload, paths = results.payload, results.paths
        for w, table in payload["aggregate"].items():
            t = Table(
                title=f"catalogue churn — {held.held.size} of {held.n_items} items new — judged by: {w} — "
                "mean ± 95% CI over seeds"
            )
            for col in ("agent", "reward before", "reward after", "depth after", "new: slots", "new: clicks"):
                t.add_column(col, justify="left" if col == "agent" else "right")
            for name, ph in table.items():
                t.add_row(
                    name,
                    fmt(ph["before"]["total_reward"]),
                    fmt(ph["after"]["total_reward"]),
                    fmt(ph["after"]["depth"]),
                    fmt(ph["after"]["new_slot_share"], 2),
                    fmt(ph["after"]["new_click_share"], 2),
                )
            console.print(t)
        console.print("wrote " + ", ".join(str(p) for p in paths.values()))
        console.print(f"[green]done[/] in {time.perf_counter() - start:.0f} s")

    @app.command("run")
    def run(
        out: Annotated[Path, typer.Option("--out", "-o", help="Run directory.")] = Path("runs/synthetic"),
        dataset: DatasetOpt = None,
        source: SourceOpt = None,
        items: ItemsOpt = None,
        agents: AgentsOpt = None,
        seeds: SeedsOpt = None,
        config: ConfigOpt = None,
        set_: SetOpt = None,
        force: Annotated[bool, typer.Option("--force", help="Redo every stage.")] = False,
        tuned: TunedOpt = False,
    ) -> None:
        """The whole pipeline: data -> simulator -> SIDs -> agents -> evaluation report (synthetic default).

        Your own logs, in one command: `hsrl run --dataset csv --source logs.csv --items items.csv --out
        runs/mine` (the data options of `hsrl data prepare`). Stages already in --out are reused. With
        --tuned, learned agents use RUN/tuned/NAME.yaml (`hsrl tune`), or the study shipped in
        configs/tuned/DATASET/ when it was run under the same config (`make run` does this).
        """
        from hsrl.commands.data import data_overrides, show_data
        from hsrl.workflow import (
            evaluate_stage,
            prepare_data,
            require_reusable,
            resolve_worlds,
            train_stage,
            with_tuned,
        )

        start = time.perf_counter()
        run = RunDir(out)
        progress = console_progress()
        overrides = data_overrides(dataset, source, items, set_)
        names = _agents(run_config(out, config, overrides), agents)  # validated before anything is written
        show_data(prepare_data(run, run_config(out, config, overrides), force, progress))
        cfg = run_config(out, config, overrides)
        cfg, names = with_tuned(run, cfg, names, tuned)
        require_reusable(run, cfg, names, seeds or cfg.eval.seeds, force)
        run.save_config(cfg)
        worlds = resolve_worlds(run, None)
        cfg = ensure_stages(run, cfg, [*worlds, cfg.env.world], force)
        if agents is None and run.has_world and "oracle:fatigue=blind" not in names:
            names.append("oracle:fatigue=blind")  # synthetic data: the fatigue-blind level in the table
        n_seeds = seeds or cfg.eval.seeds
        train_stage(run, cfg, names, n_seeds, force, progress=progress)
        show_results(evaluate_stage(run, cfg, names, n_seeds, worlds, progress))
        console.print(f"[green]done[/] in {time.perf_counter() - start:.0f} s: {out}")

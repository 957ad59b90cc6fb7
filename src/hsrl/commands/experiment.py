"""`hsrl train`, `hsrl evaluate`, `hsrl compare`, `hsrl run`, ...: agents on top of the prepared stages.

Only the data has to be prepared by hand (`hsrl data prepare`, or `hsrl run --dataset`): the commands
that train or score agents build a missing simulator or Semantic ID index themselves (`ensure_stages`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.table import Table

from hsrl.commands.common import ConfigOpt, ForceOpt, RunDirArg, SetOpt, console, run_config
from hsrl.commands.data import DatasetOpt, ItemsOpt, SourceOpt
from hsrl.commands.tune import AddressOpt, EngineOpt, TunedOpt, engine_of
from hsrl.config import RunConfig, save_config
from hsrl.rundir import RunDir

if TYPE_CHECKING:
    from hsrl.eval.churn import HeldOut
    from hsrl.simulator.env import World

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


def _with_tuned(run_dir: Path, cfg: RunConfig, names: list[str], tuned: bool) -> tuple[RunConfig, list[str]]:
    """--tuned makes every learned agent NAME the spec NAME:tuned; every NAME:tuned spec gets the values
    in RUN/tuned/NAME.yaml (read now, never from an older copy: config.yaml does not keep them)."""
    from hsrl.agents import registry
    from hsrl.tuning import load_tuned, tuned_specs

    names = tuned_specs(names) if tuned else names
    wanted = [n for n in names if registry.TUNED in registry.parse_agent(n)[1]]
    return (load_tuned(run_dir, cfg, wanted) if wanted else cfg), names


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


WORLDS = ("simulator", "judge", "true")


def _worlds(run_dir: Path, world: str | None) -> list[str]:
    """simulator | judge | true, a comma list of them, both (simulator + true world where there is one;
    the default) or all (both + the judge simulator). Missing simulators are built by ``ensure_stages``."""
    from hsrl.data.synthetic import WORLD_FILE
    from hsrl.errors import ConfigError

    has_world = (run_dir / WORLD_FILE).is_file()
    if world in (None, "both", "all"):
        names = ["simulator"] + (["judge"] if world == "all" else []) + (["true"] if has_world else [])
    else:
        names = [w.strip() for w in world.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORLDS]
    if unknown or not names:
        raise ConfigError(f"unknown world '{world}' (expected {', '.join(WORLDS)}, a comma list of them, both or all)")
    if "true" in names and not has_world:
        RunDir(run_dir).require_dataset()  # no data at all is the message to give, not "not synthetic"
        raise ConfigError(f"{run_dir}: the true world exists only for synthetic data")
    return names


def ensure_stages(
    run_dir: Path,
    worlds: Iterable[str],
    config: list[Path] | None = None,
    overrides: list[str] | None = None,
    force: bool = False,
) -> None:
    """Build what agents need on top of the data, where missing (everything with ``force``): the simulator
    (and the judge) for the ``worlds`` used, and the Semantic ID index. One place, so every command that
    trains or scores agents works on a run that has only its data; the data itself is never guessed."""
    from hsrl.commands.sid import build_index, index_path
    from hsrl.commands.simulator import train_simulator
    from hsrl.rundir import JUDGE_DIR, MODEL_FILE, SIM_DIR

    run_dir = Path(run_dir)
    RunDir(run_dir).require_dataset()
    worlds = set(worlds)
    simulators = (("simulator", SIM_DIR, False, "simulator"), ("judge", JUDGE_DIR, True, "judge simulator"))
    trained_agents = any(RunDir(run_dir).agents_dir.glob("*/seed*/agent.pt"))
    for world, folder, judge, what in simulators:
        if world in worlds and (force or not (run_dir / folder / MODEL_FILE).is_file()):
            if not force:
                console.print(f"[cyan]{run_dir / folder}: no {what} yet; training it now[/]")
                if trained_agents and world == "simulator":
                    console.print(f"[yellow]warning: the agents in {run_dir / 'agents'} were trained in a simulator "
                                  "that is gone; the new one may differ (retrain them with --force)[/]")  # fmt: skip
            train_simulator(run_dir, overrides, config, force=force, judge=judge)
    if force or not index_path(run_dir).is_file():
        if not force:
            console.print(f"[cyan]{index_path(run_dir).parent}: no Semantic ID index yet; building it now[/]")
        build_index(run_dir, overrides, config, force=force)


def _require_reusable(
    run_dir: Path, cfg: RunConfig, agents: list[str], seeds: int, force: bool, holdout: HeldOut | None = None
) -> None:
    """Without --force, checkpoints are reused: each must fit today's config (checked before any write)."""
    if not force and RunDir(run_dir).has_dataset:
        from hsrl.workflow import check_reusable

        check_reusable(run_dir, cfg, agents, seeds, holdout)


def _require_trained(run_dir: Path, cfg: RunConfig, agents: list[str], seeds: int) -> None:
    """Scoring never trains agents: name every missing checkpoint up front, before any stage is built."""
    from hsrl.agents import registry
    from hsrl.errors import ArtifactError
    from hsrl.workflow import agent_dir, base_name

    missing = [
        (name, seed)
        for name in agents
        if registry.get(base_name(name)).learned
        for seed in range(seeds)
        if not (agent_dir(run_dir, name, seed, cfg) / "agent.pt").is_file()
    ]
    if missing:
        listed = ", ".join(f"{name} seed {seed}" for name, seed in missing)
        todo = ",".join(dict.fromkeys(name for name, _ in missing))
        raise ArtifactError(
            f"{run_dir}: no trained agent for {listed}; `hsrl compare {run_dir} --agents {todo} --seeds {seeds}`"
            " trains what is missing and evaluates (or `hsrl train` one agent)"
        )


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


def _train_one(
    run_dir: Path, name: str, cfg: RunConfig, seed: int, force: bool, holdout: HeldOut | None = None
) -> Path:
    """One seed in a worker (the engine gives it one torch thread: seeds share the cores)."""
    from hsrl.workflow import train_agent

    return train_agent(run_dir, name, cfg, seed, force=force, show_progress=False, holdout=holdout)


def train_stage(
    run_dir: Path,
    cfg: RunConfig,
    agents: list[str],
    seeds: int,
    force: bool,
    holdout: HeldOut | None = None,
    engine: str = "local",
    address: str | None = None,
) -> None:
    """Train every learned agent for every seed; agent-seeds run side by side (eval.jobs workers) as local
    processes or Ray tasks (``engine``; ``address``: an existing Ray cluster).

    ``holdout`` (a ``HeldOut``): train on the catalogue without the held-out items (catalogue churn)."""
    from rich.progress import Progress

    from hsrl.agents import registry
    from hsrl.engine import default_workers, run_jobs
    from hsrl.workflow import agent_dir, base_name, train_agent

    jobs, seen = [], set()
    for name in agents:
        for seed in range(seeds):
            folder = agent_dir(run_dir, name, seed, cfg, holdout)
            if registry.get(base_name(name)).learned and folder not in seen:  # decode-only variants share weights
                seen.add(folder)
                jobs.append((name, seed))
    workers = min(len(jobs), default_workers(cfg.eval.jobs))
    if workers <= 1 and engine == "local":
        for name, seed in jobs:
            path = train_agent(run_dir, name, cfg, seed, force=force, holdout=holdout)
            console.print(f"[green]trained[/] {name} seed {seed}: {path}")
        return
    if engine == "ray" and cfg.eval.jobs <= 0:
        workers, where = 0, "Ray (one job per CPU of the cluster)"
    else:
        where = f"{workers} Ray workers" if engine == "ray" else f"{workers} processes"
    with Progress(console=console) as progress:
        task = progress.add_task(f"training {len(jobs)} agent-seeds on {where}", total=len(jobs))
        args = [(run_dir, name, cfg, seed, force, holdout) for name, seed in jobs]
        for number, path in run_jobs(_train_one, args, workers, engine, address):
            name, seed = jobs[number]
            progress.console.print(f"[green]trained[/] {name} seed {seed}: {path}")
            progress.advance(task)


def evaluate_stage(run_dir: Path, cfg: RunConfig, agents: list[str], seeds: int, worlds: list[str]) -> dict:
    from hsrl.workflow import evaluate_agents, write_results

    with console.status("evaluating on test users ..."):
        payload = evaluate_agents(run_dir, cfg, agents, seeds, worlds, cfg.eval.episodes)
    paths = write_results(run_dir, payload)
    print_results(payload)
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))
    return payload


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
        cfg = run_config(run_dir, config, set_)
        cfg, names = _with_tuned(run_dir, cfg, _agents(cfg, agent), tuned)
        _require_reusable(run_dir, cfg, names, seeds or cfg.eval.seeds, force)
        ensure_stages(run_dir, [cfg.env.world], config, set_)
        save_config(cfg, run_dir)
        train_stage(run_dir, cfg, names, seeds or cfg.eval.seeds, force)

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

        cfg = run_config(run_dir, config, set_)
        cfg, names = _with_tuned(run_dir, cfg, _agents(cfg, agents), tuned)
        n_seeds = seeds or cfg.eval.seeds
        RunDir(run_dir).require_dataset()
        _require_trained(run_dir, cfg, names, n_seeds)
        worlds = _worlds(run_dir, world)
        ensure_stages(run_dir, worlds, config, set_)
        evaluate_stage(run_dir, cfg, names, n_seeds, worlds)

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
        from hsrl.agents import registry
        from hsrl.errors import ArtifactError, ConfigError
        from hsrl.io import write_json
        from hsrl.workflow import ab_test_agents, agent_dir, base_name

        cfg = run_config(run_dir, config, set_)
        cfg, arms = _with_tuned(run_dir, cfg, _agents(cfg, f"{control},{treatment}"), tuned)
        control, treatment = arms
        n_seeds = seeds or cfg.eval.seeds
        RunDir(run_dir).require_dataset()
        worlds = _worlds(run_dir, world)
        if len(worlds) != 1:
            raise ConfigError(f"--world {world}: an A/B test runs in one world (simulator, judge or true)")
        try:
            _require_trained(run_dir, cfg, arms, n_seeds)
        except ArtifactError as exc:  # say how many seeds the test could run on now
            learned = [a for a in arms if registry.get(base_name(a)).learned]
            have = next(
                (
                    s
                    for s in range(n_seeds)
                    if not all((agent_dir(run_dir, a, s, cfg) / "agent.pt").is_file() for a in learned)
                ),
                n_seeds,
            )
            hint = f"; or test the {have} seed(s) trained for both arms: `--seeds {have}`" if have else ""
            raise ArtifactError(f"{exc} (the A/B test uses seeds 0..{n_seeds - 1}{hint})") from None
        ensure_stages(run_dir, worlds, config, set_)
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
        path = RunDir(run_dir).results_dir / f"abtest_{control}_vs_{treatment}.json".replace(":", "_")
        write_json(path, report)
        console.print(f"wrote {path}")

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

        cfg = run_config(run_dir, config, set_)
        cfg, names = _with_tuned(run_dir, cfg, _agents(cfg, agents, ablation), tuned)  # validated before any write
        RunDir(run_dir).require_dataset()
        worlds = _worlds(run_dir, world)
        n_seeds = seeds or cfg.eval.seeds
        _require_reusable(run_dir, cfg, names, n_seeds, force)
        save_config(cfg, run_dir)
        start = time.perf_counter()
        ensure_stages(run_dir, [*worlds, cfg.env.world], config, set_)
        train_stage(run_dir, cfg, names, n_seeds, force, engine=engine_of(engine, address), address=address)
        evaluate_stage(run_dir, cfg, names, n_seeds, worlds)
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
        from hsrl.errors import ConfigError
        from hsrl.eval.churn import HeldOut, write_churn
        from hsrl.eval.report import fmt
        from hsrl.workflow import churn_index, evaluate_churn

        cfg = run_config(run_dir, config, set_)
        cfg, names = _with_tuned(run_dir, cfg, _agents(cfg, agents), tuned)
        n_seeds = seeds or cfg.eval.seeds
        worlds = _worlds(run_dir, world)
        RunDir(run_dir).require_dataset()
        try:
            held = HeldOut.draw(RunDir(run_dir).dataset().n_items, holdout, holdout_seed)
        except ValueError as exc:
            raise ConfigError(f"--holdout {holdout}: {exc}") from None
        ensure_stages(run_dir, [*worlds, cfg.env.world], config, set_)
        start = time.perf_counter()
        with console.status(f"Semantic IDs of the {held.n_kept} kept items ..."):
            churn_index(run_dir, cfg, held)  # once, before the worker processes need it
        _require_reusable(run_dir, cfg, names, n_seeds, force, held)
        train_stage(run_dir, cfg, names, n_seeds, force, held, engine_of(engine, address), address)
        with console.status("evaluating before and after the new items arrive ..."):
            payload = evaluate_churn(run_dir, cfg, names, n_seeds, worlds, cfg.eval.episodes, held)
        paths = write_churn(RunDir(held.root(run_dir)).results_dir, payload)
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
    ) -> None:
        """The whole pipeline: data -> simulator -> SIDs -> agents -> evaluation report (synthetic default).

        Your own logs, in one command: `hsrl run --dataset csv --source logs.csv --items items.csv --out
        runs/mine` (the data options of `hsrl data prepare`). Stages already in --out are reused.
        """
        from hsrl.commands.data import data_overrides, prepare_data
        from hsrl.data.synthetic import WORLD_FILE

        start = time.perf_counter()
        overrides = data_overrides(dataset, source, items, set_)
        names = _agents(run_config(out, config, overrides), agents)  # validated before anything is written
        prepare_data(out, overrides, config, force)
        cfg = run_config(out, config, overrides)
        _require_reusable(out, cfg, names, seeds or cfg.eval.seeds, force)
        save_config(cfg, out)
        worlds = _worlds(out, None)
        ensure_stages(out, [*worlds, cfg.env.world], config, overrides, force)
        if agents is None and (out / WORLD_FILE).is_file() and "oracle:fatigue=blind" not in names:
            names.append("oracle:fatigue=blind")  # synthetic data: the fatigue-blind level in the table
        n_seeds = seeds or cfg.eval.seeds
        train_stage(out, cfg, names, n_seeds, force)
        evaluate_stage(out, cfg, names, n_seeds, worlds)
        console.print(f"[green]done[/] in {time.perf_counter() - start:.0f} s: {out}")

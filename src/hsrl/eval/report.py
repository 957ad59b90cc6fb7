"""Aggregate per-seed results into mean ± 95 % CI, comparisons with the reference agent (``stats``), and
write results.json, report.md and plots."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from hsrl.eval.evaluate import METRICS, NEW_ITEM_METRICS, REPEAT_METRICS
from hsrl.eval.metrics import mean_ci
from hsrl.eval.stats import iqm, reference_agent, versus
from hsrl.io import atomic_path, write_json


def aggregate(per_seed: list[dict[str, Any]], ceiling: float | None = None) -> dict[str, Any]:
    """Mean and CI half-width of every metric over seeds, with the episode count."""
    out: dict[str, Any] = {"seeds": len(per_seed), "episodes": int(sum(r["episodes"] for r in per_seed))}
    for m in METRICS + tuple(k for k in NEW_ITEM_METRICS + REPEAT_METRICS if k in per_seed[0]):
        mean, half = mean_ci([r[m] for r in per_seed if r[m] == r[m]])  # NaN: no second slate seen
        out[m] = {"mean": mean, "ci95": half}
    if "ctr_by_step" in per_seed[0]:
        steps = zip(*(r["ctr_by_step"] for r in per_seed))
        out["ctr_by_step"] = [
            dict(zip(("mean", "ci95"), mean_ci(seen))) | {"seeds": len(seen)}
            for seen in ([v for v in col if v is not None] for col in steps)
        ]
    if ceiling:
        tr = out["total_reward"]
        out["share_of_ceiling"] = {"mean": tr["mean"] / ceiling, "ci95": tr["ci95"] / ceiling}
    return out


def add_statistics(payload: dict[str, Any], metric: str = "total_reward") -> dict[str, Any]:
    """Add the seed-level comparisons of ``hsrl.eval.stats`` to an evaluation payload, world by world:
    ``aggregate[world][agent]["iqm"]`` (IQM of the per-seed ``metric`` with a bootstrap CI) and, for every
    agent but the reference, ``["vs_reference"]`` (paired difference and probability of improvement).
    ``payload["reference"]`` names the reference agent (None: no comparisons). Returns the payload."""
    reference = reference_agent(payload.get("agents") or list(next(iter(payload["per_seed"].values()), {})))
    payload["reference"] = reference
    for world, rows_of in payload["per_seed"].items():
        for name, rows in rows_of.items():
            agg = payload["aggregate"][world][name]
            agg["iqm"] = iqm([r[metric] for r in rows])
            if reference is not None and name != reference and reference in rows_of:
                agg["vs_reference"] = versus(rows, rows_of[reference], reference, metric)
    return payload


def versions() -> dict[str, str]:
    import torch

    import hsrl

    return {
        "hsrl": hsrl.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def fmt(cell: dict[str, float], digits: int = 2) -> str:
    return f"{cell['mean']:.{digits}f} ± {cell['ci95']:.{digits}f}"


def markdown_table(results: dict[str, dict[str, Any]], world: str) -> str:
    cols = ["total_reward", "depth", "avg_reward", "click_rate", "coverage", "diversity"]
    head = "| agent | " + " | ".join(cols) + " | share of ceiling | seeds | episodes |"
    lines = [f"### world: {world}", "", head, "|" + "---|" * (len(cols) + 4)]
    for name, agg in results.items():
        share = fmt(agg["share_of_ceiling"], 3) if "share_of_ceiling" in agg else "-"
        cells = " | ".join(
            fmt(agg[c], 3 if c in ("click_rate", "coverage", "diversity", "avg_reward") else 2) for c in cols
        )
        lines.append(f"| {name} | {cells} | {share} | {agg['seeds']} | {agg['episodes']} |")
    return "\n".join(lines) + "\n"


def dynamics_table(results: dict[str, dict[str, Any]], world: str, steps: tuple[int, ...] = (1, 2, 3, 5, 10)) -> str:
    """What the slates do to the user: repeats of the previous slate's groups and CTR along the session."""
    first = next(iter(results.values()), {})
    repeat_cols = [m for m in REPEAT_METRICS if m in first]
    if "ctr_by_step" not in first:
        return ""
    head = "| agent | " + " | ".join(repeat_cols + [f"CTR step {t}" for t in steps]) + " |"
    lines = [f"### dynamics, world: {world}", "", head, "|---|" + "---|" * (len(repeat_cols) + len(steps))]
    for name, agg in results.items():
        cells = [fmt(agg[m], 3) for m in repeat_cols]
        curve = agg["ctr_by_step"]
        cells += [
            fmt(curve[t - 1], 3) if t <= len(curve) and curve[t - 1]["mean"] == curve[t - 1]["mean"] else "-"
            for t in steps
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "repeat_share: share of slate items whose level-1 SID token was in the user's previous slate; "
        "topic_repeat_share: the same by true topic (synthetic data). A policy that ignores what its "
        "slates do to the user repeats itself and its CTR falls along the session."
    )
    return "\n".join(lines) + "\n"


def fmt_ci(ci: list[float], digits: int = 2) -> str:
    """A [low, high] interval; "[n/a]" where it is NaN (too few seeds)."""
    lo, hi = ci
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]" if lo == lo and hi == hi else "[n/a]"


def statistics_table(results: dict[str, dict[str, Any]], world: str, reference: str | None) -> str:
    """Per agent: paired difference of total reward against the reference, IQM, P(improvement), with CIs."""
    if not results or "iqm" not in next(iter(results.values())):
        return ""
    ref = reference or "(no learned agent)"
    head = (
        f"| agent | Δ total reward vs {ref} (95 % CI) | IQM total reward (95 % CI) | P(agent > {ref}) (95 % CI) "
        "| pairs |"
    )
    lines = [f"### seed statistics, world: {world}", "", head, "|---|---|---|---|---|"]
    for name, agg in results.items():
        q = agg["iqm"]
        cells = [f"{q['mean']:.2f} {fmt_ci(q['ci'], 2)}"]
        vs = agg.get("vs_reference")
        if vs is None:
            cells = ["reference" if name == reference else "-", *cells, "-", "-"]
        else:
            d, p = vs["paired_difference"], vs["probability_of_improvement"]
            cells = [f"{d['mean']:+.2f} {fmt_ci(d['ci'], 2)}", *cells, f"{p['point']:.2f} {fmt_ci(p['ci'], 2)}"]
            cells.append(str(d["n"]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Δ: mean over evaluation seeds of (agent − reference) per-seed total reward, Student-t CI over the "
        "paired differences. IQM: mean of the middle 50 % of the per-seed scores, percentile-bootstrap CI. "
        "P(agent > reference): share of (agent seed, reference seed) pairs the agent wins, ties ½, stratified "
        "bootstrap CI. [n/a]: too few seeds for an interval (t: 2, bootstrap: 3)."
    )
    return "\n".join(lines) + "\n"


def overview_table(aggregates: dict[str, dict[str, Any]]) -> str:
    """Total reward and depth of every agent under every judge, side by side (the headline table)."""
    worlds = list(aggregates)
    agents = list(next(iter(aggregates.values()))) if worlds else []
    head = "| agent | " + " | ".join(f"{w}: total reward | {w}: depth" for w in worlds) + " |"
    lines = [head, "|---|" + "---|---|" * len(worlds)]
    for name in agents:
        cells = [f"{fmt(aggregates[w][name]['total_reward'])} | {fmt(aggregates[w][name]['depth'])}" for w in worlds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, payload: dict[str, Any]) -> dict[str, Path]:
    """results.json (machine-readable, with config and versions), report.md and PNG plots."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "report.md"}
    write_json(paths["json"], payload)
    md = [f"# hsrl results: {payload.get('dataset', '?')}", ""]
    md.append(
        f"Held-out test users; mean ± 95 % CI over seeds. Ceiling (best possible total reward): "
        f"{payload.get('ceiling', {}).get('total_reward', 'n/a')}."
    )
    md.append("")
    md.append(overview_table(payload["aggregate"]))
    for world, table in payload["aggregate"].items():
        md.append(markdown_table(table, world))
    for world, table in payload["aggregate"].items():
        md.append(statistics_table(table, world, payload.get("reference")))
    for world, table in payload["aggregate"].items():
        md.append(dynamics_table(table, world))
    if payload.get("privileged"):
        md.append("Privileged references (peek at the judging world): " + ", ".join(payload["privileged"]) + ".")
    md.append("")
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text("\n".join(md))
    paths.update(plot_results(out_dir, payload))
    return paths


def _save(fig: Any, path: Path) -> Path:
    """Write a figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def plot_results(out_dir: Path, payload: dict[str, Any]) -> dict[str, Path]:
    """Result bars (total reward with CI) per world, and learning curves with CI bands over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: dict[str, Path] = {}
    for world, table in payload["aggregate"].items():
        names = list(table)
        means = [table[n]["total_reward"]["mean"] for n in names]
        errs = [table[n]["total_reward"]["ci95"] for n in names]
        fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.5))
        ax.bar(names, means, yerr=errs, capsize=4, color="tab:blue")
        ax.set_ylabel("total reward (mean ± 95% CI)")
        ax.set_title(f"{payload.get('dataset', '')}: {world}")
        paths[f"bars_{world}"] = _save(fig, out_dir / f"results_{world}.png")
    for world, table in payload["aggregate"].items():
        if not table or "ctr_by_step" not in next(iter(table.values())):
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name, agg in table.items():
            # steps that a session of every seed reached (later steps: few survivors, intervals explode)
            curve = [
                (t + 1, c["mean"], c["ci95"])
                for t, c in enumerate(agg["ctr_by_step"])
                if c.get("seeds", agg["seeds"]) == agg["seeds"] and c["mean"] == c["mean"]
            ]
            if not curve:
                continue
            t, mean, half = (np.array(x, dtype=float) for x in zip(*curve))
            ax.plot(t, mean, marker=".", label=name)
            ax.fill_between(t, np.clip(mean - half, 0, 1), np.clip(mean + half, 0, 1), alpha=0.15)
        ax.set_ylim(0, 1)
        ax.set_xlabel("step of the session (steps reached in every seed)")
        ax.set_ylabel("click rate (mean ± 95% CI)")
        ax.set_title(f"{payload.get('dataset', '')}: CTR by step, {world}")
        ax.legend(fontsize=7)
        paths[f"ctr_{world}"] = _save(fig, out_dir / f"ctr_by_step_{world}.png")
    curves = {name: seeds for name, seeds in payload.get("curves", {}).items() if any(seeds)}
    if curves:
        paths["curves"] = plot_learning_curves(curves, out_dir / "learning_curves.png", payload)
    return paths


def plot_learning_curves(curves: dict[str, list[list[tuple[int, float]]]], path: Path, payload: dict[str, Any]) -> Path:
    """One line per agent: the validation total reward at each evaluation step, mean over seeds, with
    the 95 % CI band over the seeds that reached that step (``curves``: agent -> per seed (step, value))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    n_seeds = max(len(seeds) for seeds in curves.values())
    for name, seeds in curves.items():
        steps = sorted({s for curve in seeds for s, _ in curve})
        matrix = np.array([[dict(curve).get(s, np.nan) for s in steps] for curve in seeds], dtype=float)
        stats = [mean_ci(col[~np.isnan(col)]) for col in matrix.T]
        mean = np.array([m for m, _ in stats])
        half = np.array([h for _, h in stats])
        (line,) = ax.plot(steps, mean, marker="." if len(steps) <= 60 else None, markersize=3, label=name)
        ax.fill_between(steps, mean - half, mean + half, alpha=0.2, color=line.get_color(), linewidth=0)
    episodes = payload.get("config", {}).get("train", {}).get("eval_episodes")
    per_point = f"{episodes} validation episodes a point, " if episodes else ""
    ax.set_xlabel("environment steps")
    ax.set_ylabel("validation total reward")
    ax.set_title(
        f"{payload.get('dataset', '')}: learning curves ({per_point}mean ± 95% CI over {n_seeds} seed(s))", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)

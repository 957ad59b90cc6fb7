"""A simulated A/B test: control and treatment policies on disjoint halves of the test users (DESIGN §9).

The offline analogue of the paper's online test. Each arm serves its own users until ``episodes``
sessions have run; CVR = clicks / impressions (slots shown) and cost = impressions per session (a
policy that keeps users longer spends more exposure). Lifts are treatment / control − 1.

Training seeds: the test is repeated for every training seed ``s`` (the seed-``s`` checkpoints of both
arms), each repetition with its own random halves of the users and its own environment draws (split and
environment seed ``seed + s``), so that one repetition is an independent copy of the whole experiment:
another training run *and* another randomisation of users. The seed-0 repetition is the single-seed test
of earlier versions. The lifts pool every repetition's sessions, and their percentile 95 % intervals come
from a two-stage bootstrap (``lift_ci``): resample the seeds, then the sessions within each drawn seed,
independently per arm. With one seed it is the plain session bootstrap; ``per_seed`` holds each seed's
own lifts with session-bootstrap intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from hsrl.eval.evaluate import evaluate, summary

if TYPE_CHECKING:
    from hsrl.agents.base import Agent
    from hsrl.simulator.protocols import SlateEnvironment

LIFTS = ("cvr_lift", "cost_lift")
Arm = dict[str, np.ndarray]  # per-session "clicks" and "impressions" of one arm in one repetition


def split_users(users: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint, random halves of ``users``."""
    order = np.random.default_rng(seed).permutation(users)
    half = len(order) // 2
    return np.sort(order[:half]), np.sort(order[half:])


def _stack(arms: Sequence[Arm]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seeds, longest) clicks and impressions, zero-padded, and each seed's session count."""
    n = np.array([len(a["clicks"]) for a in arms])
    clicks, shown = np.zeros((len(arms), n.max())), np.zeros((len(arms), n.max()))
    for s, a in enumerate(arms):
        clicks[s, : n[s]], shown[s, : n[s]] = a["clicks"], a["impressions"]
    return clicks, shown, n


def _pooled(arms: Sequence[Arm], draws: np.ndarray | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """CVR and impressions per session of an arm, pooled over seeds: over every session (``draws`` None),
    or per bootstrap sample b over the seeds ``draws[b]`` with their sessions resampled within each seed."""
    clicks, shown, n = _stack(arms)
    if draws is None:
        total_c, total_i, sessions = clicks.sum(), shown.sum(), n.sum()
        return np.asarray(total_c / max(total_i, 1.0)), np.asarray(total_i / max(sessions, 1))
    boots, width = draws.shape[0], n.max()
    total_c, total_i, sessions = np.zeros(boots), np.zeros(boots), np.zeros(boots)
    for k in range(draws.shape[1]):  # one drawn seed per sample at a time: (boots, sessions) arrays, not 3-d
        seed_of, n_of = draws[:, k], n[draws[:, k]]
        idx = (rng.random((boots, width)) * n_of[:, None]).astype(np.int64)  # sessions of that seed
        keep = np.arange(width) < n_of[:, None]  # as many draws as the seed has sessions
        total_c += np.where(keep, clicks[seed_of[:, None], idx], 0.0).sum(1)
        total_i += np.where(keep, shown[seed_of[:, None], idx], 0.0).sum(1)
        sessions += n_of
    return total_c / np.maximum(total_i, 1.0), total_i / np.maximum(sessions, 1)


def lift_ci(
    control: Arm | Sequence[Arm], treatment: Arm | Sequence[Arm], n_boot: int = 2000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """CVR and cost lifts (point, 95 % CI) from per-session clicks and impressions of each arm; a list of
    arms is one arm per training seed (control[s] and treatment[s] ran with seed s).

    Two-stage (hierarchical) bootstrap: each sample draws S of the S seeds with replacement, the same
    seeds for both arms (a seed's control and treatment share their randomisation), then, within every
    drawn seed, its sessions with replacement, independently per arm. The sessions of one seed share one
    trained policy and one user split, so they are not independent copies of the experiment: resampling
    sessions alone would leave out the spread between training runs. scipy.stats.bootstrap has no
    hierarchical mode, hence the index draws here with numpy's Generator (vectorised over the samples)."""
    controls = [control] if isinstance(control, dict) else list(control)
    treatments = [treatment] if isinstance(treatment, dict) else list(treatment)
    if len(controls) != len(treatments) or not controls:
        raise ValueError(f"one control and one treatment arm per seed (got {len(controls)} and {len(treatments)})")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(controls), (n_boot, len(controls)))  # stage 1: seeds, shared by both arms

    def lifts(seeds: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        (c_cvr, c_cost), (t_cvr, t_cost) = _pooled(controls, seeds, rng), _pooled(treatments, seeds, rng)
        return t_cvr / c_cvr - 1.0, t_cost / c_cost - 1.0

    point, boots = lifts(None), lifts(draws)  # stage 2 (sessions) inside _pooled, per arm
    out = {}
    for j, name in enumerate(LIFTS):
        lo, hi = np.quantile(boots[j], [0.025, 0.975])
        out[name] = {"point": float(point[j]), "ci95": [float(lo), float(hi)]}
    return out


def run_arms(
    make_env: Callable[[np.ndarray, int], SlateEnvironment],
    control: Agent,
    treatment: Agent,
    users: np.ndarray,
    episodes: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """One repetition: both arms on their halves of ``users`` (split and environment seed ``seed``)."""
    control_users, treatment_users = split_users(users, seed)
    arms = {}
    for name, agent, arm_users in (("control", control, control_users), ("treatment", treatment, treatment_users)):
        env = make_env(arm_users, seed)
        result = evaluate(agent, env, episodes)
        arms[name] = {
            "agent": agent.name,
            "users": int(len(arm_users)),
            "clicks": np.asarray(result["clicks"], dtype=np.float64),
            "impressions": np.asarray(result["depths"], dtype=np.float64) * env.slate_size,
            "metrics": summary(result),
        }
    return arms


def _arm_summary(arms: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """An arm over its repetitions: users per repetition, every session pooled."""
    sessions = np.array([len(a["clicks"]) for a in arms])
    clicks = sum(float(a["clicks"].sum()) for a in arms)
    shown = sum(float(a["impressions"].sum()) for a in arms)
    return {
        "agent": arms[0]["agent"],
        "users": arms[0]["users"],
        "sessions": int(sessions.sum()),
        "cvr": clicks / max(shown, 1.0),
        "cost_per_session": shown / max(int(sessions.sum()), 1),
        **{k: float(np.average([a["metrics"][k] for a in arms], weights=sessions)) for k in ("total_reward", "depth")},
    }


def _per_seed(agents: Agent | Sequence[Agent]) -> list[Agent]:
    """One agent per training seed: a list or tuple as given, anything else as the one seed's agent."""
    return list(agents) if isinstance(agents, list | tuple) else [cast("Agent", agents)]


def ab_test(
    make_env: Callable[[np.ndarray, int], SlateEnvironment],
    control: Agent | Sequence[Agent],
    treatment: Agent | Sequence[Agent],
    users: np.ndarray,
    episodes: int,
    seed: int = 0,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """Run both arms once per training seed; ``make_env(users, seed)`` builds an environment over a subset
    of users. ``control`` / ``treatment``: one agent, or one agent per training seed (index s: seed s)."""
    controls, treatments = _per_seed(control), _per_seed(treatment)
    if len(controls) != len(treatments):
        raise ValueError(f"one control and one treatment agent per seed (got {len(controls)} and {len(treatments)})")
    runs = [run_arms(make_env, c, t, users, episodes, seed + s) for s, (c, t) in enumerate(zip(controls, treatments))]
    report: dict[str, Any] = {"seeds": len(runs), "bootstrap": "two-stage: seeds, then sessions within each seed"}
    report |= lift_ci([r["control"] for r in runs], [r["treatment"] for r in runs], n_boot, seed)
    for name in ("control", "treatment"):
        report[name] = _arm_summary([r[name] for r in runs])
    report["per_seed"] = [
        {"seed": s, "split_seed": seed + s}
        | lift_ci(r["control"], r["treatment"], n_boot, seed + s)
        | {name: _arm_summary([r[name]]) for name in ("control", "treatment")}
        for s, r in enumerate(runs)
    ]
    return report

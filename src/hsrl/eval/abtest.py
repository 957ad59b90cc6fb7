"""A simulated A/B test: control and treatment policies on disjoint halves of the test users (DESIGN §9).

The offline analogue of the paper's online test. Each arm serves its own users until ``episodes``
sessions have run; CVR = clicks / impressions (slots shown) and cost = impressions per session (a
policy that keeps users longer spends more exposure). Lifts are treatment / control − 1 with
percentile-bootstrap 95 % intervals, resampling sessions within each arm independently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hsrl.eval.evaluate import evaluate, summary


def split_users(users: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint, random halves of ``users``."""
    order = np.random.default_rng(seed).permutation(users)
    half = len(order) // 2
    return np.sort(order[:half]), np.sort(order[half:])


def lift_ci(
    control: dict[str, np.ndarray], treatment: dict[str, np.ndarray], n_boot: int = 2000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """CVR and cost lifts (point, 95 % CI) from per-session clicks and impressions of each arm."""
    rng = np.random.default_rng(seed)

    def stats(arm: dict[str, np.ndarray], idx: np.ndarray) -> tuple[float, float]:
        clicks, shown = arm["clicks"][idx].sum(), arm["impressions"][idx].sum()
        return clicks / max(shown, 1.0), shown / len(idx)

    def lifts(ci: np.ndarray, ti: np.ndarray) -> tuple[float, float]:
        (c_cvr, c_cost), (t_cvr, t_cost) = stats(control, ci), stats(treatment, ti)
        return t_cvr / c_cvr - 1.0, t_cost / c_cost - 1.0

    nc, nt = len(control["clicks"]), len(treatment["clicks"])
    point = lifts(np.arange(nc), np.arange(nt))
    boots = np.array([lifts(rng.integers(0, nc, nc), rng.integers(0, nt, nt)) for _ in range(n_boot)])
    out = {}
    for j, name in enumerate(("cvr_lift", "cost_lift")):
        lo, hi = np.quantile(boots[:, j], [0.025, 0.975])
        out[name] = {"point": float(point[j]), "ci95": [float(lo), float(hi)]}
    return out


def ab_test(
    make_env: Callable[[np.ndarray, int], Any],
    control: Any,
    treatment: Any,
    users: np.ndarray,
    episodes: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Run both arms; ``make_env(users, seed)`` builds an environment over a subset of users."""
    control_users, treatment_users = split_users(users, seed)
    arms = {}
    for name, agent, arm_users in (("control", control, control_users), ("treatment", treatment, treatment_users)):
        env = make_env(arm_users, seed)
        result = evaluate(agent, env, episodes)
        arms[name] = {
            "agent": agent.name,
            "users": int(len(arm_users)),
            "clicks": np.asarray(result["clicks"]),
            "impressions": np.asarray(result["depths"], dtype=np.float64) * env.slate_size,
            "metrics": summary(result),
        }
    report = lift_ci(arms["control"], arms["treatment"], seed=seed)
    for name, arm in arms.items():
        shown = arm["impressions"].sum()
        report[name] = {
            "agent": arm["agent"],
            "users": arm["users"],
            "sessions": int(len(arm["clicks"])),
            "cvr": float(arm["clicks"].sum() / max(shown, 1.0)),
            "cost_per_session": float(shown / max(len(arm["clicks"]), 1)),
            **{k: arm["metrics"][k] for k in ("total_reward", "depth")},
        }
    return report

"""Interval estimates over training seeds for comparing agents (DESIGN §9), after Agarwal et al. (2021),
"Deep RL at the edge of the statistical precipice" (the rliable library), with scipy.stats doing the work.

Every agent of one evaluation is scored on the same evaluation seeds (seed ``s`` of every agent meets
the same test users in the same world), so per-seed scores of two agents are *paired* by seed.

- ``paired_difference(x, y)``: the mean of the per-seed differences x_s − y_s over the seeds both have,
  with a Student-t interval on those differences: mean ± t(n−1) · sd / √n (sd with ddof=1).
- ``iqm(x)``: the interquartile mean, the mean of the middle 50 % of the scores
  (``scipy.stats.trim_mean(x, 0.25)``, which cuts ⌊n/4⌋ values from each end, as rliable does), with a
  percentile bootstrap interval over seeds.
- ``probability_of_improvement(x, y)``: P(X > Y) + ½ P(X = Y) for a seed score X of agent x and Y of
  agent y, i.e. the Mann-Whitney U statistic of x over y divided by n_x · n_y (ties count ½), with a
  stratified percentile bootstrap interval: the two agents' scores are resampled independently. One
  world is one task; worlds are never pooled (callers compute one estimate per world).

Small samples: a statistic is always computed where there is at least one value (one pair), but an
interval needs more. The t interval needs n ≥ 2; a bootstrap interval needs ``MIN_BOOTSTRAP`` (3) values
in every sample, since a resample of 1-2 values takes only 1-3 distinct values and its percentiles
would be a spuriously narrow interval. Below that the interval is ``[nan, nan]``; nothing raises.
Intervals are ``[low, high]`` lists (bootstrap intervals need not be symmetric), unlike the symmetric
``ci95`` half-widths of ``metrics.mean_ci``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_BOOT = 2000
MIN_BOOTSTRAP = 3  # fewest values per sample for a bootstrap interval
NAN_CI = [math.nan, math.nan]
REFERENCE = "hsrl"  # the agent every other is compared with, when present


def _finite(values: Iterable[float]) -> np.ndarray:
    arr = np.asarray(list(values), dtype=np.float64)
    return arr[np.isfinite(arr)]


def paired_by_seed(
    rows_x: Sequence[dict[str, Any]], rows_y: Sequence[dict[str, Any]], metric: str = "total_reward"
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of two agents on the seeds both have (by each row's ``seed``; NaN scores dropped), in seed order."""
    y_by_seed = {r["seed"]: r[metric] for r in rows_y}
    pairs = [
        (r[metric], y_by_seed[r["seed"]])
        for r in sorted(rows_x, key=lambda r: r["seed"])
        if r["seed"] in y_by_seed and math.isfinite(r[metric]) and math.isfinite(y_by_seed[r["seed"]])
    ]
    x, y = (np.array(col, dtype=np.float64) for col in zip(*pairs)) if pairs else (np.empty(0), np.empty(0))
    return x, y


def paired_difference(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """Mean of x_i − y_i (pairs i: the same seed) and its Student-t interval; ``ci`` is NaN for n < 2."""
    d = np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    n = int(d.size)
    if n == 0:
        return {"mean": math.nan, "ci": list(NAN_CI), "n": 0}
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "ci": list(NAN_CI), "n": n}
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "ci": [mean - half, mean + half], "n": n}


def _iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray(stats.trim_mean(x, 0.25, axis=axis))


def iqm(x: Sequence[float], confidence: float = CONFIDENCE, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Interquartile mean and its percentile bootstrap interval (NaN with fewer than ``MIN_BOOTSTRAP`` values)."""
    arr = _finite(x)
    if arr.size == 0:
        return {"mean": math.nan, "ci": list(NAN_CI)}
    point = float(_iqm(arr))
    if arr.size < MIN_BOOTSTRAP:
        return {"mean": point, "ci": list(NAN_CI)}
    res = stats.bootstrap(
        (arr,), _iqm, n_resamples=n_boot, vectorized=True, confidence_level=confidence, method="percentile", rng=seed
    )
    return {"mean": point, "ci": [float(res.confidence_interval.low), float(res.confidence_interval.high)]}


def _improvement(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """P(X > Y) + ½ P(X = Y) over all pairs of the last axes (= Mann-Whitney U / (n_x n_y))."""
    d = np.moveaxis(x, axis, -1)[..., :, None] - np.moveaxis(y, axis, -1)[..., None, :]
    return (d > 0).mean((-2, -1)) + 0.5 * (d == 0).mean((-2, -1))


def probability_of_improvement(
    x: Sequence[float], y: Sequence[float], confidence: float = CONFIDENCE, n_boot: int = N_BOOT, seed: int = 0
) -> dict[str, Any]:
    """P(X > Y) of agent x over agent y from their per-seed scores, with a stratified bootstrap interval
    (each agent's scores resampled on their own; NaN with fewer than ``MIN_BOOTSTRAP`` scores in either)."""
    xa, ya = _finite(x), _finite(y)
    if xa.size == 0 or ya.size == 0:
        return {"point": math.nan, "ci": list(NAN_CI)}
    point = float(_improvement(xa, ya))
    if min(xa.size, ya.size) < MIN_BOOTSTRAP:
        return {"point": point, "ci": list(NAN_CI)}
    res = stats.bootstrap(
        (xa, ya),
        _improvement,
        n_resamples=n_boot,
        vectorized=True,
        paired=False,
        confidence_level=confidence,
        method="percentile",
        rng=seed,
    )
    return {"point": point, "ci": [float(res.confidence_interval.low), float(res.confidence_interval.high)]}


def reference_agent(agents: Sequence[str]) -> str | None:
    """The agent the others are compared with: the first HSRL spec (``hsrl``, ``hsrl:tuned``, ...), else the
    first learned agent, else None. Names the registry does not know are never learned."""
    from hsrl.agents import registry
    from hsrl.errors import ConfigError

    names = [registry.base_name(a) for a in agents]
    for spec, name in zip(agents, names):
        if name == REFERENCE:
            return spec
    for spec, name in zip(agents, names):
        try:
            if registry.get(name).learned:
                return spec
        except ConfigError:
            continue
    return None


def versus(
    rows: Sequence[dict[str, Any]],
    reference_rows: Sequence[dict[str, Any]],
    reference: str,
    metric: str = "total_reward",
    seed: int = 0,
) -> dict[str, Any]:
    """One agent against the reference in one world: the paired difference (agent − reference) over the
    seeds both have, and P(agent > reference) over all their seeds."""
    x, y = paired_by_seed(rows, reference_rows, metric)
    return {
        "reference": reference,
        "metric": metric,
        "paired_difference": paired_difference(x, y),
        "probability_of_improvement": probability_of_improvement(
            [r[metric] for r in rows], [r[metric] for r in reference_rows], seed=seed
        ),
    }

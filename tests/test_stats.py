"""Seed-level statistics (hsrl.eval.stats), their place in results.json / report.md, and the A/B test's
two-stage bootstrap over training seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from hsrl.eval import stats
from hsrl.eval.abtest import lift_ci
from hsrl.eval.report import add_statistics, statistics_table


def rows(values, seeds=None):
    return [{"seed": s, "total_reward": v} for s, v in zip(seeds or range(len(values)), values)]


def test_paired_difference_by_hand():
    out = stats.paired_difference([1, 2, 3, 4, 5], [0, 2, 2, 3, 5])
    # differences 1, 0, 1, 1, 0: mean 0.6, sample variance (3 * 0.4^2 + 2 * 0.6^2) / 4 = 0.3
    half = sps.t.ppf(0.975, 4) * math.sqrt(0.3) / math.sqrt(5)
    assert out["n"] == 5 and out["mean"] == pytest.approx(0.6)
    assert out["ci"] == pytest.approx([0.6 - half, 0.6 + half])
    assert out["ci"][0] == pytest.approx(-0.0801, abs=1e-3) and out["ci"][1] == pytest.approx(1.2801, abs=1e-3)


def test_pairs_follow_the_seed_not_the_row_order():
    x = rows([5, 4, 3, 2, 1], seeds=[4, 3, 2, 1, 0])  # the same scores as [1, 2, 3, 4, 5] by seed
    y = rows([0, 2, 2, 3, 5, 99])  # seed 5: the agent has none, so it is not a pair
    a, b = stats.paired_by_seed(x, y)
    assert a.tolist() == [1, 2, 3, 4, 5] and b.tolist() == [0, 2, 2, 3, 5]
    assert stats.versus(x, y, "ref")["paired_difference"]["mean"] == pytest.approx(0.6)


def test_iqm_is_the_mean_of_the_middle_half():
    assert stats.iqm([1, 2, 3, 4, 100, 5, 6, 7])["mean"] == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    out = stats.iqm([10, 1, 3, 2, 50])  # 5 seeds: one cut from each end, mean of 2, 3, 10
    assert out["mean"] == pytest.approx(5.0)
    lo, hi = out["ci"]
    assert 1 <= lo <= out["mean"] <= hi <= 50
    assert stats.iqm([2.0, 2.0, 2.0])["ci"] == [2.0, 2.0]  # no spread, no interval width


def test_probability_of_improvement():
    better = stats.probability_of_improvement([5, 6, 7], [1, 2, 3])
    assert better["point"] == 1.0 and better["ci"] == [1.0, 1.0]
    assert stats.probability_of_improvement([1, 2, 3], [5, 6, 7])["point"] == 0.0
    assert stats.probability_of_improvement([1, 2, 3], [1, 2, 3])["point"] == pytest.approx(0.5)
    # ties count 1/2: (1,2) <, (1,3) <, (2,2) =, (2,3) < -> 0.5 / 4
    assert stats.probability_of_improvement([1, 2], [2, 3])["point"] == pytest.approx(0.125)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, 7).astype(float), rng.integers(0, 4, 6).astype(float)  # many ties
    out = stats.probability_of_improvement(x, y)
    assert out["point"] == pytest.approx(sps.mannwhitneyu(x, y).statistic / (7 * 6))
    assert 0 <= out["ci"][0] <= out["point"] <= out["ci"][1] <= 1


def test_small_samples_give_nan_intervals_not_errors():
    one = stats.paired_difference([3.0], [1.0])
    assert one["mean"] == 2.0 and one["n"] == 1 and all(math.isnan(v) for v in one["ci"])
    assert all(math.isnan(v) for v in stats.iqm([3.0])["ci"]) and stats.iqm([3.0])["mean"] == 3.0
    poi = stats.probability_of_improvement([3.0], [1.0])
    assert poi["point"] == 1.0 and all(math.isnan(v) for v in poi["ci"])
    # two seeds: the t interval exists (wide), bootstrap intervals do not
    assert all(math.isfinite(v) for v in stats.paired_difference([1.0, 3.0], [0.0, 1.0])["ci"])
    assert all(math.isnan(v) for v in stats.iqm([1.0, 3.0])["ci"])
    assert all(math.isnan(v) for v in stats.probability_of_improvement([1.0, 3.0], [0.0, 1.0, 2.0])["ci"])
    empty = stats.paired_difference([], [])
    assert empty["n"] == 0 and math.isnan(empty["mean"])


def test_reference_agent_choice():
    assert stats.reference_agent(["random", "popular", "hsrl:tuned", "hsrl"]) == "hsrl:tuned"
    assert stats.reference_agent(["random", "hsrl", "hac"]) == "hsrl"
    assert stats.reference_agent(["random", "sl", "hac"]) == "sl"  # no HSRL: the first learned agent
    assert stats.reference_agent(["random", "popular", "oracle"]) is None  # references only
    assert stats.reference_agent(["not-registered", "popular"]) is None


def test_results_gain_iqm_and_comparisons_with_the_reference():
    per_seed = {
        "true": {
            "random": rows([0.4, 0.5, 0.3]),
            "hsrl": rows([2.0, 2.2, 1.9]),
            "oracle": rows([4.8, 4.9, 5.0]),
        }
    }
    aggregate = {"true": {name: {"total_reward": {"mean": 0.0, "ci95": 0.0}, "seeds": 3} for name in per_seed["true"]}}
    payload = add_statistics({"agents": ["random", "hsrl", "oracle"], "per_seed": per_seed, "aggregate": aggregate})
    assert payload["reference"] == "hsrl"
    table = payload["aggregate"]["true"]
    assert "vs_reference" not in table["hsrl"] and table["hsrl"]["iqm"]["mean"] == pytest.approx(2.0333, abs=1e-3)
    assert table["random"]["total_reward"] == {"mean": 0.0, "ci95": 0.0}  # existing keys untouched
    vs = table["random"]["vs_reference"]
    assert vs["reference"] == "hsrl" and vs["paired_difference"]["n"] == 3
    assert vs["paired_difference"]["mean"] == pytest.approx(0.4 - 2.0333, abs=1e-3)
    assert vs["probability_of_improvement"]["point"] == 0.0 and table["oracle"]["vs_reference"][
        "probability_of_improvement"
    ]["point"] == pytest.approx(1.0)
    md = statistics_table(table, "true", "hsrl")
    assert "### seed statistics, world: true" in md and "| hsrl | reference |" in md and "| random | -1.63 [" in md


def test_one_seed_results_show_na_intervals():
    per_seed = {"simulator": {"hsrl": rows([2.0]), "popular": rows([1.0])}}
    aggregate = {"simulator": {"hsrl": {}, "popular": {}}}
    payload = add_statistics({"agents": ["hsrl", "popular"], "per_seed": per_seed, "aggregate": aggregate})
    vs = payload["aggregate"]["simulator"]["popular"]["vs_reference"]
    assert vs["paired_difference"]["mean"] == -1.0 and all(math.isnan(v) for v in vs["paired_difference"]["ci"])
    assert "[n/a]" in statistics_table(payload["aggregate"]["simulator"], "simulator", "hsrl")


def arm(rate: float, rng: np.random.Generator, sessions: int = 400) -> dict[str, np.ndarray]:
    """Per-session clicks of 10 impressions each at click rate ``rate``."""
    return {"clicks": rng.binomial(10, rate, sessions).astype(float), "impressions": np.full(sessions, 10.0)}


def width(cell: dict) -> float:
    lo, hi = cell["ci95"]
    return hi - lo


def test_two_stage_bootstrap_widens_when_seeds_disagree():
    rng = np.random.default_rng(1)
    control = [arm(0.5, rng), arm(0.5, rng)]
    disagree = lift_ci(control, [arm(0.6, rng), arm(0.4, rng)])  # +20 % and -20 %: pooled about 0
    agree = lift_ci(control, [arm(0.5, rng), arm(0.5, rng)])  # both about 0
    assert abs(disagree["cvr_lift"]["point"]) < 0.05 and abs(agree["cvr_lift"]["point"]) < 0.05
    assert width(disagree["cvr_lift"]) > 3 * width(agree["cvr_lift"])
    # the same sessions as if they came from one seed: only session noise, a narrow interval
    pooled = {k: np.concatenate([a[k] for a in control]) for k in ("clicks", "impressions")}
    treated = lift_ci(control, [arm(0.6, np.random.default_rng(2)), arm(0.4, np.random.default_rng(3))])
    one_seed = lift_ci(
        pooled,
        {
            k: np.concatenate([arm(0.6, np.random.default_rng(2))[k], arm(0.4, np.random.default_rng(3))[k]])
            for k in ("clicks", "impressions")
        },
    )
    assert treated["cvr_lift"]["point"] == pytest.approx(one_seed["cvr_lift"]["point"])  # same pooled lift
    assert width(treated["cvr_lift"]) > 3 * width(one_seed["cvr_lift"])
    lo, hi = disagree["cvr_lift"]["ci95"]
    assert lo < -0.1 and hi > 0.1  # spans both seeds' lifts


def test_one_seed_lift_ci_is_the_session_bootstrap():
    rng = np.random.default_rng(4)
    c, t = arm(0.3, rng, 200), arm(0.45, rng, 150)  # arms of different sizes
    single, listed = lift_ci(c, t, seed=7), lift_ci([c], [t], seed=7)
    assert single == listed
    assert single["cvr_lift"]["point"] == pytest.approx(t["clicks"].sum() / 1500 / (c["clicks"].sum() / 2000) - 1)
    lo, hi = single["cvr_lift"]["ci95"]
    assert lo < single["cvr_lift"]["point"] < hi and lo > 0  # a real +50 % lift is clear from 150-200 sessions
    assert single["cost_lift"]["point"] == pytest.approx(0.0) and single["cost_lift"]["ci95"] == [0.0, 0.0]


def test_abtest_names_missing_seed_checkpoints_and_what_can_run(cli, tmp_path, tiny_sets):
    run = tmp_path / "run"
    assert cli("data", "prepare", "--out", run, *tiny_sets).code == 0
    seed0 = run / "agents" / "hsrl" / "seed0" / "agent.pt"
    seed0.parent.mkdir(parents=True)
    seed0.write_bytes(b"")  # only its presence is checked before anything runs
    r = cli("abtest", run, "--control", "popular", "--treatment", "hsrl", "--seeds", "3")
    err = " ".join(r.err.split())
    assert r.code == 2 and "Traceback" not in err
    assert "hsrl seed 1, hsrl seed 2" in err and "hsrl seed 0" not in err and "--seeds 1" in err
    assert not (run / "simulator").exists()  # stopped before building anything

"""`hsrl run` end to end on a tiny synthetic config: every stage's artefacts, the report, and skipping."""

from __future__ import annotations

import json


def test_run_end_to_end_then_skips(cli, tmp_path, tiny_sets):
    out = tmp_path / "run"
    r = cli("run", "--out", out, "--seeds", "2", *tiny_sets)
    assert r.code == 0, r.err
    for path in (
        "data/dataset.npz",
        "world.npz",
        "simulator/model.pt",
        "sid/index.npz",
        "config.yaml",
        "agents/hsrl/seed0/agent.pt",
        "agents/hsrl/seed1/agent.pt",
        "agents/hsrl/seed0/metrics.jsonl",
        "results/results.json",
        "results/report.md",
        "results/results_simulator.png",
        "results/results_true.png",
        "results/learning_curves.png",
        "results/ctr_by_step_true.png",
    ):
        assert (out / path).is_file(), path
    results = json.loads((out / "results" / "results.json").read_text())
    assert set(results["aggregate"]) == {"simulator", "true"}
    for world in ("simulator", "true"):
        table = results["aggregate"][world]
        # synthetic data: the fatigue-blind reference stands beside the agents
        assert set(table) == {"hsrl", "hac", "random", "popular", "oracle", "oracle:fatigue=blind"}
        for agg in table.values():
            assert agg["seeds"] == 2 and agg["episodes"] == 24
            assert 0 < agg["depth"]["mean"] <= 20
            assert -0.1 <= agg["share_of_ceiling"]["mean"] <= 1  # a skipped slot costs 0.1
            assert 0 <= agg["repeat_share"]["mean"] <= 1 and 0 <= agg["topic_repeat_share"]["mean"] <= 1
            assert len(agg["ctr_by_step"]) == 20 and 0 <= agg["ctr_by_step"][0]["mean"] <= 1
        # popular shows one slate to everyone: every item repeats the previous slate's groups
        assert table["popular"]["repeat_share"]["mean"] == 1.0
        assert table["random"]["topic_repeat_share"]["mean"] < 1.0
    assert results["ceiling"]["total_reward"] == 20.0
    assert results["privileged"] == ["oracle", "oracle:fatigue=blind"]
    assert "judged by" in r.out and "popular" in r.out
    report = (out / "results" / "report.md").read_text()
    assert "| hsrl |" in report and "world: true" in report and "### dynamics, world: true" in report
    assert "| agent | simulator: total reward | simulator: depth | true: total reward | true: depth |" in report
    # a second run reuses every artefact (no retraining): the checkpoint is untouched
    mtime = (out / "agents/hsrl/seed0/agent.pt").stat().st_mtime_ns
    r = cli("run", "--out", out, "--seeds", "2", *tiny_sets)
    assert r.code == 0, r.err
    assert (out / "agents/hsrl/seed0/agent.pt").stat().st_mtime_ns == mtime


def test_compare_trains_variants_and_shares_decode_only_weights(cli, tmp_path, tiny_sets):
    out = tmp_path / "run"
    assert cli("run", "--out", out, "--seeds", "1", "--agents", "random", *tiny_sets).code == 0
    r = cli(
        "compare",
        out,
        "--seeds",
        "1",
        "--world",
        "simulator",
        "--agents",
        "hsrl:residual=soft+credit=slate,hsrl:residual=soft+credit=slate+decode=score_all",
    )
    assert r.code == 0, r.err
    folders = sorted(p.name for p in (out / "agents").iterdir())
    assert folders == ["hsrl-credit=slate-residual=soft"]  # decode is evaluation-only: one training
    table = __import__("json").loads((out / "results" / "results.json").read_text())["aggregate"]["simulator"]
    assert set(table) == {"hsrl:residual=soft+credit=slate", "hsrl:residual=soft+credit=slate+decode=score_all"}
    r = cli("compare", out, "--agents", "hsrl:residual=wobbly")
    assert r.code == 2 and "residual" in r.err


def test_evaluate_unknown_agent_is_a_clear_error(cli, tmp_path):
    r = cli("evaluate", tmp_path, "--agents", "hsrl,nosuch")
    assert r.code == 2 and "nosuch" in r.err and "Traceback" not in r.err


def test_abtest_reports_lifts_with_intervals(cli, tmp_path, tiny_sets):
    out = tmp_path / "run"
    assert cli("run", "--out", out, "--seeds", "1", "--agents", "random,popular", *tiny_sets).code == 0
    # one test per training seed (default eval.seeds; 2 here for speed), sessions pooled over seeds
    r = cli("abtest", out, "--control", "random", "--treatment", "oracle", "--episodes", "60", "--seeds", "2")
    assert r.code == 0, r.err
    report = json.loads((out / "results" / "abtest_random_vs_oracle.json").read_text())
    assert report["seeds"] == 2 and [row["seed"] for row in report["per_seed"]] == [0, 1]
    assert report["control"]["sessions"] == 120 and report["treatment"]["sessions"] == 120
    assert report["control"]["users"] + report["treatment"]["users"] <= 60
    for row in (report, *report["per_seed"]):
        lo, hi = row["cvr_lift"]["ci95"]
        assert lo <= row["cvr_lift"]["point"] <= hi
        assert row["cvr_lift"]["point"] > 0  # the oracle's click rate beats random's
    assert all(row["control"]["sessions"] == 60 for row in report["per_seed"])
    assert "CVR lift" in r.out and "seed 1: CVR lift" in r.out


def test_ab_split_is_disjoint_and_covers_users():
    import numpy as np

    from hsrl.eval.abtest import split_users

    users = np.arange(7, 50)
    a, b = split_users(users, seed=3)
    assert not set(a) & set(b) and sorted([*a, *b]) == list(users)


def test_variant_options_that_repeat_the_config_share_the_plain_agents_weights(tmp_path):
    from hsrl.config import RunConfig
    from hsrl.workflow import ABLATION, agent_dir

    cfg = RunConfig()
    folders = {agent_dir(tmp_path, spec, 0, cfg).parent.name for spec in ABLATION}
    # the defaults (free heads, item credit, decode-only score_all) share the plain agent's folder
    assert folders == {
        "hsrl",
        "hsrl-token_heads=semantic",
        "hsrl-credit=token",
        "hsrl-credit=slate",
        "hsrl-exposure=false",
        "hsrl-click_loss=0",
        "hsrl-residual=soft",
    }
    assert agent_dir(tmp_path, "hsrl:exposure=true+click_loss=1", 0, cfg).parent.name == "hsrl"
    soft = cfg.model_copy(update={"agent": cfg.agent.model_copy(update={"residual": "soft"})})
    assert agent_dir(tmp_path, "hsrl:residual=soft", 0, soft).parent.name == "hsrl"
    assert agent_dir(tmp_path, "hsrl:residual=hard", 0, soft).parent.name == "hsrl-residual=hard"

"""User response model: it learns, it is calibrated, checkpoints round-trip and bad ones fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsrl.config import SimulatorConfig, load_config
from hsrl.data.schema import LogDataset
from hsrl.data.synthetic import generate
from hsrl.errors import ArtifactError
from hsrl.simulator.env import make_env
from hsrl.simulator.observation import Observation
from hsrl.simulator.response import (
    DatasetShape,
    Rows,
    UserResponseModel,
    fidelity_report,
    load_checkpoint,
    predict_probs,
    save_checkpoint,
    train_response_model,
)

TINY = ["data.synthetic.n_users=150", "data.synthetic.n_items=30", "data.history_length=10"]
FAST = SimulatorConfig(dim=16, heads=2, epochs=6)
CLI_SETS = [
    *TINY,
    "simulator.dim=8",
    "simulator.heads=2",
    "simulator.epochs=2",
]


@pytest.fixture(scope="module")
def trained():
    ds, world = generate(load_config(overrides=TINY).data)
    model, summary = train_response_model(ds, FAST)
    return ds, world, model, summary


def test_model_learns_beyond_popularity_and_is_calibrated(trained):
    ds, world, model, summary = trained
    report = fidelity_report(model, ds, world)
    test = report["test"]
    assert test["simulator"]["auc"] > 0.65
    assert test["simulator"]["auc"] > test["popularity"]["auc"] + 0.04
    assert test["true_world"]["auc"] > test["simulator"]["auc"]  # the ceiling stays above
    # one sigmoid on the logits: predicted click rate near the logged one (a double sigmoid gives > 0.5)
    assert abs(test["simulator"]["predicted_rate"] - test["simulator"]["logged_rate"]) < 0.06
    curve = summary["curve"]
    assert curve[-1]["train_loss"] < curve[0]["train_loss"]
    assert summary["best_val_auc"] == max(c["val_auc"] for c in curve)


def test_satiation_learns_boredom_and_ignores_padding(trained):
    ds, _, model, _ = trained
    # the world lowers the click logit per same-topic item among the last ten: recency weights turn negative
    assert (model.recency.detach() < 0).float().mean() >= 0.8
    slate = torch.as_tensor(ds.imp_items[:4], dtype=torch.long)
    empty = torch.full((4, ds.history_length), -1, dtype=torch.long)
    assert torch.equal(model.satiation(empty, empty != -1, slate), torch.zeros(4, slate.shape[1]))
    # soft clusters start from k-means: most items clearly belong to one cluster
    members = model.clusters(torch.arange(ds.n_items))
    assert (members.max(-1).values > 0.5).float().mean() > 0.5


def test_satiation_lr_speeds_the_cluster_parameters_only(trained):
    ds, _, model, _ = trained
    groups = model.param_groups()
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # every parameter, once
    assert groups[1]["params"] == [model.cluster_id.weight, model.cluster_link]
    assert groups[1]["lr"] == pytest.approx(FAST.lr * FAST.satiation_lr)
    assert "lr" not in groups[0]  # the rest at the optimiser's (configured) rate
    # 4 clusters for 30 items: soft memberships (one item per cluster would be exactly one-hot, no gradient);
    # one epoch, so the kept (best) epoch is the one trained in both runs
    slow = FAST.model_copy(update={"clusters": 4, "epochs": 1, "satiation_lr": 1.0})
    fast = slow.model_copy(update={"satiation_lr": 10.0})
    moved = {}
    for name, cfg in (("fast", fast), ("slow", slow)):
        fitted, _ = train_response_model(ds, cfg)
        assert fitted.param_groups()[1]["lr"] == pytest.approx(cfg.lr * cfg.satiation_lr)
        moved[name] = fitted.cluster_id.weight.detach().abs().mean().item()  # memberships start at zero
    assert moved["fast"] > 3 * moved["slow"]


def test_cluster_sharpness_softens_the_kmeans_start_and_lets_memberships_move(trained):
    ds, _, _, _ = trained
    items = torch.arange(ds.n_items)
    hard_cfg = FAST.model_copy(update={"clusters": 4, "epochs": 1, "cluster_sharpness": 1.0})
    soft_cfg = hard_cfg.model_copy(update={"cluster_sharpness": 0.25})
    starts = {c.cluster_sharpness: UserResponseModel.from_dataset(ds, c) for c in (hard_cfg, soft_cfg)}
    hard, soft = starts[1.0], starts[0.25]
    # the same k-means, the assignment's logits scaled: the same nearest centroid, a softer membership
    torch.testing.assert_close(soft.cluster.weight, 0.25 * hard.cluster.weight)
    assert torch.equal(soft.clusters(items).argmax(-1), hard.clusters(items).argmax(-1))
    assert soft.clusters(items).max(-1).values.mean() < hard.clusters(items).max(-1).values.mean() - 0.05
    moved = {}
    for cfg in (hard_cfg, soft_cfg):
        start = UserResponseModel.from_dataset(ds, cfg).clusters(items).detach()
        fitted, _ = train_response_model(ds, cfg)
        moved[cfg.cluster_sharpness] = (fitted.clusters(items).detach() - start).abs().sum(-1).mean().item()
    assert moved[0.25] > 1.5 * moved[1.0]  # a saturated softmax barely moves under the same Adam steps


def test_checkpoint_round_trip(trained, tmp_path):
    ds, _, model, summary = trained
    path = save_checkpoint(model, tmp_path / "model.pt", summary)
    back = load_checkpoint(path, expect=ds)
    rows = Rows.of(ds, ds.rows_in("test"))
    np.testing.assert_allclose(predict_probs(back, rows), predict_probs(model, rows), rtol=1e-6)


def test_corrupt_and_mismatched_checkpoints_are_artifact_errors(trained, tmp_path):
    ds, _, model, _ = trained
    with pytest.raises(ArtifactError, match="no simulator checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ArtifactError, match="corrupt"):
        load_checkpoint(bad)
    path = save_checkpoint(model, tmp_path / "model.pt")
    other = DatasetShape(ds.n_items + 5, ds.feature_dim, ds.profile_dim, ds.history_length, ds.slate_size)
    with pytest.raises(ArtifactError, match=f"n_items {ds.n_items} \\(dataset: {ds.n_items + 5}\\)"):
        load_checkpoint(path, expect=other)
    payload = torch.load(path, weights_only=True)
    payload["version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(ArtifactError, match="version 99"):
        load_checkpoint(tmp_path / "future.pt")


def test_cli_train_report_and_env(cli, tmp_path):
    run = tmp_path / "run"
    sets = [x for s in CLI_SETS for x in ("--set", s)]
    assert cli("data", "prepare", "--out", run, *sets[: 2 * len(TINY)]).code == 0
    r = cli("simulator", "train", run, *sets)
    assert r.code == 0, r.err
    assert (run / "simulator" / "model.pt").is_file() and "AUC" in r.out and "true world" in r.out
    r = cli("simulator", "report", run)
    assert r.code == 0 and "popularity" in r.out
    # the env loads the trained simulator and runs
    env = make_env(run, batch_users=4, device="cpu")
    obs = env.reset()
    _, reward, done, _ = env.step(torch.arange(env.slate_size).repeat(4, 1))
    assert reward.shape == (4,) and obs.hist_items.shape == (4, 10)
    assert make_env(run, world="true", batch_users=4, device="cpu").n_items == env.n_items


def test_cli_corrupt_or_mismatched_checkpoint_exits_2(cli, tmp_path):
    run = tmp_path / "run"
    sets = [x for s in CLI_SETS for x in ("--set", s)]
    assert cli("data", "prepare", "--out", run, *sets[: 2 * len(TINY)]).code == 0
    assert cli("simulator", "train", run, *sets).code == 0
    # another catalogue under the same run: the checkpoint no longer fits
    assert cli("data", "prepare", "--out", run, "--force", "--set", "data.synthetic.n_items=35").code == 0
    r = cli("simulator", "report", run)
    assert r.code == 2 and "n_items 30 (dataset: 35)" in r.err and "Traceback" not in r.err + r.out
    with pytest.raises(ArtifactError, match="trained on another dataset"):
        make_env(run, device="cpu")
    (run / "simulator" / "model.pt").write_bytes(b"\x00garbage")
    r = cli("simulator", "report", run)
    assert r.code == 2 and "corrupt simulator checkpoint" in r.err and "Traceback" not in r.err + r.out


# ---------------------------------------------------------------------------------------------- slots, floors, DDP

POSITION_WORLD = ["data.synthetic.n_users=400", "data.synthetic.n_items=60", "data.history_length=10",
                  "data.synthetic.position_bias=1.0"]  # fmt: skip


@pytest.fixture(scope="module")
def position_world():
    return generate(load_config(overrides=POSITION_WORLD).data)


def test_world_position_bias_lowers_later_slots_and_round_trips(position_world, tmp_path):
    from hsrl.data.synthetic import SyntheticWorld

    ds, world = position_world
    users, hist = torch.zeros(1, dtype=torch.long), torch.full((1, ds.history_length), -1)
    item = torch.zeros(1, ds.slate_size, dtype=torch.long)  # the same item in every slot
    logits = world.click_logits(users, hist, item)[0]
    expected = -1.0 * torch.log2(1 + torch.arange(ds.slate_size, dtype=torch.float32))
    torch.testing.assert_close(logits - logits[0], expected)
    # scored at slot 0 (the oracle's way), every column gets the first slot's logit
    at_first = world.click_logits(users, hist, item, torch.zeros(ds.slate_size, dtype=torch.long))[0]
    torch.testing.assert_close(at_first, logits[0].expand_as(at_first))
    world.save(tmp_path / "world.npz")
    assert SyntheticWorld.load(tmp_path / "world.npz").position_bias == 1.0
    # the logged clicks carry the effect: first slots clicked clearly more than last ones
    rates = ds.imp_feedback.mean(0)
    assert rates[:3].mean() > 2 * rates[-3:].mean()


def test_slot_aware_model_gains_auc_where_order_matters(position_world):
    ds, world = position_world
    cfg = SimulatorConfig(dim=16, heads=2, epochs=8)
    aucs, models = {}, {}
    for slots in ("off", "bias", "context"):
        models[slots], _ = train_response_model(ds, cfg.model_copy(update={"slots": slots}))
        aucs[slots] = fidelity_report(models[slots], ds, world)["val"]["simulator"]["auc"]
    assert aucs["bias"] > aucs["off"] + 0.005 and aucs["context"] > aucs["bias"] + 0.02, aucs  # measured +0.012, +0.05
    bias = models["bias"].slot_bias.detach()  # the learned slot logits fall with position, as the world's do
    assert bias[0] > bias[4] > bias[8]
    # the order of a slate matters to the slot-aware model (reversed: an item's probability changes with its
    # slot) and not to the slot-blind one
    rows = Rows.of(ds, ds.rows_in("val")[:16])
    obs = Observation(rows.user, rows.profile, rows.hist_items, rows.hist_feedback)
    flipped = rows.slate.flip(1)
    for slots, moves in (("off", False), ("context", True)):
        forward = models[slots].click_probs(obs, rows.slate)
        backward = models[slots].click_probs(obs, flipped).flip(1)
        assert (forward - backward).abs().max() > 0.05 if moves else torch.allclose(forward, backward, atol=1e-6)
    # candidates scored at one slot need the slots (the oracle's way); out-of-range slots are refused
    many = torch.arange(ds.n_items).expand(16, -1)
    with pytest.raises(ValueError, match="slots"):
        models["context"].click_probs(obs, many)
    assert models["context"].click_probs(obs, many, torch.zeros(ds.n_items, dtype=torch.long)).shape == (16, ds.n_items)
    with pytest.raises(ValueError, match="0..8"):
        models["context"].click_probs(obs, rows.slate, torch.full((ds.slate_size,), 9))


def test_fidelity_check_flags_a_simulator_below_a_floor():
    from hsrl.simulator.response import fidelity_check

    report = {s: {"simulator": {"auc": 0.60}, "popularity": {"auc": 0.55}, "item_ctr": {"auc": 0.595},
                  "slot_ctr": {"auc": 0.50}} for s in ("val", "test")}  # fmt: skip
    check = fidelity_check(report, margin=0.01)
    assert not check["ok"] and {(f["split"], f["floor"]) for f in check["failing"]} == {
        ("val", "item_ctr"),
        ("test", "item_ctr"),
    }
    report["val"]["simulator"]["auc"] = report["test"]["simulator"]["auc"] = 0.61
    assert fidelity_check(report, margin=0.01)["ok"]
    report["test"]["simulator"]["auc"] = float("nan")  # an undefined AUC never passes
    assert not fidelity_check(report, margin=0.01)["ok"]


def test_cli_warns_loudly_when_the_simulator_fails_a_floor(cli, tmp_path):
    from hsrl.io import read_json

    run = tmp_path / "run"
    sets = [x for s in CLI_SETS for x in ("--set", s)]
    assert cli("data", "prepare", "--out", run, *sets[: 2 * len(TINY)]).code == 0
    # a simulator that has not learnt anything (a vanishing learning rate): below the item-only floors
    r = cli("simulator", "train", run, *sets, "--set", "simulator.lr=1e-7", "--set", "simulator.epochs=1")
    assert r.code == 0, r.err
    assert "WARNING: the simulator does not beat every floor" in r.out and "item_ctr" in r.out
    report = read_json(run / "simulator" / "report.json")
    failing = {(f["split"], f["floor"]) for f in report["fidelity"]["failing"]}
    assert report["fidelity"]["ok"] is False
    assert {("val", "item_ctr"), ("test", "item_ctr"), ("val", "popularity"), ("test", "popularity")} <= failing
    r = cli("simulator", "report", run)  # the stored report says so again
    assert "WARNING" in r.out


def test_selection_keeps_the_best_validation_setting_and_reads_no_test_rows(position_world, monkeypatch):
    from hsrl.simulator import response

    ds, _ = position_world
    seen_splits = []
    rows_in = type(ds).rows_in
    monkeypatch.setattr(type(ds), "rows_in", lambda self, split: seen_splits.append(split) or rows_in(self, split))
    model, summary = response.select_response_model(ds, SimulatorConfig(dim=8, heads=2, epochs=2))
    trials = summary["selection"]["trials"]
    assert len(trials) == len(response.SELECTION) >= 5
    best = max(trials, key=lambda t: t["best_val_auc"])
    assert summary["selection"]["chosen"] == best["setting"] and summary["best_val_auc"] == best["best_val_auc"]
    assert model.config.model_dump(exclude={"select"}) == SimulatorConfig(dim=8, heads=2, epochs=2).model_copy(
        update=best["changes"]).model_dump(exclude={"select"})  # fmt: skip
    assert "test" not in seen_splits and "val" in seen_splits


def test_two_process_ddp_matches_one_process(cli, tmp_path):
    """DDP on 2 CPU processes (gloo): same artefacts, val AUC within 0.01 of one process."""
    from hsrl.io import read_json

    run = tmp_path / "run"
    overrides = ["data.synthetic.n_users=300", "data.synthetic.n_items=40", "data.history_length=10",
                 "simulator.dim=16", "simulator.heads=2", "simulator.epochs=4"]  # fmt: skip
    sets = [x for s in overrides for x in ("--set", s)]
    assert cli("data", "prepare", "--out", run, *sets[:6]).code == 0
    assert cli("simulator", "train", run, *sets).code == 0
    one = read_json(run / "simulator" / "report.json")
    r = cli("simulator", "train", run, "--force", "--nproc", "2")
    assert r.code == 0, r.err
    two = read_json(run / "simulator" / "report.json")
    assert two["training"]["processes"] == 2 and one["training"]["processes"] == 1
    assert two["training"]["train_rows"] <= one["training"]["train_rows"] <= two["training"]["train_rows"] + 1
    assert abs(two["val"]["simulator"]["auc"] - one["val"]["simulator"]["auc"]) < 0.01
    load_checkpoint(run / "simulator" / "model.pt", expect=LogDataset.load(run / "data"))  # the same artefacts
    assert not list(run.glob(".ddp-*"))  # the exchange folder is gone
    # a mode without every slot parameter trains too (DDP needs a gradient for each parameter)
    r = cli("simulator", "train", run, "--force", "--nproc", "2", "--set", "simulator.slots=off")
    assert r.code == 0 and read_json(run / "simulator" / "report.json")["training"]["processes"] == 2, r.err


def test_ddp_failing_rank_is_a_clear_error_and_leaves_nothing(cli, tmp_path):
    run = tmp_path / "run"
    assert (
        cli(
            "data", "prepare", "--out", run, "--set", "data.synthetic.n_users=60", "--set", "data.synthetic.n_items=30"
        ).code
        == 0
    )
    # a setting the model refuses, found only inside the workers
    r = cli("simulator", "train", run, "--nproc", "2", "--set", "simulator.dim=10", "--set", "simulator.heads=4")
    assert r.code == 2 and "distributed simulator training failed" in r.err and "multiple of simulator.heads" in r.err
    assert "Traceback" not in r.err + r.out
    assert not (run / "simulator" / "model.pt").exists() and not list(run.glob(".ddp-*"))

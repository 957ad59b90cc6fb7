"""User response model: it learns, it is calibrated, checkpoints round-trip and bad ones fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsrl.config import SimulatorConfig, load_config
from hsrl.data.synthetic import generate
from hsrl.errors import ArtifactError
from hsrl.simulator.env import make_env
from hsrl.simulator.response import (
    DatasetShape,
    Rows,
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
    other = DatasetShape(ds.n_items + 5, ds.feature_dim, ds.profile_dim, ds.history_length)
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

"""Config layering, CLI error handling, atomic writes, dataset round trip, synthetic determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hsrl.config import load_config
from hsrl.data.schema import LogDataset, build_histories
from hsrl.data.synthetic import generate
from hsrl.errors import ConfigError
from hsrl.io import atomic_path

SMALL = ["data.synthetic.n_users=60", "data.synthetic.n_items=40"]


def test_config_layers_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("sid:\n  levels: 4\n  codes: 8\n")
    cfg = load_config([f], ["sid.codes=32", "data.split=[0.5, 0.25, 0.25]"])
    assert cfg.sid.levels == 4 and cfg.sid.codes == 32
    assert cfg.data.split == (0.5, 0.25, 0.25)


@pytest.mark.parametrize("override", ["sid.levls=3", "sid.levels=zero", "noequals", "sid.levels=0"])
def test_config_rejects_bad_overrides(override):
    with pytest.raises(ConfigError):
        load_config(overrides=[override])


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "half").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_synthetic_same_seed_identical_and_other_seed_differs():
    cfg = load_config(overrides=SMALL).data
    a, _ = generate(cfg)
    b, _ = generate(cfg)
    c, _ = generate(cfg.model_copy(update={"seed": 1}))
    for name in ("item_features", "imp_items", "imp_feedback", "hist_items", "user_split", "user_profiles"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.item_features, c.item_features)


def test_dataset_save_load_round_trip(tmp_path):
    ds, _ = generate(load_config(overrides=SMALL).data)
    back = LogDataset.load(ds.save(tmp_path / "data"))
    for name in ("item_ids", "item_features", "user_ids", "imp_items", "imp_feedback", "hist_items", "hist_feedback"):
        np.testing.assert_array_equal(getattr(ds, name), getattr(back, name))
    assert back.meta == ds.meta


def test_histories_hold_earlier_slates_with_feedback():
    # one user, three slates of K=2 at times 0, 1, 2 (given out of order)
    imp_user = np.zeros(3, dtype=np.int64)
    imp_time = np.array([2, 0, 1])
    imp_items = np.array([[4, 5], [0, 1], [2, 3]])
    imp_fb = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    hist, fb = build_histories(imp_user, imp_time, imp_items, imp_fb, history_length=3)
    assert hist[1].tolist() == [-1, -1, -1]  # first slate: empty history
    assert hist[2].tolist() == [-1, 0, 1] and fb[2].tolist() == [0, 0, 1]
    assert hist[0].tolist() == [1, 2, 3] and fb[0].tolist() == [1, 1, 1]  # last H=3 entries


def test_cli_prepare_describe_and_skip(cli, tmp_path):
    out = tmp_path / "run"
    sets = [x for s in SMALL for x in ("--set", s)]
    r = cli("data", "prepare", "--out", out, *sets)
    assert r.code == 0, r.err
    assert (out / "data" / "dataset.npz").is_file() and (out / "world.npz").is_file()
    r = cli("data", "describe", out)
    assert r.code == 0 and "impressions" in r.out
    r = cli("data", "prepare", "--out", out)
    assert r.code == 0 and "skipping" in r.out


def test_cli_reports_user_errors_without_traceback(cli, tmp_path):
    r = cli("data", "describe", tmp_path / "missing")
    assert r.code == 2
    assert "no prepared dataset" in r.err and "Traceback" not in r.err
    r = cli("data", "prepare", "--out", tmp_path / "x", "--set", "sid.levls=2")
    assert r.code == 2 and "levls" in r.err
    assert not (tmp_path / "x" / "data").exists()


def test_each_baseline_has_its_own_section_and_old_keys_name_the_new_one():
    from hsrl.errors import ConfigError
    from hsrl.workflow import agent_config, agent_dir

    cfg = load_config(overrides=["agent.hac.actor_lr=3e-4", "agent.td3.policy_delay=3"])
    assert cfg.agent.hac.actor_lr == 3e-4 and cfg.agent.td3.policy_delay == 3 and cfg.agent.ddpg.actor_lr == 1e-3
    with pytest.raises(ConfigError, match=r"agent.baseline.hac_actor_lr is now agent.hac.actor_lr"):
        load_config(overrides=["agent.baseline.hac_actor_lr=3e-4"])
    # a spec option of a baseline lands in its own section (not HSRL's actor_lr), and gets its own folder
    hac = agent_config("hac:actor_lr=0.002", cfg)
    assert hac.hac.actor_lr == 0.002 and hac.actor_lr == cfg.agent.actor_lr
    assert agent_dir(Path("r"), "hac:actor_lr=0.002", 0, cfg).parent.name == "hac-actor_lr=0.002"
    assert agent_dir(Path("r"), "hac:actor_lr=0.0003", 0, cfg).parent.name == "hac"  # the run's own value

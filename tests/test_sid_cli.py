"""`hsrl sid build|describe` on a run directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from hsrl.config import load_config
from hsrl.data.synthetic import generate
from hsrl.sid import SemanticIDIndex

SMALL = ["data.synthetic.n_users=60", "data.synthetic.n_items=120"]
PLAIN = ["--align", "0"]  # codebooks on the features alone: no simulator needed


@pytest.fixture
def run_dir(tmp_path):
    ds, _ = generate(load_config(overrides=SMALL).data)
    ds.save(tmp_path / "data")
    return tmp_path


def test_build_writes_index_stats_and_config_then_skips(cli, run_dir):
    res = cli("sid", "build", run_dir, "--levels", "2", "--codes", "8", "--balanced", "--set", "sid.seed=3", *PLAIN)
    assert res.code == 0, res.err
    index = SemanticIDIndex.load(run_dir / "sid" / "index.npz")
    assert index.levels == 2 and index.vocab_sizes[:2] == [8, 8] and index.n_items == 120
    assert torch.equal(index.item_of(index.sid_of(torch.arange(120))), torch.arange(120))
    stats = json.loads((run_dir / "sid" / "stats.json").read_text())
    assert stats == index.stats() and "collision_rate" in res.out
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())["sid"]
    assert (cfg["levels"], cfg["codes"], cfg["balanced"], cfg["seed"]) == (2, 8, True, 3)

    mtime = (run_dir / "sid" / "index.npz").stat().st_mtime_ns
    again = cli("sid", "build", run_dir, "--codes", "4")
    assert again.code == 0 and "skipping" in again.out
    assert (run_dir / "sid" / "index.npz").stat().st_mtime_ns == mtime
    forced = cli("sid", "build", run_dir, "--codes", "4", "--force", *PLAIN)
    assert forced.code == 0 and SemanticIDIndex.load(run_dir / "sid" / "index.npz").vocab_sizes[0] == 4

    described = cli("sid", "describe", run_dir)
    assert described.code == 0 and "level1_entropy_bits" in described.out


def test_default_codes_come_from_the_catalogue_size(cli, run_dir):
    assert cli("sid", "build", run_dir, *PLAIN).code == 0
    assert SemanticIDIndex.load(run_dir / "sid" / "index.npz").vocab_sizes[0] == 8  # sqrt(120) ~ 11 -> 8


def test_errors_are_one_line_exit_2_and_nothing_written(cli, tmp_path, run_dir):
    missing = cli("sid", "build", tmp_path / "nowhere")
    assert missing.code == 2 and "hsrl data prepare" in missing.err and "Traceback" not in missing.err
    too_many = cli("sid", "build", run_dir, "--codes", "500", *PLAIN)
    assert too_many.code == 2 and "sid.codes" in too_many.err
    no_text = cli("sid", "build", run_dir, "--text", *PLAIN)
    assert no_text.code == 2 and "item text" in no_text.err
    assert not (run_dir / "sid").exists()
    nothing = cli("sid", "describe", run_dir)
    assert nothing.code == 2 and "sid build" in nothing.err


def test_aligned_ids_need_the_simulator_and_are_built_on_its_item_clusters(cli, run_dir):
    from hsrl.rundir import RunDir
    from hsrl.workflow import ensure_stages

    no_sim = cli("sid", "build", run_dir)  # aligned by default
    assert no_sim.code == 2 and "hsrl simulator train" in no_sim.err and "Traceback" not in no_sim.err
    assert f"hsrl sid build {run_dir} --align 0" in " ".join(no_sim.err.split())
    assert not (run_dir / "sid").exists()
    # a command judged only in the true world still trains the simulator first when the SIDs need it
    cfg = load_config(overrides=[*SMALL, "simulator.epochs=2"])
    ensure_stages(run_dir, cfg, worlds={"true"})
    run = RunDir(run_dir)
    index = SemanticIDIndex.load(run.index_file)
    assert run.simulator_file().is_file() and index.transform.projection is not None
    clusters = run.simulator().item_clusters()
    assert clusters.shape == (120, run.simulator().config.clusters)
    assert index.codebooks[0].shape[1] == clusters.shape[1] + run.dataset().item_features.shape[1]
    assert yaml.safe_load(run.config_file.read_text())["sid"]["align"] == cfg.sid.align > 0


def test_a_run_indexed_before_the_alignment_reads_as_features_only(run_dir):
    from hsrl.config import save_config
    from hsrl.rundir import RunDir

    path = save_config(load_config(overrides=SMALL), run_dir)
    tree = yaml.safe_load(path.read_text())
    del tree["sid"]["align"]  # as an older hsrl wrote it
    tree["sid"]["levels"] = 0  # and broken: an override may repair it
    path.write_text(yaml.safe_dump(tree))
    run = RunDir(run_dir)
    assert run.config(["sid.levels=2"]).sid.align == load_config().sid.align > 0  # no index yet: today's default
    bad = None
    try:
        run.config(["sid.codes=-1"])
    except Exception as exc:  # noqa: BLE001 - the message is what is checked
        bad = str(exc)
    assert bad is not None and f"{path} + overrides" in bad
    tree["sid"]["levels"] = 2
    path.write_text(yaml.safe_dump(tree))
    SemanticIDIndex.build(np.random.default_rng(0).normal(size=(120, 4)), levels=2).save(run.index_file)
    assert run.config().sid.align == 0.0  # once the run has its index, the key reads as what built it


def test_sid_describe_reports_the_topic_agreement_on_synthetic_runs(cli, tmp_path):
    ds, world = generate(load_config(overrides=SMALL).data)
    ds.save(tmp_path / "data")
    world.save(tmp_path / "world.npz")
    assert cli("sid", "build", tmp_path, *PLAIN).code == 0
    stats = json.loads((tmp_path / "sid" / "stats.json").read_text())
    assert 0.0 < stats["level1_topic_ami"] <= 1.0 and stats["align"] == 0.0
    assert "level1_topic_ami" in cli("sid", "describe", tmp_path).out

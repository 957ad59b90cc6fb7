"""`hsrl sid build|describe` on a run directory."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from hsrl.config import load_config
from hsrl.data.synthetic import generate
from hsrl.sid import SemanticIDIndex

SMALL = ["data.synthetic.n_users=60", "data.synthetic.n_items=120"]


@pytest.fixture
def run_dir(tmp_path):
    ds, _ = generate(load_config(overrides=SMALL).data)
    ds.save(tmp_path / "data")
    return tmp_path


def test_build_writes_index_stats_and_config_then_skips(cli, run_dir):
    res = cli("sid", "build", run_dir, "--levels", "2", "--codes", "8", "--balanced", "--set", "sid.seed=3")
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
    forced = cli("sid", "build", run_dir, "--codes", "4", "--force")
    assert forced.code == 0 and SemanticIDIndex.load(run_dir / "sid" / "index.npz").vocab_sizes[0] == 4

    described = cli("sid", "describe", run_dir)
    assert described.code == 0 and "level1_entropy_bits" in described.out


def test_default_codes_come_from_the_catalogue_size(cli, run_dir):
    assert cli("sid", "build", run_dir).code == 0
    assert SemanticIDIndex.load(run_dir / "sid" / "index.npz").vocab_sizes[0] == 8  # sqrt(120) ~ 11 -> 8


def test_errors_are_one_line_exit_2_and_nothing_written(cli, tmp_path, run_dir):
    missing = cli("sid", "build", tmp_path / "nowhere")
    assert missing.code == 2 and "hsrl data prepare" in missing.err and "Traceback" not in missing.err
    too_many = cli("sid", "build", run_dir, "--codes", "500")
    assert too_many.code == 2 and "sid.codes" in too_many.err
    no_text = cli("sid", "build", run_dir, "--text")
    assert no_text.code == 2 and "item text" in no_text.err
    assert not (run_dir / "sid").exists()
    nothing = cli("sid", "describe", run_dir)
    assert nothing.code == 2 and "sid build" in nothing.err

"""Real logs end to end: `hsrl run --dataset csv --source --items` in one command, and the commands that
score agents (compare, evaluate) building a missing simulator and Semantic ID index themselves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_RUN

from hsrl.config import load_run_config

# the tiny run, for csv logs: 3-item slates, short histories, one seed, few training steps
TINY_CSV = [s for s in TINY_RUN if not s.startswith("data.synthetic.")] + [
    "data.slate_size=3",
    "data.history_length=6",
    "eval.seeds=1",
    "eval.jobs=1",
    "agent.dim=16",
    "agent.layers=1",
]
AGENTS = "hsrl,random,popular"


def text(out: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(out.split())


SETS = [x for s in TINY_CSV for x in ("--set", s)]


@pytest.fixture
def logs(tmp_path) -> tuple[Path, Path]:
    """(interactions.csv, items.csv): 40 users x 12 interactions over 16 items with 3 features; clicks
    follow the first feature, so there is something to learn."""
    rng = np.random.default_rng(7)
    features = rng.normal(size=(16, 3)).round(4)
    items = tmp_path / "items.csv"
    items.write_text("item,f1,f2,f3\n" + "".join(f"sku{i},{','.join(map(str, f))}\n" for i, f in enumerate(features)))
    rows = []
    for u in range(40):
        for t in range(12):
            i = int(rng.integers(16))
            rows.append(f"u{u},sku{i},{t},{int(rng.random() < 1 / (1 + math.exp(-features[i, 0])))}")
    inter = tmp_path / "interactions.csv"
    inter.write_text("user,item,time,feedback\n" + "\n".join(rows) + "\n")
    return inter, items


def assert_results(run: Path, agents: str) -> None:
    table = json.loads((run / "results" / "results.json").read_text())["aggregate"]
    assert set(table) == {"simulator"}  # real logs: no true world
    assert set(table["simulator"]) == set(agents.split(","))
    for agg in table["simulator"].values():
        assert math.isfinite(agg["total_reward"]["mean"]) and agg["seeds"] == 1


def test_run_own_csv_logs_in_one_command(cli, tmp_path, logs):
    inter, items = logs
    out = tmp_path / "mine"
    r = cli("run", "--dataset", "csv", "--source", inter, "--items", items, "--out", out, "--agents", AGENTS, *SETS)
    assert r.code == 0, r.err
    for path in ("data/dataset.npz", "simulator/model.pt", "sid/index.npz", "config.yaml",
                 "agents/hsrl/seed0/agent.pt", "results/results.json", "results/report.md"):  # fmt: skip
        assert (out / path).is_file(), path
    assert not (out / "world.npz").exists()
    assert_results(out, AGENTS)
    saved = load_run_config(out).data  # later stages know where the logs came from
    assert (saved.dataset, saved.source, saved.item_source) == ("csv", str(inter), str(items))
    # evaluate on the same run with the index gone: rebuilt on demand (one line says so), agents reused
    (out / "sid" / "index.npz").unlink()
    mtime = (out / "agents/hsrl/seed0/agent.pt").stat().st_mtime_ns
    r = cli("evaluate", out, "--agents", AGENTS)
    assert r.code == 0, r.err
    assert "no Semantic ID index yet; building it now" in text(r.out) and (out / "sid" / "index.npz").is_file()
    assert (out / "agents/hsrl/seed0/agent.pt").stat().st_mtime_ns == mtime


def test_compare_on_prepared_data_builds_its_stages(cli, tmp_path, logs):
    inter, items = logs
    out = tmp_path / "prepared"
    r = cli("data", "prepare", "--dataset", "csv", "--source", inter, "--items", items, "--out", out, *SETS)
    assert r.code == 0, r.err
    # evaluate scores trained agents only: it says which are missing and how to train them, builds nothing
    r = cli("evaluate", out, "--agents", AGENTS)
    assert r.code == 2 and "Traceback" not in r.err
    assert "hsrl seed 0" in text(r.err) and "hsrl compare" in text(r.err)
    assert not (out / "simulator").exists() and not (out / "sid").exists()
    r = cli("compare", out, "--agents", AGENTS)
    assert r.code == 0, r.err
    said = text(r.out)  # one line per stage built on demand
    assert "no simulator yet; training it now" in said and "no Semantic ID index yet; building it now" in said
    for path in ("simulator/model.pt", "sid/index.npz", "agents/hsrl/seed0/agent.pt"):
        assert (out / path).is_file(), path
    assert_results(out, AGENTS)


@pytest.mark.parametrize("command", ["compare", "evaluate", "churn", "abtest"])
def test_commands_without_data_say_to_prepare_it(cli, tmp_path, command):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli(command, empty)
    assert r.code == 2, (r.out, r.err)
    assert "Traceback" not in r.err and "Traceback" not in r.out
    err = text(r.err)
    assert "no prepared dataset" in err and "hsrl data prepare" in err and "hsrl run" in err
    assert list(empty.iterdir()) == []  # nothing written


def test_other_data_in_a_prepared_run_stops_instead_of_reusing_it(cli, tmp_path):
    run = tmp_path / "run"
    assert (
        cli(
            "data", "prepare", "--out", run, "--set", "data.synthetic.n_users=60", "--set", "data.synthetic.n_items=30"
        ).code
        == 0
    )
    before = (run / "data" / "dataset.npz").stat().st_mtime_ns
    again = cli("data", "prepare", "--out", run)  # the same data: skipped
    assert again.code == 0 and "skipping" in again.out
    r = cli("run", "--out", run, "--set", "data.synthetic.n_users=70")
    assert r.code == 2 and "already holds data prepared with data.synthetic" in r.err and "--force" in r.err
    assert "Traceback" not in r.err + r.out and (run / "data" / "dataset.npz").stat().st_mtime_ns == before
    assert not (run / "simulator").exists()

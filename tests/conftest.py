"""Shared fixtures: run the CLI in-process, small configs, paths to shared data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from hsrl.cli import main

# the models are tiny: one intra-op thread is faster than two and keeps timings stable on 2 cores
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RL4RS_ITEMS = SHARED / "data" / "rl4rs" / "item_info.csv"


# a run small enough for end-to-end tests (seconds), as `--set` overrides
TINY_RUN = [
    "data.synthetic.n_users=60",
    "data.synthetic.n_items=40",
    "simulator.epochs=2",
    "sid.codes=4",
    "sid.levels=2",
    "train.steps=12",
    "train.start_steps=2",
    "train.eval_every=6",
    "train.eval_episodes=8",
    "train.checkpoint_every=6",
    "env.batch_users=8",
    "eval.episodes=12",
]


@pytest.fixture
def tiny_sets() -> list[str]:
    """``--set KEY=VALUE`` arguments of the tiny end-to-end run."""
    return [x for s in TINY_RUN for x in ("--set", s)]


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Call ``hsrl ARGS...`` in-process; returns exit code and captured stdout/stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def rl4rs_items() -> Path:
    if not RL4RS_ITEMS.is_file():
        pytest.skip(f"shared RL4RS item file not found at {RL4RS_ITEMS}")
    return RL4RS_ITEMS

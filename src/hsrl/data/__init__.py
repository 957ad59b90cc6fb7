"""Data layer: readers that turn raw logs into the canonical ``LogDataset`` (DESIGN §4).

Each reader module exposes ``read(config: DataConfig) -> LogDataset`` and validates its input before
anything is written. ``prepare`` dispatches on ``config.dataset``.
"""

from __future__ import annotations

from importlib import import_module

from hsrl.config import DataConfig
from hsrl.data.schema import LogDataset, split_users

READERS = {
    "synthetic": "hsrl.data.synthetic",
    "ml-100k": "hsrl.data.movielens",
    "ml-1m": "hsrl.data.movielens",
    "rl4rs": "hsrl.data.rl4rs",
    "csv": "hsrl.data.csvlogs",
}


def load(config: DataConfig) -> LogDataset:
    """Read and validate the dataset named by ``config.dataset`` (nothing is written)."""
    module = import_module(READERS[config.dataset])
    dataset = module.read(config)
    dataset.validate(origin=config.source or config.dataset)
    return dataset


__all__ = ["LogDataset", "load", "split_users", "READERS"]

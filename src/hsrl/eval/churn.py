"""Catalogue churn (DESIGN §9): items held out of the codebooks and of training, added at evaluation.

The protocol: a seeded random share of the catalogue is held out. Semantic IDs are built on the kept
items only and every learned agent trains on a ``CatalogueView`` that shows the kept items only. At
evaluation each agent is judged twice on the same test users and world seeds: *before* (kept items
only) and *after* the held-out items are appended to its catalogue without retraining (HSRL: their
SIDs from the frozen codebooks; feature-based agents: their features; A2C-item: nothing, its softmax
has no output for them). Reported per agent: total reward before and after, and the share of slots and
of clicks that went to new items after.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hsrl.errors import ArtifactError
from hsrl.eval.report import fmt
from hsrl.io import atomic_path, read_json, write_json

PHASES = ("before", "after")
HOLDOUT_FILE = "holdout.json"  # the draw, in the hold-out's folder


@dataclass(frozen=True)
class HeldOut:
    """Which items are held out: view order = kept items (ascending) then held-out items (ascending)."""

    share: float
    seed: int
    order: np.ndarray
    n_kept: int

    @classmethod
    def draw(cls, n_items: int, share: float, seed: int = 0) -> HeldOut:
        if not 0.0 < share < 1.0:
            raise ValueError(f"held-out share must be in (0, 1), got {share}")
        n_held = int(round(share * n_items))
        if not 1 <= n_held < n_items:
            raise ValueError(f"a share of {share} of {n_items} items holds out {n_held}; need 1..{n_items - 1}")
        held = np.sort(np.random.default_rng(seed).choice(n_items, size=n_held, replace=False))
        kept = np.setdiff1d(np.arange(n_items), held)
        return cls(float(share), int(seed), np.concatenate([kept, held]).astype(np.int64), int(kept.size))

    @property
    def n_items(self) -> int:
        return int(self.order.size)

    @property
    def held(self) -> np.ndarray:
        """World indices of the held-out items, in the order they are appended."""
        return self.order[self.n_kept :]

    def new_items(self) -> torch.Tensor:
        """(N,) bool over view indices: True for the appended (held-out) items."""
        return torch.arange(self.n_items) >= self.n_kept

    @property
    def name(self) -> str:
        """The name of this hold-out's folder (``hsrl.rundir.RunDir.churn_root`` places it)."""
        return f"holdout{self.share:g}-seed{self.seed}"

    def save(self, folder: str | Path) -> Path:
        """Record the draw in the hold-out's folder (once: an existing record is kept)."""
        path = Path(folder) / HOLDOUT_FILE
        if not path.is_file():
            write_json(
                path, {"share": self.share, "seed": self.seed, "n_kept": self.n_kept, "order": self.order.tolist()}
            )
        return path

    def check(self, folder: str | Path) -> None:
        """A hold-out folder written for another catalogue must not be mixed with this one."""
        path = Path(folder) / HOLDOUT_FILE
        if path.is_file():
            saved = read_json(path)
            if saved.get("order") != self.order.tolist():
                raise ArtifactError(f"{path}: written for another catalogue; delete {path.parent} to redo churn")


def churn_markdown(payload: dict[str, Any]) -> str:
    """The churn table: reward before/after the held-out items arrive, and what went to them."""
    h = payload["holdout"]
    lines = [
        f"# Catalogue churn — {payload['dataset']}",
        "",
        f"{h['held']} of {h['n_items']} items ({h['share']:.0%}, seed {h['seed']}) held out of the Semantic ID"
        " codebooks "
        "and of training, then added at evaluation without retraining. Test users, mean ± 95% CI over "
        f"{payload['seeds']} seeds; the oracle is privileged.",
    ]
    for world, table in payload["aggregate"].items():
        lines += [
            "",
            f"### world: {world}",
            "",
            "| agent | reward before | reward after | gain | depth after | slots to new items | clicks on new items |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, phases in table.items():
            before, after = phases["before"], phases["after"]
            gain = after["total_reward"]["mean"] - before["total_reward"]["mean"]
            lines.append(
                f"| {name} | {fmt(before['total_reward'])} | {fmt(after['total_reward'])} | {gain:+.2f} | "
                f"{fmt(after['depth'])} | {fmt(after['new_slot_share'], 3)} | {fmt(after['new_click_share'], 3)} |"
            )
    return "\n".join(lines) + "\n"


def write_churn(out_dir: Path, payload: dict[str, Any]) -> dict[str, Path]:
    """results.json and churn.md."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "churn.md"}
    write_json(paths["json"], payload)
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(churn_markdown(payload))
    return paths

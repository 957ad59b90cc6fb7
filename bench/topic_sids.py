"""What Semantic IDs that follow the true topics would be worth: a diagnostic upper bound, never an option.

    .venv/bin/python bench/topic_sids.py runs/t12 runs/topic
    .venv/bin/hsrl compare runs/topic --agents hsrl,oracle --seeds 3 --world all

Copies a synthetic run's data, world, simulator and config into a new run directory and builds its
Semantic ID index on [features, one-hot(true topic)] (the index build z-scores every column, so the
feature and topic columns weigh the same): the same codebook sizes, but a level 1 split mostly along the
topics that the true world's fatigue acts on (no agent may see them; this run exists only to measure how
much the SIDs' agreement with the topics limits HSRL). Train and score it with `compare` / `evaluate`
only: its index is wider than the features, so `churn` and the service's new items do not apply. Prints the adjusted
mutual information of level 1 with the topics for the source run's index, the aligned index that the
default builds, and this one; writes bench/results/topic_sids.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from hsrl.io import write_json
from hsrl.rundir import RunDir
from hsrl.sid.build import build_for_dataset
from hsrl.sid.index import SemanticIDIndex
from hsrl.workflow.stages import topic_agreement

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a synthetic run with data, world and simulator")
    parser.add_argument("out", type=Path, help="the new run directory (must not exist)")
    args = parser.parse_args()
    source = RunDir(args.source)
    if not source.has_world:
        raise SystemExit(f"{source}: not a synthetic run (no world.npz): there are no true topics to build on")
    if args.out.exists():
        raise SystemExit(f"{args.out}: exists; give a new folder")
    cfg = source.config()
    topics = source.world().item_topic
    ds = source.dataset()
    args.out.mkdir(parents=True)
    for part in (source.data_dir, source.simulator_dir(), source.world_file, source.config_file):
        copy = shutil.copytree if part.is_dir() else shutil.copy2
        copy(part, args.out / part.name)
    onehot = np.eye(int(topics.max()) + 1)[topics]
    embedding = np.concatenate([ds.item_features, onehot], axis=1)
    plain = build_for_dataset(ds, cfg.sid.model_copy(update={"align": 0.0}))
    aligned_sid = cfg.sid.model_copy(update={"align": 3.0})  # the default's
    aligned = build_for_dataset(ds, aligned_sid, align_to=source.simulator().item_clusters())
    topical = SemanticIDIndex.build(embedding, levels=cfg.sid.levels, codes=cfg.sid.codes, seed=cfg.sid.seed)
    target = RunDir(args.out)
    topical.save(target.index_file)
    write_json(target.sid_stats_file, topical.stats())
    ami = {
        name: topic_agreement(source, index)["level1_topic_ami"]
        for name, index in (("features", plain), ("aligned", aligned), ("topics", topical))
    }
    for name, value in ami.items():
        print(f"level-1 codes built on {name:>8}: adjusted mutual information with the true topics {value:.2f}")
    print(f"wrote {target.index_file}; train and score it like any run (hsrl compare {target} ...)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "topic_sids.json").write_text(json.dumps({"source": str(source), "level1_topic_ami": ami}, indent=2))


if __name__ == "__main__":
    main()

"""Semantic IDs for a prepared dataset, as the `sid` config section asks (features or item texts)."""

from __future__ import annotations

import numpy as np

from hsrl.config import SIDConfig
from hsrl.data.schema import LogDataset
from hsrl.errors import InputError
from hsrl.sid.embeddings import text_embeddings
from hsrl.sid.index import SemanticIDIndex


def index_features(ds: LogDataset, sid: SIDConfig, where: str = "data") -> tuple[np.ndarray, str]:
    """What the codebooks quantise for every item of ``ds``: its features, or its text embedding."""
    if not sid.text:
        return ds.item_features, "features"
    if ds.item_text is None:
        raise InputError(
            where,
            "the dataset has no item text",
            field="item_text",
            expected="a dataset with item texts for --text (or build without --text)",
        )
    return text_embeddings(ds.item_text), "text"


def build_for_dataset(
    ds: LogDataset,
    sid: SIDConfig,
    items: np.ndarray | None = None,
    where: str = "data",
    align_to: np.ndarray | None = None,
) -> SemanticIDIndex:
    """Codebooks and SIDs for the items ``items`` of ``ds`` (all when None), in that order.

    ``align_to`` (N, C), one row per item of ``ds``: the targets of ``sid.align`` (the simulator's item
    clusters); only the rows of ``items`` are fitted on, so held-out items stay unseen."""
    if sid.align > 0 and align_to is None:
        raise ValueError("sid.align > 0 needs alignment targets (the trained simulator's item clusters)")
    features, source = index_features(ds, sid, where)
    if align_to is not None and len(align_to) != len(features):
        raise ValueError(f"{len(align_to)} alignment targets for {len(features)} items")
    if items is not None:
        features = features[items]
        align_to = None if align_to is None else align_to[items]
    return SemanticIDIndex.build(
        features,
        levels=sid.levels,
        codes=sid.codes,
        balanced=sid.balanced,
        normalize=sid.normalize,
        seed=sid.seed,
        kmeans_iters=sid.kmeans_iters,
        disambiguation=sid.disambiguation,
        source=source,
        align_to=align_to,
        align=sid.align,
    )

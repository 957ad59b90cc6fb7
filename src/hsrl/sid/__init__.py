"""Semantic IDs: residual k-means codebooks, the invertible item <-> SID lookup and its trie (DESIGN §6)."""

from hsrl.sid.embeddings import FeatureTransform, feature_embeddings, text_embeddings
from hsrl.sid.index import FORMAT_VERSION, SemanticIDIndex, disambiguation_capacity
from hsrl.sid.rqkmeans import default_codes

__all__ = [
    "FORMAT_VERSION",
    "FeatureTransform",
    "SemanticIDIndex",
    "default_codes",
    "disambiguation_capacity",
    "feature_embeddings",
    "text_embeddings",
]

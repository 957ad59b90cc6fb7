"""The Semantic ID index contract that decoding, the SID agents and the service rely on.

``SIDTrie`` is what trie decoding reads (``hsrl.agents.decoding``: beam search, sampling, scoring every
item); ``SIDIndex`` adds what an agent built on Semantic IDs keeps (its codebooks for semantic token
heads, the active mask, and ``save`` to carry the index in its checkpoint). ``SemanticIDIndex`` is the
implementation; anything else with these members decodes too (a test fake, another library's index).
Token tensors are int64: a prefix (M, l) holds the first l tokens of M SIDs, a SID (M, depth) all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class SIDTrie(Protocol):
    """Item <-> SID lookup and the trie of active items below every prefix."""

    @property
    def vocab_sizes(self) -> list[int]:
        """Tokens per level: [V] * L semantic levels, then the disambiguation capacity D."""
        ...

    @property
    def codes(self) -> np.ndarray:
        """(N, depth) int64: the SID of every item index, active or not."""
        ...

    def child_counts(self, prefix: torch.Tensor) -> torch.Tensor:
        """(M, V) active items below each (prefix, next token) for prefixes (M, l)."""
        ...

    def valid_next(self, prefix: torch.Tensor) -> torch.Tensor:
        """(M, V) bool: ``child_counts(prefix) > 0`` (what greedy decoding needs, without the counts)."""
        ...

    def child_items(self, prefix: torch.Tensor) -> torch.Tensor:
        """(M, D) the item index behind each last-level token of (M, L) prefixes; -1 where none is active."""
        ...

    def item_of(self, sids: torch.Tensor) -> torch.Tensor:
        """(M,) the item index of each SID (M, depth); -1 where it names no active item."""
        ...

    def sid_of(self, items: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(..., depth) the SID of each item index."""
        ...


@runtime_checkable
class SIDIndex(SIDTrie, Protocol):
    """A trie an agent can be built on and saved with."""

    @property
    def codebooks(self) -> Sequence[np.ndarray]:
        """The L residual codebooks (V, E) (semantic token heads read their centroids)."""
        ...

    @property
    def levels(self) -> int:
        """L, the semantic levels (the SID depth is L + 1)."""
        ...

    @property
    def depth(self) -> int: ...

    @property
    def n_items(self) -> int:
        """N, every item index the index has given a SID (removed ones included)."""
        ...

    @property
    def active(self) -> np.ndarray:
        """(N,) bool: which items can be decoded (recommended)."""
        ...

    def save(self, path: str | Path) -> Path:
        """Write the index in the file format ``SemanticIDIndex.load`` reads (agent checkpoints carry it)."""
        ...

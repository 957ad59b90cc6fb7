"""The exported policy: what a server loads, written from a trained HSRL checkpoint (DESIGN §10).

``export_policy`` turns an HSRL checkpoint, its Semantic ID index and its dataset into one folder (the
pipeline places it: ``RUN_DIR/serve/``, from ``RUN_DIR/agents/hsrl/seedS/agent.pt``):

    manifest.json  format version, architecture, source checkpoint, sha256 of every file below
    policy.pt      state dict of the actor (state encoder + hierarchical policy): plain tensors, read
                   with ``torch.load(weights_only=True)``
    index.npz      the Semantic ID index at export time
    items.npz      original item ids and item features (the encoder's feature table)

No optimiser, target network, replay buffer or simulator: a server needs none of them, so it builds the
two network modules from the manifest and decodes with ``hsrl.agents.decoding`` (the same trie
decoding as ``HSRLAgent``, whose SID log-probabilities the service returns as scores). ``load_export``
checks the checksums and that model, index and item table agree, and raises ``ArtifactError`` naming
the file otherwise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from hsrl.agents.encoder import StateEncoder
from hsrl.agents.hsrl import HierarchicalPolicy
from hsrl.errors import ArtifactError
from hsrl.io import atomic_path
from hsrl.sid.index import SemanticIDIndex

if TYPE_CHECKING:
    from hsrl.data.schema import LogDataset

EXPORT_FORMAT = "hsrl-serve"
EXPORT_VERSION = 1
MANIFEST, POLICY, INDEX, ITEMS = "manifest.json", "policy.pt", "index.npz", "items.npz"


@dataclass(frozen=True)
class Architecture:
    """Everything needed to rebuild the actor's modules (and nothing about training)."""

    feature_dim: int
    profile_dim: int
    history_length: int
    slate_size: int
    dim: int
    layers: int
    heads: int
    residual: str
    vocab_sizes: tuple[int, ...]
    beam: int
    token_heads: str = "free"  # exports written before semantic heads have free ones
    codebook_dim: int = 0  # semantic heads: width of the codebook centroids (their values are in policy.pt)
    exposure: bool = False  # token logits read the per-branch exposure of the user's last slates


class PolicyNet(nn.Module):
    """State encoder + hierarchical policy, with the attribute names of the training actor (same keys)."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.encoder = StateEncoder(
            arch.feature_dim, arch.profile_dim, arch.history_length, arch.dim, arch.layers, arch.heads, dropout=0.0
        )
        books = None
        if arch.token_heads == "semantic":  # placeholders of the right shape; load_state_dict fills them
            books = [torch.zeros(v, arch.codebook_dim) for v in arch.vocab_sizes[:-1]]
        self.policy = HierarchicalPolicy(
            arch.dim, list(arch.vocab_sizes), arch.residual, arch.token_heads, books, arch.exposure
        )


@dataclass
class ExportedPolicy:
    """A loaded export: the network (eval mode) and the catalogue it was exported with."""

    arch: Architecture
    net: PolicyNet
    index: SemanticIDIndex
    item_ids: np.ndarray  # (N,) str
    features: np.ndarray  # (N, F) float32
    manifest: dict[str, Any]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _same_codes(embedded: Any, index: SemanticIDIndex) -> bool:
    """Whether an agent checkpoint's embedded index gives its items the SIDs ``index`` gives them."""
    from hsrl.agents.hsrl import index_from_tensor

    trained = index_from_tensor(embedded)
    n = trained.n_items
    return n <= index.n_items and bool((trained.codes == index.codes[:n]).all())


def export_policy(
    checkpoint: str | Path, index: SemanticIDIndex, dataset: LogDataset, out: str | Path, seed: int = 0
) -> Path:
    """Write the export folder ``out`` (atomically: all files or none) from an HSRL checkpoint, the Semantic
    ID index and the dataset it was trained on (``seed``: recorded as its source); returns ``out``."""
    from hsrl.agents.base import CHECKPOINT_VERSION, read_checkpoint

    ckpt = Path(checkpoint)
    if not ckpt.is_file():
        raise ArtifactError(f"{ckpt}: no HSRL checkpoint here")
    blob = read_checkpoint(ckpt, formats=(1, CHECKPOINT_VERSION))  # the state is the same in both formats
    if blob.get("agent") != "hsrl":
        raise ArtifactError(f"{ckpt}: a checkpoint of agent '{blob.get('agent')}', not an HSRL one")
    try:
        state = blob["state"]
        cfg, net_state, vocab = state["config"], state["net"], [int(v) for v in state["vocab_sizes"]]
    except Exception as exc:
        raise ArtifactError(f"{ckpt}: corrupt agent checkpoint ({type(exc).__name__}: {exc})") from None
    ds = dataset
    if index.n_items != ds.n_items:
        raise ArtifactError(
            f"{ckpt}: the SID index has {index.n_items} items, the dataset {ds.n_items} (rebuild the index)"
        )
    if vocab != index.vocab_sizes:
        raise ArtifactError(f"{ckpt}: policy SID vocabulary {vocab} differs from the index's {index.vocab_sizes}")
    trained_on = blob.get("inputs", {}).get("index")  # format 2 embeds the index the policy was trained with
    if trained_on is not None and not _same_codes(trained_on, index):
        raise ArtifactError(
            f"{ckpt}: trained on another Semantic ID index than this one (rebuilt since, e.g. with another"
            " sid.align?); retrain the agent (`hsrl train RUN --force`) or restore that index"
        )
    arch = Architecture(
        feature_dim=ds.feature_dim,
        profile_dim=ds.profile_dim,
        history_length=ds.history_length,
        slate_size=ds.slate_size,
        dim=int(cfg["dim"]),
        layers=int(cfg["layers"]),
        heads=int(cfg["heads"]),
        residual=str(cfg["residual"]),
        vocab_sizes=tuple(vocab),
        beam=int(cfg["beam"]),
        token_heads=str(cfg.get("token_heads", "free")),
        codebook_dim=int(index.codebooks[0].shape[1]),
        exposure=bool(cfg.get("exposure", False)),
    )
    net = PolicyNet(arch)
    try:
        net.load_state_dict(net_state)
    except RuntimeError as exc:
        raise ArtifactError(f"{ckpt}: weights do not fit the run's data (features/profile/history): {exc}") from None
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        torch.save({"format": EXPORT_FORMAT, "state": net.state_dict()}, tmp / POLICY)
        index.save(tmp / INDEX)
        with open(tmp / ITEMS, "wb") as fh:
            np.savez(fh, item_ids=ds.item_ids.astype(str), features=ds.item_features.astype(np.float32))
        manifest = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "architecture": asdict(arch),
            "source": {"checkpoint": str(ckpt), "seed": seed, "updates": int(state.get("updates", 0))},
            "items": ds.n_items,
            "sha256": {name: _sha256(tmp / name) for name in (POLICY, INDEX, ITEMS)},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def load_export(path: str | Path) -> ExportedPolicy:
    """Read an export directory; a missing, corrupt, other-version or inconsistent export is an ArtifactError."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{path}: no serving export here (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
        arch_fields = dict(manifest["architecture"])
        arch_fields["vocab_sizes"] = tuple(int(v) for v in arch_fields["vocab_sizes"])
        arch = Architecture(**arch_fields)
        sums = dict(manifest["sha256"])
    except Exception as exc:
        raise ArtifactError(f"{manifest_path}: corrupt manifest ({type(exc).__name__}: {exc})") from None
    if manifest.get("format") != EXPORT_FORMAT or manifest.get("version") != EXPORT_VERSION:
        raise ArtifactError(
            f"{manifest_path}: export format {manifest.get('format')} v{manifest.get('version')}, this hsrl reads"
            f" {EXPORT_FORMAT} v{EXPORT_VERSION}; re-export with `hsrl serve RUN_DIR --force`"
        )
    for name in (POLICY, INDEX, ITEMS):
        file = path / name
        if not file.is_file():
            raise ArtifactError(f"{file}: missing from the export (re-export with --force)")
        if _sha256(file) != sums.get(name):
            raise ArtifactError(
                f"{file}: checksum differs from {MANIFEST}: the file is corrupt or was replaced"
                " (re-export with --force)"
            )
    net = PolicyNet(arch)
    try:
        blob = torch.load(path / POLICY, map_location="cpu", weights_only=True)
        net.load_state_dict(blob["state"])
    except Exception as exc:
        raise ArtifactError(f"{path / POLICY}: weights do not fit the manifest's architecture ({exc})") from None
    net.eval().requires_grad_(False)
    index = SemanticIDIndex.load(path / INDEX)
    try:
        with np.load(path / ITEMS, allow_pickle=False) as z:
            item_ids, features = z["item_ids"].astype(str), z["features"].astype(np.float32)
    except Exception as exc:
        raise ArtifactError(f"{path / ITEMS}: corrupt item table ({type(exc).__name__}: {exc})") from None
    problems = []
    if index.vocab_sizes != list(arch.vocab_sizes):
        problems.append(f"index SID vocabulary {index.vocab_sizes} vs policy {list(arch.vocab_sizes)}")
    if features.ndim != 2 or features.shape[1] != arch.feature_dim:
        problems.append(f"item features of shape {features.shape} vs feature_dim {arch.feature_dim}")
    if not (index.n_items == len(item_ids) == features.shape[0]):
        problems.append(f"{index.n_items} indexed items, {len(item_ids)} ids, {features.shape[0]} feature rows")
    if problems:
        raise ArtifactError(f"{path}: mismatched export: " + "; ".join(problems))
    return ExportedPolicy(arch, net, index, item_ids, features, manifest)

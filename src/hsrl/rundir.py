"""The run directory: where each artefact of a run lives, and its read-only artefacts loaded once per
process.

``RunDir`` is the one owner of the layout: the pipeline (``hsrl.workflow``, ``hsrl.tuning``) and the
commands ask it for paths and artefacts, and hand the library (data, simulator, sid, agents, train,
eval, serve) folders, files and loaded objects, never a run directory to find its way around in.

Evaluating A agents x S seeds x W judges builds A·S·W environments; each used to re-read the dataset
and the simulator checkpoint from disk. ``RunDir`` keeps the last loaded copy of the dataset, the
synthetic world, the saved config and each simulator, keyed by the file's path, size, modification and
change times and inode, so a file rewritten in the same process (``--force``, the tests) is read again.
Objects that callers change in place (the Semantic ID index: ``add_items``) are not cached.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from hsrl.config import CONFIG_FILE  # the file save_config writes in the folder it is given
from hsrl.errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from hsrl.config import EnvConfig, RunConfig
    from hsrl.data.schema import LogDataset
    from hsrl.data.synthetic import SyntheticWorld
    from hsrl.eval.churn import HeldOut
    from hsrl.sid.index import SemanticIDIndex
    from hsrl.simulator.env import SlateEnv, World
    from hsrl.simulator.response import UserResponseModel
    from hsrl.simulator.reward import RewardFn

# the names of a run's parts: this module owns them (the files inside the dataset, export and catalogue
# folders, and config.yaml, are named by the library modules that write them: schema, serve, config)
DATA_DIR = "data"
WORLD_FILE = "world.npz"
SIM_DIR, JUDGE_DIR, MODEL_FILE = "simulator", "simulator_judge", "model.pt"  # the judge: a second simulator
REPORT_FILE = "report.json"  # the simulator's fidelity report, beside its model
INDEX_FILE = Path("sid") / "index.npz"
SID_STATS_FILE = "stats.json"  # beside the index
AGENTS_DIR = "agents"
AGENT_FILE = "agent.pt"  # in each agent-seed folder
RESULTS_DIR = "results"
CHURN_DIR = "churn"
EXPORT_DIR = "serve"  # the service's export of a policy
CATALOGUE_DIR = "catalogue"  # the service's catalogue change log and snapshots (kept across re-exports)
TUNED_DIR = "tuned"  # hsrl tune: NAME.yaml (the chosen values), NAME.study.log (the Optuna study), trials/
RunLike = str | os.PathLike[str]  # a run directory: a path, or a RunDir (which is path-like)

# what was read from disk, by kind ("dataset", "world", "simulator", "judge"): tests count loads with it
LOADS: Counter[str] = Counter()
_CACHE: dict[tuple[str, str], tuple[tuple[tuple[int, ...], ...], Any]] = {}


def _stamp(path: Path) -> tuple[int, ...]:
    """Size, times and inode: an atomic rewrite (a new file renamed into place) always changes the inode."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino


def _cached(kind: str, path: Path, load: Any, depends: tuple[Path, ...] = (), count: bool = True) -> Any:
    """``load()`` once per (kind, path) until the file (or a file it was checked against) changes;
    ``count``: the load is counted in ``LOADS`` (the artefacts whose loads the tests count)."""
    key = (kind, str(path.resolve()))
    stamp = tuple(_stamp(p) for p in (path, *depends))
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    value = load()
    if count:
        LOADS[kind] += 1
    _CACHE[key] = (stamp, value)
    return value


class RunDir:
    """One run directory: paths of its artefacts and cached loaders of the read-only ones."""

    def __init__(self, path: RunLike) -> None:
        self.path = Path(path)  # a RunDir is a path-like too: RunDir(run) and Path(run) take one

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:  # the path, so that messages naming the run stay commands one can paste
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # ------------------------------------------------------------------ layout
    @property
    def data_dir(self) -> Path:
        return self.path / DATA_DIR

    @property
    def dataset_file(self) -> Path:
        from hsrl.data.schema import DATASET_FILE

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

    def simulator_report_file(self, judge: bool = False) -> Path:
        return self.simulator_dir(judge) / REPORT_FILE

    @property
    def index_file(self) -> Path:
        return self.path / INDEX_FILE

    @property
    def sid_stats_file(self) -> Path:
        return self.index_file.parent / SID_STATS_FILE

    def agent_dir(self, folder: str, seed: int) -> Path:
        """Checkpoints of one agent variant and seed (``folder``: the variant's name, e.g. ``hsrl`` or
        ``hsrl-credit=slate``; ``hsrl.workflow.agent_dir`` names variants)."""
        return self.agents_dir / folder / f"seed{seed}"

    def agent_file(self, folder: str, seed: int) -> Path:
        return self.agent_dir(folder, seed) / AGENT_FILE

    @property
    def agents_dir(self) -> Path:
        return self.path / AGENTS_DIR

    @property
    def results_dir(self) -> Path:
        return self.path / RESULTS_DIR

    @property
    def churn_dir(self) -> Path:
        return self.path / CHURN_DIR

    def churn_root(self, holdout: HeldOut) -> Path:
        """The folder of one hold-out (catalogue churn): its draw, index, agents and results, laid out as
        a run directory of its own (``RunDir(run.churn_root(h))``)."""
        return self.churn_dir / holdout.name

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

    def config(self, overrides: list[str] | None = None) -> RunConfig:
        """The saved config (``config.yaml``; the defaults when there is none yet), with ``overrides``
        applied. Parsed once per version of the file; each call returns a copy of its own."""
        from hsrl.config import load_run_config

        # a run indexed (or simulated) before a later sid (or simulator) key was built without it
        artefacts = {"sid": self.index_file, "simulator": self.simulator_file()}
        built = [section for section, file in artefacts.items() if file.is_file()]
        if overrides or not self.config_file.is_file():
            return load_run_config(self.path, overrides, built)
        load = lambda: load_run_config(self.path, built=built)  # noqa: E731
        depends = tuple(artefacts[section] for section in built)
        saved = _cached("config", self.config_file, load, depends=depends, count=False)
        return saved.model_copy(deep=True)

    def save_config(self, config: RunConfig) -> Path:
        """Write ``config.yaml`` (what later stages and commands read back)."""
        from hsrl.config import save_config

        self.path.mkdir(parents=True, exist_ok=True)
        _CACHE.pop(("config", str(self.config_file.resolve())), None)  # never trust the stamp across own writes
        return save_config(config, self.path)

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
            return LogDataset.load(self.data_dir)  # its own located error
        return _cached("dataset", self.dataset_file, lambda: LogDataset.load(self.data_dir))

    def world(self) -> SyntheticWorld:
        """The synthetic ground truth (synthetic datasets only)."""
        from hsrl.data.synthetic import SyntheticWorld

        if not self.has_world:
            return SyntheticWorld.load(self.world_file)  # its own error
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

    def env(
        self,
        split: str = "test",
        world: World = "simulator",
        batch_users: int | None = None,
        seed: int = 0,
        reward: str | RewardFn | None = None,
        device: str | torch.device | None = None,
        users: np.ndarray | None = None,
        config: EnvConfig | None = None,
    ) -> SlateEnv:
        """A SlateEnv over this run's dataset, driven by its trained simulator, the second simulator trained
        with another seed (``judge``: agents never trained in it), or the true synthetic world; what is not
        given comes from ``config`` (an ``env`` section; default: the saved config's), as in
        ``hsrl.make_env`` and ``SlateEnv.from_run``."""
        import torch

        from hsrl.simulator.env import SlateEnv, TrueWorldResponse, World, default_device
        from hsrl.simulator.response import ResponseModel

        dataset = self.dataset()  # dataset and simulators are read once per process, shared read-only
        dev = torch.device(device) if device is not None else default_device()
        response: ResponseModel
        if world in ("simulator", "judge"):
            response = self.simulator(judge=world == "judge", device=dev)
        elif world == "true":
            response = TrueWorldResponse(self.world())
        else:
            raise ConfigError(f"unknown world '{world}' (expected one of {', '.join(get_args(World))})")
        return SlateEnv.from_config(
            dataset, response, config or self.config().env, split, batch_users, seed, reward, dev, users
        )

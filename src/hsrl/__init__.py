"""hsrl: Hierarchical Semantic RL for slate recommendation over Semantic IDs.

Data flows one way: data -> simulator -> sid -> agents -> train/eval -> serve.

The Python API mirrors the CLI (README, "Python API")::

    ds = hsrl.load_dataset("runs/synthetic")                 # or "synthetic", "ml-100k", ... with data options
    env = hsrl.SlateEnv.from_run("runs/synthetic", split="train")
    agent = hsrl.build_agent("hsrl", "runs/synthetic", env=env)  # any registered agent
    agent.fit(env, steps=500).recommend([[12, 40]])           # (1, K) item indices
    agent.save("hsrl.pt"); hsrl.load_agent("hsrl.pt")

Names are imported on first use, so ``import hsrl`` stays light (no torch until an agent or an
environment is asked for).
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from hsrl.gym_registration import register_gymnasium  # noqa: E402  (no torch: string entry points)

register_gymnasium()

if TYPE_CHECKING:
    import torch

    from hsrl.agents.base import Agent
    from hsrl.config import RunConfig
    from hsrl.data.schema import LogDataset
    from hsrl.sid.index import SemanticIDIndex

# public name -> (module, attribute), resolved by ``__getattr__`` on first use
_LAZY = {
    "Agent": ("hsrl.agents.base", "Agent"),
    "HSRLAgent": ("hsrl.agents.hsrl", "HSRLAgent"),
    "SlateEnv": ("hsrl.simulator.env", "SlateEnv"),
    "make_env": ("hsrl.simulator.env", "make_env"),
    "Observation": ("hsrl.simulator.observation", "Observation"),
    "LogDataset": ("hsrl.data.schema", "LogDataset"),
    "RunConfig": ("hsrl.config", "RunConfig"),
    "register_agent": ("hsrl.agents.registry", "register"),
    "agent_names": ("hsrl.agents.registry", "names"),
}


def load_run_config(run: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """The config saved in a run directory (defaults if none yet) with ``overrides``, read as every command
    reads it (keys added since it was written take the value that built its artefacts)."""
    from hsrl.rundir import RunDir

    return RunDir(run).config(overrides)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(import_module(module), attr)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'hsrl' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


def load_dataset(source: str | Path, **data_options: Any) -> LogDataset:
    """A ``LogDataset``: a dataset name read and validated with ``data_options`` (the ``data`` config
    fields: ``source=``, ``item_source=``, ``slate_size=``, ``synthetic={...}``, ...), as `hsrl data
    prepare` reads it but writing nothing; or a run directory's prepared ``data/``."""
    from typing import get_args

    from pydantic import ValidationError

    from hsrl.config import DataConfig
    from hsrl.errors import ConfigError

    datasets = get_args(DataConfig.model_fields["dataset"].annotation)  # the readers' names, one list
    if str(source) in datasets:
        from hsrl.data import load

        try:
            config = DataConfig.model_validate({**data_options, "dataset": str(source)})
        except ValidationError as exc:
            raise ConfigError(f"load_dataset({str(source)!r}): {exc}") from None
        return load(config)
    if data_options:
        raise ConfigError(
            f"load_dataset({str(source)!r}): data options are for a dataset name "
            f"({', '.join(datasets)}), "
            "a run directory's data is already prepared"
        )
    from hsrl.data.schema import LogDataset
    from hsrl.rundir import RunDir

    run = RunDir(source)
    run.require_dataset()
    return LogDataset.load(run.data_dir)  # a copy of its own: the caller may change it


def build_agent(
    spec: str,
    run: str | Path | None = None,
    config: RunConfig | None = None,
    env: Any = None,
    seed: int = 0,
    index: SemanticIDIndex | None = None,
) -> Agent:
    """A fresh agent of kind ``spec`` (any registered name, with ``:key=value+...`` options) for the run
    directory ``run``: ``config`` defaults to the run's (its ``config.yaml``), ``env`` to its training
    environment (``SlateEnv.from_run(run, split="train", seed=seed)``). Without a run, give ``env`` (the
    agents that read logged data, the index or the world need one). ``hsrl.agents.registry.build`` is the
    same call on a run's loaded artefacts."""
    from hsrl.agents import registry
    from hsrl.config import RunConfig as Config
    from hsrl.rundir import RunDir

    artefacts = RunDir(run) if run is not None else None
    if config is None:
        config = artefacts.config() if artefacts is not None else Config()
    if env is None and artefacts is not None:
        env = artefacts.env(split=registry.TRAIN_SPLIT, seed=seed)
    return registry.build(spec, artefacts, config, env, seed, index)


def load_agent(path: str | Path, device: torch.device | str | None = None) -> Agent:
    """The agent saved at ``path`` (any registered kind), rebuilt from the file alone, on ``device``
    (default CPU; a file saved on another device type loads too)."""
    from hsrl.agents.base import Agent

    return Agent.load(path, device=device)


__all__ = ["__version__", "load_dataset", "load_agent", "build_agent", "load_run_config", *_LAZY]

"""The training loop shared by every learning agent (CleanRL-style: readable top to bottom).

Each step: the agent explores on B users at once, the batch of transitions goes into the replay
buffer, then ``updates_per_step`` gradient steps on replay batches. Every ``log_every`` steps a
record with the mean return of the training episodes finished since the previous record (free: the
environment records them) goes to ``metrics.jsonl`` (and to TensorBoard with ``log=tensorboard``);
every ``eval_every`` steps the record also holds the greedy policy's scores on held-out users (a
fresh, seeded environment, so evaluation never disturbs training). Checkpoints hold everything that
moves (agent, optimiser, target network, buffer, environment, random states, the records so far), so
a resumed run continues exactly as an uninterrupted one would and writes the same records.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from hsrl.agents.base import Agent
from hsrl.config import TrainConfig
from hsrl.errors import ArtifactError, ConfigError
from hsrl.eval.evaluate import evaluate, summary
from hsrl.io import atomic_path
from hsrl.simulator.observation import Observation
from hsrl.simulator.protocols import SlateEnvironment
from hsrl.train.buffer import ReplayBuffer

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def summary_writer_class() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``; a ConfigError naming the extra when TensorBoard is absent."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the tensorboard package, an optional extra of hsrl
        raise ConfigError(
            "train.log=tensorboard needs the TensorBoard package: pip install 'hsrl[tensorboard]'"
            " (or keep train.log=jsonl)"
        ) from None
    return SummaryWriter


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    """The record's numbers as TensorBoard tags (``eval_x`` -> ``eval/x``, ``train_x`` -> ``train/x``,
    losses -> ``loss/x``); lists and missing values (None) are left out."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        group, _, rest = key.partition("_")
        out[f"{group}/{rest}" if group in ("eval", "train") and rest else f"loss/{key}"] = float(value)
    return out


def progress_bar(disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=disable,
        transient=False,
    )


def collect_step(agent: Agent, env: SlateEnvironment, buffer: ReplayBuffer, obs: Observation) -> Observation:
    """One exploring step of ``agent`` in ``env`` into ``buffer``; the next observation. The transition keeps
    the per-slot feedback, for agents with a supervised term (HAC) or item-level credit (HSRL, A2C)."""
    slate, extras = agent.explore(obs)
    next_obs, reward, done, info = env.step(slate)
    extras = {**extras, **{k: info[k] for k in ("clicks", "slot_rewards") if k in info}}
    buffer.add(obs, slate, extras, reward, next_obs, done)
    return next_obs


class Trainer:
    """Drives ``agent`` in ``env``; ``eval_env`` builds a fresh seeded evaluation environment."""

    def __init__(
        self,
        agent: Agent,
        env: SlateEnvironment,
        config: TrainConfig,
        out_dir: str | Path | None = None,
        eval_env: Callable[[], SlateEnvironment] | None = None,
        show_progress: bool = False,  # a rich progress bar (the CLI turns it on)
        callbacks: Sequence[Callable[[dict[str, Any]], Any]] | None = None,
    ) -> None:
        self.agent = agent
        self.env = env
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.eval_env = eval_env
        self.show_progress = show_progress
        self.callbacks = list(callbacks or ())  # each receives every metrics record (``Agent.fit``)
        capacity = min(config.buffer_size, agent.replay_window or config.buffer_size)
        self.buffer = ReplayBuffer(capacity, seed=config.seed)
        self.step = 0
        self.obs: Observation | None = None
        self.history: list[dict[str, Any]] = []
        self.recent: list[float] = []  # returns of the last finished training episodes (for display)
        # (return, depth) of the training episodes finished since the last record, for the next one
        self.pending: list[tuple[float, int]] = []
        self.writer: Any = None  # TensorBoard SummaryWriter while fit runs with log=tensorboard
        if config.log == "tensorboard":
            summary_writer_class()  # a missing extra stops here, not after the first steps

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "agent": self.agent.state_dict(),
            "buffer": self.buffer.state_dict(),
            "env": self.env.state_dict(),
            "obs": self.obs,
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "recent": self.recent,
            "pending": self.pending,
        }

    def save_checkpoint(self) -> Path:
        assert self.out_dir is not None
        path = self.out_dir / CHECKPOINT
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            self.agent.load_state_dict(state["agent"])
            self.buffer.load_state_dict(state["buffer"])
            self.env.load_state_dict(state["env"])
        except (OSError, RuntimeError, KeyError, ValueError, EOFError) as exc:
            raise ArtifactError(f"{path}: cannot resume from this checkpoint ({exc})") from None
        self.step = int(state["step"])
        self.obs = state["obs"]
        self.history = list(state["history"])
        self.recent = list(state["recent"])
        self.pending = [(float(r), int(d)) for r, d in state.get("pending", [])]  # older checkpoints: none
        torch.set_rng_state(state["torch_rng"])

    # ------------------------------------------------------------------ loop
    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.out_dir is not None:
            with open(self.out_dir / METRICS, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for tag, value in _scalars(record).items():
                self.writer.add_scalar(tag, value, global_step=record["step"])
        for callback in self.callbacks:
            callback(record)

    def _record(self, losses: dict[str, float]) -> dict[str, Any]:
        """A metrics record: the running training return, the episodes finished since the last record, losses."""
        n = len(self.pending)
        record: dict[str, Any] = {
            "step": self.step,
            "train_return": sum(self.recent) / max(len(self.recent), 1),
            "train_episodes": n,
            # None (JSON null) when no episode ended since the last record
            "train_episode_return": sum(r for r, _ in self.pending) / n if n else None,
            "train_episode_depth": sum(d for _, d in self.pending) / n if n else None,
            **losses,
        }
        self.pending = []
        return record

    def _evaluate(self) -> dict[str, Any]:
        assert self.eval_env is not None
        result = evaluate(self.agent, self.eval_env(), self.config.eval_episodes)
        self.agent.train_mode(True)
        return summary(result)

    def fit(self, steps: int | None = None, resume: bool = False) -> list[dict[str, Any]]:
        """Train until ``steps`` (default config.steps) environment steps; returns the metric history."""
        cfg = self.config
        total = steps if steps is not None else cfg.steps
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            ckpt = self.out_dir / CHECKPOINT
            if resume and ckpt.is_file():
                self.load_checkpoint(ckpt)
                # records written after that checkpoint (an interrupted run) are written again on the way
                with atomic_path(self.out_dir / METRICS) as tmp:
                    tmp.write_text("".join(json.dumps(r) + "\n" for r in self.history))
            elif (self.out_dir / METRICS).exists():
                (self.out_dir / METRICS).unlink()
        if self.obs is None:
            torch.manual_seed(cfg.seed)
            self.obs = self.env.reset()
        self.agent.train_mode(True)
        if cfg.log == "tensorboard" and self.out_dir is not None:
            # on resume, events an interrupted run wrote after the checkpoint are dropped (written again)
            self.writer = summary_writer_class()(
                log_dir=str(self.out_dir / TENSORBOARD_DIR), purge_step=self.step + 1 if self.step else None
            )
        try:
            self._loop(total)
        finally:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
        return self.history

    def _loop(self, total: int) -> None:
        cfg = self.config
        with progress_bar(disable=not self.show_progress) as progress:
            task = progress.add_task(f"train {self.agent.name}", total=total, completed=self.step, info="")
            while self.step < total:
                assert self.obs is not None, "fit() resets the environment before the loop"
                self.obs = collect_step(self.agent, self.env, self.buffer, self.obs)
                self.step += 1
                losses: dict[str, float] = {}
                if len(self.buffer) >= cfg.start_steps and self.agent.learned:
                    for _ in range(cfg.updates_per_step):
                        losses = self.agent.update(self.buffer.sample(cfg.batch_size))
                episodes = self.env.pop_episodes()
                self.recent = (self.recent + [float(x) for x in episodes["return"]])[-200:]
                self.pending += [(float(r), int(d)) for r, d in zip(episodes["return"], episodes["depth"], strict=True)]
                evaluate_now = self.step % cfg.eval_every == 0 or self.step == total
                if evaluate_now or self.step % cfg.log_every == 0:  # recorded with or without an eval env
                    record = self._record(losses)
                    if evaluate_now and self.eval_env is not None:
                        record.update({f"eval_{k}": v for k, v in self._evaluate().items()})
                    self._log(record)
                if self.out_dir is not None and (self.step % cfg.checkpoint_every == 0 or self.step == total):
                    self.save_checkpoint()
                if self.step % 10 == 0 or self.step == total:
                    status = f"return {sum(self.recent) / max(len(self.recent), 1):.2f}"
                    if self.history and "eval_total_reward" in self.history[-1]:
                        status += f" | eval {self.history[-1]['eval_total_reward']:.2f}"
                    progress.update(task, completed=self.step, info=status)

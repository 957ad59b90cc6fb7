"""The training loop shared by every learning agent (CleanRL-style: readable top to bottom).

Each step: the agent explores on B users at once, the batch of transitions goes into the replay
buffer, then ``updates_per_step`` gradient steps on replay batches. Every ``eval_every`` steps the
greedy policy is scored on held-out users (a fresh, seeded environment, so evaluation never
disturbs training); metrics go to ``metrics.jsonl``. Checkpoints hold everything that moves (agent,
optimiser, target network, buffer, environment, random states), so a resumed run continues exactly
as an uninterrupted one would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from hsrl.agents.base import Agent
from hsrl.config import TrainConfig
from hsrl.errors import ArtifactError
from hsrl.eval.evaluate import evaluate, summary
from hsrl.io import atomic_path
from hsrl.train.buffer import ReplayBuffer

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


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


class Trainer:
    """Drives ``agent`` in ``env``; ``eval_env`` builds a fresh seeded evaluation environment."""

    def __init__(
        self,
        agent: Agent,
        env: Any,
        config: TrainConfig,
        out_dir: str | Path | None = None,
        eval_env: Callable[[], Any] | None = None,
        show_progress: bool = True,
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
        self.obs = None
        self.history: list[dict[str, Any]] = []
        self.recent: list[float] = []  # returns of the last finished training episodes (for display)

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
        torch.set_rng_state(state["torch_rng"])

    # ------------------------------------------------------------------ loop
    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.out_dir is not None:
            with open(self.out_dir / METRICS, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        for callback in self.callbacks:
            callback(record)

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
            elif (self.out_dir / METRICS).exists():
                (self.out_dir / METRICS).unlink()
        if self.obs is None:
            torch.manual_seed(cfg.seed)
            self.obs = self.env.reset()
        self.agent.train_mode(True)
        with progress_bar(disable=not self.show_progress) as progress:
            task = progress.add_task(f"train {self.agent.name}", total=total, completed=self.step, info="")
            while self.step < total:
                slate, extras = self.agent.explore(self.obs)
                next_obs, reward, done, info = self.env.step(slate)
                # per-slot feedback, for agents with a supervised term (HAC) or item-level credit (HSRL)
                extras = {**extras, **{k: info[k] for k in ("clicks", "slot_rewards") if k in info}}
                self.buffer.add(self.obs, slate, extras, reward, next_obs, done)
                self.obs = next_obs
                self.step += 1
                losses: dict[str, float] = {}
                if len(self.buffer) >= cfg.start_steps and self.agent.learned:
                    for _ in range(cfg.updates_per_step):
                        losses = self.agent.update(self.buffer.sample(cfg.batch_size))
                episodes = self.env.pop_episodes()
                self.recent = (self.recent + [float(x) for x in episodes["return"]])[-200:]
                if self.step % cfg.eval_every == 0 or self.step == total:  # recorded with or without an eval env
                    record = {"step": self.step, "train_return": sum(self.recent) / max(len(self.recent), 1), **losses}
                    if self.eval_env is not None:
                        record.update({f"eval_{k}": v for k, v in self._evaluate().items()})
                    self._log(record)
                if self.out_dir is not None and (self.step % cfg.checkpoint_every == 0 or self.step == total):
                    self.save_checkpoint()
                if self.step % 10 == 0 or self.step == total:
                    info = f"return {sum(self.recent) / max(len(self.recent), 1):.2f}"
                    if self.history and "eval_total_reward" in self.history[-1]:
                        info += f" | eval {self.history[-1]['eval_total_reward']:.2f}"
                    progress.update(task, completed=self.step, info=info)
        return self.history

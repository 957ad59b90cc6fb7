"""The agent interface shared by HSRL and every baseline (Stable-Baselines3-like: fit, act, save, load).

An agent sees observations and the catalogue (item feature table, plus the Semantic ID index for SID
agents), never the data readers. ``act`` returns a slate of K distinct item indices per user.
Learning agents also implement ``explore`` (a stochastic slate plus whatever the update needs) and
``update`` (one gradient step on a replay batch); the shared training loop drives both (``fit``).

A checkpoint (``save``) holds the agent's registry name, its constructor inputs (``checkpoint_inputs``:
catalogue, slate size, shapes, config section, Semantic ID index, ...) and its state, so ``Agent.load``
rebuilds the agent from the file alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from hsrl.errors import ArtifactError
from hsrl.simulator.observation import Observation

if TYPE_CHECKING:
    from hsrl.agents.world_model import ItemTeacher
    from hsrl.config import AgentConfig, TrainConfig
    from hsrl.sid.protocols import SIDIndex
    from hsrl.simulator.protocols import SlateEnvironment

# 2: the file carries the constructor inputs (``Agent.load`` needs no run directory); 1 had the state only
CHECKPOINT_VERSION = 2
NEG = -1e9  # the logit of an item or token that must never be chosen


class Agent(ABC):
    """A slate policy over a catalogue."""

    name: str = "agent"
    learned: bool = False
    privileged: bool = False  # True for references that peek at the simulator (oracle)
    replay_window: int | None = None  # policy-gradient agents learn from recent transitions only
    history_length: int | None = None  # what the agent's encoder reads (None: any length)
    profile_dim: int = 0
    # ``agent.distill``'s teacher: the training simulator's click model, set by the registry for training
    # only (never saved; acting does not need it). The term applies only where one is set: an agent built
    # by hand (a toy world, the true world) learns without it, as before distill existed
    teacher: ItemTeacher | None = None

    def __init__(self, item_features: torch.Tensor, slate_size: int) -> None:
        self.item_features = item_features
        self.slate_size = slate_size
        self.active = torch.ones(item_features.shape[0], dtype=torch.bool, device=item_features.device)

    @property
    def n_items(self) -> int:
        return int(self.item_features.shape[0])

    def set_catalogue(
        self, item_features: torch.Tensor, index: SIDIndex | None = None, active: torch.Tensor | None = None
    ) -> None:
        """Point the agent at a (possibly changed) catalogue: features of every item index, which are
        recommendable (``active``; default all), and for SID agents the updated index."""
        self.item_features = item_features
        if active is None:
            active = torch.ones(item_features.shape[0], dtype=torch.bool, device=item_features.device)
        self.active = active

    @abstractmethod
    def act(self, obs: Observation, greedy: bool = True) -> torch.Tensor:
        """Slate (B, K) of distinct item indices for each user in ``obs``."""

    # -- learning agents override these --------------------------------------------------------
    def explore(self, obs: Observation) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Stochastic slate for training plus per-row extras stored in the replay buffer."""
        return self.act(obs, greedy=False), {}

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        """One learning step on a replay batch; returns scalar diagnostics."""
        return {}

    def distill_term(
        self,
        coef: float,
        obs: Observation,
        log_probs_of: Callable[[slice, Observation], torch.Tensor],
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """``agent.distill``'s term, unscaled: the cross-entropy of the agent's log-probabilities over the
        first ``len(mask)`` items against the teacher's targets on the items ``mask`` allows, in the batch
        rows the teacher reads (``agent.distill_states``). ``log_probs_of(rows, taught_obs)`` gives the
        agent's (rows, N) log-probabilities. Zero (no graph) where the term is off: ``coef`` 0 or no teacher
        (an agent built outside the training simulator)."""
        if coef <= 0 or self.teacher is None:
            return torch.zeros((), device=obs.device)
        rows = self.teacher.rows(obs.batch_size)
        taught = obs.index(rows)
        return self.teacher.loss(taught, log_probs_of(rows, taught), mask)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def train_mode(self, training: bool) -> None:  # noqa: B027  (a hook: most agents keep the no-op)
        """Switch dropout etc.; no-op for agents without networks."""

    # -- the Python API ------------------------------------------------------------------------
    def fit(
        self,
        env: SlateEnvironment,
        steps: int,
        eval_env: SlateEnvironment | Callable[[], SlateEnvironment] | None = None,
        callbacks: Sequence[Callable[[dict[str, Any]], Any]] | None = None,
        out_dir: str | Path | None = None,
        config: TrainConfig | None = None,
    ) -> Agent:
        """Train in ``env`` for ``steps`` environment steps with the shared loop (``hsrl.train.loop``).

        ``eval_env``: an environment, or a zero-argument factory of fresh ones (as ``hsrl train`` uses),
        scored every ``config.eval_every`` steps; a given environment is reseeded before each evaluation
        so every one meets the same users. ``callbacks`` receive each metrics record (a dict with
        ``step``, ``train_return``, the update's losses and ``eval_*`` scores when there is an eval env).
        ``out_dir``: where ``metrics.jsonl`` and the resumable checkpoint go (none by default).
        """
        from hsrl.config import TrainConfig
        from hsrl.train.loop import Trainer

        cfg = (config or TrainConfig.model_validate({})).model_copy(update={"steps": int(steps)})
        factory: Callable[[], SlateEnvironment] | None
        if eval_env is None or callable(eval_env) and not hasattr(eval_env, "reset"):
            factory = eval_env  # a factory of fresh environments (or none)
        else:
            factory = _reseeded(cast("SlateEnvironment", eval_env), 10_000 + cfg.seed)
        trainer = Trainer(self, env, cfg, out_dir=out_dir, eval_env=factory, show_progress=False, callbacks=callbacks)
        trainer.fit(steps=int(steps))
        return self

    def recommend(
        self,
        histories: Sequence[Sequence[int]],
        k: int | None = None,
        feedback: Sequence[Sequence[float] | None] | None = None,
        profiles: Sequence[Sequence[float] | None] | Any | None = None,
    ) -> torch.Tensor:
        """Greedy slates (B, k) for users given as histories of internal item indices, oldest first.

        ``feedback`` per entry (default 1.0: clicked), ``profiles`` (default zeros); histories longer
        than the agent's history length keep their last entries. The slate is ``act``'s on the same
        observation, cut to its first ``k`` items (default: the slate size).
        """
        k = self.slate_size if k is None else int(k)
        if not 1 <= k <= self.slate_size:
            raise ValueError(f"k: {k} is outside 1..{self.slate_size} (the slate size)")
        rows = [[int(i) for i in h] for h in histories]
        bad = [(u, i) for u, row in enumerate(rows) for i in row if not 0 <= i < self.n_items]
        if bad:
            u, i = bad[0]
            raise ValueError(f"histories[{u}]: item index {i} is outside the catalogue 0..{self.n_items - 1}")
        length, dim = self.history_length, self.profile_dim
        if length is None:  # no encoder: histories and profiles as given
            length = max([len(r) for r in rows] + [1])
            given = [p for p in profiles if p is not None] if profiles is not None else []
            dim = len(given[0]) if given else 0
        obs = Observation.from_histories(rows, length, feedback, profiles, dim, device=self.item_features.device)
        return self.act(obs, greedy=True)[:, :k]

    # -- persistence ---------------------------------------------------------------------------
    def checkpoint_inputs(self) -> dict[str, Any]:
        """What ``load`` needs to rebuild this agent besides its state: the constructor's inputs as plain
        tensors, numbers, strings and dicts (a checkpoint is read with ``weights_only``). Subclasses add
        theirs and read them back in ``from_inputs``."""
        return {
            "item_features": self.item_features.detach().cpu(),
            "slate_size": int(self.slate_size),
            "active": self.active.detach().cpu(),
        }

    @classmethod
    def from_inputs(
        cls, inputs: dict[str, Any], config: AgentConfig | None = None, device: torch.device | str | None = None
    ) -> Agent:
        """A fresh agent from ``checkpoint_inputs`` (on ``device``); ``config`` replaces the saved agent
        section where the class has one (decode-only options on shared weights)."""
        features = inputs["item_features"].to(device) if device is not None else inputs["item_features"]
        agent = cls._construct(features, int(inputs["slate_size"]), inputs, config)
        agent.set_catalogue(features, active=inputs["active"].to(features.device))
        return agent

    @classmethod
    def _construct(
        cls, features: torch.Tensor, slate_size: int, inputs: dict[str, Any], config: AgentConfig | None
    ) -> Agent:
        """Call the constructor with the saved inputs; agents with more inputs override this."""
        return cls(features, slate_size)

    def save(self, path: str | Path) -> Path:
        """One file: registry name, constructor inputs and state (written atomically)."""
        from hsrl.agents.registry import name_of
        from hsrl.io import atomic_path

        blob = {
            "version": CHECKPOINT_VERSION,
            "agent": name_of(self),
            "inputs": self.checkpoint_inputs(),
            "state": self.state_dict(),
        }
        with atomic_path(path) as tmp:
            torch.save(blob, tmp)
        return Path(path)

    @classmethod
    def load(
        cls, path: str | Path, config: AgentConfig | None = None, device: torch.device | str | None = None
    ) -> Agent:
        """The agent saved at ``path``, rebuilt from the file alone (its class from the registry).

        ``HSRLAgent.load`` also checks that the file holds an HSRL agent; ``Agent.load`` takes any.
        ``config``: an agent section to build with instead of the saved one (it must give the same
        network shapes); ``device``: where the agent lives (default CPU)."""
        path = Path(path)
        return cls.from_checkpoint(read_checkpoint(path), path, config, device)

    @classmethod
    def from_checkpoint(
        cls,
        blob: dict[str, Any],
        path: Path,
        config: AgentConfig | None = None,
        device: torch.device | str | None = None,
    ) -> Agent:
        """``load`` on a checkpoint already read with ``read_checkpoint`` (``path`` names it in errors)."""
        from hsrl.agents import registry

        name = blob.get("agent")
        try:
            entry = registry.get(str(name))
        except Exception:
            raise ArtifactError(f"{path}: checkpoint of agent '{name}', which is not registered here") from None
        if not issubclass(entry.cls, cls):
            raise ArtifactError(f"{path}: checkpoint of agent '{name}', not '{cls.name}'")
        try:
            agent = entry.cls.from_inputs(blob["inputs"], config, device)
            agent.load_state_dict(blob["state"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
            raise ArtifactError(f"{path}: checkpoint does not fit agent '{name}' ({detail})") from None
        return agent


def _reseeded(env: SlateEnvironment, seed: int) -> Callable[[], SlateEnvironment]:
    """A factory that hands out ``env`` reseeded, so every evaluation in it meets the same users."""

    def fresh() -> SlateEnvironment:
        env.reset(seed=seed)
        return env

    return fresh


def read_checkpoint(path: Path, formats: tuple[int, ...] = (CHECKPOINT_VERSION,)) -> dict[str, Any]:
    """The raw checkpoint dict of an agent file (on the CPU); ArtifactError when missing, corrupt or of a
    format not in ``formats`` (readers of the state alone, such as the service's export, accept format 1)."""
    if not path.is_file():
        raise ArtifactError(f"{path}: no agent checkpoint here (train one with `hsrl train`)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArtifactError(f"{path}: corrupt agent checkpoint ({type(exc).__name__}: {exc})") from None
    version = blob.get("version") if isinstance(blob, dict) else "?"
    if version not in formats:
        hint = " (an older hsrl's, without the agent's constructor inputs)" if version == 1 else ""
        raise ArtifactError(
            f"{path}: agent checkpoint format {version}{hint}, this hsrl reads {CHECKPOINT_VERSION};"
            " retrain the agent (`hsrl train RUN --agent NAME --force`)"
        )
    return blob


def sample_without_replacement(logits: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k distinct indices per row, drawn from softmax(logits) without replacement (Gumbel top-k)."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp_(1e-10, 1 - 1e-10)
    gumbel = -torch.log(-torch.log(u))
    return (logits + gumbel).topk(k, dim=1).indices


DUAL_CLIP = 3.0  # with A < 0 the surrogate is never below DUAL_CLIP * A (Ye et al. 2020)


def ppo_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip: float, dual_clip: float | None = DUAL_CLIP
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-action PPO surrogate every policy-gradient agent here uses (HSRL, A2C, GRPO), elementwise, and
    its ratios: the log-ratio clamped to [-20, 20] (stale replayed actions must not overflow), min(r A,
    clip(r, 1 - clip, 1 + clip) A), and the dual clip: with a negative advantage a large ratio is unbounded
    otherwise (None: off, for on-policy samples)."""
    ratio = (logp - old_logp).clamp(-20.0, 20.0).exp()
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    if dual_clip is not None:
        surrogate = torch.where(adv < 0, torch.maximum(surrogate, dual_clip * adv), surrogate)
    return surrogate, ratio


@torch.no_grad()
def soft_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    """Polyak averaging of a target network: target <- (1 - tau) * target + tau * source."""
    for tp, p in zip(target.parameters(), source.parameters()):
        tp.lerp_(p, tau)

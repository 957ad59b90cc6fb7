"""SL: a click model trained on the logged slates, recommending its top-K (DESIGN §8).

The state encoder plus an item scorer: logit(click | s, i) = <q(s), v_i> + b(v_i), with v_i the item's
vector in the encoder's item space (from its features, so new items are scored too) and b a per-item
propensity read from the same vector. It learns by binary cross-entropy on the training users' logged
impressions (every slot of every logged slate is one example); the shared training loop drives it and
``update`` takes a minibatch of the replay batch's size from the logs. With ``agent.sl.replay`` > 0 it
also learns from the replay batch, its own slates in the training simulator with every shown slot's click
(the per-item signal HSRL's click loss reads, offered to SL too), and explores by sampling its slates:
a myopic click model of the environment it trains in. ``act`` is the top-K by predicted click logit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hsrl.agents.base import sample_without_replacement
from hsrl.agents.encoder_agent import EncoderAgent, mlp
from hsrl.config import AgentConfig
from hsrl.data.schema import PAD, LogDataset
from hsrl.simulator.observation import Observation


@dataclass
class LoggedSlates:
    """Logged impressions as tensors: the state before each slate, the slate (M, K) and its clicks (M, K).

    ``weight`` (M, K) is 0 for slots that must not be learned from (items outside a restricted catalogue).
    """

    obs: Observation
    slate: torch.Tensor
    clicks: torch.Tensor
    weight: torch.Tensor | None = None

    @classmethod
    def from_dataset(
        cls, dataset: LogDataset, split: str = "train", device: str | torch.device = "cpu"
    ) -> LoggedSlates:
        """The impressions of ``split``'s users in a ``LogDataset`` (users index the profiles only)."""
        rows = dataset.rows_in(split)
        users = dataset.imp_user[rows]
        profiles = (
            dataset.user_profiles[users] if dataset.user_profiles is not None else np.zeros((len(rows), 0), np.float32)
        )

        def t(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(a, dtype=dtype, device=device)

        obs = Observation(
            t(users, torch.long),
            t(profiles, torch.float32),
            t(dataset.hist_items[rows], torch.long),
            t(dataset.hist_feedback[rows], torch.float32),
        )
        return cls(obs, t(dataset.imp_items[rows], torch.long), t(dataset.imp_feedback[rows], torch.float32))

    def __len__(self) -> int:
        return int(self.slate.shape[0])

    def restricted(self, local_items: Callable[[torch.Tensor], torch.Tensor]) -> LoggedSlates:
        """The logs re-indexed for a smaller catalogue: ``local_items`` maps item indices to the new ones,
        PAD for items not in it. Those items vanish from histories and their slots get weight 0; rows with
        no slot left are dropped."""
        hist = local_items(self.obs.hist_items)
        slate = local_items(self.slate)
        keep = (slate != PAD).any(1)
        weight = (slate != PAD).float() * (1.0 if self.weight is None else self.weight)
        obs = Observation(self.obs.user, self.obs.profile, hist, torch.where(hist == PAD, 0.0, self.obs.hist_feedback))
        return LoggedSlates(obs.index(keep), slate.clamp_min(0)[keep], self.clicks[keep], weight[keep])


class SupervisedAgent(EncoderAgent):
    """Encoder + click scorer trained by BCE on logged slates; greedy top-K."""

    name = "sl"

    def __init__(
        self,
        item_features: torch.Tensor,
        slate_size: int,
        profile_dim: int,
        history_length: int,
        logs: LoggedSlates | None = None,
        config: AgentConfig | None = None,
        seed: int = 0,
    ) -> None:
        # the logs are for training only: a loaded agent acts without them (``update`` then asks for them)
        if logs is not None and len(logs) == 0:
            raise ValueError("the SL baseline needs logged impressions to learn from; none were given")
        self.logs = logs
        super().__init__(item_features, slate_size, profile_dim, history_length, config, seed)

    def build(self) -> None:
        dim = self.config.dim
        self.query = mlp(dim, dim, dim).to(self.device)
        self.bias = mlp(dim, dim, 1).to(self.device)
        params: list[torch.Tensor] = [*self.encoder.parameters(), *self.query.parameters(), *self.bias.parameters()]
        self.satiation: torch.nn.Embedding | None = None
        if self.config.sl.satiation:  # one weight per (feedback, history position), zero at the start
            positions = self.encoder.position_emb.num_embeddings - 1  # the history length (+1: the user token)
            self.satiation = torch.nn.Embedding(2, positions).to(self.device)
            torch.nn.init.zeros_(self.satiation.weight)
            params.append(self.satiation.weight)
        self.optimizer = torch.optim.Adam(params, lr=self.config.sl.lr, weight_decay=self.config.weight_decay)

    @classmethod
    def _construct(
        cls, features: torch.Tensor, slate_size: int, inputs: dict[str, Any], config: AgentConfig | None
    ) -> SupervisedAgent:
        cfg = config if config is not None else AgentConfig.model_validate(inputs["config"])
        return cls(features, slate_size, int(inputs["profile_dim"]), int(inputs["history_length"]), None, cfg)

    def modules(self):
        parts = {"encoder": self.encoder, "query": self.query, "bias": self.bias}
        return parts if self.satiation is None else {**parts, "satiation": self.satiation}

    def optimizers(self):
        return {"optimizer": self.optimizer}

    def logits(self, obs: Observation, items: torch.Tensor | None = None) -> torch.Tensor:
        """Click logits of ``items`` (B, K) for each user, or of every active item (B, N) when None."""
        state = self.encoder(obs, self.item_features)
        q = self.query(state)
        if items is None:
            vectors = self.item_vectors()
            logits = self.score_items(q, vectors) + self.bias(vectors).squeeze(-1)
        else:
            vectors = self.encoder.item_vectors(self.item_features[items])  # (B, K, dim)
            logits = (vectors * q.unsqueeze(1)).sum(-1) + self.bias(vectors).squeeze(-1)
        if self.satiation is not None:
            logits = logits + self.satiation_logits(obs, items)
        return logits

    def satiation_logits(self, obs: Observation, items: torch.Tensor | None = None) -> torch.Tensor:
        """sum over history entries h of cos(candidate, h) x w[feedback_h, position_h]: how much of what
        the user was just shown (or clicked) the candidate repeats. (B, K), or (B, N) for every item."""
        assert self.satiation is not None, "satiation_logits needs agent.sl.satiation"
        unit = F.normalize(self.item_features, dim=-1)
        hist = unit[obs.hist_items.clamp_min(0)]  # (B, H, F); padding is masked below
        cand = unit.unsqueeze(0).expand(obs.batch_size, -1, -1) if items is None else unit[items]
        similarity = cand @ hist.transpose(1, 2)  # (B, K|N, H)
        clicked = (obs.hist_feedback > 0.5).long()
        positions = torch.arange(obs.hist_items.shape[1], device=self.device)
        weight = self.satiation.weight[clicked, positions]  # (B, H)
        weight = weight * obs.hist_mask.float()
        return (similarity * weight.unsqueeze(1)).sum(-1)

    def act(self, obs: Observation, greedy: bool = True) -> torch.Tensor:
        with self.evaluating():
            scores = self.logits(obs)
        if greedy:
            return scores.topk(self.slate_size, dim=1).indices
        return sample_without_replacement(scores, self.slate_size, self.generator)

    def explore(self, obs: Observation) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """From the logs only, SL serves its greedy slate; learning from replay too, it samples its slate
        (without replacement, from its click logits), so that what it is shown to learn from varies."""
        return self.act(obs, greedy=self.config.sl.replay <= 0), {}

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        """One BCE step on a logged minibatch as large as the replay batch, plus (``sl.replay`` > 0) the BCE
        of the replay batch's shown slots, weighted by ``sl.replay``."""
        if self.logs is None:
            raise ValueError(
                "this SL agent has no logged slates to learn from (set agent.logs = LoggedSlates.from_dataset(...))"
            )
        n = int(batch["slate"].shape[0])
        idx = torch.randint(len(self.logs), (n,), generator=self.generator, device=self.device)
        self.train_mode(True)
        logits = self.logits(self.logs.obs.index(idx), self.logs.slate[idx])
        weight = None if self.logs.weight is None else self.logs.weight[idx]
        loss = F.binary_cross_entropy_with_logits(logits, self.logs.clicks[idx], weight=weight)
        replay_bce = torch.zeros(())
        if self.config.sl.replay > 0 and "clicks" in batch:
            replay_bce = F.binary_cross_entropy_with_logits(
                self.logits(batch["obs"], batch["slate"]), batch["clicks"].float()
            )
        total = loss + self.config.sl.replay * replay_bce
        # its click logits' softmax over the active items (inactive items are scored NEG)
        coef = self.config.distill
        distill = self.distill_term(
            coef, batch["obs"], lambda _, taught: self.logits(taught).log_softmax(-1), self.active
        )
        total = total + coef * distill
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.updates += 1
        return {
            "bce": float(loss.detach()),
            "replay_bce": float(replay_bce.detach()),
            "distill": float(distill.detach()),
        }

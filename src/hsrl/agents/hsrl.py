"""HSRL: a hierarchical policy over Semantic ID tokens with a multi-level critic (DESIGN §7).

Read top to bottom:
1. ``StateEncoder`` turns an observation into a state s.
2. ``HierarchicalPolicy`` picks SID tokens coarse-to-fine. Level l's logits come from the context
   c_{l-1} (c_0 = s) and are masked to the children of the prefix chosen so far (the SID trie), so
   every decoded SID is an active item. The next context is the residual
   c_l = LayerNorm(c_{l-1} - E_l[z_l]) (``residual: hard``) or, as the reference did, the
   probability-weighted mean embedding is subtracted instead (``residual: soft``).
3. A slate is K SIDs: sampled one item at a time without replacement while training (the trie's
   child counts minus the items already in the slate keep every branch alive), beam top-K when
   greedy. ``decode: score_all`` scores every catalogue item by its SID instead (the reference's
   O(N·L) path, kept for comparison).
4. The multi-level critic V_l(c_l), l = 0..D, gives each token its own advantage
   A_{k,l} = v_{k,l} - v_{k,l-1} (v_{k,D} := y), whose sum over levels is the slate advantage
   y - v_0 (``credit: token``); ``credit: slate`` gives every token y - v_0 (the reference).
5. The actor loss is PPO-clipped per token (replayed transitions come from older policies), with an
   entropy bonus; TD targets use (1 - done) and a soft-updated target network.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hsrl.agents.base import NEG, Agent, sample_without_replacement, soft_update
from hsrl.agents.decoding import beam_search, sample_slate, score_all
from hsrl.agents.encoder import StateEncoder
from hsrl.config import AgentConfig
from hsrl.simulator.observation import Observation



def mlp(dim: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, out))


class HierarchicalPolicy(nn.Module):
    """Per-level token heads, token embeddings, residual contexts and per-level value heads."""

    def __init__(self, dim: int, vocab_sizes: list[int], residual: str = "hard") -> None:
        super().__init__()
        self.vocab_sizes = list(vocab_sizes)
        self.residual = residual
        self.heads = nn.ModuleList(mlp(dim, v) for v in vocab_sizes)
        self.token_emb = nn.ModuleList(nn.Embedding(v, dim) for v in vocab_sizes)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in vocab_sizes)
        self.values = nn.ModuleList(mlp(dim, 1) for _ in range(len(vocab_sizes) + 1))

    @property
    def depth(self) -> int:
        return len(self.vocab_sizes)

    def logits(self, level: int, context: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.heads[level](context).masked_fill(~valid, NEG)

    def next_context(
        self, level: int, context: torch.Tensor, tokens: torch.Tensor, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.residual == "soft":
            assert logits is not None
            subtract = logits.softmax(-1) @ self.token_emb[level].weight
        else:
            subtract = self.token_emb[level](tokens)
        return self.norms[level](context - subtract)

    def value(self, level: int, context: torch.Tensor) -> torch.Tensor:
        return self.values[level](context).squeeze(-1)


class _Actor(nn.Module):
    def __init__(self, encoder: StateEncoder, policy: HierarchicalPolicy) -> None:
        super().__init__()
        self.encoder = encoder
        self.policy = policy


class HSRLAgent(Agent):
    """The HSRL agent: ``act`` (beam/greedy or sampled slates), ``explore``, ``update``, save/load."""

    name = "hsrl"
    learned = True

    def __init__(
        self,
        item_features: torch.Tensor,
        slate_size: int,
        index: Any,
        profile_dim: int,
        history_length: int,
        config: AgentConfig | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(item_features, slate_size)
        self.config = config or AgentConfig()
        cfg = self.config
        self.replay_window = cfg.replay_window
        torch.manual_seed(seed)
        self.generator = torch.Generator(device=item_features.device).manual_seed(seed)
        self.index = index
        encoder = StateEncoder(
            item_features.shape[1], profile_dim, history_length, cfg.dim, cfg.layers, cfg.heads, cfg.dropout
        )
        policy = HierarchicalPolicy(cfg.dim, index.vocab_sizes, cfg.residual)
        self.net = _Actor(encoder, policy).to(item_features.device)
        self.target = copy.deepcopy(self.net).requires_grad_(False)
        critic_params = list(policy.values.parameters())
        critic_ids = {id(p) for p in critic_params}
        actor_params = [p for p in self.net.parameters() if id(p) not in critic_ids]
        self.optimizer = torch.optim.Adam(
            [
                {"params": actor_params, "lr": cfg.actor_lr},
                {"params": critic_params, "lr": cfg.critic_lr},
            ],
            weight_decay=cfg.weight_decay,
        )
        self.updates = 0
        self.set_catalogue(item_features)

    # ------------------------------------------------------------------ catalogue
    def set_catalogue(self, item_features: torch.Tensor, index: Any | None = None, active: torch.Tensor | None = None) -> None:
        """New items only need features and SIDs from the frozen codebooks: no network change."""
        if index is not None:
            if list(index.vocab_sizes) != self.net.policy.vocab_sizes:
                raise ValueError(f"index vocab sizes {index.vocab_sizes} differ from the policy's {self.net.policy.vocab_sizes}")
            self.index = index
        if active is None:
            active = torch.as_tensor(self.index.active, dtype=torch.bool, device=item_features.device)
        super().set_catalogue(item_features, self.index, active)

    @property
    def depth(self) -> int:
        return self.net.policy.depth

    def train_mode(self, training: bool) -> None:
        self.net.train(training)

    # ------------------------------------------------------------------ decoding
    def _sample_slate(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """K SIDs sampled without replacement: items (B,K), tokens (B,K,D), per-token log pi (B,K,D)."""
        return sample_slate(self.net.policy, self.index, state, self.slate_size, self.generator)

    def _beam_slate(self, state: torch.Tensor) -> torch.Tensor:
        """Beam search over the trie: the K best complete SIDs (distinct items). Cost O(D·beam·V)."""
        items, _scores = beam_search(self.net.policy, self.index, state, self.slate_size, self.config.beam)
        return self._fill_missing(items)

    def _score_all(self, state: torch.Tensor) -> torch.Tensor:
        """log pi(SID_i | s) for every active catalogue item (B, N): the reference's O(N·D) decoding."""
        return score_all(self.net.policy, self.index, state).masked_fill(~self.active, NEG)

    def _fill_missing(self, slate: torch.Tensor) -> torch.Tensor:
        """Replace -1 slots (fewer than K complete SIDs in the beam: tiny catalogues) by other active
        items, so a slate always holds K distinct recommendable items."""
        missing = slate < 0
        if not missing.any():
            return slate
        for row in missing.any(1).nonzero().flatten().tolist():
            taken = set(slate[row][slate[row] >= 0].tolist())
            spare = [i for i in self.active.nonzero().flatten().tolist() if i not in taken]
            holes = missing[row].nonzero().flatten()
            slate[row, holes] = torch.as_tensor(spare[: len(holes)], dtype=slate.dtype, device=slate.device)
        return slate

    @torch.no_grad()
    def act(self, obs: Observation, greedy: bool = True) -> torch.Tensor:
        was_training = self.net.training
        self.net.eval()
        state = self.net.encoder(obs, self.item_features)
        if self.config.decode == "score_all":
            scores = self._score_all(state)
            if greedy:
                slate = scores.topk(self.slate_size, dim=1).indices
            else:
                slate = sample_without_replacement(scores, self.slate_size, self.generator)
        elif greedy:
            slate = self._beam_slate(state)
        else:
            slate = self._sample_slate(state)[0]
        self.net.train(was_training)
        return slate

    @torch.no_grad()
    def explore(self, obs: Observation) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        state = self.net.encoder(obs, self.item_features)
        items, tokens, logp = self._sample_slate(state)
        return items, {"tokens": tokens, "logp": logp}

    # ------------------------------------------------------------------ learning
    def _token_pass(self, state: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced pass over stored tokens: log pi (B,K,D), entropy (B,K,D), values (B,K,D+1)."""
        policy = self.net.policy
        b, k, d = tokens.shape
        context = state.unsqueeze(1).expand(b, k, -1)
        logps, ents, values = [], [], [policy.value(0, context)]
        for level in range(d):
            prefix = tokens[:, :, :level].reshape(b * k, level)
            valid = (self.index.child_counts(prefix).to(state.device) > 0).view(b, k, -1)
            logits = policy.logits(level, context, valid)
            log_prob = logits.log_softmax(-1)
            logps.append(log_prob.gather(2, tokens[:, :, level : level + 1]).squeeze(-1))
            ents.append(-(log_prob.exp() * log_prob.masked_fill(~valid, 0.0)).sum(-1))
            context = policy.next_context(level, context, tokens[:, :, level], logits)
            values.append(policy.value(level + 1, context))
        return torch.stack(logps, -1), torch.stack(ents, -1), torch.stack(values, -1)

    @staticmethod
    def token_advantages(values: torch.Tensor, target: torch.Tensor, credit: str = "token") -> torch.Tensor:
        """Per-token advantages (B,K,D) from level values (B,K,D+1) and TD targets (B,).

        token: A_l = v_l - v_{l-1} with v_D replaced by the target, so sum_l A_l = y - v_0.
        slate: every token gets y - v_0.
        """
        v = values.detach().clone()
        v[..., -1] = target.unsqueeze(-1)
        if credit == "slate":
            return (v[..., -1:] - v[..., :1]).expand(-1, -1, v.shape[-1] - 1)
        return v[..., 1:] - v[..., :-1]

    def td_target(self, reward: torch.Tensor, next_obs: Observation, done: torch.Tensor) -> torch.Tensor:
        """y = r + gamma * (1 - done) * V0_target(s'): never bootstrap across users."""
        with torch.no_grad():
            next_state = self.target.encoder(next_obs, self.item_features)
            next_value = self.target.policy.value(0, next_state)
        return reward + self.config.gamma * (1.0 - done.float()) * next_value

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        cfg = self.config
        self.net.train()
        obs: Observation = batch["obs"]
        tokens, old_logp = batch["tokens"], batch["logp"]
        y = self.td_target(batch["reward"], batch["next_obs"], batch["done"])
        state = self.net.encoder(obs, self.item_features)
        logp, entropy, values = self._token_pass(state, tokens)
        # critic: V_D -> y, V_l -> stop-grad V_{l+1}
        level_targets = torch.cat([values[..., 1:].detach(), values.new_zeros(values.shape[:-1] + (1,))], -1)
        level_targets[..., -1] = y.unsqueeze(-1)
        critic_loss = F.mse_loss(values, level_targets)
        # actor: PPO-clipped per-token surrogate
        adv = self.token_advantages(values, y, cfg.credit)
        if cfg.normalize_advantage:  # one positive scale for the batch keeps sum_l A_l = y - v_0 (scaled)
            adv = adv / (adv.std() + 1e-6)
        ratio = (logp - old_logp).clamp(-20.0, 20.0).exp()  # stale replayed tokens must not overflow
        surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv)
        # dual clip (Ye et al. 2020): with a negative advantage a large ratio would be unbounded
        surrogate = torch.where(adv < 0, torch.maximum(surrogate, 3.0 * adv), surrogate)
        actor_loss = -surrogate.sum(-1).mean() - cfg.entropy * entropy.sum(-1).mean()
        loss = actor_loss + critic_loss
        supervision = torch.zeros(())
        if cfg.supervision > 0 and "clicks" in batch:
            # per-item feedback, as HAC's supervision term uses it: the log-likelihood of the SIDs of the
            # items that were clicked (bounded: it cannot push any probability below zero)
            clicks = batch["clicks"].float()
            supervision = -(clicks * logp.sum(-1)).sum() / clicks.sum().clamp_min(1.0)
            loss = loss + cfg.supervision * supervision
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.optimizer.step()
        soft_update(self.target, self.net, cfg.tau)
        self.updates += 1
        return {
            "actor_loss": float(actor_loss.detach()),
            "critic_loss": float(critic_loss.detach()),
            "entropy": float(entropy.detach().sum(-1).mean()),
            "supervision": float(supervision.detach()),
            "advantage": float(adv.detach().sum(-1).mean()),
            "value": float(values.detach()[..., 0].mean()),
        }

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(),
            "vocab_sizes": self.net.policy.vocab_sizes,
            "net": self.net.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["vocab_sizes"]) != self.net.policy.vocab_sizes:
            raise ValueError(f"checkpoint SID vocab {state['vocab_sizes']} vs index {self.net.policy.vocab_sizes}")
        self.net.load_state_dict(state["net"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])

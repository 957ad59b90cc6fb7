"""HSRL: a hierarchical policy over Semantic ID tokens with a multi-level critic (DESIGN §7).

Read top to bottom:
1. ``StateEncoder`` turns an observation into a state s.
2. ``HierarchicalPolicy`` picks SID tokens coarse-to-fine. Level l's logits come from the context
   c_{l-1} (c_0 = s) and are masked to the children of the prefix chosen so far (the SID trie), so
   every decoded SID is an active item. The next context is the residual
   c_l = LayerNorm(c_{l-1} - E_l[z_l]) (``residual: hard``) or, as the reference did, the
   probability-weighted mean embedding is subtracted instead (``residual: soft``). Token heads are free
   rows (``token_heads: free``, the reference) or functions of each token's content (``semantic``:
   codebook centroids, and the item features at the last level). With ``exposure`` every logit also
   reads how much of that branch the user was just shown and clicked (``RecentExposure``): without it
   the policy could not tell a topic it just served from one it did not, and re-served its slate.
3. A slate is K SIDs: sampled one item at a time without replacement while training (the trie's
   child counts minus the items already in the slate keep every branch alive), beam top-K when
   greedy. ``decode: score_all`` scores every catalogue item by its SID instead (the reference's
   O(N·L) path, kept for comparison).
4. The multi-level critic V_l(c_l), l = 0..D, gives each token its own advantage
   A_{k,l} = v_{k,l} - v_{k,l-1} (v_{k,D} := target). ``credit: item``: slot k's target is its own
   reward term plus the bootstrapped future, so its tokens split that slot's advantage y_k - v_0;
   ``credit: token``: one slate target for every slot; ``credit: slate``: every token gets y - v_0
   (the reference).
5. The actor loss is PPO-clipped per token (replayed transitions come from older policies), with an
   entropy bonus, the clicked-SID likelihood (``supervision``) and the exposure-aware click loss (BCE of
   every shown slot's click on its tokens' logits) and, with ``distill``, the cross-entropy of
   log pi(SID_i | s) over every item against the training simulator's click ranking of the items in that
   state (``ItemTeacher``, offered to every learned agent); TD targets use (1 - done) and a soft-updated
   target network.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from hsrl.agents.base import NEG, Agent, ppo_surrogate, sample_without_replacement, soft_update
from hsrl.agents.decoding import (
    Exposure,
    RecentExposure,
    beam_search,
    level_children,
    level_exposure,
    sample_slate,
    score_all,
)
from hsrl.agents.encoder import StateEncoder
from hsrl.config import AgentConfig
from hsrl.io import restore_generator
from hsrl.simulator.observation import Observation

if TYPE_CHECKING:
    from hsrl.sid.index import SemanticIDIndex
    from hsrl.sid.protocols import SIDIndex

EXPOSURE_FEATURES = RecentExposure.FEATURES


def mlp(dim: int, out: int, inp: int | None = None) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp or dim, dim), nn.GELU(), nn.Linear(dim, out))


class ItemTable:
    """The catalogue as the policy's last level sees it: item features and the encoder's item map.

    Semantic heads score the items behind a prefix by their content, so an item added after training
    (features only, SID from the frozen codebooks) is scored like any trained item with similar features.
    """

    def __init__(self, features: torch.Tensor, item_map: nn.Module) -> None:
        self.features = features
        self.item_map = item_map

    def vectors(self, items: torch.Tensor) -> torch.Tensor:
        """(..., dim) item vectors; -1 ids give the vector of item 0 (callers mask them)."""
        return self.item_map(self.features[items.clamp_min(0)])


class HierarchicalPolicy(nn.Module):
    """Per-level token heads, token embeddings, residual contexts and per-level value heads.

    ``token_heads: free`` (the reference): one free logit row and one free embedding per token.
    ``token_heads: semantic``: a token's logit is <query_l(c), key_l(content)> + a per-token bias that
    starts at zero, and its residual embedding is a function of the same content. The content of a
    semantic token is its frozen codebook centroid; at the last (disambiguation) level it is the item
    itself, through the encoder's item map. A branch that no training item had is then scored by what it
    contains rather than by an untrained row.
    """

    def __init__(
        self,
        dim: int,
        vocab_sizes: list[int],
        residual: str = "hard",
        token_heads: str = "free",
        codebooks: list[torch.Tensor] | None = None,
        exposure: bool = False,
    ) -> None:
        super().__init__()
        self.vocab_sizes = list(vocab_sizes)
        self.residual = residual
        self.token_heads = token_heads
        self.exposure = exposure
        if exposure:
            # state-dependent weights of the per-branch exposure counts (zero at the start). At the semantic
            # levels the counts are also spread to similar codes (cosine of the centroids), since one topic
            # of the catalogue may span several codes: exposure to a neighbour code fatigues this one too.
            semantic_levels = len(vocab_sizes) - 1
            features = [2 * EXPOSURE_FEATURES] * semantic_levels + [EXPOSURE_FEATURES]
            layers = [nn.Linear(dim, f) for f in features]
            for layer in layers:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
            self.exposure_coef = nn.ModuleList(layers)
            for level in range(semantic_levels):
                sim = torch.zeros(vocab_sizes[level], vocab_sizes[level])
                if codebooks is not None:
                    book = F.normalize(torch.as_tensor(codebooks[level], dtype=torch.float32), dim=-1)
                    sim = (book @ book.T).clamp_min(0.0)
                self.register_buffer(f"similarity{level}", sim)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in vocab_sizes)
        self.values = nn.ModuleList(mlp(dim, 1) for _ in range(len(vocab_sizes) + 1))
        if token_heads == "free":
            self.heads = nn.ModuleList(mlp(dim, v) for v in vocab_sizes)
            self.token_emb = nn.ModuleList(nn.Embedding(v, dim) for v in vocab_sizes)
            return
        if token_heads != "semantic":
            raise ValueError(f"unknown token_heads '{token_heads}' (expected semantic or free)")
        semantic = len(vocab_sizes) - 1  # the last level is the disambiguation token
        if codebooks is None or len(codebooks) != semantic:
            raise ValueError(f"semantic token heads need the {semantic} codebooks of the index")
        for level, book in enumerate(codebooks):
            book = torch.as_tensor(book, dtype=torch.float32)
            if book.shape[0] != vocab_sizes[level]:
                raise ValueError(f"codebook {level} has {book.shape[0]} codes, the vocabulary {vocab_sizes[level]}")
            # residual codebooks shrink level by level; unit RMS keeps deeper tokens as distinct as level 1's
            self.register_buffer(f"centroids{level}", book / book.pow(2).sum(-1).mean().sqrt().clamp_min(1e-8))
        emb = int(codebooks[0].shape[1])
        self.query = nn.ModuleList(mlp(dim, dim) for _ in vocab_sizes)
        self.key = nn.ModuleList([*(mlp(dim, dim, emb) for _ in range(semantic)), nn.Linear(dim, dim)])
        self.embed = nn.ModuleList([*(mlp(dim, dim, emb) for _ in range(semantic)), nn.Linear(dim, dim)])
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(v)) for v in vocab_sizes[:semantic])
        # no 1/sqrt(dim) on the dot product: with it the logits start ~0.2x as wide as a free head's and
        # learning was slower (synthetic default, seed 0, 1000 steps: simulator reward 1.65 with the scale,
        # 2.07 without; free heads 2.20)
        self.scale = 1.0

    @property
    def depth(self) -> int:
        return len(self.vocab_sizes)

    @property
    def semantic(self) -> bool:
        return self.token_heads == "semantic"

    def _content(self, level: int, children: torch.Tensor | None, items: ItemTable | None) -> torch.Tensor:
        """What a token at ``level`` is: its centroid (V, E) or, at the last level, its item (M, D, dim)."""
        if level < self.depth - 1:
            return getattr(self, f"centroids{level}")
        if children is None or items is None:
            raise ValueError("the semantic last level needs the prefix's child items and the item table")
        return items.vectors(children)

    def raw_logits(
        self,
        level: int,
        context: torch.Tensor,
        children: torch.Tensor | None = None,
        items: ItemTable | None = None,
        exposure: Exposure | None = None,
    ) -> torch.Tensor:
        """Unmasked logits (M, V) of the next token for contexts (M, dim). ``children`` (M, D) are the
        item indices behind the last level's tokens (``index.child_items``); only semantic heads use them.
        ``exposure`` (a ``BranchExposure`` or ``RowExposure``): how much of each child's branch the user
        was just shown (and clicked)."""
        if not self.semantic:
            logits = self.heads[level](context)
        else:
            keys = self.key[level](self._content(level, children, items))
            q = self.query[level](context) * self.scale
            logits = q @ keys.T + self.bias[level] if keys.dim() == 2 else (keys @ q.unsqueeze(-1)).squeeze(-1)
        if self.exposure and exposure is not None:
            # linear in the counts, applied sparsely (BranchExposure.add_to); at the semantic levels the
            # second half of the coefficients weighs the counts spread to similar codes
            spread = getattr(self, f"similarity{level}") if level < self.depth - 1 else None
            logits = exposure.add_to(logits, self.exposure_coef[level](context), spread)
        return logits

    def logits(
        self,
        level: int,
        context: torch.Tensor,
        valid: torch.Tensor,
        children: torch.Tensor | None = None,
        items: ItemTable | None = None,
        exposure: Exposure | None = None,
    ) -> torch.Tensor:
        # in place: raw_logits returns a fresh tensor that no backward pass reads (saves a (M, V) copy)
        return self.raw_logits(level, context, children, items, exposure).masked_fill_(~valid, NEG)

    def token_embeddings(
        self, level: int, children: torch.Tensor | None = None, items: ItemTable | None = None
    ) -> torch.Tensor:
        """(V, dim), or (M, D, dim) at a semantic last level, the embeddings subtracted by the residual."""
        if not self.semantic:
            return cast(nn.Embedding, self.token_emb[level]).weight
        return self.embed[level](self._content(level, children, items))

    def next_context(
        self,
        level: int,
        context: torch.Tensor,
        tokens: torch.Tensor,
        logits: torch.Tensor | None = None,
        children: torch.Tensor | None = None,
        items: ItemTable | None = None,
    ) -> torch.Tensor:
        """c_l = LayerNorm(c_{l-1} - E_l[z_l]) (hard) or minus the probability-weighted mean (soft).
        Shapes: context (..., dim), tokens (...), logits (..., V), children (..., D) at the last level."""
        emb = self.token_embeddings(level, children, items)
        if self.residual == "soft":
            assert logits is not None
            probs = logits.softmax(-1)
            subtract = probs @ emb if emb.dim() == 2 else (probs.unsqueeze(-1) * emb).sum(-2)
        elif emb.dim() == 2:
            subtract = emb[tokens]
        else:  # per-row item embeddings (..., D, dim), possibly shared across a leading batch dimension
            emb = emb.expand(*tokens.shape, *emb.shape[-2:])
            subtract = emb.gather(-2, tokens[..., None, None].expand(*tokens.shape, 1, emb.shape[-1])).squeeze(-2)
        return self.norms[level](context - subtract)

    def value(self, level: int, context: torch.Tensor) -> torch.Tensor:
        return self.values[level](context).squeeze(-1)


class _Actor(nn.Module):
    def __init__(self, encoder: StateEncoder, policy: HierarchicalPolicy) -> None:
        super().__init__()
        self.encoder = encoder
        self.policy = policy


class SIDAgent(Agent):
    """What the agents built on a Semantic ID index (HSRL, GRPO) save to be rebuilt from their file alone:
    the observation shapes, the agent section and the index as it is now (items added since included).
    Subclasses take ``(features, slate_size, index, profile_dim, history_length, config)``."""

    index: SIDIndex
    profile_dim: int
    history_length: int
    config: AgentConfig

    def checkpoint_inputs(self) -> dict[str, Any]:
        return {
            **super().checkpoint_inputs(),
            "profile_dim": self.profile_dim,
            "history_length": self.history_length,
            "config": self.config.model_dump(mode="json"),
            "index": index_to_tensor(self.index),
        }

    @classmethod
    def _construct(
        cls, features: torch.Tensor, slate_size: int, inputs: dict[str, Any], config: AgentConfig | None
    ) -> Agent:
        cfg = config if config is not None else AgentConfig.model_validate(inputs["config"])
        index = index_from_tensor(inputs["index"])
        return cls(features, slate_size, index, int(inputs["profile_dim"]), int(inputs["history_length"]), cfg)  # type: ignore[call-arg]


class HSRLAgent(SIDAgent):
    """The HSRL agent: ``act`` (beam/greedy or sampled slates), ``explore``, ``update``, save/load."""

    name = "hsrl"
    learned = True

    def __init__(
        self,
        item_features: torch.Tensor,
        slate_size: int,
        index: SIDIndex,
        profile_dim: int,
        history_length: int,
        config: AgentConfig | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(item_features, slate_size)
        self.config = config or AgentConfig()
        self.profile_dim, self.history_length = int(profile_dim), int(history_length)
        cfg = self.config
        self.replay_window = cfg.replay_window
        torch.manual_seed(seed)
        self.generator = torch.Generator(device=item_features.device).manual_seed(seed)
        self.index = index
        encoder = StateEncoder(
            item_features.shape[1], profile_dim, history_length, cfg.dim, cfg.layers, cfg.heads, cfg.dropout
        )
        codebooks = (
            [torch.as_tensor(c) for c in index.codebooks] if cfg.token_heads == "semantic" or cfg.exposure else None
        )
        policy = HierarchicalPolicy(cfg.dim, index.vocab_sizes, cfg.residual, cfg.token_heads, codebooks, cfg.exposure)
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
    def set_catalogue(
        self, item_features: torch.Tensor, index: SIDIndex | None = None, active: torch.Tensor | None = None
    ) -> None:
        """New items only need features and SIDs from the frozen codebooks: no network change."""
        if index is not None:
            if list(index.vocab_sizes) != self.net.policy.vocab_sizes:
                raise ValueError(
                    f"index vocab sizes {index.vocab_sizes} differ from the policy's {self.net.policy.vocab_sizes}"
                )
            self.index = index
        if active is None:
            active = torch.as_tensor(self.index.active, dtype=torch.bool, device=item_features.device)
        super().set_catalogue(item_features, self.index, active)

    @property
    def depth(self) -> int:
        return self.net.policy.depth

    def train_mode(self, training: bool) -> None:
        self.net.train(training)

    def items(self) -> ItemTable:
        """The catalogue for the policy's semantic last level (features through the encoder's item map)."""
        return ItemTable(self.item_features, self.net.encoder.item_map)

    # ------------------------------------------------------------------ decoding
    def recent(self, obs: Observation | None) -> RecentExposure | None:
        """Per-branch exposure of the user's last slates (None when the policy does not read it)."""
        if obs is None or not self.config.exposure:
            return None
        return RecentExposure.from_obs(obs, self.index, self.slate_size)

    def _sample_slate(
        self, state: torch.Tensor, obs: Observation | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """K SIDs sampled without replacement: items (B,K), tokens (B,K,D), per-token log pi (B,K,D)."""
        return sample_slate(
            self.net.policy, self.index, state, self.slate_size, self.generator, self.items(), self.recent(obs)
        )

    def _beam_slate(self, state: torch.Tensor, obs: Observation | None = None) -> torch.Tensor:
        """Beam search over the trie: the K best complete SIDs (distinct items). Cost O(D·beam·V)."""
        items, _scores = beam_search(
            self.net.policy, self.index, state, self.slate_size, self.config.beam, self.items(), self.recent(obs)
        )
        return self._fill_missing(items)

    def _score_all(self, state: torch.Tensor, obs: Observation | None = None) -> torch.Tensor:
        """log pi(SID_i | s) for every active catalogue item (B, N): the reference's O(N·D) decoding."""
        scores = score_all(self.net.policy, self.index, state, self.items(), self.recent(obs))
        return scores.masked_fill(~self.active, NEG)

    def item_log_probs(self, state: torch.Tensor, obs: Observation | None = None) -> torch.Tensor:
        """log pi(SID_i | s) of every item (B, N), with gradients (``distill``); inactive items ~ NEG."""
        return score_all(self.net.policy, self.index, state, self.items(), self.recent(obs))

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
            scores = self._score_all(state, obs)
            if greedy:
                slate = scores.topk(self.slate_size, dim=1).indices
            else:
                slate = sample_without_replacement(scores, self.slate_size, self.generator)
        elif greedy:
            slate = self._beam_slate(state, obs)
        else:
            slate = self._sample_slate(state, obs)[0]
        self.net.train(was_training)
        return slate

    @torch.no_grad()
    def explore(self, obs: Observation) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        state = self.net.encoder(obs, self.item_features)
        items, tokens, logp = self._sample_slate(state, obs)
        return items, {"tokens": tokens, "logp": logp}

    # ------------------------------------------------------------------ learning
    def _token_pass(
        self, state: torch.Tensor, tokens: torch.Tensor, obs: Observation | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced pass over stored tokens: log pi (B,K,D), entropy (B,K,D), values (B,K,D+1) and
        the unmasked logit of every chosen token (B,K,D), which the click loss reads as a click logit."""
        policy = self.net.policy
        b, k, d = tokens.shape
        items = self.items()
        recent = self.recent(obs)
        context = state.unsqueeze(1).expand(b, k, -1)
        logps, ents, chosen, values = [], [], [], [policy.value(0, context)]
        for level in range(d):
            prefix = tokens[:, :, :level].reshape(b * k, level)
            valid = self.index.valid_next(prefix).to(state.device).view(b, k, -1)
            children = level_children(policy, self.index, level, prefix)
            children = None if children is None else children.view(b, k, -1)
            exposure = level_exposure(policy, recent, level, tokens[:, :, :level])
            raw = policy.raw_logits(level, context, children, items, exposure)
            logits = raw.masked_fill(~valid, NEG)
            log_prob = logits.log_softmax(-1)
            token = tokens[:, :, level : level + 1]
            logps.append(log_prob.gather(2, token).squeeze(-1))
            chosen.append(raw.gather(2, token).squeeze(-1))
            ents.append(-(log_prob.exp() * log_prob.masked_fill(~valid, 0.0)).sum(-1))
            context = policy.next_context(level, context, tokens[:, :, level], logits, children, items)
            values.append(policy.value(level + 1, context))
        return torch.stack(logps, -1), torch.stack(ents, -1), torch.stack(values, -1), torch.stack(chosen, -1)

    @staticmethod
    def token_advantages(values: torch.Tensor, target: torch.Tensor, credit: str = "token") -> torch.Tensor:
        """Per-token advantages (B,K,D) from level values (B,K,D+1) and TD targets: (B,) slate targets,
        or (B,K) per-slot targets (``credit: item``).

        token / item: A_l = v_l - v_{l-1} with v_D replaced by the target, so sum_l A_{k,l} = y_k - v_0
        (y_k = y for every slot under token credit). slate: every token gets y - v_0.
        """
        v = values.detach().clone()
        v[..., -1] = target if target.dim() == 2 else target.unsqueeze(-1)
        if credit == "slate":
            return (v[..., -1:] - v[..., :1]).expand(-1, -1, v.shape[-1] - 1)
        return v[..., 1:] - v[..., :-1]

    def td_target(self, reward: torch.Tensor, next_obs: Observation, done: torch.Tensor) -> torch.Tensor:
        """y = r + gamma * (1 - done) * V0_target(s'), never bootstrapping across users: (B,) for slate
        rewards, (B,K) for per-slot ones (every slot shares the future)."""
        with torch.no_grad():
            next_value = self.target.policy.value(0, self.target.encoder(next_obs, self.item_features))
        future = self.config.gamma * (1.0 - done.float()) * next_value
        return reward + (future.unsqueeze(-1) if reward.dim() == 2 else future)

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        cfg = self.config
        self.net.train()
        obs: Observation = batch["obs"]
        tokens, old_logp = batch["tokens"], batch["logp"]
        # item credit: slot k's target is its own reward term plus the shared bootstrapped future, so the
        # slots' targets average to the slate target and each slot's level values are its SID prefixes'
        per_slot = cfg.credit == "item" and "slot_rewards" in batch
        y = self.td_target(batch["slot_rewards"] if per_slot else batch["reward"], batch["next_obs"], batch["done"])
        state = self.net.encoder(obs, self.item_features)
        logp, entropy, values, chosen_logits = self._token_pass(state, tokens, obs)
        # critic: V_D -> y (per slot or per slate), V_l -> stop-grad V_{l+1}
        level_targets = torch.cat([values[..., 1:].detach(), values.new_zeros(values.shape[:-1] + (1,))], -1)
        level_targets[..., -1] = y if y.dim() == 2 else y.unsqueeze(-1)
        critic_loss = F.mse_loss(values, level_targets)
        # actor: PPO-clipped per-token surrogate
        adv = self.token_advantages(values, y, cfg.credit)
        if cfg.normalize_advantage:  # one positive scale for the batch keeps sum_l A_l = y - v_0 (scaled)
            adv = adv / (adv.std() + 1e-6)
        surrogate, _ = ppo_surrogate(logp, old_logp, adv, cfg.clip)  # clamped log-ratio, dual clip
        actor_loss = -surrogate.sum(-1).mean() - cfg.entropy * entropy.sum(-1).mean()
        loss = actor_loss + critic_loss
        supervision = click_loss = torch.zeros(())
        if cfg.supervision > 0 and "clicks" in batch:
            # per-item feedback, as HAC's supervision term uses it: the log-likelihood of the SIDs of the
            # items that were clicked (bounded: it cannot push any probability below zero)
            clicks = batch["clicks"].float()
            supervision = -(clicks * logp.sum(-1)).sum() / clicks.sum().clamp_min(1.0)
            loss = loss + cfg.supervision * supervision
        if cfg.click_loss > 0 and "clicks" in batch:
            # exposure-aware: every shown slot, clicked or skipped, in the state it was shown in. Each
            # level's logit of the chosen token is read as the click logit of the item behind it, so the
            # policy learns which branches this user will skip now (fatigue), not only what they like
            target = batch["clicks"].float().unsqueeze(-1).expand_as(chosen_logits)
            click_loss = F.binary_cross_entropy_with_logits(chosen_logits, target)
            loss = loss + cfg.click_loss * click_loss
        # every item's log pi against the simulator's ranking
        distill = self.distill_term(
            cfg.distill, obs, lambda rows, taught: self.item_log_probs(state[rows], taught), self.active
        )
        loss = loss + cfg.distill * distill
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
            "click_loss": float(click_loss.detach()),
            "distill": float(distill.detach()),
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
        restore_generator(self.generator, state["generator"])
        self.updates = int(state["updates"])


def index_to_tensor(index: SIDIndex) -> torch.Tensor:
    """A Semantic ID index as the bytes of its own versioned .npz file (uint8), so an agent checkpoint
    holds it in the index's format, checks included, and stays readable with ``weights_only``."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = index.save(Path(tmp) / "index.npz")
        return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8).clone()


def index_from_tensor(data: torch.Tensor) -> SemanticIDIndex:
    """The index saved by ``index_to_tensor`` (ArtifactError if it is corrupt or of another version)."""
    import tempfile
    from pathlib import Path

    from hsrl.sid.index import SemanticIDIndex

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.npz"
        path.write_bytes(data.cpu().numpy().tobytes())
        return SemanticIDIndex.load(path)

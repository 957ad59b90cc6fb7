"""GRPO: group-relative policy optimisation of HSRL's SID policy (the 2026 generative-recommender baseline).

Generative recommenders over Semantic IDs (OneRec's ECPO, MiniOneRec's GRPO with constrained sampling)
are fine-tuned by sampling a group of outputs per request from the current policy, scoring each with a
reward model, and pushing up the outputs that beat their group. Read top to bottom:

1. The policy is HSRL's, reused as it is: one ``HSRLAgent`` holds the state encoder, the
   ``HierarchicalPolicy``, the trie decoding (beam search for greedy slates, sampling without
   replacement through the trie's child counts), the teacher-forced token pass and the Semantic ID index.
   GRPO does not use its critic heads, target network, optimiser or loss: only its networks' actor part
   is trained, by the loss below.
2. Warm start (``agent.grpo.warm_start`` updates): the log-likelihood of the SIDs of the items the
   training users clicked in the LOGGED data (the training split's impressions, as SL learns from), the
   supervised pre-training every generative recommender starts from. At the end the reference policy is
   frozen: a copy of the policy that the KL term below holds the RL phase close to.
3. Each RL update takes the replay batch's states only (its slates, rewards and clicks are ignored), samples
   G slates per state from the current policy (constrained to valid SIDs by the trie, as ``explore``
   does), and scores each by its EXPECTED reward under the training simulator's click model: the clicks of
   a slate are independent Bernoulli draws with the simulator's probabilities (as ``SlateEnv.step`` draws
   them), and both rewards depend on the clicks through their count only, so E[r] is exact from the click
   count's distribution (``ExpectedReward``). Advantages are normalised within each group,
   A = (r - mean_G) / (std_G + eps), and one advantage is given to every token of the slate.
4. The loss, over ``epochs`` passes on the sampled group batch: PPO's clipped per-token ratio against the
   sampling policy (exactly 1 on the first pass: the old log-probabilities are that pass's own, detached),
   plus ``kl`` times the k3 estimate of KL(policy || reference) on the sampled tokens (zero while they
   agree), minus an entropy bonus. Log-probabilities are under the trie mask alone, as HSRL's learner
   computes them.

The reward model is the TRAINING simulator's click model, given to the agent by its registry factory
(``simulator_reward``, which refuses the true world and the judge); it is never saved, and ``act`` /
``explore`` do not need it, so a trained agent is evaluated in any environment. GRPO optimises the
immediate expected reward of one slate (no bootstrapped future), as OneRec and MiniOneRec do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hsrl.agents.base import ppo_surrogate
from hsrl.agents.hsrl import HSRLAgent, SIDAgent
from hsrl.agents.supervised import LoggedSlates
from hsrl.agents.world_model import ExpectedReward, click_count_pmf, simulator_reward
from hsrl.config import AgentConfig
from hsrl.io import restore_generator
from hsrl.simulator.observation import Observation

if TYPE_CHECKING:
    from hsrl.sid.protocols import SIDIndex

__all__ = ["ExpectedReward", "GRPOAgent", "click_count_pmf", "simulator_reward"]

EPS = 1e-6  # of the group normalisation (rewards and advantages are float64: rounding noise stays far below it)


# ---------------------------------------------------------------------- the agent
@dataclass
class Groups:
    """G sampled slates for each of B states ``obs``, flattened state-major (row b*G + g of ``repeated``
    is state ``rows[b*G + g]`` = b): items (B*G, K), tokens (B*G, K, D), their log pi at sampling time
    (B*G, K, D), expected rewards (B, G) and advantages (B, G)."""

    obs: Observation
    repeated: Observation
    rows: torch.Tensor
    items: torch.Tensor
    tokens: torch.Tensor
    sampled_logp: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor


class GRPOAgent(SIDAgent):
    """HSRL's SID policy fine-tuned by GRPO against the training simulator; see the module docstring.

    ``reward_model`` (an ``ExpectedReward``) and ``logs`` (the training users' logged slates) are for
    training only: a loaded agent acts without them, and ``update`` asks for them when they are needed.
    """

    name = "grpo"
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
        reward_model: ExpectedReward | None = None,
        logs: LoggedSlates | None = None,
    ) -> None:
        super().__init__(item_features, slate_size)
        self.config = config or AgentConfig()
        cfg = self.config.grpo
        if logs is not None and len(logs) == 0 and cfg.warm_start > 0:
            raise ValueError("the GRPO warm start needs logged impressions to learn from; none were given")
        self.profile_dim, self.history_length = int(profile_dim), int(history_length)
        self.replay_window = self.config.replay_window  # recent states: the current policy's state distribution
        args = (item_features, slate_size, index, profile_dim, history_length, self.config, seed)
        self.policy = HSRLAgent(*args)  # the SID policy, its decoding and its generator
        self.reference = HSRLAgent(*args)  # frozen copy of the policy once the warm start is over
        self.reference.net.load_state_dict(self.policy.net.state_dict())
        self.reference.net.requires_grad_(False).eval()
        self.reference.index = self.policy.index  # one index object: catalogue changes reach both
        critic = {id(p) for p in self.policy.net.policy.values.parameters()}  # HSRL's value heads: unused
        params = [p for p in self.policy.net.parameters() if id(p) not in critic]
        wd = self.config.weight_decay
        self.warm_optimizer = torch.optim.Adam(params, lr=cfg.warm_lr, weight_decay=wd)
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=wd)
        self.reward_model = reward_model
        self.logs = logs
        self.updates = 0
        self.frozen = False  # the reference was taken (the RL phase began)
        self.set_catalogue(item_features)

    # ------------------------------------------------------------------ catalogue and acting
    @property
    def index(self) -> SIDIndex:  # type: ignore[override]  # read-only: set_catalogue changes it
        return self.policy.index

    def set_catalogue(
        self, item_features: torch.Tensor, index: SIDIndex | None = None, active: torch.Tensor | None = None
    ) -> None:
        self.policy.set_catalogue(item_features, index, active)
        self.reference.set_catalogue(item_features, self.policy.index, self.policy.active)
        super().set_catalogue(item_features, self.policy.index, self.policy.active)

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy.net, "reference": self.reference.net}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"warm": self.warm_optimizer, "rl": self.optimizer}

    def train_mode(self, training: bool) -> None:
        self.policy.train_mode(training)  # the reference stays in eval mode

    def act(self, obs: Observation, greedy: bool = True) -> torch.Tensor:
        return self.policy.act(obs, greedy)

    def explore(self, obs: Observation) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A slate sampled through the trie; nothing else is stored (GRPO resamples at update time)."""
        return self.policy.explore(obs)[0], {}

    # ------------------------------------------------------------------ the GRPO pieces
    @staticmethod
    def group_advantages(rewards: torch.Tensor, eps: float = EPS) -> torch.Tensor:
        """(r - mean) / (std + eps) within each group (row) of rewards (B, G), std over the group itself;
        exactly 0 for a group whose slates all scored the same (no signal, whatever the rounding)."""
        mean = rewards.mean(-1, keepdim=True)
        adv = (rewards - mean) / (rewards.std(-1, correction=0, keepdim=True) + eps)
        same = rewards.amax(-1, keepdim=True) == rewards.amin(-1, keepdim=True)
        return adv.masked_fill(same, 0.0)

    @torch.no_grad()
    def sample_groups(self, obs: Observation) -> Groups:
        """G slates per state from the current policy, scored by the reward model, with their advantages."""
        if self.reward_model is None:
            raise ValueError(
                "this GRPO agent has no reward model (the training simulator's click model): build it with "
                "hsrl.build_agent('grpo', run, env=train_env), or set agent.reward_model = "
                "simulator_reward(train_env, RunDir(run).simulator)"
            )
        g = self.config.grpo.group
        b = obs.batch_size
        rows = torch.arange(b, device=obs.device).repeat_interleave(g)
        repeated = obs.index(rows)
        state = self.policy.net.encoder(obs, self.item_features)[rows]
        items, tokens, logp = self.policy._sample_slate(state, repeated)
        rewards = self.reward_model(obs, items.view(b, g, -1)).to(state.device, torch.float64)
        advantages = self.group_advantages(rewards).float()
        return Groups(obs, repeated, rows, items, tokens, logp, rewards, advantages)

    def _logp(self, agent: HSRLAgent, groups: Groups) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced per-token log pi (B*G, K, D) and entropies of ``agent``'s policy on the groups."""
        state = agent.net.encoder(groups.obs, self.item_features)[groups.rows]  # each state encoded once
        logp, entropy, _values, _chosen = agent._token_pass(state, groups.tokens, groups.repeated)
        return logp, entropy

    @torch.no_grad()
    def reference_logp(self, groups: Groups) -> torch.Tensor:
        return self._logp(self.reference, groups)[0]

    def policy_terms(
        self, groups: Groups, old_logp: torch.Tensor | None = None, ref_logp: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The loss and its parts on one pass over ``groups``. ``old_logp``: the sampling policy's
        per-token log-probabilities (None on the first pass: this pass's own, so every ratio is 1)."""
        cfg = self.config.grpo
        logp, entropy = self._logp(self.policy, groups)
        old = logp.detach() if old_logp is None else old_logp
        adv = groups.advantages.reshape(-1, 1, 1)
        surrogate, ratio = ppo_surrogate(logp, old, adv.expand_as(logp), cfg.clip, dual_clip=None)  # fresh samples
        ref = self.reference_logp(groups) if ref_logp is None else ref_logp
        log_r = (ref - logp).clamp(-20.0, 20.0)
        kl = log_r.exp() - log_r - 1.0  # k3 (unbiased on the policy's own samples): >= 0, 0 where they agree
        policy_loss = -surrogate.sum(-1).mean()
        loss = policy_loss + cfg.kl * kl.sum(-1).mean() - cfg.entropy * entropy.sum(-1).mean()
        return {"loss": loss, "policy_loss": policy_loss, "logp": logp, "ratio": ratio, "kl": kl, "entropy": entropy}

    def freeze_reference(self) -> None:
        """The reference policy := the policy now (the end of the warm start); the RL phase begins."""
        self.reference.net.load_state_dict(self.policy.net.state_dict())
        self.frozen = True

    # ------------------------------------------------------------------ learning
    def warm_step(self, n: int) -> dict[str, float]:
        """One supervised step: the SID log-likelihood of the clicked items of ``n`` logged slates."""
        if self.logs is None:
            raise ValueError(
                "this GRPO agent has no logged slates for its warm start (set agent.logs = "
                "LoggedSlates.from_dataset(...), or agent.grpo.warm_start=0)"
            )
        logs, dev = self.logs, self.item_features.device
        idx = torch.randint(len(logs), (n,), generator=self.policy.generator, device=dev)
        obs, slate, clicks = logs.obs.index(idx), logs.slate[idx], logs.clicks[idx]
        if logs.weight is not None:
            clicks = clicks * logs.weight[idx]
        self.policy.train_mode(True)
        state = self.policy.net.encoder(obs, self.item_features)
        logp = self.policy._token_pass(state, self.index.sid_of(slate).to(dev), obs)[0]
        loss = -(clicks * logp.sum(-1)).sum() / clicks.sum().clamp_min(1.0)
        self.warm_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.policy.net.parameters(), 1.0)
        self.warm_optimizer.step()
        return {"warm_nll": float(loss.detach())}

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        """A warm-start step for the first ``warm_start`` updates, a GRPO step on the batch's states after."""
        if self.updates < self.config.grpo.warm_start:
            record = self.warm_step(int(batch["obs"].batch_size))
        else:
            record = self.grpo_step(batch["obs"])
        self.updates += 1
        return record

    def grpo_step(self, obs: Observation) -> dict[str, float]:
        """Sample and score G slates per state, then ``epochs`` clipped steps on them."""
        cfg = self.config.grpo
        if obs.batch_size > cfg.states:  # a random subset: the replay batch is drawn at random
            obs = obs.index(slice(0, cfg.states))
        self.policy.train_mode(True)
        groups = self.sample_groups(obs)  # (a ValueError without a reward model, before anything changed)
        if not self.frozen:
            self.freeze_reference()
        ref = self.reference_logp(groups)
        old: torch.Tensor | None = None
        distill, policy = torch.zeros(()), self.policy
        for _ in range(cfg.epochs):
            terms = self.policy_terms(groups, old, ref)
            if old is None:
                old = terms["logp"].detach()
            loss = terms["loss"]
            distill = self.distill_term(  # the policy's items vs the simulator's ranking
                self.config.distill,
                obs,
                lambda _, taught: policy.item_log_probs(policy.net.encoder(taught, policy.item_features), taught),
                policy.active,
            )
            loss = loss + self.config.distill * distill
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.policy.net.parameters(), 1.0)
            self.optimizer.step()
        ratio = terms["ratio"].detach()
        return {
            "reward": float(groups.rewards.mean()),
            "group_std": float(groups.rewards.std(-1, correction=0).mean()),
            "policy_loss": float(terms["policy_loss"].detach()),
            "kl": float(terms["kl"].detach().sum(-1).mean()),
            "entropy": float(terms["entropy"].detach().sum(-1).mean()),
            "clip_frac": float(((ratio - 1).abs() > cfg.clip).float().mean()),
            "distill": float(distill.detach()),
        }

    # ------------------------------------------------------------------ persistence (SIDAgent's inputs)
    def state_dict(self) -> dict[str, Any]:
        """Policy, reference, both optimisers, the sampling generator and the phase; not the reward model
        nor the logs (training inputs, given again by the factory when training resumes)."""
        return {
            "config": self.config.model_dump(),
            "vocab_sizes": self.policy.net.policy.vocab_sizes,
            "modules": {k: m.state_dict() for k, m in self.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
            "generator": self.policy.generator.get_state(),
            "updates": self.updates,
            "frozen": self.frozen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["vocab_sizes"]) != self.policy.net.policy.vocab_sizes:
            raise ValueError(
                f"checkpoint SID vocab {state['vocab_sizes']} vs index {self.policy.net.policy.vocab_sizes}"
            )
        for k, m in self.modules().items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        restore_generator(self.policy.generator, state["generator"])
        self.updates = int(state["updates"])
        self.frozen = bool(state["frozen"])

"""A2C-item: advantage actor-critic with a softmax over item ids, a FIXED action space (DESIGN §8).

The actor head has one logit per item id known at construction (``width``); a slate is K ids drawn
without replacement from the softmax over the active ones (Gumbel top-K; the greedy slate is the
top-K logits), and log pi(slate | s) is the sum of the K items' log-softmax. Items added to the
catalogue later have no logit, so this agent can never recommend them: that is the point of the
baseline (it is what a policy over item ids cannot do, and what HSRL's SIDs can).

Learning is HSRL's (hsrl.py, ``HSRLAgent.update``) minus the hierarchy, so that the comparison isolates
the action space. Shared with HSRL: the same encoder; a state-value critic V(s) with a soft-updated
target network and TD target y = r + gamma * (1 - done) * V_target(s'); the advantage y - V(s), divided
by its batch std; an entropy bonus; HSRL's replay window; per-item importance ratios (log-ratio clamped
to [-20, 20]) clipped as in PPO with HSRL's dual clip (a negative advantage's surrogate is bounded
below by 3 * A), because the shared loop replays transitions collected by older policies; and HSRL's
two per-item feedback terms, with their defaults (``agent.a2c.click_loss`` / ``supervision``, 0 = off):
the click loss, the BCE of every shown slot's click (skipped slots included) on that item's logit (HSRL
reads the chosen token's logit at each SID level), and the supervision, the log-likelihood of the
clicked items on the replayed slates (HSRL: of their SIDs), normalised by the number of clicks.
Not shared: the action space itself (ids, not SID tokens), the multi-level critic and HSRL's per-item
credit (``agent.credit: item``, per-slot TD targets), so every slot of a slate here gets the slate's
advantage, and HSRL's exposure features (they are per SID branch).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from hsrl.agents.base import NEG, ppo_surrogate, sample_without_replacement, soft_update
from hsrl.agents.encoder_agent import EncoderAgent, frozen_copy, mlp
from hsrl.simulator.observation import Observation


class A2CItemAgent(EncoderAgent):
    """Softmax over the item ids seen at construction; state-value critic."""

    name = "a2c"

    def build(self) -> None:
        cfg, dim = self.config, self.config.dim
        self.width = self.n_items  # fixed: ids added later have no logit
        self.replay_window = cfg.replay_window  # on-policy-ish: recent transitions only, as HSRL
        self.actor = mlp(dim, dim, self.width).to(self.device)
        self.critic = mlp(dim, dim, 1).to(self.device)
        self.target_encoder = frozen_copy(self.encoder)
        self.target_critic = frozen_copy(self.critic)
        own = cfg.a2c
        self.optimizer = torch.optim.Adam(
            [
                {"params": [*self.encoder.parameters(), *self.actor.parameters()], "lr": own.actor_lr},
                {"params": list(self.critic.parameters()), "lr": own.critic_lr},
            ],
            weight_decay=cfg.weight_decay,
        )

    def modules(self):
        return {
            "encoder": self.encoder,
            "actor": self.actor,
            "critic": self.critic,
            "target_encoder": self.target_encoder,
            "target_critic": self.target_critic,
        }

    def optimizers(self):
        return {"optimizer": self.optimizer}

    def checkpoint_inputs(self) -> dict[str, Any]:
        return {**super().checkpoint_inputs(), "width": self.width}

    @classmethod
    def _construct(cls, features: torch.Tensor, slate_size: int, inputs: dict[str, Any], config: Any) -> A2CItemAgent:
        """The head as wide as the catalogue it was built with; items added since are the catalogue's only."""
        return super()._construct(features[: int(inputs["width"])], slate_size, inputs, config)  # type: ignore[return-value]

    def recommendable(self) -> torch.Tensor:
        """(width,) True for ids that are both known to the head and active now."""
        known = torch.zeros(self.width, dtype=torch.bool, device=self.device)
        n = min(self.width, self.n_items)
        known[:n] = self.active[:n]
        return known

    def log_probs(self, state: torch.Tensor) -> torch.Tensor:
        """log-softmax over the recommendable ids (B, width); others at about NEG."""
        return self.actor(state).masked_fill(~self.recommendable(), NEG).log_softmax(-1)

    def act(self, obs: Observation, greedy: bool = True) -> torch.Tensor:
        with self.evaluating():
            logp = self.log_probs(self.encoder(obs, self.item_features))
            return logp.topk(self.slate_size, dim=1).indices if greedy else self._sample(logp)

    def _sample(self, logp: torch.Tensor) -> torch.Tensor:
        return sample_without_replacement(logp, self.slate_size, self.generator)

    def explore(self, obs: Observation) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with self.evaluating():
            logp = self.log_probs(self.encoder(obs, self.item_features))
            slate = self._sample(logp)
            return slate, {"logp": logp.gather(1, slate)}

    def td_target(self, reward: torch.Tensor, next_obs: Observation, done: torch.Tensor) -> torch.Tensor:
        """y = r + gamma * (1 - done) * V_target(s'): never bootstrap across users."""
        with torch.no_grad():
            v = self.target_critic(self.target_encoder(next_obs, self.item_features)).squeeze(-1)
        return reward + self.config.gamma * (1.0 - done.float()) * v

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Every term of one update on a replayed batch (with gradients); ``loss`` is what is minimised."""
        cfg, own = self.config, self.config.a2c
        y = self.td_target(batch["reward"], batch["next_obs"], batch["done"])
        state = self.encoder(batch["obs"], self.item_features)
        value = self.critic(state).squeeze(-1)
        raw = self.actor(state)  # (B, width) unmasked item logits
        valid = self.recommendable()
        logp_all = raw.masked_fill(~valid, NEG).log_softmax(-1)
        slate = batch["slate"]
        logp = logp_all.gather(1, slate)  # (B, K)
        adv = (y - value).detach()
        if cfg.normalize_advantage:
            adv = adv / (adv.std() + 1e-6)
        surrogate, _ = ppo_surrogate(logp, batch["logp"], adv[:, None].expand_as(logp), own.clip)
        entropy = -(logp_all.exp() * logp_all.masked_fill(~valid, 0.0)).sum(-1)
        actor_loss = -surrogate.sum(-1).mean() - own.entropy * entropy.mean()
        critic_loss = F.mse_loss(value, y)
        loss = actor_loss + critic_loss
        supervision = click_loss = torch.zeros((), device=self.device)
        if own.supervision > 0 and "clicks" in batch:
            # HSRL's supervision: the log-likelihood of the clicked items (there: of their SIDs), per click.
            # A clicked item the head can no longer recommend (withdrawn since) has no likelihood to raise.
            clicks = batch["clicks"].float() * valid[slate].float()
            supervision = -(clicks * logp).sum() / clicks.sum().clamp_min(1.0)
            loss = loss + own.supervision * supervision
        if own.click_loss > 0 and "clicks" in batch:
            # HSRL's exposure-aware click loss: every shown slot, clicked or skipped, in the state it was shown
            # in; the item's (unmasked) logit is read as its click logit, as HSRL reads its tokens' logits
            click_loss = F.binary_cross_entropy_with_logits(raw.gather(1, slate), batch["clicks"].float())
            loss = loss + own.click_loss * click_loss
        # the item softmax vs the simulator's ranking of the valid items
        distill = self.distill_term(cfg.distill, batch["obs"], lambda rows, _: logp_all[rows], valid)
        loss = loss + cfg.distill * distill
        return {
            "loss": loss,
            "actor_loss": actor_loss,
            "critic_loss": critic_loss,
            "entropy": entropy.mean(),
            "supervision": supervision,
            "click_loss": click_loss,
            "distill": distill,
            "value": value.mean(),
        }

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        self.train_mode(True)
        terms = self.losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], 1.0)
        self.optimizer.step()
        soft_update(self.target_encoder, self.encoder, self.config.tau)
        soft_update(self.target_critic, self.critic, self.config.tau)
        self.updates += 1
        return {k: float(v.detach()) for k, v in terms.items() if k != "loss"}

"""DDPG over the item-embedding space (DESIGN §8; Lillicrap et al. 2016 as used for slates in KuaiSim).

The actor maps the state to an action vector a = mu(s) / |mu(s)| in the encoder's item space; the
slate is the top-K active items by <a, v_i> (v_i from the item's features, so new items are scored
like any other). Only the direction of a matters to a top-K by dot product, so the action lives on the
unit sphere: a tanh box instead let the actor saturate into one corner, the same slate for everyone
(tuning, synthetic default: no better than random).
Exploration adds Gaussian noise N(0, sigma^2 / d I) to a and projects back onto the sphere, so sigma
(``agent.ddpg.noise_size``) is the RMS length of the noise vector and turns a by about atan(sigma) whatever
the dimension d (per-coordinate sigma on a unit vector would turn it by ~atan(sigma sqrt(d)): 29 degrees
for 0.1 at d = 32, 14 at d = 8, 48 at d = 128); the explored action vector is stored in the replay
buffer. The critic Q(s, a) = MLP([s, a]) + <w(s), a> (the bilinear term gives every user its own
preferred direction, as a dot-product recommender would; with the MLP alone the actor collapsed onto
one direction for all users in tuning) is trained on
y = r + gamma * (1 - done) * Q_target(s', mu_target(s')), target networks soft-updated by tau. TD3
and HAC use the same critic architecture.

Representation: the shared state encoder is trained by the critic's TD loss and the actor reads a
detached state (the SAC-AE / DrQ convention), so the actor's -Q objective cannot distort the
representation the critic relies on. ``TD3Agent`` (td3.py) adds twin critics, target policy
smoothing and delayed actor updates through the class attributes below.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hsrl.agents.base import NEG, soft_update
from hsrl.agents.encoder_agent import EncoderAgent, frozen_copy, mlp
from hsrl.simulator.observation import Observation


class Critic(nn.Module):
    """Q(s, a) = MLP([s, a]) + <w(s), a>: a general critic plus a bilinear state-action term."""

    def __init__(self, dim: int, action_dim: int) -> None:
        super().__init__()
        self.general = mlp(dim + action_dim, dim, 1)
        self.w = mlp(dim, dim, action_dim)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.general(torch.cat([state, action], -1)).squeeze(-1) + (self.w(state) * action).sum(-1)


class InverseTemperature(nn.Module):
    """Item scores standardised per user over the active items, times a learned positive factor: for
    ``distill``'s softmax only (order-preserving, so the top-K slate ignores it)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(()))

    def forward(self, scores: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        on = scores[:, active]
        z = (scores - on.mean(-1, keepdim=True)) / (on.std(-1, keepdim=True) + 1e-6)
        return (z * self.log_scale.exp()).masked_fill(~active, NEG)


class DDPGAgent(EncoderAgent):
    """Deterministic actor in item space, top-K by dot product, Q(s, a) critic."""

    name = "ddpg"
    n_critics = 1
    # the unit action's dot products are small and bounded, so their softmax stayed near uniform and
    # distill's cross-entropy barely moved (60 items, 40 updates on one batch: 4.13 -> 4.08, log 60 = 4.09);
    # standardised scores with a learned inverse temperature let it sharpen. HAC's scorer is not
    # normalised and learns its own scale.
    distill_temperature_learned = True

    def build(self) -> None:
        cfg, dim = self.config, self.config.dim
        self.actor = mlp(dim, dim, self.action_dim).to(self.device)
        learned = cfg.distill > 0 and self.distill_temperature_learned
        self.inverse_temperature = InverseTemperature().to(self.device) if learned else None
        self.critics = nn.ModuleList(Critic(dim, self.critic_action_dim) for _ in range(self.n_critics))
        self.critics.to(self.device)
        self.target_encoder = frozen_copy(self.encoder)
        self.target_actor = frozen_copy(self.actor)
        self.target_critics = frozen_copy(self.critics)
        lr_actor, lr_critic = self.learning_rates()
        self.critic_optimizer = torch.optim.Adam(
            [*self.encoder.parameters(), *self.critics.parameters()], lr=lr_critic, weight_decay=cfg.weight_decay
        )
        self.actor_optimizer = torch.optim.Adam(self.actor_parameters(), lr=lr_actor, weight_decay=cfg.weight_decay)

    # ------------------------------------------------------------------ knobs for subclasses
    @property
    def own(self) -> Any:
        """This agent's own config section (agent.ddpg, agent.td3 or agent.hac)."""
        return getattr(self.config, self.name)

    @property
    def action_dim(self) -> int:
        return self.config.dim

    @property
    def critic_action_dim(self) -> int:
        return self.config.dim

    @property
    def exploration_noise(self) -> float:
        return self.own.noise_size

    @property
    def policy_delay(self) -> int:
        return 1

    def learning_rates(self) -> tuple[float, float]:
        return self.own.actor_lr, self.own.critic_lr

    def actor_parameters(self) -> list[nn.Parameter]:
        extra = [] if self.inverse_temperature is None else list(self.inverse_temperature.parameters())
        return [*self.actor.parameters(), *extra]

    def modules(self):
        parts = {
            "encoder": self.encoder,
            "actor": self.actor,
            "critics": self.critics,
            "target_encoder": self.target_encoder,
            "target_actor": self.target_actor,
            "target_critics": self.target_critics,
        }
        return parts if self.inverse_temperature is None else {**parts, "inverse_temperature": self.inverse_temperature}

    def optimizers(self):
        return {"critic": self.critic_optimizer, "actor": self.actor_optimizer}

    # ------------------------------------------------------------------ acting
    def action(self, state: torch.Tensor, actor: nn.Module | None = None) -> torch.Tensor:
        """The deterministic action vector: a unit direction (top-K by dot product sees nothing else)."""
        return F.normalize((actor or self.actor)(state), dim=-1)

    def perturb(self, action: torch.Tensor, std: float | None = None, clip: float | None = None) -> torch.Tensor:
        """Gaussian noise on the unit action vector (optionally clipped), projected back onto the sphere.

        ``std`` and ``clip`` are sizes of the whole perturbation, not per coordinate: each coordinate gets
        std / sqrt(d) and is clipped at clip / sqrt(d), so the noise vector's RMS length is ``std`` and
        the angle it turns the action by, about atan(std), is the same in 8, 32 or 128 dimensions."""
        scale = action.shape[-1] ** -0.5
        noise = self.gaussian(action, (self.exploration_noise if std is None else std) * scale)
        if clip is not None:
            noise = noise.clamp(-clip * scale, clip * scale)
        return F.normalize(action + noise, dim=-1)

    def slate_of(self, action: torch.Tensor) -> torch.Tensor:
        return self.score_items(action).topk(self.slate_size, dim=1).indices

    def act(self, obs: Observation, greedy: bool = True) -> torch.Tensor:
        with self.evaluating():
            action = self.action(self.encoder(obs, self.item_features))
            return self.slate_of(action if greedy else self.perturb(action))

    def explore(self, obs: Observation) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with self.evaluating():
            action = self.perturb(self.action(self.encoder(obs, self.item_features)))
            return self.slate_of(action), {"action": action}

    # ------------------------------------------------------------------ learning
    def q_values(self, critics: nn.ModuleList, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """(n_critics, B) Q estimates."""
        return torch.stack([c(state, action) for c in critics])

    def target_action(self, next_state: torch.Tensor) -> torch.Tensor:
        return self.action(next_state, self.target_actor)

    def td_target(self, reward: torch.Tensor, next_obs: Observation, done: torch.Tensor) -> torch.Tensor:
        """y = r + gamma * (1 - done) * min_j Q_target_j(s', a'): never bootstrap across users."""
        with torch.no_grad():
            next_state = self.target_encoder(next_obs, self.item_features)
            q = self.q_values(self.target_critics, next_state, self.target_action(next_state)).min(0).values
        return reward + self.config.gamma * (1.0 - done.float()) * q

    def critic_action(self, batch: dict[str, Any]) -> torch.Tensor:
        """What the critic is trained on for a stored transition: the stored action vector."""
        return batch["action"]

    def actor_loss(self, state: torch.Tensor, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        action = self.action(state)
        q = self.q_values(self.critics[:1], state, action)[0]
        # the action's item-score softmax vs the simulator's ranking
        coef = self.config.distill
        distill = self.distill_term(coef, batch["obs"], lambda rows, _: self.item_log_probs(action[rows]), self.active)
        return -q.mean() + coef * distill, {"distill": float(distill.detach())}

    def item_log_probs(self, action: torch.Tensor) -> torch.Tensor:
        """log softmax over the active items of the action's scores (B, N): what ``distill`` trains."""
        scores = self.score_items(action)  # inactive items are scored NEG
        if self.inverse_temperature is not None:
            scores = self.inverse_temperature(scores, self.active)
        return scores.log_softmax(-1)

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        self.train_mode(True)
        y = self.td_target(batch["reward"], batch["next_obs"], batch["done"])
        state = self.encoder(batch["obs"], self.item_features)
        q = self.q_values(self.critics, state, self.critic_action(batch))
        critic_loss = F.mse_loss(q, y.expand_as(q), reduction="none").mean(1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()
        out = {"critic_loss": float(critic_loss.detach()), "q": float(q.detach()[0].mean())}
        self.updates += 1
        if self.updates % self.policy_delay == 0:
            actor_loss, extra = self.actor_loss(state.detach(), batch)
            self.actor_optimizer.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_optimizer.step()
            tau = self.config.tau
            soft_update(self.target_encoder, self.encoder, tau)
            soft_update(self.target_actor, self.actor, tau)
            soft_update(self.target_critics, self.critics, tau)
            out.update({"actor_loss": float(actor_loss.detach()), **extra})
        return out

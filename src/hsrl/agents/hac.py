"""HAC: Hyper-Actor Critic (Liu et al., WWW'23, "Exploration and Regularization of the Latent Action
Space in Recommendation"), on the shared encoder and training loop (DESIGN §8).

Facts used, from the paper and the authors' public code (CharlieMat/Hyper-Actor-Critic-for-
Recommendation, and its port in KuaiSim: model/agent/HAC.py, model/policy/
OneStageHyperPolicy_with_DotScore.py, train_hac.sh):

- Hyper-actor: the state maps to a hyper-action Z = (w, b), the parameters of a linear item scorer
  (kernel dim + 1); the item kernels are the same item encoder the state encoder uses for history items.
- Effect-action: the top-K items by <w, kernel_i> + b; exploration perturbs Z (policy_noise_var 0.1;
  the code draws it uniform in [0, 0.1), a one-sided shift: we use zero-mean Gaussian noise instead).
- Critic on the effect-action's latent: Q(s, Z_hat) with Z_hat = mean of the kernels of the K chosen
  items (the "inverse" A -> Z by pooling), trained on y = r + gamma * mask * Q_target(s', Z_target(s'))
  with the target actor's hyper-action; here mask = (1 - done) (DESIGN §12).
- Actor: maximise Q(s, Z(s)) (DDPG-style).
- Alignment ("hyper-actor loss"): hyper_actor_coef * MSE(Z_hat(topK(Z(s))), Z(s)), through both the
  actor and the item kernels; default coefficient 0.1.
- Supervision ("behavior loss"): binary cross-entropy of sigmoid(<w, kernel_i> + b) on the user's
  clicks of the exposed items, as its own Adam step (behavior_lr 1e-4, the script also tries 0 and 1e-5)
  over the actor, encoders included.
- Defaults from the scripts: gamma 0.9, tau (target_mitigate_coef) 0.01, actor lr 1e-4, critic lr 1e-3,
  weight decay 1e-5, batch 64, 32 users per step.

Here, as for DDPG (ddpg.py, whose critic architecture HAC shares), the state encoder is trained by the
critic (and by the supervision step) and the actor reads a detached state. The per-slot clicks come
from the replay buffer's ``clicks`` field. Tuned on the synthetic default: behavior_lr 1e-3 (1e-4
learned markedly less in 1500 steps); the other defaults are the scripts'.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hsrl.agents.ddpg import DDPGAgent


class HACAgent(DDPGAgent):
    name = "hac"

    distill_temperature_learned = False  # its scorer is not normalised: it learns its own scale

    def build(self) -> None:
        super().build()
        cfg = self.config
        self.behavior_optimizer = torch.optim.Adam(
            [*self.encoder.parameters(), *self.actor.parameters()],
            lr=max(cfg.hac.behavior_lr, 1e-12),
            weight_decay=cfg.weight_decay,
        )

    @property
    def action_dim(self) -> int:
        return self.config.dim + 1  # scorer weights and bias

    @property
    def exploration_noise(self) -> float:
        return self.own.noise

    def learning_rates(self) -> tuple[float, float]:
        return self.own.actor_lr, self.own.critic_lr

    def actor_parameters(self) -> list[nn.Parameter]:
        """The alignment loss moves the item kernels too."""
        return [*self.actor.parameters(), *self.encoder.item_map.parameters()]

    def optimizers(self):
        return {**super().optimizers(), "behavior": self.behavior_optimizer}

    # ------------------------------------------------------------------ hyper- and effect-action
    def action(self, state: torch.Tensor, actor: nn.Module | None = None) -> torch.Tensor:
        return (actor or self.actor)(state)

    def perturb(self, action: torch.Tensor, std: float | None = None, clip: float | None = None) -> torch.Tensor:
        """Gaussian noise on the hyper-action, unprojected: it is a scorer (weights and bias), not a point
        on the sphere; HAC has no target smoothing, so ``clip`` is never asked for.

        Per coordinate, as the authors' code draws it, and not divided by sqrt(d) as DDPG's (ddpg.py): DDPG's
        unit action has coordinates of size 1/sqrt(d) by construction, while the scale of Z is learned (the
        alignment loss pulls it to the item kernels, the supervision step to click log-odds), so how far a
        given noise turns the scorer depends on what it learned, not on d alone; no scaling is clearly
        right, and this one is the paper's."""
        return action + self.gaussian(action, self.exploration_noise if std is None else std)

    def slate_of(self, action: torch.Tensor) -> torch.Tensor:
        """Effect-action: top-K by the hyper-action's linear scorer (the bias does not change the order)."""
        return self.score_items(action[:, :-1]).topk(self.slate_size, dim=1).indices

    def kernels(self, items: torch.Tensor) -> torch.Tensor:
        return self.encoder.item_vectors(self.item_features[items])

    def infer_hyper_action(self, slate: torch.Tensor) -> torch.Tensor:
        """Z_hat: the effect-action mapped back to the latent space (mean kernel of the chosen items)."""
        return self.kernels(slate).mean(1)

    # ------------------------------------------------------------------ learning
    def critic_action(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.infer_hyper_action(batch["slate"])

    def target_action(self, next_state: torch.Tensor) -> torch.Tensor:
        return self.action(next_state, self.target_actor)[:, :-1]

    def actor_loss(self, state: torch.Tensor, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        z = self.action(state)
        q = self.q_values(self.critics, state, z[:, :-1])[0]
        with torch.no_grad():
            effect = self.slate_of(z)
        align = F.mse_loss(self.infer_hyper_action(effect), z[:, :-1])
        # the hyper-action's scorer vs the simulator's ranking
        coef = self.config.distill
        distill = self.distill_term(coef, batch["obs"], lambda rows, _: self.item_log_probs(z[rows, :-1]), self.active)
        loss = -q.mean() + self.config.hac.hyper_coef * align + coef * distill
        return loss, {"hyper_actor_loss": float(align.detach()), "distill": float(distill.detach())}

    def behavior_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Supervision: BCE of the scorer's logits of the exposed items against their clicks."""
        z = self.action(self.encoder(batch["obs"], self.item_features))
        logits = (self.kernels(batch["slate"]) * z[:, None, :-1]).sum(-1) + z[:, -1:]
        return F.binary_cross_entropy_with_logits(logits, batch["clicks"].float())

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        out = super().update(batch)
        if self.config.hac.behavior_lr > 0:
            loss = self.behavior_loss(batch)
            self.behavior_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.behavior_optimizer.step()
            out["behavior_loss"] = float(loss.detach())
        return out

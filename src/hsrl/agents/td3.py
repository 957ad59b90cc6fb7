"""TD3 over the item-embedding space (DESIGN §8; Fujimoto et al. 2018).

DDPG (ddpg.py) plus the three TD3 fixes: twin critics with the minimum of the two target critics in
the TD target (against over-estimation), target policy smoothing (clipped Gaussian noise on the target
action, so the target does not exploit sharp peaks of Q), and delayed actor and target updates (every
``agent.td3.policy_delay`` critic updates). Smoothing noise is drawn and clipped per coordinate, then
projected back onto the unit sphere like the exploration noise (ddpg.py); as there, ``target_noise_size`` and
``noise_clip_size`` are sizes of the whole perturbation (per coordinate: value / sqrt(d)), so they turn the
target action by the same angle in any dimension. Delay 2 as in the paper.
"""

from __future__ import annotations

import torch

from hsrl.agents.ddpg import DDPGAgent


class TD3Agent(DDPGAgent):
    name = "td3"
    n_critics = 2

    @property
    def policy_delay(self) -> int:
        return self.own.policy_delay

    def target_action(self, next_state: torch.Tensor) -> torch.Tensor:
        own = self.own
        return self.perturb(self.action(next_state, self.target_actor), own.target_noise_size, own.noise_clip_size)

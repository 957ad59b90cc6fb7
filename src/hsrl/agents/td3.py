"""TD3 over the item-embedding space (DESIGN §8; Fujimoto et al. 2018).

DDPG (ddpg.py) plus the three TD3 fixes: twin critics with the minimum of the two target critics in
the TD target (against over-estimation), target policy smoothing (clipped Gaussian noise on the target
action, so the target does not exploit sharp peaks of Q), and delayed actor and target updates (every
``td3_policy_delay`` critic updates). Smoothing noise is per dimension, clipped, then projected back
onto the unit sphere like the exploration noise (ddpg.py); delay 2 as in the paper.
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
        return self.perturb(self.action(next_state, self.target_actor), own.target_noise, own.noise_clip)

"""Slate rewards and the reward ceiling that the leave ("temper") rule allows (DESIGN §5).

A reward function maps the clicks of a batch of slates (B, K), 0/1 floats, to one reward per user
(B,). The temper rule then ends a session: temper starts at T0, each step it drops by (1 − r)·K + 1,
and the user leaves once it falls below 1; so a better slate both pays more and keeps the user longer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

RewardFn = Callable[[torch.Tensor], torch.Tensor]


def item_terms(clicks: torch.Tensor, click_cost: float = 0.1) -> torch.Tensor:
    """click_k − cost·(1 − click_k) per slot (B, K): a slot that is not clicked costs ``click_cost``."""
    return clicks - click_cost * (1.0 - clicks)


def mean_with_cost(clicks: torch.Tensor, click_cost: float = 0.1) -> torch.Tensor:
    """r = mean_k(click_k − cost·(1 − click_k))."""
    return item_terms(clicks, click_cost).mean(dim=-1)


def sweet_point(clicks: torch.Tensor, click_cost: float = 0.1, target: float = 0.9) -> torch.Tensor:
    """r' = 1 − |r − target| on top of ``mean_with_cost`` (the RL4RS setting: too many clicks is no better)."""
    return 1.0 - (mean_with_cost(clicks, click_cost) - target).abs()


REWARDS: dict[str, Callable[..., torch.Tensor]] = {"mean_with_cost": mean_with_cost, "sweet_point": sweet_point}


def make_reward(name: str, click_cost: float = 0.1, target: float = 0.9) -> RewardFn:
    """The named reward with its parameters bound; unknown names are a clear ValueError."""
    if name == "mean_with_cost":
        return lambda clicks: mean_with_cost(clicks, click_cost)
    if name == "sweet_point":
        return lambda clicks: sweet_point(clicks, click_cost, target)
    raise ValueError(f"unknown reward '{name}' (expected one of: {', '.join(REWARDS)})")


def slot_rewards(name: str, clicks: torch.Tensor, click_cost: float = 0.1, target: float = 0.9) -> torch.Tensor:
    """Per-slot terms (B, K) whose mean over slots is the slate reward: item-level credit (DESIGN §7).

    ``mean_with_cost`` is a mean of per-item terms already. ``sweet_point`` is not: each slot gets the
    slate reward plus its click's deviation from the slate's mean, times the local slope of the reward
    (+ below the target, - above it), so the slots still average to the slate reward.
    """
    terms = item_terms(clicks, click_cost)
    if name == "mean_with_cost":
        return terms
    if name == "sweet_point":
        mean = terms.mean(-1, keepdim=True)
        slope = torch.where(mean < target, 1.0, -1.0)
        return 1.0 - (mean - target).abs() + slope * (terms - mean)
    raise ValueError(f"unknown reward '{name}' (expected one of: {', '.join(REWARDS)})")


def make_slot_reward(name: str, click_cost: float = 0.1, target: float = 0.9) -> RewardFn | None:
    """``slot_rewards`` of the named reward with its parameters bound; None for a reward not in REWARDS
    (a custom function has no known per-slot decomposition)."""
    if name not in REWARDS:
        return None
    return lambda clicks: slot_rewards(name, clicks, click_cost, target)


def temper_drop(reward: torch.Tensor | float, slate_size: int) -> torch.Tensor | float:
    """How much one step with reward ``reward`` lowers the user's temper."""
    return (1.0 - reward) * slate_size + 1.0


def session_depth(step_reward: float, slate_size: int, temper0: float, max_steps: int = 100_000) -> int:
    """Steps a user stays when every step pays ``step_reward`` (the temper rule simulated exactly)."""
    temper, steps = float(temper0), 0
    drop = float(temper_drop(step_reward, slate_size))
    if drop <= 0:
        raise ValueError(f"a step reward of {step_reward} never lowers the temper: sessions would never end")
    while True:
        temper -= drop
        steps += 1
        if temper < 1.0 or steps >= max_steps:
            return steps


def reward_ceiling(reward: RewardFn, slate_size: int, temper0: float) -> dict[str, float]:
    """Best total reward and its depth, over slates with c = 0..K clicks repeated every step.

    Since the temper drop falls as the reward rises, the click count with the highest step reward also
    gives the longest session (for non-negative rewards), so the best constant count is the optimum.
    """
    k = slate_size
    clicks = (torch.arange(k).unsqueeze(0) < torch.arange(k + 1).unsqueeze(1)).double()  # row c: c clicks
    step_rewards = reward(clicks).tolist()
    best: dict[str, float] | None = None
    for c, r in enumerate(step_rewards):
        depth = session_depth(r, k, temper0)
        total = depth * r
        if best is None or total > best["total_reward"] + 1e-12:
            best = {"total_reward": total, "depth": float(depth), "clicks_per_slate": float(c), "step_reward": r}
    assert best is not None
    return best

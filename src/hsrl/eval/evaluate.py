"""Score an agent in an environment: episodic return, depth, clicks, coverage, diversity (DESIGN §9).

Episodes are counted without length bias: the first ``episodes`` episodes to *start* are followed
until every one of them has finished (stopping at the N-th *finished* episode would over-represent
short sessions). Every one of them counts.
"""

from __future__ import annotations

from typing import Any

import torch

from hsrl.agents.base import Agent
from hsrl.eval.metrics import intra_list_diversity

METRICS = ("total_reward", "depth", "avg_reward", "click_rate", "coverage", "diversity")
NEW_ITEM_METRICS = ("new_slot_share", "new_click_share")  # with ``new_items``: what the policy did with them
PER_EPISODE = ("returns", "depths", "clicks")


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The scalar metrics of an ``evaluate`` result, without the per-episode lists."""
    return {k: v for k, v in result.items() if k not in PER_EPISODE}


@torch.no_grad()
def evaluate(
    agent: Agent,
    env: Any,
    episodes: int,
    greedy: bool = True,
    max_steps: int = 100_000,
    new_items: torch.Tensor | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Run ``agent`` in ``env`` until its first ``episodes`` episodes have finished; return metrics.

    ``new_items`` (N,) bool marks items added to the catalogue after training: the result then also
    holds the share of shown slots and of clicks that went to them (``NEW_ITEM_METRICS``). ``seed``
    reseeds the environment first, so two evaluations in one environment meet the same users.
    """
    agent.train_mode(False)
    obs = env.reset(seed)
    b = obs.batch_size
    episode_id = torch.arange(b)  # id of the episode each row is playing; ids >= episodes are ignored
    next_id = b
    ret = torch.zeros(b)
    depth = torch.zeros(b, dtype=torch.long)
    ep_clicks = torch.zeros(b)
    returns, depths, episode_clicks = [], [], []
    clicks_total = shown_total = new_shown = new_clicked = 0.0
    is_new = None if new_items is None else new_items.to(torch.bool).cpu()
    shown = torch.zeros(env.n_items, dtype=torch.bool)
    slates = []
    steps = 0
    while len(returns) < episodes and steps < max_steps:
        slate = agent.act(obs, greedy=greedy)
        obs, reward, done, info = env.step(slate)
        counted = (episode_id < episodes).to(reward.device)
        clicks = info["clicks"]
        clicks_total += float(clicks[counted].sum())
        shown_total += float(counted.sum()) * slate.shape[1]
        shown[slate[counted].flatten().cpu()] = True
        slates.append(slate[counted].cpu())
        if is_new is not None:
            fresh = is_new[slate.cpu()] & counted.cpu()[:, None]
            new_shown += float(fresh.sum())
            new_clicked += float((clicks.cpu() * fresh).sum())
        ret += reward.cpu() * counted.cpu()
        depth += counted.cpu().long()
        ep_clicks += clicks.sum(1).cpu() * counted.cpu()
        for row in torch.nonzero(done.cpu()).flatten().tolist():
            if episode_id[row] < episodes:
                returns.append(float(ret[row]))
                depths.append(int(depth[row]))
                episode_clicks.append(float(ep_clicks[row]))
            episode_id[row] = next_id
            next_id += 1
            ret[row] = 0.0
            depth[row] = 0
            ep_clicks[row] = 0.0
        steps += 1
    all_slates = torch.cat(slates) if slates else torch.zeros(0, env.slate_size, dtype=torch.long)
    total_steps = max(sum(depths), 1)
    n_active = int(getattr(agent, "active", torch.ones(env.n_items, dtype=torch.bool)).sum())
    extra = {}
    if is_new is not None:
        extra = {"new_slot_share": new_shown / max(shown_total, 1.0), "new_click_share": new_clicked / max(clicks_total, 1.0)}
    return extra | {
        "episodes": len(returns),
        "total_reward": sum(returns) / max(len(returns), 1),
        "depth": sum(depths) / max(len(depths), 1),
        "avg_reward": sum(returns) / total_steps,
        "click_rate": clicks_total / max(shown_total, 1.0),
        "coverage": float(shown.sum()) / max(n_active, 1),
        "diversity": intra_list_diversity(all_slates[-5000:], env.item_features.cpu()) if len(all_slates) else 0.0,
        "returns": returns,
        "depths": depths,
        "clicks": episode_clicks,
    }

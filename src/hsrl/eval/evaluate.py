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
from hsrl.simulator.protocols import SlateEnvironment

METRICS = ("total_reward", "depth", "avg_reward", "click_rate", "coverage", "diversity")
NEW_ITEM_METRICS = ("new_slot_share", "new_click_share")  # with ``new_items``: what the policy did with them
# dynamics diagnostics (with ``groups``): share of a slate's items whose group was in the user's previous slate
REPEAT_METRICS = ("repeat_share", "topic_repeat_share")
CURVE_STEPS = 20  # ``ctr_by_step``: click rate at session steps 1..20
PER_EPISODE = ("returns", "depths", "clicks")


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The scalar metrics of an ``evaluate`` result, without the per-episode lists."""
    return {k: v for k, v in result.items() if k not in PER_EPISODE}


@torch.no_grad()
def evaluate(
    agent: Agent,
    env: SlateEnvironment,
    episodes: int,
    greedy: bool = True,
    max_steps: int = 100_000,
    new_items: torch.Tensor | None = None,
    seed: int | None = None,
    groups: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Run ``agent`` in ``env`` until its first ``episodes`` episodes have finished; return metrics.

    ``new_items`` (N,) bool marks items added to the catalogue after training: the result then also
    holds the share of shown slots and of clicks that went to them (``NEW_ITEM_METRICS``). ``seed``
    reseeds the environment first, so two evaluations in one environment meet the same users.

    Dynamics diagnostics, which show whether a policy learnt what its slates do to the user: the result
    always holds ``ctr_by_step`` (click rate at session steps 1..20; None where no counted session got
    that far). ``groups`` maps a metric name to an (N,) group id per item (e.g. ``repeat_share``: the
    level-1 SID token; ``topic_repeat_share``: the true topic); each such metric is the share of slate
    items whose group also appeared in the same user's previous slate (steps 2 onwards).
    """
    agent.train_mode(False)
    obs = env.reset(seed)
    b = obs.batch_size
    episode_id = torch.arange(b)  # id of the episode each row is playing; ids >= episodes are ignored
    next_id = b
    ret = torch.zeros(b)
    depth = torch.zeros(b, dtype=torch.long)
    ep_clicks = torch.zeros(b)
    returns: list[float] = []
    depths: list[float] = []
    episode_clicks: list[float] = []
    clicks_total = shown_total = new_shown = new_clicked = 0.0
    is_new = None if new_items is None else new_items.to(torch.bool).cpu()
    shown = torch.zeros(env.n_items, dtype=torch.bool)
    slates = []
    steps = 0
    step_clicks = torch.zeros(CURVE_STEPS)
    step_shown = torch.zeros(CURVE_STEPS)
    group_of = {name: g.to(torch.long).cpu() for name, g in (groups or {}).items()}
    previous: dict[str, torch.Tensor | None] = {name: None for name in group_of}  # (B, K) groups, previous slate
    repeats = {name: [0.0, 0.0] for name in group_of}  # repeated items, items with a previous slate
    while len(returns) < episodes and steps < max_steps:
        slate = agent.act(obs, greedy=greedy)
        obs, reward, done, info = env.step(slate)
        counted = (episode_id < episodes).to(reward.device)
        clicks = info["clicks"]
        here = counted.cpu()
        in_curve = here & (depth < CURVE_STEPS)
        step_clicks.index_add_(0, depth[in_curve], clicks.cpu().sum(1)[in_curve].float())
        step_shown.index_add_(0, depth[in_curve], torch.full((int(in_curve.sum()),), float(slate.shape[1])))
        for name, group in group_of.items():
            now, before = group[slate.cpu()], previous[name]
            if before is not None:
                rows = here & (depth > 0)  # a previous slate exists in this row's current session
                hit = (now.unsqueeze(2) == before.unsqueeze(1)).any(2)
                repeats[name][0] += float(hit[rows].sum())
                repeats[name][1] += float(rows.sum()) * slate.shape[1]
            previous[name] = now
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
    extra: dict[str, Any] = {}
    if is_new is not None:
        extra = {
            "new_slot_share": new_shown / max(shown_total, 1.0),
            "new_click_share": new_clicked / max(clicks_total, 1.0),
        }
    for name, (hits, total) in repeats.items():
        extra[name] = hits / total if total else float("nan")
    extra["ctr_by_step"] = [float(c / n) if n > 0 else None for c, n in zip(step_clicks, step_shown)]
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

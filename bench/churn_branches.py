"""What a SID policy should do with a branch of the trie that no training item had (catalogue churn).

    .venv/bin/python bench/churn_branches.py runs/t13 [--agent hsrl] [--seeds 3] [--world true]

After ``hsrl churn RUN --tuned --agents AGENT --holdout 0.2`` has trained AGENT without the held-out items,
the new items get SIDs from the frozen codebooks, and most of them open a branch (a token under a prefix)
that was never a valid choice while the policy trained, so its logit was never trained in that context.
This scores, on test users after the new items arrive, the policy with that logit replaced by a rule:

* ``keep``: the head's own logit (what ``hsrl churn`` measures);
* ``mean`` / ``min``: the mean / the least of the trained siblings' logits under the same prefix;
* ``avgprob``: the log of the mean probability of a trained sibling (log-mean-exp of their logits);
* ``hold``: never (NEG) wherever a trained sibling exists: the new items are not served;
* ``neighbourX`` (with ``--agent hsrl:decode=score_all``): the kept items scored as under ``hold``, each
  new item given the score of its nearest kept item in the codebooks' embedding, plus log X (X in (0, 1]:
  a discount for not knowing it): content-based scoring through the policy's scores of similar items;
* ``learnW`` (with ``--agent hsrl:decode=score_all``): ``neighbour0.5`` plus what the agent has seen of
  each new item since it arrived, W x (logit of its smoothed click rate - logit of the kept items'),
  counted from the slates it served (the next observation's last K history entries); with ``--agent sl``
  (a feature scorer: ``keep`` and ``learnW`` only) SL's own click logits plus that term. This learns from
  the test users' clicks while it is scored (as a live service would), so it is not comparable with the
  agents' rows of ``hsrl churn``, which learn nothing after training: a probe of a per-node memory.

A rule applies only where the prefix has at least one trained child; below a wholly new prefix every child
is new and the head's logits decide. ``before`` is the same agent on the kept catalogue. Writes
bench/results/churn_branches.json. Not a test.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sim_gap import RESULTS

from hsrl.agents import registry
from hsrl.agents.base import NEG
from hsrl.agents.hsrl import HierarchicalPolicy, HSRLAgent
from hsrl.eval.evaluate import evaluate, summary
from hsrl.eval.metrics import mean_ci
from hsrl.rundir import RunDir
from hsrl.sid.build import index_features
from hsrl.sid.index import SemanticIDIndex
from hsrl.simulator.catalogue import CatalogueView
from hsrl.workflow import TEST_SPLIT, diagnostic_groups, draw_holdout, env_for, with_tuned
from hsrl.workflow.build import load_agent
from hsrl.workflow.churn import churn_index

RULES = ("keep", "mean", "min", "avgprob", "hold")  # and neighbourX
METRICS = ("total_reward", "new_slot_share", "new_click_share")


class NoveltyTrie:
    """The grown index, remembering for the prefixes of its last ``valid_next`` call which of their valid
    children the training catalogue lacked. The decoders ask ``valid_next`` for a level's rows right before
    the policy's ``logits`` for the same rows, so the policy reads ``novel`` there."""

    def __init__(self, grown: SemanticIDIndex, trained: SemanticIDIndex) -> None:
        self._grown, self._trained = grown, trained
        self.novel: torch.Tensor | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grown, name)

    def valid_next(self, prefix: torch.Tensor) -> torch.Tensor:
        valid = self._grown.valid_next(prefix)
        self.novel = valid & ~self._trained.valid_next(prefix).to(valid.device)
        return valid


def apply_rule(policy: HierarchicalPolicy, trie: NoveltyTrie, rule: str) -> None:
    """Replace ``policy.logits`` (this instance only) by one that rewrites the novel children's logits."""
    raw_logits = policy.raw_logits

    def logits(level, context, valid, children=None, items=None, exposure=None):  # type: ignore[no-untyped-def]
        raw = raw_logits(level, context, children, items, exposure)
        if rule != "keep" and trie.novel is not None:
            novel = trie.novel.expand_as(valid)
            trained = valid & ~novel
            n = trained.sum(-1, keepdim=True)
            if rule == "mean":
                fill = (raw * trained).sum(-1, keepdim=True) / n.clamp_min(1)
            elif rule == "min":
                fill = raw.masked_fill(~trained, -NEG).amin(-1, keepdim=True)
            elif rule == "avgprob":
                fill = raw.masked_fill(~trained, NEG).logsumexp(-1, keepdim=True) - n.clamp_min(1).log()
            else:  # hold (and neighbourX, which rescores the new items afterwards)
                fill = torch.full_like(raw[..., :1], NEG)
            raw = torch.where(novel & (n > 0), fill.expand_as(raw), raw)
        return raw.masked_fill(~valid, NEG)

    policy.logits = logits  # type: ignore[method-assign]


class NewItemMemory:
    """Impressions and clicks of the items an agent served, read from the next observation (the served
    slate with its feedback is the history's last K entries, unless the row's user was replaced), and a
    score bonus for the new items from them."""

    def __init__(self, n_kept: int, n_items: int, weight: float, prior: float = 10.0) -> None:
        self.n_kept, self.weight, self.prior = n_kept, weight, prior
        self.shown, self.clicked = torch.zeros(n_items), torch.zeros(n_items)
        self.last: torch.Tensor | None = None

    def observe(self, obs: Any) -> None:
        if self.last is None:
            return
        k = self.last.shape[1]
        hist, feedback = obs.hist_items[:, -k:], obs.hist_feedback[:, -k:]
        own = (hist == self.last).all(1)  # rows whose user saw that slate and is still there
        items = hist[own].flatten()
        self.shown.index_add_(0, items, torch.ones(items.shape))
        self.clicked.index_add_(0, items, (feedback[own] > 0.5).float().flatten())

    def bonus(self) -> torch.Tensor:
        kept = (self.clicked[: self.n_kept].sum() / self.shown[: self.n_kept].sum().clamp_min(1)).clamp(0.05, 0.95)
        rate = (self.clicked + self.prior * kept) / (self.shown + self.prior)
        out = self.weight * (torch.logit(rate) - torch.logit(kept))
        out[: self.n_kept] = 0.0
        return out


def remember(agent: Any, memory: NewItemMemory) -> None:
    """Feed ``memory`` from every observation the agent acts on, and tell it the slate it served."""
    own_act = agent.act

    def act(obs: Any, greedy: bool = True) -> torch.Tensor:
        memory.observe(obs)
        slate = own_act(obs, greedy)
        memory.last = slate.clone()
        return slate

    agent.act = act


def score_as_neighbour(agent: Any, nearest: np.ndarray, discount: float, memory: NewItemMemory | None = None) -> None:
    """Decode with ``score_all`` where each new item (view index n_kept + j) takes the score of its nearest
    kept item ``nearest[j]`` plus log ``discount`` (and ``memory``'s bonus)."""
    inner = hsrl_of(agent)
    if inner.config.decode != "score_all":
        raise SystemExit("neighbourX rules need --agent ...:decode=score_all")
    own, kept = inner._score_all, len(inner.active) - len(nearest)
    near = torch.as_tensor(nearest)

    def scores(state: torch.Tensor, obs: Any = None) -> torch.Tensor:
        out = own(state, obs)
        out[:, kept:] = out[:, near] + float(np.log(discount))
        if memory is not None:
            out = out + memory.bonus()
        return out.masked_fill(~inner.active, NEG)

    inner._score_all = scores


def add_bonus_to_logits(agent: Any, memory: NewItemMemory) -> None:
    """A feature scorer's click logits of every item plus ``memory``'s bonus (already in logit units)."""
    own = agent.logits

    def logits(obs: Any, items: torch.Tensor | None = None) -> torch.Tensor:
        bonus = memory.bonus()
        return own(obs, items) + (bonus if items is None else bonus[items])

    agent.logits = logits


def hsrl_of(agent: Any) -> HSRLAgent:
    """The agent itself, or the HSRL agent inside GRPO."""
    return agent if isinstance(agent, HSRLAgent) else agent.policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run on which `hsrl churn --tuned` trained the agent")
    parser.add_argument("--agent", default="hsrl", help="a SID agent spec (hsrl, grpo, hsrl:token_heads=...)")
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--world", default="true")
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--split", default=TEST_SPLIT, help="test (report) or val (choose a rule's setting)")
    parser.add_argument("--episodes", type=int, default=None, help="default: the run's eval.episodes")
    args = parser.parse_args()

    run = RunDir(args.run)
    cfg, (spec,) = with_tuned(args.run, run.config(), [args.agent], True)
    held = draw_holdout(args.run, args.holdout)
    sid_agent = registry.get(registry.base_name(spec)).uses_index
    trained = churn_index(args.run, cfg, held)
    features = index_features(run.dataset(), cfg.sid)[0]
    new_features = features[held.held]
    kept_emb, new_emb = trained.embed(features[held.order[: held.n_kept]]), trained.embed(new_features)
    nearest = ((new_emb[:, None, :] - kept_emb[None]) ** 2).sum(-1).argmin(1)  # (held,) kept view indices
    groups = diagnostic_groups(args.run, held.order)
    episodes = args.episodes or cfg.eval.episodes
    rows: dict[str, list[dict[str, float]]] = {}
    for seed in range(args.seeds):
        env_seed = 20_000 + seed  # the seeds `hsrl churn` evaluates with
        for rule in ["before", *args.rules.split(",")]:
            env = CatalogueView(env_for(args.run, cfg, args.split, env_seed, args.world), held.order, held.n_kept)
            grown = copy.deepcopy(trained) if sid_agent else None
            agent = load_agent(spec, args.run, cfg, env, seed, held, grown)
            extra: dict[str, Any] = {}
            if rule != "before":
                env.reveal()
                memory = None
                if rule.startswith("learn"):
                    memory = NewItemMemory(held.n_kept, held.n_items, float(rule.removeprefix("learn") or 1))
                    remember(agent, memory)
                if grown is None:  # a feature scorer (sl): its own scores, or them plus the memory's bonus
                    agent.set_catalogue(env.item_features)
                    if memory is not None:
                        add_bonus_to_logits(agent, memory)
                    elif rule != "keep":
                        raise SystemExit(f"rule {rule} needs a SID agent (hsrl, grpo); {spec} takes keep or learnW")
                else:
                    grown.add_items(new_features)
                    trie = NoveltyTrie(grown, trained)
                    agent.set_catalogue(env.item_features, trie)  # type: ignore[arg-type]
                    rescored = rule.startswith(("neighbour", "learn"))
                    apply_rule(hsrl_of(agent).net.policy, trie, "hold" if rescored else rule)
                    if rule.startswith("neighbour"):
                        score_as_neighbour(agent, nearest, float(rule.removeprefix("neighbour") or 1))
                    elif memory is not None:
                        score_as_neighbour(agent, nearest, 0.5, memory)
                extra = {"new_items": held.new_items()}
            result = summary(evaluate(agent, env, episodes, seed=env_seed, groups=groups, **extra))
            rows.setdefault(rule, []).append({m: float(result.get(m, 0.0)) for m in METRICS})
            print(rule, seed, rows[rule][-1], flush=True)
    table = {
        rule: {m: dict(zip(("mean", "ci95"), mean_ci([r[m] for r in got]))) for m in METRICS}
        for rule, got in rows.items()
    }
    print(
        f"\n{spec}, {held.held.size} of {held.n_items} items new, {args.split} users, world {args.world}, "
        f"{args.seeds} seeds"
    )
    print(f"{'rule':10s} {'reward':>14s} {'new: slots':>11s} {'new: clicks':>11s}")
    for rule, cells in table.items():
        tr = cells["total_reward"]
        print(
            f"{rule:10s} {tr['mean']:7.3f} ± {tr['ci95']:.3f} "
            f"{cells['new_slot_share']['mean']:11.3f} {cells['new_click_share']['mean']:11.3f}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "agent": spec,
        "split": args.split,
        "world": args.world,
        "seeds": args.seeds,
        "episodes": episodes,
        "table": table,
    }
    (RESULTS / "churn_branches.json").write_text(json.dumps(payload | {"per_seed": rows}, indent=2))


if __name__ == "__main__":
    main()

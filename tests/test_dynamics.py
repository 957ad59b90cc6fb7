"""Issue: HSRL that learns what its slates do to the user and earns from new items.

Semantic heads score a branch by its content; item credit splits each slot's own advantage over its
tokens; ratios are 1 on fresh data; the dynamics diagnostics count repeats and CTR by step correctly;
``distill``'s targets rank the items as the click model does, and the teacher moves the greedy slate to
its top K (here the tiny world's TRUE click model is the teacher: the mechanics; what the registry gives,
the training simulator only, is tested in tests/test_grpo.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsrl.agents import HSRLAgent
from hsrl.agents.base import Agent
from hsrl.agents.world_model import ItemTeacher, every_item_click_probs
from hsrl.config import AgentConfig, load_config
from hsrl.data.synthetic import generate
from hsrl.eval.evaluate import evaluate
from hsrl.sid.index import SemanticIDIndex
from hsrl.simulator.env import SlateEnv, TrueWorldResponse
from hsrl.simulator.observation import Observation
from hsrl.train.buffer import ReplayBuffer
from hsrl.train.loop import collect_step

SMALL = ["data.synthetic.n_users=80", "data.synthetic.n_items=120"]


@pytest.fixture(scope="module")
def world():
    cfg = load_config(overrides=SMALL)
    ds, true_world = generate(cfg.data)
    return ds, true_world


def fresh_index(ds) -> SemanticIDIndex:
    return SemanticIDIndex.build(ds.item_features, levels=2, codes=8, seed=0)


def make_agent(ds, index, seed=0, **overrides) -> HSRLAgent:
    cfg = AgentConfig(dropout=0.0, **overrides)
    feats = torch.as_tensor(ds.item_features)
    return HSRLAgent(feats, ds.slate_size, index, ds.profile_dim, ds.history_length, cfg, seed=seed)


def make_env(ds, true_world, batch=16, seed=0) -> SlateEnv:
    return SlateEnv(ds, TrueWorldResponse(true_world), split="train", batch_users=batch, seed=seed, device="cpu")


def item_logprob(agent: HSRLAgent, obs: Observation, items: torch.Tensor) -> torch.Tensor:
    """log pi(SID of each item | s) for every user (B, len(items))."""
    with torch.no_grad():
        state = agent.net.encoder(obs, agent.item_features)
        return agent._score_all(state, obs)[:, items]


def _train_a_little(agent: HSRLAgent, env: SlateEnv, steps: int = 40) -> None:
    """Some updates, so that the per-token parameters of the tokens used drift away from their init."""
    buffer = ReplayBuffer(10_000, seed=0)
    obs = env.reset()
    for _ in range(steps):
        obs = collect_step(agent, env, buffer, obs)
        agent.update(buffer.sample(64))


@pytest.mark.parametrize("heads", ["semantic", "free"])
def test_a_new_near_copy_is_scored_like_the_item_it_copies(world, heads):
    """With semantic heads a new item whose features are a trained item's plus noise gets nearly that
    item's probability under the same state, though its SID opens a last-level slot no training item had;
    with free heads its disambiguation token is an untrained row, and its probability is not the same."""
    ds, true_world = world
    index = fresh_index(ds)
    # exposure off: an original in the user's history is (rightly) scored apart from its unseen copy
    agent = make_agent(ds, index, token_heads=heads, exposure=False)
    env = make_env(ds, true_world)
    _train_a_little(agent, env)
    obs = env.reset(seed=3)
    rng = np.random.default_rng(0)
    originals = np.arange(0, 120, 6)
    copies = ds.item_features[originals] + 1e-3 * rng.normal(size=(originals.size, ds.feature_dim)).astype(np.float32)
    new = index.add_items(copies)
    # same semantic tokens: the copy lands in its original's group, under another disambiguation token
    np.testing.assert_array_equal(index.codes[new, :-1], index.codes[originals, :-1])
    assert (index.codes[new, -1] != index.codes[originals, -1]).all()
    agent.set_catalogue(torch.as_tensor(np.concatenate([ds.item_features, copies])), index)
    lp = item_logprob(agent, obs, torch.as_tensor(np.concatenate([originals, new])))
    orig, copy = lp[:, : originals.size], lp[:, originals.size :]
    gap = (orig - copy).abs().max()
    if heads == "semantic":
        assert gap < 1e-2, f"semantic heads: the copy's log-probability differs by {gap:.4f}"
    else:
        assert gap > 0.05, f"free heads score the copy like the original ({gap:.4f}): test would prove nothing"


def test_item_credit_advantages_on_a_real_update_batch(world):
    """credit=item: every slot's token advantages sum to its own target minus the state value, and the
    slots' targets average to the slate's TD target."""
    ds, true_world = world
    agent = make_agent(ds, fresh_index(ds), credit="item")
    env = make_env(ds, true_world, batch=32)
    buffer = ReplayBuffer(1000, seed=0)
    obs = env.reset()
    for _ in range(3):
        obs = collect_step(agent, env, buffer, obs)
    batch = buffer.sample(64)
    torch.testing.assert_close(batch["slot_rewards"].mean(-1), batch["reward"])
    y_slot = agent.td_target(batch["slot_rewards"], batch["next_obs"], batch["done"])
    y_slate = agent.td_target(batch["reward"], batch["next_obs"], batch["done"])
    assert y_slot.shape == batch["clicks"].shape
    torch.testing.assert_close(y_slot.mean(-1), y_slate)
    with torch.no_grad():
        state = agent.net.encoder(batch["obs"], agent.item_features)
        _, _, values, _ = agent._token_pass(state, batch["tokens"], batch["obs"])
    adv = HSRLAgent.token_advantages(values, y_slot, "item")
    torch.testing.assert_close(adv.sum(-1), y_slot - values[..., 0])
    # a clicked slot and a skipped one of the same slate get different credit (not one slate advantage)
    clicks = batch["clicks"]
    mixed = (clicks.sum(-1) > 0) & (clicks.sum(-1) < clicks.shape[1])
    assert mixed.any()
    row = int(mixed.nonzero()[0])
    sums = adv.sum(-1)[row]
    assert sums[clicks[row] > 0].min() > sums[clicks[row] == 0].max()


@pytest.mark.parametrize("heads", ["semantic", "free"])
def test_importance_ratios_are_one_on_fresh_data(world, heads):
    ds, true_world = world
    agent = make_agent(ds, fresh_index(ds), token_heads=heads)
    obs = make_env(ds, true_world).reset()
    _, extras = agent.explore(obs)
    with torch.no_grad():
        state = agent.net.encoder(obs, agent.item_features)
        logp = agent._token_pass(state, extras["tokens"], obs)[0]
    torch.testing.assert_close((logp - extras["logp"]).exp(), torch.ones_like(logp), atol=1e-5, rtol=0)


class _Scripted(Agent):
    """Shows fixed slates in turn: the hand-made episode of the diagnostics test."""

    def __init__(self, features, slates):
        super().__init__(features, slates[0].shape[1])
        self.slates, self.t = slates, 0

    def act(self, obs, greedy=True):
        slate = self.slates[min(self.t, len(self.slates) - 1)]
        self.t += 1
        return slate.expand(obs.batch_size, -1)


class _TwoSteps:
    """One user, two steps, then done; clicks on the first two slots of step 1 and on slot 0 of step 2."""

    slate_size = 3
    n_items = 6
    item_features = torch.eye(6)

    @staticmethod
    def _obs():
        return Observation(
            torch.zeros(1, dtype=torch.long), torch.zeros(1, 0), torch.full((1, 4), -1), torch.zeros(1, 4)
        )

    def reset(self, seed=None):
        self.t = 0
        return self._obs()

    def step(self, slate):
        self.t += 1
        clicks = torch.tensor([[1.0, 1.0, 0.0]]) if self.t == 1 else torch.tensor([[1.0, 0.0, 0.0]])
        done = torch.tensor([self.t == 2])
        self.t %= 2
        return self._obs(), clicks.mean(1), done, {"clicks": clicks}


def test_diagnostics_count_repeats_and_ctr_by_step():
    """Step 1 shows items 0,1,2 (groups a,a,b); step 2 shows 3,4,5 (groups b,c,c): one of the three
    items of step 2 repeats a group of step 1, none by the other grouping."""
    group = torch.tensor([0, 0, 1, 1, 2, 2])  # a a b b c c
    other = torch.tensor([0, 1, 2, 3, 4, 5])  # every item its own group
    slates = [torch.tensor([[0, 1, 2]]), torch.tensor([[3, 4, 5]])]
    env = _TwoSteps()
    result = evaluate(
        _Scripted(env.item_features, slates),
        env,
        episodes=1,
        groups={"repeat_share": group, "topic_repeat_share": other},
    )
    assert result["episodes"] == 1
    assert result["repeat_share"] == pytest.approx(1 / 3)
    assert result["topic_repeat_share"] == 0.0
    assert result["ctr_by_step"][0] == pytest.approx(2 / 3)
    assert result["ctr_by_step"][1] == pytest.approx(1 / 3)
    assert all(c is None for c in result["ctr_by_step"][2:])


def test_fatigue_blind_oracle_repeats_more_than_the_oracle(world):
    """The fatigue-blind reference re-serves its top topics; the true oracle moves on (true world)."""
    import dataclasses

    from hsrl.agents import OracleGreedyAgent

    ds, true_world = world
    env = make_env(ds, true_world, batch=16, seed=1)
    topics = torch.as_tensor(true_world.item_topic)
    blind_world = dataclasses.replace(true_world, boredom_per_repeat=0.0)
    blind = OracleGreedyAgent(
        env.item_features, ds.slate_size, lambda o, s, slots: blind_world.click_probs(o.user, o.hist_items, s, slots)
    )
    aware = OracleGreedyAgent(env.item_features, ds.slate_size, env.response.click_probs)
    r_blind = evaluate(blind, env, 40, seed=5, groups={"topic_repeat_share": topics})
    r_aware = evaluate(aware, env, 40, seed=5, groups={"topic_repeat_share": topics})
    assert r_blind["topic_repeat_share"] > r_aware["topic_repeat_share"] + 0.2
    assert r_aware["total_reward"] > r_blind["total_reward"]


@pytest.mark.parametrize("reward", ["mean_with_cost", "sweet_point"])
def test_slot_rewards_average_to_the_slate_reward(reward):
    from hsrl.simulator.reward import make_reward, slot_rewards

    clicks = torch.bernoulli(torch.full((200, 9), 0.6), generator=torch.Generator().manual_seed(0))
    per_slot = slot_rewards(reward, clicks, 0.1, 0.9)
    torch.testing.assert_close(per_slot.mean(-1), make_reward(reward, 0.1, 0.9)(clicks))
    # a clicked slot earns more than a skipped one of the same slate below the sweet point
    mixed = (clicks.sum(-1) > 0) & (clicks.sum(-1) < 9) & (clicks.mean(-1) * 1.1 - 0.1 < 0.9)
    row = int(mixed.nonzero()[0])
    assert per_slot[row][clicks[row] > 0].min() > per_slot[row][clicks[row] == 0].max()


def test_reference_options_are_checked(cli, tmp_path):
    from hsrl.config import RunConfig
    from hsrl.errors import ConfigError
    from hsrl.workflow import agent_config

    cfg = RunConfig()
    assert agent_config("oracle:fatigue=blind", cfg) == cfg.agent
    with pytest.raises(ConfigError, match="fatigue=aware|blind"):
        agent_config("oracle:fatigue=sleepy", cfg)
    r = cli("compare", tmp_path, "--agents", "oracle:tired=yes")
    assert r.code == 2 and "unknown option tired=yes" in r.err
    assert not any(tmp_path.iterdir()), "a rejected command wrote into the run directory"


# ---------------------------------------------------------------------- distill: a per-item teacher
def test_targets_are_a_distribution_over_active_items_in_the_click_model_s_order():
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 10, generator=gen) * 0.9 + 0.05
    seen = []

    def click_probs(obs, slate, slots):
        seen.append(slots.clone())
        return probs[:, slate[0]]

    class Obs:  # the teacher reads the batch size and device only; the click model gets the rest
        batch_size, device = 3, torch.device("cpu")

    active = torch.ones(10, dtype=torch.bool)
    active[[2, 7]] = False
    sharp, soft = ItemTeacher(click_probs, 0.2), ItemTeacher(click_probs, 2.0)
    q = sharp.targets(Obs(), active)
    assert torch.equal(q[:, ~active], torch.zeros(3, 2))
    torch.testing.assert_close(q.sum(-1), torch.ones(3))
    on = active.nonzero().flatten()
    assert torch.equal(q[:, on].argsort(-1), probs[:, on].argsort(-1))
    assert (q.max(-1).values > soft.targets(Obs(), active).max(-1).values).all()  # lower temperature: sharper
    assert all(torch.equal(s, torch.zeros_like(s)) for s in seen)  # every item scored at the first slot
    with pytest.raises(ValueError, match="temperature"):
        ItemTeacher(click_probs, 0.0)


def test_every_item_click_probs_in_chunks_equals_one_call(world):
    ds, true_world = world
    env = make_env(ds, true_world)
    obs = env.reset()
    click = env.response.click_probs
    whole = every_item_click_probs(click, obs, ds.n_items)
    torch.testing.assert_close(every_item_click_probs(click, obs, ds.n_items, chunk=7), whole)
    assert whole.shape == (16, ds.n_items)


def test_distill_moves_the_greedy_slate_to_the_teacher_s_top_k(world):
    """The same agent, seed and replayed states with and without distillation: with it the overlap of the
    beam slate with the teacher's top K rises well above its start and above the agent without it, and
    the cross-entropy falls."""
    ds, true_world = world
    env = make_env(ds, true_world, batch=32)
    teacher = ItemTeacher(env.response.click_probs, 0.5)
    feats = torch.as_tensor(ds.item_features)
    index = SemanticIDIndex.build(ds.item_features, levels=2, codes=8, seed=0)
    probe = make_env(ds, true_world, batch=64, seed=5).reset()
    best = every_item_click_probs(env.response.click_probs, probe, ds.n_items).topk(ds.slate_size, -1).indices

    def trained(**options: float) -> tuple[float, float, list[float]]:
        cfg = AgentConfig(dim=16, layers=1, heads=2, dropout=0.0, **options)
        agent = HSRLAgent(feats, ds.slate_size, index, ds.profile_dim, ds.history_length, cfg, 0)
        agent.teacher = teacher  # what the registry sets from the training simulator
        buffer = ReplayBuffer(10_000, seed=0)
        obs = env.reset(seed=0)
        for _ in range(4):
            obs = collect_step(agent, env, buffer, obs)

        def overlap() -> float:
            slate = agent.act(probe)
            return sum(len(set(a) & set(b)) for a, b in zip(slate.tolist(), best.tolist())) / best.numel()

        start = overlap()
        losses = [agent.update(buffer.sample(64))["distill"] for _ in range(150)]
        return start, overlap(), losses

    # seeds 0-2 gave 0.08 / 0.06 / 0.02 -> 0.41 / 0.44 / 0.42 with it and 0.20 / 0.20 / 0.16 without
    start, with_teacher, losses = trained(distill=5.0, supervision=0.0)
    _, without, _ = trained(distill=0.0, supervision=3.0)  # the defaults before distill
    assert with_teacher > start + 0.25 and with_teacher > without + 0.15, (start, with_teacher, without)
    assert sum(losses[-10:]) < sum(losses[:10]) - 0.5


def test_distill_applies_only_with_a_teacher(world):
    """An agent built by hand (here in the true world, which must never teach) has no teacher: with
    distill on it learns exactly as with distill off; given a teacher, the same update differs."""
    ds, true_world = world
    index = SemanticIDIndex.build(ds.item_features, levels=2, codes=8, seed=0)
    env = make_env(ds, true_world)
    feats = torch.as_tensor(ds.item_features)

    def built(distill: float) -> HSRLAgent:
        cfg = AgentConfig(dim=16, layers=1, heads=2, dropout=0.0, distill=distill)
        return HSRLAgent(feats, ds.slate_size, index, ds.profile_dim, ds.history_length, cfg, 0)

    buffer = ReplayBuffer(1000, seed=0)
    collect_step(built(0.0), env, buffer, env.reset())
    batch = buffer.sample(8)

    def updated(distill: float, teacher: ItemTeacher | None = None) -> list[torch.Tensor]:
        agent = built(distill)
        agent.teacher = teacher
        agent.update(batch)
        return [p.detach().clone() for p in agent.net.parameters()]

    off, untaught = updated(0.0), updated(10.0)
    assert all(torch.equal(a, b) for a, b in zip(off, untaught))
    taught = updated(10.0, ItemTeacher(env.response.click_probs, 0.5))
    assert not all(torch.equal(a, b) for a, b in zip(off, taught))


@pytest.mark.parametrize("states, expected", [(0, 16), (8, 8), (32, 16)])
def test_distill_reads_the_first_distill_states_rows_of_the_batch(world, states, expected):
    """agent.distill_states: the term scores every item only in the first rows of the (random) batch."""
    ds, true_world = world
    env = make_env(ds, true_world)
    index = SemanticIDIndex.build(ds.item_features, levels=2, codes=8, seed=0)
    cfg = AgentConfig(dim=16, layers=1, heads=2, dropout=0.0)
    agent = HSRLAgent(torch.as_tensor(ds.item_features), ds.slate_size, index, ds.profile_dim, ds.history_length, cfg)
    buffer = ReplayBuffer(1000, seed=0)
    collect_step(agent, env, buffer, env.reset())
    batch = buffer.sample(16)
    teacher = ItemTeacher(env.response.click_probs, 0.5, states)
    seen: list[Observation] = []
    real_loss = teacher.loss
    teacher.loss = lambda obs, log_probs, active: seen.append(obs) or real_loss(obs, log_probs, active)  # type: ignore[method-assign]
    agent.teacher = teacher
    agent.update(batch)
    assert len(seen) == 1 and seen[0].batch_size == expected
    assert torch.equal(seen[0].hist_items, batch["obs"].hist_items[:expected])


def test_a_checkpoint_saved_before_distill_existed_is_reused_only_with_it_off():
    from hsrl.config import RunConfig
    from hsrl.tuning import protocol_config
    from hsrl.workflow.checkpoints import config_drift

    cfg = RunConfig()
    saved = cfg.agent.model_dump(mode="json")
    del saved["distill"], saved["distill_temperature"]  # what a checkpoint of the previous round holds
    assert config_drift(saved, "hsrl", cfg) == ["distill"]  # on by default now: that checkpoint is stale
    assert config_drift(saved, "hsrl:distill=0", cfg) == []
    assert config_drift(saved, "hsrl:distill=1", cfg) == ["distill"]
    assert protocol_config(cfg, "hac")["agent"]["distill"] == 10.0
    cfg.agent.distill = 0.0
    assert "distill" not in protocol_config(cfg, "hac")["agent"]  # a study made before it, valid at 0

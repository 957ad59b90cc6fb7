"""Learned baselines (SL, A2C-item, DDPG, TD3, HAC): slates, learning, fixed action space, TD masking,
persistence. Tiny synthetic world and small encoders so the file runs in well under a minute."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsrl.agents import A2CItemAgent, DDPGAgent, HACAgent, LoggedSlates, RandomAgent, SupervisedAgent, TD3Agent
from hsrl.config import AgentConfig, TrainConfig, load_config
from hsrl.data.synthetic import generate
from hsrl.eval.evaluate import evaluate
from hsrl.simulator.env import SlateEnv, TrueWorldResponse
from hsrl.train.loop import Trainer

SMALL = ["data.synthetic.n_users=80", "data.synthetic.n_items=60", "data.history_length=10"]
NAMES = ["sl", "a2c", "ddpg", "td3", "hac"]
RL = ["a2c", "ddpg", "td3", "hac"]
KINDS = {"a2c": A2CItemAgent, "ddpg": DDPGAgent, "td3": TD3Agent, "hac": HACAgent}


@pytest.fixture(scope="module")
def world():
    ds, true_world = generate(load_config(overrides=SMALL).data)
    return ds, true_world


def make_env(ds, true_world, seed=0, batch=16) -> SlateEnv:
    return SlateEnv(ds, TrueWorldResponse(true_world), split="train", batch_users=batch, seed=seed, device="cpu")


def make_agent(name, ds, seed=0, features=None, **own):
    """``own``: options of the agent's own config section (agent.a2c, agent.hac, ...)."""
    feats = torch.as_tensor(ds.item_features) if features is None else features
    cfg = AgentConfig(dim=16, layers=1, heads=2, dropout=0.0, **{name: own})
    if name == "sl":
        return SupervisedAgent(
            feats, ds.slate_size, ds.profile_dim, ds.history_length, LoggedSlates.from_dataset(ds), cfg, seed
        )
    return KINDS[name](feats, ds.slate_size, ds.profile_dim, ds.history_length, cfg, seed)


def train(agent, ds, true_world, steps, seed=0, batch_size=64) -> Trainer:
    cfg = TrainConfig(
        steps=steps, start_steps=32, batch_size=batch_size, eval_every=10**9, checkpoint_every=10**9, seed=seed
    )
    trainer = Trainer(agent, make_env(ds, true_world, seed), cfg, show_progress=False)
    trainer.fit()
    return trainer


def distinct_active(slate: torch.Tensor, active: torch.Tensor, k: int) -> bool:
    return all(len(set(row)) == k and all(active[i] for i in row) for row in slate.tolist())


@pytest.mark.parametrize("name", NAMES)
def test_slates_hold_k_distinct_active_items(world, name):
    ds, true_world = world
    agent = make_agent(name, ds)
    obs = make_env(ds, true_world).reset()
    active = torch.ones(ds.n_items, dtype=torch.bool)
    active[::3] = False  # a third of the catalogue withdrawn
    agent.set_catalogue(torch.as_tensor(ds.item_features), active=active)
    for slate in (agent.act(obs, greedy=True), agent.act(obs, greedy=False), agent.explore(obs)[0]):
        assert slate.shape == (16, ds.slate_size)
        assert distinct_active(slate, active, ds.slate_size)


@pytest.fixture(scope="module")
def random_score(world):
    ds, true_world = world
    return evaluate(RandomAgent(torch.as_tensor(ds.item_features), ds.slate_size, 0), make_env(ds, true_world, 99), 200)


# Settings with a wide margin after 300 steps of this tiny world (seed 0): A2C-item's slate-level credit
# over 60 ids needs larger batches and steps than the full-size defaults; TD3 updates its actor every
# second step (policy delay 2), so it gets twice DDPG's steps for the same number of actor updates.
# (Seed 1 of this world is hard for both embedding-space actors: DDPG and TD3 stay near random there.)
# DDPG's noise 0.4 (22 degrees) is the exploration this test always had: the old per-coordinate default 0.1
# at this test's dim 16. The new default (0.57, 30 degrees in any dim, the old default's angle at dim 32)
# lands on a bad draw at seed 0 here (0.98x random; 8 seeds: 0.4 1.56x, 0.57 1.50x random on average).
FAST = {
    "sl": ({}, 64, 300),
    "a2c": ({"actor_lr": 1e-2, "entropy": 0.0}, 256, 300),
    "ddpg": ({"noise_size": 0.4}, 64, 300),
    "td3": ({}, 64, 600),
    "hac": ({}, 64, 300),
}


@pytest.fixture(scope="module")
def trained(world):
    """One trainer per agent, trained once for the learning and the checkpoint tests."""
    ds, true_world = world
    cache: dict[str, Trainer] = {}

    def get(name: str) -> Trainer:
        if name not in cache:
            overrides, batch, steps = FAST[name]
            cache[name] = train(make_agent(name, ds, **overrides), ds, true_world, steps=steps, batch_size=batch)
        return cache[name]

    return get


@pytest.mark.parametrize("name", NAMES)
def test_learned_agent_beats_random(world, random_score, trained, name):
    ds, true_world = world
    score = evaluate(trained(name).agent, make_env(ds, true_world, 99), 200)
    assert score["episodes"] == 200
    assert score["total_reward"] > 1.3 * random_score["total_reward"], (
        score["total_reward"],
        random_score["total_reward"],
    )


def test_a2c_never_recommends_items_added_after_training(world):
    """Its head is as wide as the catalogue it was built with; a feature-based agent does use new items."""
    ds, true_world = world
    feats = torch.as_tensor(ds.item_features)
    obs = make_env(ds, true_world).reset()
    rng = np.random.default_rng(0)
    for name, expect_new in (("a2c", False), ("ddpg", True)):
        agent = make_agent(name, ds)
        favourites = agent.act(obs).flatten().unique()  # new items: near-copies of what it likes most
        new = feats[favourites] + 0.01 * torch.as_tensor(
            rng.normal(size=(len(favourites), ds.feature_dim)), dtype=torch.float32
        )
        grown = torch.cat([feats, new])
        agent.set_catalogue(grown)
        shown = torch.cat([agent.act(obs, greedy=True)] + [agent.explore(obs)[0] for _ in range(20)])
        assert int(shown.max()) < grown.shape[0]
        assert bool((shown >= ds.n_items).any()) is expect_new, name


@pytest.mark.parametrize("name", RL)
def test_td_target_never_bootstraps_across_users(world, name):
    ds, true_world = world
    agent = make_agent(name, ds)
    obs = make_env(ds, true_world).reset()
    reward = torch.linspace(-0.1, 1.0, 16)
    done = torch.zeros(16, dtype=torch.bool)
    done[::2] = True
    y = agent.td_target(reward, obs, done)
    torch.testing.assert_close(y[done], reward[done])
    assert not torch.allclose(y[~done], reward[~done])  # the others do bootstrap


def test_sl_learns_from_logs_not_from_the_replay_batch(world):
    ds, true_world = world
    trainer = train(make_agent("sl", ds), ds, true_world, steps=3)
    one, two = make_agent("sl", ds), make_agent("sl", ds)
    batch = trainer.buffer.sample(64)
    other = dict(batch, slate=torch.zeros_like(batch["slate"]), reward=-batch["reward"])
    one.update(batch)
    two.update(other)
    for p, q in zip(one.query.parameters(), two.query.parameters()):
        assert torch.equal(p, q)


def test_hac_supervision_sees_the_clicks_of_each_slot(trained):
    trainer = trained("hac")
    batch = trainer.buffer.sample(64)
    assert batch["clicks"].shape == batch["slate"].shape
    assert set(batch["clicks"].unique().tolist()) <= {0.0, 1.0}
    agent = trainer.agent
    flipped = agent.behavior_loss(dict(batch, clicks=1 - batch["clicks"]))
    assert not torch.isclose(agent.behavior_loss(batch), flipped)


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_is_exact(world, trained, name, tmp_path):
    ds, true_world = world
    trainer = trained(name)
    agent = trainer.agent
    path = tmp_path / "agent.pt"
    agent.save(path)
    other = type(agent).load(path)  # rebuilt from the file alone (SL without its logs)
    if name == "sl":
        assert other.logs is None
        other.logs = agent.logs  # to go on learning it needs logged slates again
    obs = make_env(ds, true_world, seed=3).reset()
    assert torch.equal(agent.act(obs), other.act(obs))
    assert torch.equal(agent.explore(obs)[0], other.explore(obs)[0])  # generators restored too
    batch = trainer.buffer.sample(64)
    assert agent.update(batch) == other.update(batch)  # optimisers and targets restored
    assert torch.equal(agent.act(obs), other.act(obs))

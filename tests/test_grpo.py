"""GRPO baseline: group advantages, exact expected rewards, valid sampled slates, ratios of 1 on fresh
samples, the KL to the frozen reference, persistence, learning, and a reward model that is the training
simulator only. Tiny synthetic worlds and small encoders, so the file runs in well under a minute.

Most tests score slates with the tiny world's TRUE click model (``ExpectedReward.of_env``, unchecked): they
test the mechanics. What the registry builds, with the training simulator only, is tested on a small run
directory whose simulators are untrained (their weights do not matter there)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import hsrl
from hsrl.agents import Agent, GRPOAgent, HSRLAgent, LoggedSlates, RandomAgent, registry
from hsrl.agents.grpo import ExpectedReward, click_count_pmf, simulator_reward
from hsrl.agents.world_model import ItemTeacher
from hsrl.config import AgentConfig, GRPOConfig, SimulatorConfig, TrainConfig, load_config
from hsrl.data.synthetic import generate
from hsrl.errors import ArtifactError, ConfigError
from hsrl.eval.evaluate import evaluate
from hsrl.rundir import RunDir
from hsrl.sid.index import SemanticIDIndex
from hsrl.simulator.env import SlateEnv, TrueWorldResponse
from hsrl.simulator.reward import make_reward
from hsrl.train.loop import Trainer

SMALL = ["data.synthetic.n_users=80", "data.synthetic.n_items=60", "data.history_length=10"]


@pytest.fixture(scope="module")
def world():
    ds, true_world = generate(load_config(overrides=SMALL).data)
    index = SemanticIDIndex.build(ds.item_features, levels=2, codes=8, seed=0)
    return ds, true_world, index


def make_env(ds, true_world, seed=0, batch=16) -> SlateEnv:
    return SlateEnv(ds, TrueWorldResponse(true_world), split="train", batch_users=batch, seed=seed, device="cpu")


def make_agent(world, seed=0, exposure=True, **own) -> GRPOAgent:
    """``own``: options of agent.grpo. Scored by the tiny world's true click model (see the module doc)."""
    ds, true_world, index = world
    cfg = AgentConfig(dim=16, layers=1, heads=2, dropout=0.0, exposure=exposure, grpo=GRPOConfig(**own))
    reward = ExpectedReward.of_env(make_env(ds, true_world))
    logs = LoggedSlates.from_dataset(ds)
    feats = torch.as_tensor(ds.item_features)
    return GRPOAgent(feats, ds.slate_size, index, ds.profile_dim, ds.history_length, cfg, seed, reward, logs)


def batch_of(obs) -> dict:
    return {"obs": obs}  # GRPO reads the replayed states only


# ---------------------------------------------------------------------- the pieces
def test_group_advantages_are_standardised_within_each_group():
    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor([[0.01], [1.0], [30.0], [0.0]])
    rewards = torch.randn(4, 8, generator=gen) * scale + torch.tensor([[5.0], [-1.0], [0.0], [0.7]])
    adv = GRPOAgent.group_advantages(rewards)
    torch.testing.assert_close(adv[:3].mean(-1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(adv[:3].std(-1, correction=0), torch.ones(3), atol=2e-4, rtol=0)
    assert torch.equal(adv[3], torch.zeros(8))  # every slate of the group scored the same: no signal
    # the ranking within a group is the rewards'
    assert torch.equal(adv[:3].argsort(-1), rewards[:3].argsort(-1))


def test_expected_reward_is_exact_for_both_rewards():
    k, cost, target = 5, 0.1, 0.9
    probs = torch.rand(6, k, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pmf = click_count_pmf(probs)
    torch.testing.assert_close(pmf.sum(-1), torch.ones(6, dtype=torch.float64))
    patterns = torch.tensor(list(itertools.product([0.0, 1.0], repeat=k)), dtype=torch.float64)  # (2^K, K)
    weight = (patterns[None] * probs[:, None] + (1 - patterns[None]) * (1 - probs[:, None])).prod(-1)  # (6, 2^K)
    for name in ("mean_with_cost", "sweet_point"):
        fn = make_reward(name, cost, target)
        model = ExpectedReward(lambda obs, slate, slots: probs.float(), fn, k)
        got = model(None, torch.zeros(6, k, dtype=torch.long))
        exact = (weight * fn(patterns)[None]).sum(-1)  # every click pattern enumerated
        torch.testing.assert_close(got, exact, atol=1e-6, rtol=0)
        if name == "mean_with_cost":
            torch.testing.assert_close(got, (probs - cost * (1 - probs)).mean(-1), atol=1e-6, rtol=0)


def test_groups_are_scored_in_one_call_with_each_column_at_its_slot():
    k, calls = 4, []

    def click_probs(obs, slate, slots):  # depends on the item and on its slot
        calls.append(slate.shape)
        return torch.sigmoid(0.1 * slate.float() - 0.5 * slots.float())

    model = ExpectedReward(click_probs, make_reward("mean_with_cost"), k)
    slates = torch.randint(0, 50, (3, 5, k), generator=torch.Generator().manual_seed(2))
    grouped = model(None, slates)
    assert grouped.shape == (3, 5) and calls == [(3, 5 * k)]
    one_by_one = torch.stack([model(None, slates[:, g]) for g in range(5)], 1)
    torch.testing.assert_close(grouped, one_by_one)


def test_a_custom_reward_is_refused(world):
    ds, true_world, _ = world
    env = SlateEnv(
        ds, TrueWorldResponse(true_world), split="train", batch_users=4, device="cpu", reward=lambda c: c[:, 0]
    )
    with pytest.raises(ConfigError, match="depends on the click count only"):
        ExpectedReward.of_env(env)


def test_sampled_slates_are_valid_and_follow_the_policy(world):
    ds, true_world, index = world
    agent = make_agent(world, warm_start=0)
    active = torch.ones(ds.n_items, dtype=torch.bool)
    active[::3] = False  # a third of the catalogue withdrawn
    index = index.copy()
    index.remove_items(np.flatnonzero(~active.numpy()))
    agent.set_catalogue(torch.as_tensor(ds.item_features), index)
    obs = make_env(ds, true_world).reset()
    groups = agent.sample_groups(obs)
    g, k = agent.config.grpo.group, ds.slate_size
    assert groups.items.shape == (16 * g, k) and groups.rewards.shape == (16, g)
    assert all(len(set(row)) == k and all(active[i] for i in row) for row in groups.items.tolist())
    assert torch.equal(index.sid_of(groups.items), groups.tokens)  # every SID exists and is the item's
    assert torch.equal(groups.repeated.hist_items, obs.hist_items.repeat_interleave(g, 0))
    # the slates of one state differ (sampled, not G copies of one), and each group has a reward spread
    assert all(len({tuple(sorted(s)) for s in groups.items[i * g : (i + 1) * g].tolist()}) > 1 for i in range(16))
    # the learner's teacher-forced log-probabilities are the sampler's
    logp = agent.policy_terms(groups)["logp"]
    torch.testing.assert_close(logp, groups.sampled_logp, atol=1e-5, rtol=0)
    for slate in (agent.act(obs, greedy=True), agent.explore(obs)[0]):
        assert all(len(set(row)) == k and all(active[i] for i in row) for row in slate.tolist())


def test_ratios_are_exactly_one_on_freshly_sampled_slates(world):
    ds, true_world, _ = world
    agent = make_agent(world, warm_start=0)
    groups = agent.sample_groups(make_env(ds, true_world).reset())
    terms = agent.policy_terms(groups)
    assert torch.equal(terms["ratio"], torch.ones_like(terms["ratio"]))
    # a step later the same slates have moved: the second epoch's ratios are not all 1
    old = terms["logp"].detach()
    agent.optimizer.zero_grad()
    terms["loss"].backward()
    agent.optimizer.step()
    assert not torch.equal(agent.policy_terms(groups, old)["ratio"], torch.ones_like(old))


def test_kl_is_zero_after_freezing_and_positive_after_an_update(world):
    ds, true_world, _ = world
    agent = make_agent(world, warm_start=3)
    env = make_env(ds, true_world)
    obs = env.reset()
    initial = {k: v.clone() for k, v in agent.policy.net.state_dict().items()}
    for _ in range(3):
        assert "warm_nll" in agent.update(batch_of(obs))  # the warm start: supervised steps
    assert not agent.frozen
    agent.freeze_reference()
    ref = agent.reference.net.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in agent.policy.net.state_dict().items())
    assert not all(torch.equal(initial[k], ref[k]) for k in ref)  # the reference is the warm-started policy
    kl = agent.policy_terms(agent.sample_groups(obs))["kl"]
    assert torch.equal(kl, torch.zeros_like(kl))
    record = agent.update(batch_of(obs))
    assert "kl" in record and agent.updates == 4
    kl = agent.policy_terms(agent.sample_groups(obs))["kl"]
    assert float(kl.detach().min()) >= 0.0 and float(kl.detach().sum()) > 0.0
    assert all(torch.equal(ref[k], v) for k, v in agent.reference.net.state_dict().items())  # stays frozen


def test_warm_start_learns_the_logged_clicks_then_rl_begins(world):
    agent = make_agent(world, warm_start=40)
    logs = agent.logs
    assert logs is not None

    @torch.no_grad()
    def nll() -> float:  # of every logged click under the policy
        state = agent.policy.net.encoder(logs.obs, agent.item_features)
        logp = agent.policy._token_pass(state, agent.index.sid_of(logs.slate), logs.obs)[0].sum(-1)
        return float(-(logs.clicks * logp).sum() / logs.clicks.sum())

    obs = make_env(*world[:2]).reset()
    before = nll()
    for _ in range(40):
        assert "warm_nll" in agent.update(batch_of(obs))  # minibatches of the logs, not of obs
    after = nll()
    print(before, after)
    assert after < before - 0.2, (before, after)
    assert not agent.frozen
    assert "reward" in agent.update(batch_of(obs)) and agent.frozen  # update 41: the reference, then RL


def test_save_and_load_round_trip_gives_identical_greedy_slates(world, tmp_path):
    ds, true_world, _ = world
    agent = make_agent(world, warm_start=2)
    obs = make_env(ds, true_world).reset()
    for _ in range(4):
        agent.update(batch_of(obs))
    path = agent.save(tmp_path / "grpo.pt")
    loaded = Agent.load(path)
    assert type(loaded) is GRPOAgent and loaded.frozen and loaded.updates == 4
    assert torch.equal(loaded.act(obs), agent.act(obs))
    test_obs = make_env(ds, true_world, seed=5).reset()
    assert torch.equal(GRPOAgent.load(path).act(test_obs), agent.act(test_obs))
    fresh = make_agent(world, warm_start=2)
    assert not torch.equal(fresh.act(test_obs), agent.act(test_obs))  # the file's weights, not the init's
    ref = loaded.reference.net.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in agent.reference.net.state_dict().items())
    # the reward model and the logs are training inputs, never saved: it acts without them
    assert loaded.reward_model is None and loaded.logs is None
    assert loaded.explore(obs)[0].shape == (16, ds.slate_size)
    with pytest.raises(ValueError, match="no reward model"):
        loaded.update(batch_of(obs))
    with pytest.raises(ArtifactError, match="not 'hsrl'"):
        HSRLAgent.load(path)


def test_grpo_beats_random_on_a_tiny_world(world):
    ds, true_world, index = world
    feats = torch.as_tensor(ds.item_features)
    random_score = evaluate(RandomAgent(feats, ds.slate_size, 0), make_env(ds, true_world, 99), 200)["total_reward"]
    agent = make_agent(world, exposure=False, warm_start=20)
    cfg = TrainConfig(steps=70, start_steps=32, batch_size=32, eval_every=10**9, checkpoint_every=10**9, seed=0)
    Trainer(agent, make_env(ds, true_world), cfg, show_progress=False).fit()
    score = evaluate(agent, make_env(ds, true_world, 99), 200)["total_reward"]
    assert score > 1.5 * random_score, (score, random_score)


# ---------------------------------------------------------------------- the registry: training simulator only
@pytest.fixture(scope="module")
def small_run(tmp_path_factory, world):
    """A run directory with data, a Semantic ID index and two (untrained) simulators: the training one
    and the judge."""
    from hsrl.rundir import RunDir
    from hsrl.simulator.response import UserResponseModel, save_checkpoint
    from hsrl.workflow import prepare_data

    out = tmp_path_factory.mktemp("grpo") / "run"
    ds = prepare_data(out, load_config(overrides=SMALL)).value
    run = RunDir(out)
    for judge in (False, True):
        torch.manual_seed(int(judge))
        model = UserResponseModel.from_dataset(ds, SimulatorConfig(dim=8, heads=2, clusters=4))
        run.simulator_dir(judge).mkdir(parents=True, exist_ok=True)
        save_checkpoint(model, run.simulator_file(judge))
    world[2].save(run.index_file)
    return out


def test_the_registry_builds_grpo_on_the_training_simulator(small_run):
    env = SlateEnv.from_run(small_run, split="train", seed=0, device="cpu")
    agent = hsrl.build_agent("grpo:group=4+warm_start=1", small_run, env=env)
    assert isinstance(agent, GRPOAgent) and agent.config.grpo.group == 4
    assert agent.reward_model is not None and agent.logs is not None
    assert registry.get("grpo").uses_index and registry.get("grpo").options is GRPOConfig
    obs = env.reset()
    agent.update(batch_of(obs))  # warm start on the logs
    record = agent.update(batch_of(obs))  # RL scored by the simulator
    assert np.isfinite(record["reward"])
    # its reward model is the simulator's expected reward
    slate = agent.act(obs)
    probs = env.response.click_probs(obs, slate)
    expected = (probs.double() - 0.1 * (1 - probs.double())).mean(-1)
    torch.testing.assert_close(agent.reward_model(obs, slate), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "world_kind, split, match",
    [
        ("judge", "train", "not the run's training simulator"),
        ("true", "train", "true world"),
        ("simulator", "val", "split"),
    ],
)
def test_grpo_refuses_any_other_reward_model(small_run, world_kind, split, match):
    env = SlateEnv.from_run(small_run, split=split, world=world_kind, seed=0, device="cpu")
    with pytest.raises(ConfigError, match=match):
        registry.build("grpo", RunDir(small_run), env=env)  # the registry, on the run's artefacts


@pytest.mark.parametrize("agent", ["hsrl", "sl", "a2c", "hac"])
@pytest.mark.parametrize("world_kind, split", [("judge", "train"), ("true", "train"), ("simulator", "val")])
def test_distill_s_teacher_is_the_training_simulator_only(small_run, agent, world_kind, split):
    """agent.distill (on by default): every learned agent built in the training simulator gets its click
    model as the teacher; built anywhere else (the judge, the true world, validation users) it gets none."""
    train = SlateEnv.from_run(small_run, split="train", seed=0, device="cpu")
    built = registry.build(agent, RunDir(small_run), env=train)
    assert built.teacher is not None
    obs = train.reset()
    active = torch.ones(train.n_items, dtype=torch.bool)
    expected = ItemTeacher(train.response.click_probs, 0.5).targets(obs, active)
    assert torch.equal(built.teacher.targets(obs, active), expected)
    off = RunDir(small_run).config().model_copy(deep=True)
    off.agent.distill = 0.0
    assert registry.build(agent, RunDir(small_run), off, env=train).teacher is None
    env = SlateEnv.from_run(small_run, split=split, world=world_kind, seed=0, device="cpu")
    assert registry.build(agent, RunDir(small_run), env=env).teacher is None


@pytest.mark.parametrize("agent", ["sl", "a2c", "hac", "ddpg", "td3", "grpo"])
def test_every_learned_agent_learns_from_the_distill_term(small_run, agent):
    """The signal HSRL gets is offered to every learned agent: its cross-entropy to the teacher falls
    when the agent is updated on one replayed batch (GRPO past its warm start)."""
    from hsrl.train.buffer import ReplayBuffer
    from hsrl.train.loop import collect_step

    cfg = RunDir(small_run).config().model_copy(deep=True)
    cfg.agent.distill, cfg.agent.grpo.warm_start = 1.0, 0
    env = SlateEnv.from_run(small_run, split="train", seed=0, device="cpu")
    built = registry.build(agent, RunDir(small_run), cfg, env=env)
    buffer = ReplayBuffer(1000, seed=0)
    obs = env.reset()
    for _ in range(3):
        obs = collect_step(built, env, buffer, obs)
    batch = buffer.sample(32)
    seen = [r["distill"] for r in (built.update(batch) for _ in range(40)) if "distill" in r]
    assert len(seen) >= 20 and seen[-1] < seen[0] - 0.05, seen[:: len(seen) // 5]


def test_a_catalogue_view_is_scored_in_the_world_s_item_order(small_run):
    from hsrl.simulator.catalogue import CatalogueView

    env = SlateEnv.from_run(small_run, split="train", seed=0, device="cpu")
    order = np.random.default_rng(0).permutation(env.n_items)
    view = CatalogueView(env, order, env.n_items)
    obs = view.reset()
    slate = torch.arange(env.slate_size).expand(obs.batch_size, -1).contiguous()
    through = simulator_reward(view, RunDir(small_run).simulator)(obs, slate)
    direct = ExpectedReward.of_env(env)(env.observation, torch.as_tensor(order)[slate])
    torch.testing.assert_close(through, direct)

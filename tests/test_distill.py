"""``distill``: the training simulator's click probabilities of every item as a per-item teacher.

The targets are a distribution over the active items ranked as the click model ranks them; the policy's
item distribution is differentiable, and a few updates move the policy's greedy slate towards the
teacher's top K. Mechanics are tested with a tiny world's TRUE click model as the teacher (what the
registry gives, the training simulator only, is tested in tests/test_grpo.py with GRPO's reward model).
"""

from __future__ import annotations

import pytest
import torch

from hsrl.agents import HSRLAgent
from hsrl.agents.world_model import ItemTeacher, every_item_click_probs
from hsrl.config import AgentConfig, load_config
from hsrl.data.synthetic import generate
from hsrl.sid.index import SemanticIDIndex
from hsrl.simulator.env import SlateEnv, TrueWorldResponse
from hsrl.train.buffer import ReplayBuffer
from hsrl.train.loop import collect_step

SMALL = ["data.synthetic.n_users=80", "data.synthetic.n_items=120"]


@pytest.fixture(scope="module")
def world():
    ds, true_world = generate(load_config(overrides=SMALL).data)
    return ds, true_world


def make_env(ds, true_world, batch=16, seed=0) -> SlateEnv:
    return SlateEnv(ds, TrueWorldResponse(true_world), split="train", batch_users=batch, seed=seed, device="cpu")


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
    _, without, _ = trained()
    assert with_teacher > start + 0.25 and with_teacher > without + 0.15, (start, with_teacher, without)
    assert sum(losses[-10:]) < sum(losses[:10]) - 0.5


def test_distill_without_a_teacher_is_a_clear_error(world):
    ds, true_world = world
    cfg = AgentConfig(dim=16, layers=1, heads=2, distill=1.0)
    index = SemanticIDIndex.build(ds.item_features, levels=2, codes=8, seed=0)
    agent = HSRLAgent(torch.as_tensor(ds.item_features), ds.slate_size, index, ds.profile_dim, ds.history_length, cfg)
    env = make_env(ds, true_world)
    buffer = ReplayBuffer(1000, seed=0)
    collect_step(agent, env, buffer, env.reset())
    with pytest.raises(ValueError, match="training simulator's click model"):
        agent.update(buffer.sample(8))


def test_a_checkpoint_saved_before_distill_existed_is_reused_only_with_it_off():
    from hsrl.config import RunConfig
    from hsrl.tuning import protocol_config
    from hsrl.workflow.checkpoints import config_drift

    cfg = RunConfig()
    saved = cfg.agent.model_dump(mode="json")
    del saved["distill"], saved["distill_temperature"]  # what a checkpoint of the previous round holds
    assert config_drift(saved, "hsrl", cfg) == []
    assert config_drift(saved, "hsrl:distill=1", cfg) == ["distill"]
    assert "distill" not in protocol_config(cfg, "hac")["agent"]  # every shipped study stays valid at 0
    cfg.agent.distill = 2.0
    assert protocol_config(cfg, "hac")["agent"]["distill"] == 2.0

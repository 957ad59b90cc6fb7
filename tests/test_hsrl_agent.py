"""HSRL agent: trie decoding, dynamic catalogue, token credit, TD masking, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsrl.agents import HSRLAgent
from hsrl.config import AgentConfig, load_config
from hsrl.data.synthetic import generate
from hsrl.sid.index import SemanticIDIndex
from hsrl.simulator.env import SlateEnv, TrueWorldResponse

SMALL = ["data.synthetic.n_users=80", "data.synthetic.n_items=120"]


@pytest.fixture(scope="module")
def world():
    cfg = load_config(overrides=SMALL)
    ds, true_world = generate(cfg.data)
    index = SemanticIDIndex.build(ds.item_features, levels=2, codes=8, seed=0)
    return ds, true_world, index


def make_agent(ds, index, **overrides) -> HSRLAgent:
    feats = torch.as_tensor(ds.item_features)
    cfg = AgentConfig(dropout=0.0, **overrides)
    return HSRLAgent(feats, ds.slate_size, index, ds.profile_dim, ds.history_length, cfg, seed=0)


def make_env(ds, true_world, seed=0) -> SlateEnv:
    return SlateEnv(ds, TrueWorldResponse(true_world), split="train", batch_users=16, seed=seed, device="cpu")


@pytest.mark.parametrize("decode", ["trie", "score_all"])
@pytest.mark.parametrize("greedy", [True, False])
def test_slates_hold_k_distinct_existing_items(world, decode, greedy):
    ds, true_world, index = world
    agent = make_agent(ds, index, decode=decode)
    obs = make_env(ds, true_world).reset()
    slate = agent.act(obs, greedy=greedy)
    assert slate.shape == (16, ds.slate_size)
    assert int(slate.min()) >= 0 and int(slate.max()) < ds.n_items
    assert all(len(set(row.tolist())) == ds.slate_size for row in slate)


def test_sampled_tokens_are_the_sids_of_the_items(world):
    ds, true_world, index = world
    agent = make_agent(ds, index)
    slate, extras = agent.explore(make_env(ds, true_world).reset())
    np.testing.assert_array_equal(index.sid_of(slate).numpy(), extras["tokens"].numpy())


def test_tiny_catalogue_slate_uses_every_item():
    """Without replacement, K = N forces every item into the slate (exercises the child counts)."""
    cfg = load_config(overrides=["data.synthetic.n_users=20", "data.synthetic.n_items=12", "data.slate_size=12"])
    ds, true_world = generate(cfg.data)
    index = SemanticIDIndex.build(ds.item_features, levels=2, codes=2, seed=0)
    agent = make_agent(ds, index)
    obs = SlateEnv(ds, TrueWorldResponse(true_world), split="train", batch_users=4, seed=0, device="cpu").reset()
    for greedy in (False, True):
        slate = agent.act(obs, greedy=greedy)
        assert all(sorted(row.tolist()) == list(range(12)) for row in slate)


def test_added_items_can_appear_and_removed_items_never_do(world):
    ds, true_world, base = world
    index = _copy(base)
    agent = make_agent(ds, index)
    obs = make_env(ds, true_world).reset()
    # new items: perturbed copies of existing ones, quantised with the frozen codebooks
    rng = np.random.default_rng(0)
    new_feats = ds.item_features[:20] + 0.01 * rng.normal(size=(20, ds.feature_dim)).astype(np.float32)
    new_ids = index.add_items(new_feats)
    removed = np.arange(20, 60)
    index.remove_items(removed)
    features = torch.as_tensor(np.concatenate([ds.item_features, new_feats]))
    agent.set_catalogue(features, index)  # no retraining, no new parameters
    seen = set()
    for _ in range(30):
        seen.update(agent.act(obs, greedy=False).flatten().tolist())
    seen.update(agent.act(obs, greedy=True).flatten().tolist())
    assert seen & set(new_ids.tolist()), "a new item never appeared in 30 sampled slates"
    assert not seen & set(removed.tolist()), "a removed item was recommended"


def _copy(index: SemanticIDIndex) -> SemanticIDIndex:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "index.npz"
        index.save(path)
        return SemanticIDIndex.load(path)


def test_token_advantages_sum_to_slate_advantage():
    values = torch.randn(5, 3, 4)  # v_0..v_3 for depth 3
    target = torch.randn(5)
    adv = HSRLAgent.token_advantages(values, target, "token")
    assert adv.shape == (5, 3, 3)
    torch.testing.assert_close(adv.sum(-1), (target[:, None] - values[..., 0]).expand(5, 3))
    # each token's own advantage differs from the slate's (fine-grained credit)
    assert not torch.allclose(adv[..., 0], adv.sum(-1))
    slate = HSRLAgent.token_advantages(values, target, "slate")
    torch.testing.assert_close(slate, (target[:, None, None] - values[..., :1]).expand(5, 3, 3))


def test_td_target_never_bootstraps_across_users(world):
    ds, true_world, index = world
    agent = make_agent(ds, index)
    obs = make_env(ds, true_world).reset()
    reward = torch.linspace(-0.1, 1.0, 16)
    done = torch.zeros(16, dtype=torch.bool)
    done[::2] = True
    y = agent.td_target(reward, obs, done)
    torch.testing.assert_close(y[done], reward[done])
    with torch.no_grad():
        v = agent.target.policy.value(0, agent.target.encoder(obs, agent.item_features))
    torch.testing.assert_close(y[~done], reward[~done] + agent.config.gamma * v[~done])


def test_save_load_round_trip_and_mismatch(world, tmp_path):
    ds, true_world, index = world
    agent = make_agent(ds, index)
    obs = make_env(ds, true_world).reset()
    path = tmp_path / "agent.pt"
    agent.save(path)
    with torch.no_grad():  # the saved weights, not a fresh agent's: the slates must follow the file
        for p in agent.net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    agent.save(path)
    other = HSRLAgent.load(path)  # rebuilt from the file alone
    assert torch.equal(agent.act(obs), other.act(obs))
    assert not torch.equal(make_agent(ds, index).act(obs), other.act(obs))
    from hsrl.errors import ArtifactError

    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ArtifactError):
        HSRLAgent.load(path)


def test_soft_residual_differs_from_hard(world):
    ds, true_world, index = world
    hard, soft = make_agent(ds, index, residual="hard"), make_agent(ds, index, residual="soft")
    soft.net.load_state_dict(hard.net.state_dict())
    obs = make_env(ds, true_world).reset()
    _, extras = hard.explore(obs)
    s_h = hard.net.encoder(obs, hard.item_features)
    lp_h = hard._token_pass(s_h, extras["tokens"], obs)[0]
    lp_s = soft._token_pass(s_h, extras["tokens"], obs)[0]
    torch.testing.assert_close(lp_h[..., 0], lp_s[..., 0])  # level 1 sees only the state
    assert not torch.allclose(lp_h[..., 1:], lp_s[..., 1:])  # deeper levels see different contexts


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"token_heads": "semantic"},
        {"residual": "soft", "exposure": False},
        {"token_heads": "semantic", "exposure": False},
    ],
)
def test_shared_prefix_score_all_equals_the_per_item_one(world, overrides):
    """score_all computes one distribution per distinct prefix; it must equal recomputing it per item."""
    from hsrl.agents.decoding import score_all, score_all_naive

    ds, true_world, index = world
    agent = make_agent(ds, index, **overrides)
    with torch.no_grad():  # make the exposure features count, so their sharing is checked too
        for layer in getattr(agent.net.policy, "exposure_coef", []):
            layer.bias.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(1))
    obs = make_env(ds, true_world).reset()  # logged histories: the exposure features are not zero
    state = agent.net.encoder(obs, agent.item_features).detach()
    args = (agent.net.policy, index, state, agent.items(), agent.recent(obs))
    fast, slow = score_all(*args), score_all_naive(*args)
    assert fast.shape == (16, ds.n_items)
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)
    assert fast.std() > 0.01


def test_sparse_exposure_logits_equal_the_dense_count_formula(world):
    """The policy applies the exposure counts without building them densely; the logits must equal
    base + <coef(c), [counts, counts spread by centroid similarity]> computed from the dense counts."""
    ds, true_world, index = world
    agent = make_agent(ds, index)
    policy = agent.net.policy
    with torch.no_grad():
        for layer in policy.exposure_coef:
            layer.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(2))
            layer.bias.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(3))
    obs = make_env(ds, true_world).reset()
    recent = agent.recent(obs)
    state = agent.net.encoder(obs, agent.item_features).detach()
    codes = torch.as_tensor(index.codes)
    rows = torch.arange(16).repeat_interleave(4)
    for level in range(policy.depth):
        prefix = codes[torch.randint(0, ds.n_items, (64,), generator=torch.Generator().manual_seed(level)), :level]
        exposure = recent.branches(prefix.view(16, 4, level)).view(64)
        dense = exposure.dense(policy.vocab_sizes[level])
        assert float(dense.sum()) > 0, "the histories should hold entries under some of these prefixes"
        if level < policy.depth - 1:
            dense = torch.cat([dense, torch.einsum("mvf,vw->mwf", dense, getattr(policy, f"similarity{level}"))], -1)
        context = state[rows]
        expected = policy.raw_logits(level, context) + (policy.exposure_coef[level](context)[:, None, :] * dense).sum(
            -1
        )
        torch.testing.assert_close(policy.raw_logits(level, context, exposure=exposure), expected, atol=1e-4, rtol=1e-4)

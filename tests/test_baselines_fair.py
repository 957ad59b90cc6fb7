"""A fair comparison (issue 12): the learned baselines get the signals and safeguards HSRL has where they
apply (A2C-item: HSRL's click loss, supervision, dual clip and ratio clamp), and the DDPG/TD3 noise
settings mean the same perturbation in any action dimension. Small worlds as in test_baselines.py."""

from __future__ import annotations

import math

import pytest
import torch

from hsrl.agents import A2CItemAgent, DDPGAgent, HACAgent, TD3Agent
from hsrl.agents.base import ppo_surrogate
from hsrl.config import AgentConfig, TrainConfig, load_config
from hsrl.data.synthetic import generate
from hsrl.simulator.env import SlateEnv, TrueWorldResponse
from hsrl.train.loop import Trainer

SMALL = ["data.synthetic.n_users=80", "data.synthetic.n_items=60", "data.history_length=10"]


@pytest.fixture(scope="module")
def world():
    return generate(load_config(overrides=SMALL).data)


def make_env(ds, true_world, seed=0, batch=16) -> SlateEnv:
    return SlateEnv(ds, TrueWorldResponse(true_world), split="train", batch_users=batch, seed=seed, device="cpu")


def make(kind, ds, dim=16, seed=0, **own):
    name = kind.name
    cfg = AgentConfig(dim=dim, layers=1, heads=2, dropout=0.0, **{name: own})
    return kind(torch.as_tensor(ds.item_features), ds.slate_size, ds.profile_dim, ds.history_length, cfg, seed)


@pytest.fixture(scope="module")
def a2c_batch(world):
    """A real replayed batch of A2C transitions (slates, stored log pi, per-slot clicks)."""
    ds, true_world = world
    cfg = TrainConfig(steps=4, start_steps=10**9, batch_size=64, eval_every=10**9, checkpoint_every=10**9)
    trainer = Trainer(make(A2CItemAgent, ds), make_env(ds, true_world), cfg, show_progress=False)
    trainer.fit()
    batch = trainer.buffer.sample(64)
    assert batch["clicks"].shape == batch["slate"].shape
    return batch


def bias_grad(agent: A2CItemAgent, batch) -> torch.Tensor:
    """d loss / d (the actor's last bias): one entry per item id, the summed gradient on that item's logit."""
    agent.train_mode(True)
    last = agent.actor[-1]
    (grad,) = torch.autograd.grad(agent.losses(batch)["loss"], last.bias)
    return grad


# ------------------------------------------------------------------ A2C-item: HSRL's per-item terms
def test_a2c_defaults_are_hsrls():
    cfg = AgentConfig()
    assert cfg.a2c.click_loss == cfg.click_loss and cfg.a2c.supervision == cfg.supervision
    assert cfg.a2c.clip == cfg.clip and cfg.a2c.entropy == cfg.entropy


def test_a2c_click_loss_learns_from_skipped_items(world, a2c_batch):
    """Every shown slot skipped: only the click loss has anything to say about those items' logits (it
    pushes them down); with click_loss=0 the same batch gives the same gradient as without the term."""
    ds, _ = world
    skipped = dict(a2c_batch, clicks=torch.zeros_like(a2c_batch["clicks"]))
    on = bias_grad(make(A2CItemAgent, ds, click_loss=1.0, supervision=0.0), skipped)
    off = bias_grad(make(A2CItemAgent, ds, click_loss=0.0, supervision=0.0), skipped)
    shown = torch.zeros(ds.n_items, dtype=torch.bool)
    shown[skipped["slate"].unique()] = True
    diff = on - off
    assert bool((diff[shown] > 0).all())  # BCE to 0: every skipped item's logit goes down
    torch.testing.assert_close(diff[~shown], torch.zeros_like(diff[~shown]), atol=1e-7, rtol=0)
    # exactly HSRL's normalisation: mean over the B x K shown slots of sigmoid(logit) - click
    agent = make(A2CItemAgent, ds, click_loss=1.0, supervision=0.0)
    with torch.no_grad():
        logits = agent.actor(agent.encoder(skipped["obs"], agent.item_features)).gather(1, skipped["slate"])
    assert float(agent.losses(skipped)["click_loss"].detach()) == pytest.approx(
        float(torch.nn.functional.softplus(logits).mean()), rel=1e-5
    )


def test_a2c_click_loss_reads_each_slots_own_click(world, a2c_batch):
    """Flipping one slot's click changes the click loss only through that slot's item."""
    ds, _ = world
    agent = make(A2CItemAgent, ds, click_loss=1.0, supervision=0.0)
    base = bias_grad(agent, a2c_batch)
    clicks = a2c_batch["clicks"].clone()
    clicks[0, 0] = 1 - clicks[0, 0]
    flipped = bias_grad(agent, dict(a2c_batch, clicks=clicks))
    changed = (flipped - base).abs() > 1e-9
    assert changed.nonzero().flatten().tolist() == [int(a2c_batch["slate"][0, 0])]


def test_a2c_supervision_raises_the_likelihood_of_clicked_items(world, a2c_batch):
    ds, _ = world
    clicks = torch.zeros_like(a2c_batch["clicks"])
    clicks[:, 0] = 1.0  # the first slot of every slate clicked
    batch = dict(a2c_batch, clicks=clicks)
    on = make(A2CItemAgent, ds, click_loss=0.0, supervision=3.0)
    off = make(A2CItemAgent, ds, click_loss=0.0, supervision=0.0)
    terms = on.losses(batch)
    with torch.no_grad():
        logp = on.log_probs(on.encoder(batch["obs"], on.item_features)).gather(1, batch["slate"])
    # HSRL's normalisation: minus the summed log-likelihood of the clicked items, per click
    assert float(terms["supervision"].detach()) == pytest.approx(float(-logp[:, 0].mean()), rel=1e-5)
    diff = bias_grad(on, batch) - bias_grad(off, batch)
    clicked = torch.zeros(ds.n_items, dtype=torch.bool)
    clicked[batch["slate"][:, 0]] = True
    # a log-softmax: every other item's logit is pushed down, the clicked items' up (in sum)
    assert bool((diff[~clicked] > 0).all())
    assert float(diff[clicked].sum()) < 0
    assert float(diff.sum()) == pytest.approx(0.0, abs=1e-5)
    assert float(off.losses(batch)["supervision"].detach()) == 0.0


def test_ppo_surrogate_shared_by_hsrl_and_a2c_is_dual_clipped_and_clamped():
    """One elementwise surrogate (agents/base.py) for HSRL, A2C and GRPO: clamp the log-ratio to [-20, 20],
    PPO clip, and with a negative advantage never below 3 A (the dual clip), however stale the action."""
    gen = torch.Generator().manual_seed(0)
    logp, old, adv = (torch.randn(4000, generator=gen) * 3 for _ in range(3))
    clip = 0.2
    ratio = (logp - old).clamp(-20.0, 20.0).exp()
    reference = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)  # hsrl.py, verbatim
    reference = torch.where(adv < 0, torch.maximum(reference, 3.0 * adv), reference)
    torch.testing.assert_close(ppo_surrogate(logp, old, adv, clip)[0], reference, rtol=0, atol=0)
    # negative advantage, huge ratio: exactly 3 A, not r A; positive: (1 + clip) A; overflow-free
    a = torch.tensor([-1.0, -0.5, 2.0, -1.0])
    s, _ = ppo_surrogate(torch.tensor([5.0, 1000.0, 1000.0, -1000.0]), torch.zeros(4), a, clip)
    torch.testing.assert_close(s, torch.tensor([-3.0, -1.5, 2.0 * 1.2, -1.0 * 0.8]))
    assert bool(torch.isfinite(s).all())


def test_a2c_update_is_bounded_on_stale_replayed_slates(world, a2c_batch):
    """Replayed log pi far below the current one (ratio e^1000 without the clamp): per slot the actor term is
    exactly 3 A for a negative advantage (dual clip) and (1 + clip) A for a positive one."""
    ds, _ = world
    agent = make(A2CItemAgent, ds, click_loss=0.0, supervision=0.0, entropy=0.0)
    stale = dict(a2c_batch, logp=a2c_batch["logp"] - 1000.0)
    terms = agent.losses(stale)
    with torch.no_grad():
        y = agent.td_target(stale["reward"], stale["next_obs"], stale["done"])
        adv = y - agent.critic(agent.encoder(stale["obs"], agent.item_features)).squeeze(-1)
        adv = adv / (adv.std() + 1e-6)
    assert bool((adv < 0).any() and (adv > 0).any())
    k = stale["slate"].shape[1]
    expected = -(k * torch.where(adv < 0, 3.0 * adv, (1 + agent.config.a2c.clip) * adv)).mean()
    assert float(terms["actor_loss"].detach()) == pytest.approx(float(expected), rel=1e-4)


# ------------------------------------------------------------------ DDPG / TD3: noise sizes, not per-coordinate stds
def mean_angle(agent: DDPGAgent, n: int = 4000, **kwargs) -> torch.Tensor:
    """Angles (degrees) between random unit actions and their perturbations (``kwargs``: std/clip)."""
    dim = agent.action_dim
    gen = torch.Generator().manual_seed(1)
    action = torch.nn.functional.normalize(torch.randn(n, dim, generator=gen), dim=-1)
    noisy = agent.perturb(action, **kwargs)
    return torch.rad2deg(torch.arccos((action * noisy).sum(-1).clamp(-1.0, 1.0)))


def test_ddpg_exploration_angle_is_the_same_in_any_dimension(world):
    ds, _ = world
    noise = 0.5
    angles = {d: float(mean_angle(make(DDPGAgent, ds, dim=d, noise_size=noise)).mean()) for d in (8, 32, 128)}
    expected = math.degrees(math.atan(noise))  # |noise| ~ noise, mostly orthogonal to the unit action
    assert max(angles.values()) <= 1.15 * min(angles.values()), angles
    for d, angle in angles.items():
        assert angle == pytest.approx(expected, rel=0.1), (d, angles)


def test_ddpg_default_noise_turns_the_action_by_its_documented_angle(world):
    ds, _ = world
    agent = make(DDPGAgent, ds, dim=32)
    noise = agent.config.ddpg.noise_size
    angle = float(mean_angle(agent).mean())
    assert angle == pytest.approx(math.degrees(math.atan(noise)), rel=0.1)
    # the explored action a DDPG agent stores is a unit vector
    obs = make_env(ds, world[1]).reset()
    _slate, extras = agent.explore(obs)
    torch.testing.assert_close(extras["action"].norm(dim=-1), torch.ones(16))


@pytest.mark.parametrize("dim", [8, 32, 128])
def test_td3_target_noise_respects_the_scaled_clip(world, dim):
    """With noise far larger than the clip every coordinate is clipped at noise_clip / sqrt(d), so the noise
    vector is at most noise_clip long and turns the target action by at most asin(noise_clip)."""
    ds, _ = world
    clip = 0.3
    agent = make(TD3Agent, ds, dim=dim, target_noise_size=100.0, noise_clip_size=clip)
    angles = mean_angle(agent, std=agent.own.target_noise_size, clip=agent.own.noise_clip_size)
    assert float(angles.max()) <= math.degrees(math.asin(clip)) + 1e-3
    assert float(angles.mean()) == pytest.approx(math.degrees(math.atan(clip)), rel=0.1)
    # and target_action applies it: the smoothed target differs from the clean one by at most that angle
    state = torch.randn(64, dim)
    clean = agent.action(state, agent.target_actor)
    cos = (agent.target_action(state) * clean).sum(-1).clamp(-1.0, 1.0)
    smoothed = torch.rad2deg(torch.arccos(cos))
    assert float(smoothed.max()) <= math.degrees(math.asin(clip)) + 1e-3
    assert float(smoothed.min()) > 0.0


def test_td3_default_smoothing_angle_is_the_same_in_any_dimension(world):
    """The default target smoothing and its clip mean one angle at any dim (the old per-coordinate 0.2 was
    ~48 degrees at dim 32 and ~66 at dim 128)."""
    ds, _ = world
    angles = {}
    for d in (8, 32, 128):
        agent = make(TD3Agent, ds, dim=d)
        own = agent.own
        angles[d] = float(mean_angle(agent, std=own.target_noise_size, clip=own.noise_clip_size).mean())
    assert max(angles.values()) <= 1.15 * min(angles.values()), angles


# ------------------------------------------------------------------ HAC: every tuned option is a real field
def test_hac_options_are_used(world):
    ds, true_world = world
    opts = {"actor_lr": 3e-4, "critic_lr": 2e-3, "noise": 0.7, "hyper_coef": 3.0, "behavior_lr": 5e-5}
    agent = make(HACAgent, ds, **opts)
    assert agent.actor_optimizer.param_groups[0]["lr"] == opts["actor_lr"]
    assert agent.critic_optimizer.param_groups[0]["lr"] == opts["critic_lr"]
    assert agent.behavior_optimizer.param_groups[0]["lr"] == opts["behavior_lr"]
    z = torch.zeros(20000, agent.action_dim)
    assert float(agent.perturb(z).std()) == pytest.approx(opts["noise"], rel=0.05)  # unscaled: see hac.py
    obs = make_env(ds, true_world).reset()
    state = agent.encoder(obs, agent.item_features).detach()
    losses = {}
    for coef in (0.0, 3.0):
        agent.config.hac.hyper_coef = coef
        loss, extra = agent.actor_loss(state, {"obs": obs})
        losses[coef] = (float(loss.detach()), extra["hyper_actor_loss"])
    assert losses[3.0][0] == pytest.approx(losses[0.0][0] + 3.0 * losses[0.0][1], rel=1e-5)


def test_old_configs_with_the_old_noise_defaults_still_load():
    """An agent.baseline section (hsrl <= 0.1) saved the per-coordinate noise defaults 0.1/0.2/0.5: that is a
    config that kept every default, so it loads (with today's defaults); a changed old value still stops."""
    from hsrl.config import OLD_BASELINE_DEFAULTS

    assert (OLD_BASELINE_DEFAULTS["ddpg_noise"], OLD_BASELINE_DEFAULTS["td3_target_noise"]) == (0.1, 0.2)
    assert OLD_BASELINE_DEFAULTS["td3_noise_clip"] == 0.5
    cfg = AgentConfig.model_validate({"baseline": dict(OLD_BASELINE_DEFAULTS)})
    assert cfg.ddpg == AgentConfig().ddpg and cfg.td3 == AgentConfig().td3
    with pytest.raises(ValueError, match=r"agent\.ddpg\.noise"):
        AgentConfig.model_validate({"baseline": {"ddpg_noise": 0.3}})


def test_a_saved_per_coordinate_noise_is_converted_exactly_with_the_agents_dimension():
    """config.yaml files saved before the rename hold agent.ddpg.noise / agent.td3.target_noise (per
    coordinate): they are converted to sizes with the agent's dim (size = std x sqrt(dim)), so an old run
    explores exactly as it did, at any dimension."""
    from hsrl.config import load_config

    old = {"agent": {"ddpg": {"noise": 0.1}, "td3": {"noise": 0.1, "target_noise": 0.2, "noise_clip": 0.5}}}
    cfg = load_config(overrides=old)
    assert cfg.agent.ddpg.noise_size == pytest.approx(0.1 * 32**0.5)
    assert (cfg.agent.td3.target_noise_size, cfg.agent.td3.noise_clip_size) == pytest.approx(
        (0.2 * 32**0.5, 0.5 * 32**0.5)
    )
    at16 = load_config(overrides={"agent": {"dim": 16, "ddpg": {"noise": 0.3}}})
    assert at16.agent.ddpg.noise_size == pytest.approx(1.2)
    # same per-coordinate std as the old code: the perturbation a DDPG agent applies is unchanged
    assert at16.agent.ddpg.noise_size / 16**0.5 == pytest.approx(0.3)


# ------------------------------------------------------------------ SL: the replayed per-item clicks, offered
def sl_agent(ds, replay: float, seed: int = 0):
    from hsrl.agents import SupervisedAgent
    from hsrl.agents.supervised import LoggedSlates

    cfg = AgentConfig(dim=16, layers=1, heads=2, dropout=0.0, sl={"replay": replay})
    agent = SupervisedAgent(
        torch.as_tensor(ds.item_features), ds.slate_size, ds.profile_dim, ds.history_length, None, cfg, seed
    )
    agent.logs = LoggedSlates.from_dataset(ds)
    return agent


def test_sl_learns_from_replayed_clicks_only_when_asked(world, a2c_batch):
    """``sl.replay`` > 0 adds the BCE of each replayed slot's click (skipped slots included): flipping the
    replayed clicks changes the update then, and never with the logs-only default; the default SL still
    serves its greedy slate while exploring, the replay-learning one samples."""
    ds, _ = world
    flipped = {**a2c_batch, "clicks": 1.0 - a2c_batch["clicks"].float()}

    def after_update(replay: float, batch) -> torch.Tensor:
        agent = sl_agent(ds, replay)
        agent.update(batch)
        return torch.cat([p.detach().flatten() for p in agent.query.parameters()])

    assert torch.equal(after_update(0.0, a2c_batch), after_update(0.0, flipped))
    assert not torch.allclose(after_update(1.0, a2c_batch), after_update(1.0, flipped))
    obs = a2c_batch["obs"]
    greedy = sl_agent(ds, 0.0)
    assert torch.equal(greedy.explore(obs)[0], greedy.act(obs, greedy=True))
    sampling = sl_agent(ds, 1.0)
    assert not torch.equal(sampling.explore(obs)[0], sampling.act(obs, greedy=True))


def test_sl_fits_the_replayed_clicks(world, a2c_batch):
    """Learning from replay lowers the replayed slots' BCE (a fixed batch, 60 steps); from logs only it
    does not reach the same fit of those clicks."""
    ds, _ = world

    def replay_bce(replay: float) -> float:
        agent = sl_agent(ds, replay)
        for _ in range(60):
            agent.update(a2c_batch)
        with torch.no_grad():
            logits = agent.logits(a2c_batch["obs"], a2c_batch["slate"])
            return float(torch.nn.functional.binary_cross_entropy_with_logits(logits, a2c_batch["clicks"].float()))

    start = sl_agent(ds, 1.0)
    with torch.no_grad():
        logits = start.logits(a2c_batch["obs"], a2c_batch["slate"])
        before = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, a2c_batch["clicks"].float()))
    fitted, logs_only = replay_bce(1.0), replay_bce(0.0)
    assert fitted < 0.9 * before and fitted < logs_only


def test_an_sl_checkpoint_saved_before_replay_existed_is_reused_only_at_replay_0():
    from hsrl.config import RunConfig
    from hsrl.tuning import protocol_config
    from hsrl.workflow.checkpoints import config_drift

    cfg = RunConfig()
    saved = cfg.agent.model_dump(mode="json")
    del saved["sl"]["replay"]  # what an SL checkpoint of the previous round holds
    assert config_drift(saved, "sl", cfg) == []
    assert config_drift(saved, "sl:replay=1", cfg) == ["sl.replay"]
    assert "replay" not in protocol_config(cfg, "sl")["agent"]["sl"]  # tuned values stay valid at 0
    cfg.agent.sl.replay = 1.0
    assert protocol_config(cfg, "sl")["agent"]["sl"]["replay"] == 1.0


def test_sl_satiation_term_counts_similar_recent_items(world):
    """``sl.satiation``: the logit gains sum_h cos(candidate, h) x w[feedback_h, position_h]. Zero at the
    start (the scorer alone), the formula on hand-set weights, and absent (no module, old checkpoints fit)
    when off."""
    from hsrl.agents import SupervisedAgent
    from hsrl.simulator.observation import Observation

    ds, _ = world
    feats = torch.as_tensor(ds.item_features)
    cfg = AgentConfig(dim=16, layers=1, heads=2, dropout=0.0, sl={"satiation": True})
    agent = SupervisedAgent(feats, ds.slate_size, ds.profile_dim, ds.history_length, None, cfg, 0)
    assert "satiation" in agent.modules() and "satiation" not in sl_agent(ds, 0.0).modules()
    h = ds.history_length
    hist = torch.full((1, h), -1, dtype=torch.long)
    hist[0, -2:] = torch.tensor([3, 7])  # the two most recent entries: item 3 skipped, item 7 clicked
    fb = torch.zeros(1, h)
    fb[0, -1] = 1.0
    obs = Observation(torch.zeros(1, dtype=torch.long), torch.zeros(1, ds.profile_dim), hist, fb)
    items = torch.tensor([[3, 7, 11]])
    assert torch.equal(agent.satiation_logits(obs, items), torch.zeros(1, 3))
    with torch.no_grad():
        agent.satiation.weight[0, h - 2] = -2.0  # skipped, second most recent
        agent.satiation.weight[1, h - 1] = 0.5  # clicked, most recent
    unit = torch.nn.functional.normalize(feats, dim=-1)
    expected = -2.0 * unit[items[0]] @ unit[3] + 0.5 * unit[items[0]] @ unit[7]
    assert torch.allclose(agent.satiation_logits(obs, items)[0], expected, atol=1e-5)
    every = agent.satiation_logits(obs)  # every item at once agrees with the chosen ones
    assert torch.allclose(every[0, items[0]], expected, atol=1e-5)
    with agent.evaluating():
        plain = agent.logits(obs, items) - agent.satiation_logits(obs, items)
        agent.satiation.weight.zero_()
        assert torch.allclose(agent.logits(obs, items), plain, atol=1e-5)

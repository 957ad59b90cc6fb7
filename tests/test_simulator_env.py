"""SlateEnv: rewards, temper leave rule, episode bookkeeping, user replacement, seeding, gym adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsrl.config import load_config
from hsrl.data.synthetic import generate
from hsrl.simulator.env import SlateEnv, TrueWorldResponse
from hsrl.simulator.gym_adapter import SlateVectorEnv
from hsrl.simulator.reward import make_reward, mean_with_cost, sweet_point

SMALL = ["data.synthetic.n_users=60", "data.synthetic.n_items=40"]
K = 9


class FixedClicks:
    """A fake response that clicks exactly the first ``n`` slots of every slate."""

    def __init__(self, n: int) -> None:
        self.n = n

    def click_probs(self, obs, slate, slots=None):
        probs = torch.zeros(slate.shape, dtype=torch.float32)
        probs[:, : self.n] = 1.0
        return probs


@pytest.fixture(scope="module")
def world_data():
    ds, world = generate(load_config(overrides=SMALL).data)
    assert ds.slate_size == K
    return ds, world


def distinct_slates(b: int, n_items: int, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(b, n_items, generator=gen).argsort(dim=1)[:, :K]


def run_until_all_done_once(env: SlateEnv, gen: torch.Generator, max_steps: int = 100) -> np.ndarray:
    """Step until every row has finished at least once; returns the step at which each row first finished."""
    env.reset()
    first = np.zeros(env.batch_users, dtype=int)
    for t in range(1, max_steps + 1):
        _, _, done, _ = env.step(distinct_slates(env.batch_users, env.n_items, gen))
        newly = done.numpy() & (first == 0)
        first[newly] = t
        if (first > 0).all():
            return first
    raise AssertionError("sessions did not end")


@pytest.mark.parametrize("clicked", range(K + 1))
def test_reward_values_for_each_click_count(clicked):
    clicks = torch.zeros(3, K)
    for row, perm in enumerate(torch.randperm(K, generator=torch.Generator().manual_seed(clicked)).repeat(3, 1)):
        clicks[row, perm[:clicked]] = 1.0
    expected = (clicked - 0.1 * (K - clicked)) / K
    assert torch.allclose(mean_with_cost(clicks), torch.full((3,), expected))
    assert torch.allclose(sweet_point(clicks), torch.full((3,), 1 - abs(expected - 0.9)))


def test_unknown_reward_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        make_reward("nope")


def test_ceiling_for_both_rewards(world_data):
    ds, _ = world_data
    plain = SlateEnv(ds, FixedClicks(K), device="cpu").ceiling()
    assert plain["depth"] == 20 and plain["total_reward"] == pytest.approx(20.0)
    sweet = SlateEnv(ds, FixedClicks(K), reward="sweet_point", device="cpu").ceiling()
    best_step = 1 - abs((8 - 0.1) / K - 0.9)
    assert sweet["depth"] == 16 and sweet["clicks_per_slate"] == 8
    assert sweet["total_reward"] == pytest.approx(16 * best_step, abs=1e-9)


@pytest.mark.parametrize(
    ("reward", "clicked", "depth"), [("mean_with_cost", K, 20), ("sweet_point", 8, 16), ("mean_with_cost", 0, 2)]
)
def test_session_depth_follows_the_temper_rule(world_data, reward, clicked, depth):
    ds, _ = world_data
    env = SlateEnv(ds, FixedClicks(clicked), batch_users=6, reward=reward, device="cpu")
    first = run_until_all_done_once(env, torch.Generator().manual_seed(0))
    assert (first == depth).all()
    episodes = env.pop_episodes()
    assert len(episodes["return"]) == 6 and (episodes["depth"] == depth).all()
    step = make_reward(reward)(FixedClicks(clicked).click_probs(None, torch.zeros(1, K)))
    np.testing.assert_allclose(episodes["return"], depth * float(step), rtol=1e-5)
    assert env.ceiling()["depth"] >= depth


def test_every_finished_episode_is_recorded(world_data):
    ds, world = world_data
    env = SlateEnv(ds, TrueWorldResponse(world), batch_users=16, seed=3, device="cpu")
    gen = torch.Generator().manual_seed(0)
    env.reset()
    done_flags, multi_done_steps = 0, 0
    returns_seen = []
    for _ in range(60):
        _, _, done, info = env.step(distinct_slates(16, ds.n_items, gen))
        done_flags += int(done.sum())
        multi_done_steps += int(done.sum() > 1)
        returns_seen.extend(info["episode_return"][done].tolist())
    episodes = env.pop_episodes()
    assert multi_done_steps > 0  # several users did finish in one step
    assert len(episodes["return"]) == done_flags == env.episodes_finished
    np.testing.assert_allclose(episodes["return"], returns_seen)
    assert (episodes["depth"] >= 1).all()
    assert env.user_steps == 60 * 16
    assert len(env.pop_episodes()["return"]) == 0  # popped records are cleared


def test_done_rows_get_fresh_users_and_history_grows(world_data):
    ds, _ = world_data
    env = SlateEnv(ds, FixedClicks(0), batch_users=32, seed=1, device="cpu")
    gen = torch.Generator().manual_seed(0)
    obs0 = env.reset()
    slate = distinct_slates(32, ds.n_items, gen)
    obs1, _, done, info = env.step(slate)
    assert not done.any()
    assert torch.equal(obs1.hist_items[:, -K:], slate) and (obs1.hist_feedback[:, -K:] == 0).all()
    assert torch.equal(obs1.hist_items[:, :-K], obs0.hist_items[:, K:])
    obs2, _, done, info = env.step(distinct_slates(32, ds.n_items, gen))
    assert done.all()  # no clicks: two steps
    starts = {tuple(r) for r in ds.hist_items[ds.rows_in("test")].tolist()}
    assert all(tuple(r) in starts for r in obs2.hist_items.tolist())  # a start state of the split
    assert not torch.equal(obs2.hist_items, info["final_obs"].hist_items)
    test_users = set(ds.users_in("test").tolist())
    assert set(obs2.user.tolist()) <= test_users
    _, _, done, _ = env.step(distinct_slates(32, ds.n_items, gen))
    assert not done.any()  # the fresh users' temper starts again
    assert torch.equal(obs1.hist_items[:, -K:], slate)  # returned observations are never mutated


def test_same_seed_same_run_other_seed_differs(world_data):
    ds, world = world_data

    def trajectory(seed: int):
        env = SlateEnv(ds, TrueWorldResponse(world), batch_users=8, seed=seed, device="cpu")
        gen = torch.Generator().manual_seed(0)
        obs = env.reset()
        out = [obs.user.clone()]
        for _ in range(25):
            obs, reward, done, _ = env.step(distinct_slates(8, ds.n_items, gen))
            out += [obs.user.clone(), reward, done, obs.hist_feedback]
        return out

    a, b, c = trajectory(5), trajectory(5), trajectory(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_true_world_response_equals_world(world_data):
    ds, world = world_data
    env = SlateEnv(ds, TrueWorldResponse(world), batch_users=8, device="cpu")
    obs = env.reset()
    slate = distinct_slates(8, ds.n_items, torch.Generator().manual_seed(0))
    expected = world.click_probs(obs.user, obs.hist_items, slate)
    torch.testing.assert_close(env.response.click_probs(obs, slate), expected)
    _, _, _, info = env.step(slate)
    torch.testing.assert_close(info["click_probs"], expected)


@pytest.mark.parametrize(
    ("make_slate", "message"),
    [
        (lambda: torch.zeros(4, K - 1, dtype=torch.long), "shape"),
        (lambda: torch.arange(K).repeat(4, 1) + 100, "out of range"),
        (lambda: torch.arange(K).repeat(4, 1) - 1, "out of range"),
        (lambda: torch.cat([torch.zeros(4, 2, dtype=torch.long), torch.arange(2, K).repeat(4, 1)], 1), "twice"),
        (lambda: torch.arange(K).repeat(4, 1).float(), "integer"),
    ],
)
def test_invalid_slates_are_clear_errors(world_data, make_slate, message):
    ds, _ = world_data
    env = SlateEnv(ds, FixedClicks(1), batch_users=4, device="cpu")
    env.reset()
    with pytest.raises(ValueError, match=message):
        env.step(make_slate())


def test_gymnasium_vector_api(world_data):
    ds, world = world_data
    venv = SlateVectorEnv(SlateEnv(ds, TrueWorldResponse(world), batch_users=5, device="cpu"))
    obs, infos = venv.reset(seed=11)
    assert obs in venv.observation_space and venv.num_envs == 5
    rng = np.random.default_rng(0)
    total_done = 0
    first_rewards = None
    for _ in range(30):
        actions = np.stack([rng.permutation(ds.n_items)[:K] for _ in range(5)])
        assert actions in venv.action_space
        obs, rewards, terminations, truncations, infos = venv.step(actions)
        first_rewards = rewards if first_rewards is None else first_rewards
        assert obs in venv.observation_space
        assert rewards.shape == (5,) and terminations.dtype == bool and not truncations.any()
        assert infos["clicks"].shape == (5, K)
        total_done += int(terminations.sum())
    assert total_done > 0 and total_done == venv.env.episodes_finished
    venv.reset(seed=11)
    rng = np.random.default_rng(0)
    _, again, *_ = venv.step(np.stack([rng.permutation(ds.n_items)[:K] for _ in range(5)]))
    np.testing.assert_array_equal(again, first_rewards)

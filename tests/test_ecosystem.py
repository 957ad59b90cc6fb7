"""Other libraries: the gymnasium id, the TorchRL adapter, dense learning curves, TensorBoard logging."""

from __future__ import annotations

import importlib.util
import json
import sys

import gymnasium
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from hsrl.agents import HSRLAgent
from hsrl.cli import main
from hsrl.config import TrainConfig, load_config
from hsrl.data.synthetic import generate
from hsrl.errors import ConfigError
from hsrl.sid.index import SemanticIDIndex
from hsrl.simulator import GYM_ID
from hsrl.simulator.env import SlateEnv, TrueWorldResponse
from hsrl.simulator.gym_adapter import SlateGymEnv, SlateSpace, SlateVectorEnv
from hsrl.train.loop import CHECKPOINT, METRICS, TENSORBOARD_DIR, Trainer

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
SMALL = ["data.synthetic.n_users=80", "data.synthetic.n_items=60"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Data, the true world and a 2-epoch simulator of the tiny run; no agents (a few seconds)."""
    from conftest import TINY_RUN

    out = tmp_path_factory.mktemp("ecosystem") / "run"
    sets = [x for s in TINY_RUN for x in ("--set", s)]
    assert main(["data", "prepare", "--out", str(out), *sets]) == 0
    assert main(["simulator", "train", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def world_setup():
    cfg = load_config(overrides=SMALL)
    ds, world = generate(cfg.data)
    index = SemanticIDIndex.build(ds.item_features, levels=2, codes=4, seed=0)
    return cfg, ds, world, index


def trainer(world_setup, out_dir, **train):
    cfg, ds, world, index = world_setup
    env = SlateEnv(ds, TrueWorldResponse(world), split="train", batch_users=8, seed=0, device="cpu")
    agent = HSRLAgent(env.item_features, ds.slate_size, index, env.profile_dim, env.history_length, cfg.agent, seed=0)
    tcfg = TrainConfig(start_steps=4, batch_size=8, buffer_size=200, eval_episodes=8, **train)

    def eval_env():
        return SlateEnv(ds, TrueWorldResponse(world), split="val", batch_users=8, seed=99, device="cpu")

    return Trainer(agent, env, tcfg, out_dir, eval_env, show_progress=False)


# ---------------------------------------------------------------------- gymnasium
@pytest.mark.filterwarnings("ignore:.*infinity")  # the profile Box is unbounded (profiles are real-valued)
def test_gymnasium_make_gives_a_single_user_env_that_passes_check_env(run_dir):
    env = gymnasium.make(GYM_ID, run=run_dir)
    assert isinstance(env.unwrapped, SlateGymEnv) and isinstance(env.action_space, gymnasium.spaces.MultiDiscrete)
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=3)
    assert obs in env.observation_space and obs["hist_items"].shape == (env.unwrapped.env.history_length,)
    total, steps, terminated = 0.0, 0, False
    while not terminated:  # the temper rule ends every session
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs in env.observation_space and isinstance(reward, float) and not truncated
        total += reward
        steps += 1
        assert steps < 1000
    assert info["episode_return"] == pytest.approx(total, abs=1e-5) and info["episode_depth"] == steps
    slate = env.action_space.sample()
    slate[1] = slate[0]
    assert slate not in env.action_space  # distinct items: a repeat is outside the space, and refused
    env.reset()
    with pytest.raises(ValueError, match="appears twice"):
        env.step(slate)
    assert check_env(gymnasium.make(GYM_ID, run=run_dir, world="true", split="test").unwrapped) is None


def test_gymnasium_make_vec_gives_b_users(run_dir):
    venv = gymnasium.make_vec(GYM_ID, num_envs=5, run=run_dir, device="cpu")
    assert isinstance(venv, SlateVectorEnv) and venv.num_envs == 5 and venv.env.batch_users == 5
    obs, _ = venv.reset(seed=0)
    assert obs in venv.observation_space and obs["hist_items"].shape == (5, venv.env.history_length)
    for _ in range(5):
        actions = venv.action_space.sample()
        assert actions.shape == (5, venv.env.slate_size) and actions in venv.action_space
        obs, rewards, terminations, truncations, _ = venv.step(actions)
        assert obs in venv.observation_space and rewards.shape == (5,) and not truncations.any()


def test_slate_space_samples_distinct_items():
    space = SlateSpace(12, 9, rows=50, seed=0)
    sample = space.sample()
    assert sample.shape == (50, 9) and all(len(set(row)) == 9 for row in sample.tolist()) and sample in space
    with pytest.raises(ValueError):
        SlateSpace(5, 9)


# ---------------------------------------------------------------------- TorchRL
def test_torchrl_adapter_passes_check_env_specs(run_dir):
    pytest.importorskip("torchrl", reason="TorchRL is an optional extra (pip install 'hsrl[torchrl]')")
    from torchrl.envs.utils import check_env_specs

    from hsrl.simulator.torchrl_env import make_torchrl_env

    env = make_torchrl_env(run_dir, batch_users=4, device="cpu")
    assert tuple(env.batch_size) == (4,)
    check_env_specs(env)
    env.set_seed(0)
    finished = env.env.episodes_finished
    rollout = env.rollout(40, break_when_any_done=False)  # done rows are reset with `_reset` on the way
    k, h = env.env.slate_size, env.env.history_length
    assert rollout["action"].shape == (4, 40, k) and rollout["next", "hist_items"].shape == (4, 40, h)
    done = rollout["next", "done"].squeeze(-1)
    assert done.any() and int(done.sum()) == env.env.episodes_finished - finished
    # the step that ends a session shows that user's final state; the next step starts a fresh one
    b, t = (int(x) for x in done[:, :-1].nonzero()[0])
    assert not torch.equal(rollout["next", "hist_items"][b, t], rollout["hist_items"][b, t + 1])
    td = env.reset()
    td["action"] = env.rand_action()["action"]
    td["action"][0, 1] = td["action"][0, 0]
    with pytest.raises(ValueError, match="appears twice"):
        env.step(td)


def test_torchrl_partial_reset_starts_fresh_users_in_marked_rows_only(run_dir):
    pytest.importorskip("torchrl", reason="TorchRL is an optional extra (pip install 'hsrl[torchrl]')")
    from hsrl.simulator.torchrl_env import make_torchrl_env

    env = make_torchrl_env(run_dir, world="true", batch_users=4, device="cpu")
    td = env.reset()
    for _ in range(2):
        td = env.step_and_maybe_reset(env.rand_action(td))[1]
    before = env.env.state_dict()
    mask = torch.tensor([[True], [False], [False], [False]])
    td.set("_reset", mask)
    after = env.reset(td)
    depth = env.env.state_dict()["depth"]
    assert int(depth[0]) == 0 and torch.equal(depth[1:], before["depth"][1:])
    assert torch.equal(after["hist_items"][1:], before["obs"].hist_items[1:])


def test_torchrl_adapter_import_error_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] in ("torchrl", "tensordict")] + ["torchrl", "tensordict"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if TorchRL were not installed
    monkeypatch.delitem(sys.modules, "hsrl.simulator.torchrl_env", raising=False)
    with pytest.raises(ImportError, match=r"hsrl\[torchrl\]"):
        importlib.import_module("hsrl.simulator.torchrl_env")


# ---------------------------------------------------------------------- learning curves
def test_default_training_gives_at_least_20_curve_points():
    cfg = TrainConfig()
    assert cfg.steps // cfg.eval_every >= 20 and cfg.steps // cfg.log_every >= 20


def test_short_training_writes_20_curve_points_and_the_plot(world_setup, tmp_path):
    from hsrl.eval.report import plot_learning_curves

    t = trainer(world_setup, tmp_path, steps=40, eval_every=2, log_every=2)
    history = t.fit()
    lines = [json.loads(x) for x in (tmp_path / METRICS).read_text().splitlines()]
    assert lines == json.loads(json.dumps(history)) and [r["step"] for r in lines] == list(range(2, 41, 2))
    assert all("eval_total_reward" in r and "train_episodes" in r for r in lines)
    finished = [r for r in lines if r["train_episodes"]]
    assert finished and all(r["train_episode_return"] is not None for r in finished)
    assert sum(r["train_episodes"] for r in lines) == t.env.episodes_finished  # each finished episode once
    curve = [(r["step"], r["eval_total_reward"]) for r in lines]
    path = plot_learning_curves({"hsrl": [curve, curve[:-3]]}, tmp_path / "learning_curves.png", {"dataset": "t"})
    assert path.stat().st_size > 1000


def test_training_records_resume_exactly(world_setup, tmp_path):
    """Records every 3 steps, checkpoints every 8: the resumed run writes what the uninterrupted one did."""
    settings = dict(steps=16, eval_every=8, log_every=3, checkpoint_every=8)
    trainer(world_setup, tmp_path / "a", **settings).fit()
    trainer(world_setup, tmp_path / "b", **settings).fit(steps=8)
    assert (tmp_path / "b" / CHECKPOINT).is_file()
    with open(tmp_path / "b" / METRICS, "a") as fh:  # a record written after the checkpoint, then a crash
        fh.write(json.dumps({"step": 9, "train_return": 0.0}) + "\n")
    trainer(world_setup, tmp_path / "b", **settings).fit(resume=True)
    a = (tmp_path / "a" / METRICS).read_text().splitlines()
    b = (tmp_path / "b" / METRICS).read_text().splitlines()
    assert [json.loads(x)["step"] for x in a] == [3, 6, 8, 9, 12, 15, 16]
    assert a == b


# ---------------------------------------------------------------------- TensorBoard
@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is an optional extra (pip install 'hsrl[tensorboard]')")
def test_tensorboard_writer_gets_the_same_scalars(world_setup, tmp_path):
    trainer(world_setup, tmp_path, steps=8, eval_every=4, log_every=4, log="tensorboard").fit()
    events = list((tmp_path / TENSORBOARD_DIR).glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / TENSORBOARD_DIR))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "eval/total_reward" in tags and "train/return" in tags
    assert [e.step for e in acc.Scalars("eval/total_reward")] == [4, 8]


def test_tensorboard_missing_is_a_config_error_naming_the_extra(world_setup, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ConfigError, match=r"hsrl\[tensorboard\]"):
        trainer(world_setup, tmp_path, steps=4, log="tensorboard")
    with pytest.raises(ConfigError, match="train.log"):
        load_config(overrides=["train.log=wandb"])


def test_import_hsrl_registers_the_gymnasium_id_without_torch():
    import subprocess

    code = ("import sys, hsrl, gymnasium; assert 'hsrl/Slate-v0' in gymnasium.registry, 'not registered'; "
            "assert 'torch' not in sys.modules, 'torch imported'")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

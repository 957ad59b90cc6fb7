"""The Python API: the README example as written, save/load from the file alone for every learned agent,
one registry entry is all a new agent needs, ``recommend`` is ``act`` on users given as histories."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hsrl
from hsrl.agents import registry
from hsrl.agents.base import NEG, Agent, sample_without_replacement
from hsrl.config import TrainConfig, load_run_config
from hsrl.data.schema import PAD
from hsrl.errors import ArtifactError
from hsrl.simulator.env import SlateEnv
from hsrl.simulator.observation import Observation

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "# hsrl-python-api"
FEW = TrainConfig(steps=4, start_steps=1, batch_size=16, eval_every=2, eval_episodes=4, checkpoint_every=10**9)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny synthetic run (data, world, simulator, Semantic IDs), no agents trained."""
    from conftest import TINY_RUN

    from hsrl.cli import main

    out = tmp_path_factory.mktemp("api") / "run"
    sets = [x for s in TINY_RUN for x in ("--set", s)]
    assert main(["run", "--out", str(out), "--seeds", "1", "--agents", "random", *sets]) == 0
    return out


def readme_block() -> str:
    text = README.read_text()
    at = text.index(MARKER)
    start = text.rindex("```python", 0, at) + len("```python")
    return text[start : text.index("```", at)]


def test_import_hsrl_stays_light():
    """``import hsrl`` loads neither torch nor the agents; the API names resolve on first use."""
    code = "import sys, hsrl; assert 'torch' not in sys.modules, 'torch'; hsrl.Agent; assert 'torch' in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_cli_help_does_not_import_torch():
    """``hsrl --help`` (and every group's help) answers without importing torch: the commands import the
    library lazily, so help stays instant on a machine where importing torch takes seconds."""
    code = (
        "import sys\n"
        "from hsrl.cli import entry\n"
        "for argv in (['--help'], ['compare', '--help'], ['tune', '--help'], ['serve', '--help']):\n"
        "    sys.argv = ['hsrl', *argv]\n"
        "    try:\n"
        "        entry()\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code in (0, None), (argv, stop.code)\n"
        "    assert 'torch' not in sys.modules, argv\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
    assert "compare" in done.stdout and "--agents" in done.stdout


def test_the_readme_example_runs_as_written(tiny_run, tmp_path, monkeypatch, capsys):
    block = readme_block()
    assert 'run = "runs/synthetic"' in block
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    scope: dict = {}
    exec(block.replace('"runs/synthetic"', repr(str(tiny_run))), scope)
    train = load_run_config(tiny_run).train
    printed = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()]
    steps = [int(p[0]) for p in printed if p[0].isdigit()]
    assert steps[-1] == train.steps and train.eval_every in steps  # fit's records reached the callback
    scored = [p for p in printed if p[0].isdigit() and int(p[0]) % train.eval_every == 0]
    assert scored and all(p[1] != "None" for p in scored)  # with validation scores
    slates = scope["slates"]
    assert slates.shape == (2, 5) and all(len(set(row)) == 5 for row in slates.tolist())
    assert int(slates.min()) >= 0 and int(slates.max()) < scope["data"].n_items
    assert isinstance(scope["same"], hsrl.HSRLAgent) and (tmp_path / "hsrl.pt").is_file()


def _states_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_states_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_states_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("name", registry.learned_names())
def test_every_learned_agent_loads_from_its_file_alone(tiny_run, tmp_path, name):
    env = SlateEnv.from_run(tiny_run, split="train", seed=0, device="cpu")
    agent = hsrl.build_agent(name, tiny_run, env=env).fit(env, steps=FEW.steps, config=FEW)
    assert agent.state_dict().get("updates", 1) > 0  # it did learn something
    path = agent.save(tmp_path / "elsewhere" / "agent.pt")
    loaded = Agent.load(path)  # no run directory, no config, no environment
    assert type(loaded) is type(agent) and loaded.n_items == agent.n_items
    assert _states_equal(loaded.state_dict(), agent.state_dict())
    obs = SlateEnv.from_run(tiny_run, split="test", seed=3, device="cpu").reset()
    assert torch.equal(loaded.act(obs), agent.act(obs))
    histories = [[1, 2, 3], [4], []]
    assert torch.equal(hsrl.load_agent(path).recommend(histories), agent.recommend(histories))
    if name == "sl":
        assert loaded.logs is None  # the logged slates were for training only
    other = "sl" if name == "hsrl" else "hsrl"
    with pytest.raises(ArtifactError, match=f"not '{other}'"):
        registry.get(other).cls.load(path)


def test_an_old_or_broken_checkpoint_is_a_clear_error(tmp_path):
    old = tmp_path / "old.pt"
    torch.save({"version": 1, "agent": "hsrl", "state": {}}, old)
    with pytest.raises(ArtifactError, match="format 1.*reads 2.*retrain"):
        hsrl.load_agent(old)
    with pytest.raises(ArtifactError, match="no agent checkpoint"):
        hsrl.load_agent(tmp_path / "missing.pt")


def test_a_loaded_agent_keeps_items_added_after_training(tiny_run, tmp_path):
    """A2C's head stays as wide as its training catalogue; HSRL keeps the grown index it was saved with."""
    env = SlateEnv.from_run(tiny_run, split="train", seed=0, device="cpu")
    grown = torch.cat([env.item_features, env.item_features[:5] + 0.01])
    a2c = hsrl.build_agent("a2c", tiny_run, env=env)
    a2c.set_catalogue(grown)
    back = Agent.load(a2c.save(tmp_path / "a2c.pt"))
    assert back.n_items == env.n_items + 5 and back.width == env.n_items
    agent = hsrl.build_agent("hsrl", tiny_run, env=env)
    agent.index.add_items(grown[-5:].numpy())
    agent.set_catalogue(grown, agent.index)
    back = Agent.load(agent.save(tmp_path / "hsrl.pt"))
    assert back.index.n_items == env.n_items + 5 and torch.equal(back.active, agent.active)


@pytest.mark.parametrize("name", ["hsrl", "sl", "popular"])
def test_recommend_is_act_on_the_same_users(tiny_run, name):
    env = SlateEnv.from_run(tiny_run, split="test", seed=1, device="cpu")
    agent = hsrl.build_agent(name, tiny_run, env=env)
    if name == "hsrl":  # weights away from the initialisation, so that the history matters
        with torch.no_grad():
            for p in agent.net.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    obs = env.reset()
    histories = [row[row != PAD].tolist() for row in obs.hist_items]
    feedback = [fb[row != PAD].tolist() for row, fb in zip(obs.hist_items, obs.hist_feedback)]
    slates = agent.recommend(histories, feedback=feedback, profiles=obs.profile.tolist())
    assert torch.equal(slates, agent.act(obs))
    k = env.slate_size
    assert slates.shape == (obs.batch_size, k)
    assert all(len(set(row)) == k and all(0 <= i < env.n_items for i in row) for row in slates.tolist())
    assert torch.equal(agent.recommend(histories, k=3, feedback=feedback, profiles=obs.profile.tolist()), slates[:, :3])
    clicked = Observation(obs.user, torch.zeros_like(obs.profile), obs.hist_items, obs.hist_mask.float())
    assert torch.equal(agent.recommend(histories), agent.act(clicked))  # defaults: clicked, zero profile
    with pytest.raises(ValueError, match="outside the catalogue"):
        agent.recommend([[env.n_items]])
    with pytest.raises(ValueError, match="k: 0"):
        agent.recommend(histories, k=0)


def test_observation_from_histories_pads_left_and_keeps_the_last_entries():
    obs = Observation.from_histories(
        [[1, 2, 3, 4], [7], []],
        3,
        feedback=[[0, 1, 0, 1], None, None],
        profiles=[None, [0.5, -1.0], None],
        profile_dim=2,
    )
    assert obs.hist_items.tolist() == [[2, 3, 4], [PAD, PAD, 7], [PAD, PAD, PAD]]
    assert obs.hist_feedback.tolist() == [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    assert obs.profile.tolist() == [[0.0, 0.0], [0.5, -1.0], [0.0, 0.0]]


def test_fit_records_without_an_eval_env_and_with_an_env_object(tiny_run):
    env = SlateEnv.from_run(tiny_run, split="train", seed=0, device="cpu")
    records: list[dict] = []
    hsrl.build_agent("hsrl", tiny_run, env=env).fit(env, steps=4, config=FEW, callbacks=[records.append])
    assert [r["step"] for r in records if r["step"] in (2, 4)] == [2, 4]
    assert not any("eval_total_reward" in r for r in records)
    scored: list[dict] = []
    val = SlateEnv.from_run(tiny_run, split="val", seed=1, device="cpu")
    hsrl.build_agent("hsrl", tiny_run, env=env).fit(env, steps=4, eval_env=val, config=FEW, callbacks=[scored.append])
    assert [r["step"] for r in scored if "eval_total_reward" in r] == [2, 4]


def test_load_dataset_reads_a_name_or_a_run(tiny_run):
    ds = hsrl.load_dataset("synthetic", slate_size=4, synthetic={"n_users": 20, "n_items": 15})
    assert ds.slate_size == 4 and ds.n_items == 15
    assert hsrl.load_dataset(tiny_run).n_items == load_run_config(tiny_run).data.synthetic.n_items
    with pytest.raises(Exception, match="slate_size"):
        hsrl.load_dataset("synthetic", slate_size=0)


# ---------------------------------------------------------------------- a new agent: class + one entry
class ClickCounter(Agent):
    """A toy learned agent: the items clicked most in its replay batches, the same slate for everyone."""

    name = "clicks"
    learned = True

    def __init__(self, item_features: torch.Tensor, slate_size: int) -> None:
        super().__init__(item_features, slate_size)
        self.counts = torch.zeros(self.n_items)
        self.generator = torch.Generator().manual_seed(0)

    def act(self, obs: Observation, greedy: bool = True) -> torch.Tensor:
        scores = torch.where(self.active, self.counts, NEG)
        return scores.topk(self.slate_size).indices.expand(obs.batch_size, -1)

    def explore(self, obs: Observation) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = torch.where(self.active, 0.0, NEG).expand(obs.batch_size, -1)
        return sample_without_replacement(logits, self.slate_size, self.generator), {}

    def update(self, batch: dict) -> dict[str, float]:
        self.counts.index_add_(0, batch["slate"].flatten(), batch["clicks"].flatten().float())
        return {"clicks": float(batch["clicks"].sum())}

    def state_dict(self) -> dict:
        return {"counts": self.counts.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.counts = state["counts"].clone()
        self.generator.set_state(state["generator"])


@pytest.fixture
def toy():
    entry = registry.register("clicks", ClickCounter)
    yield entry
    registry.unregister("clicks")


def test_a_new_agent_needs_only_its_class_and_one_entry(toy, tiny_run, cli):
    import json

    from hsrl.agents import LEARNED
    from hsrl.workflow import AGENTS

    assert "clicks" in LEARNED and "clicks" in AGENTS and toy.learned and not toy.privileged
    r = cli("compare", tiny_run, "--agents", "clicks,random", "--seeds", "1", "--world", "simulator")
    assert r.code == 0, r.err
    results = json.loads((tiny_run / "results" / "results.json").read_text())
    assert set(results["aggregate"]["simulator"]) == {"clicks", "random"}
    assert results["aggregate"]["simulator"]["clicks"]["episodes"] == load_run_config(tiny_run).eval.episodes
    trained = Agent.load(tiny_run / "agents" / "clicks" / "seed0" / "agent.pt")
    assert isinstance(trained, ClickCounter) and float(trained.counts.sum()) > 0  # trained by the shared loop
    assert (tiny_run / "agents" / "clicks" / "seed0" / "metrics.jsonl").is_file()
    bad = cli("compare", tiny_run, "--agents", "nope", "--seeds", "1")
    assert bad.code == 2 and "clicks" in bad.err  # the error lists the registered agents


def test_the_readme_names_every_registered_agent():
    """The docs follow the registry: the tuning section lists exactly the learned agents, and the agents
    section has an entry for every registered name (a new agent cannot go undocumented)."""
    import re

    text = README.read_text()
    tuned = text.split("every learned agent (", 1)[1].split(")", 1)[0]
    assert set(re.findall(r"`(\w+)`", tuned)) == set(registry.learned_names())
    agents_section = text.split("\n## Agents", 1)[1].split("\n## ", 1)[0]
    missing = [n for n in registry.names() if f"`{n}`" not in agents_section and f"**{n}**" not in agents_section]
    assert not missing, f"README's Agents section does not describe {missing}"


def test_registry_refuses_a_name_twice_and_names_unknown_agents():
    with pytest.raises(ValueError, match="already registered"):
        registry.register("hsrl", ClickCounter)
    with pytest.raises(ValueError, match="no ':'"):
        registry.register("a:b", ClickCounter)
    assert registry.get("hsrl").cls is hsrl.HSRLAgent and registry.get("oracle").privileged
    assert registry.learned_names() == ("hsrl", "sl", "a2c", "ddpg", "td3", "hac", "grpo")
    assert registry.reference_names() == ("random", "popular", "oracle")
    from hsrl.config import A2CConfig, HACConfig

    assert registry.get("a2c").options is A2CConfig and registry.get("hac").options is HACConfig
    from hsrl.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown agent 'nope'"):
        registry.get("nope")

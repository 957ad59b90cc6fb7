"""An agent file loads on any device: a generator state saved on another device type (a CUDA generator's
16 bytes on a CPU, a CPU generator's 5056 on a GPU) does not fit the loading agent's generator, which is
then reseeded from the saved bytes instead (``hsrl.io.restore_generator``)."""

from __future__ import annotations

import pytest
import torch

import hsrl
from hsrl.agents.a2c import A2CItemAgent
from hsrl.agents.base import Agent
from hsrl.agents.grpo import GRPOAgent
from hsrl.agents.heuristics import RandomAgent
from hsrl.agents.hsrl import HSRLAgent
from hsrl.config import AgentConfig
from hsrl.io import restore_generator
from hsrl.sid.index import SemanticIDIndex

N_ITEMS, SLATE, HISTORY = 40, 3, 5
HISTORIES = [[1, 2, 3], [4], [], [7, 7, 9, 10, 11, 12]]
CUDA_STATE = torch.arange(16, dtype=torch.uint8)  # the size of a CUDA (Philox) generator's state


def _agent(name: str, device: str = "cpu") -> Agent:
    torch.manual_seed(0)
    features = torch.randn(N_ITEMS, 6)
    index = SemanticIDIndex.build(features.numpy(), levels=2, codes=4, kmeans_iters=5)
    features = features.to(device)
    cfg = AgentConfig(dim=16, layers=1, heads=2)
    if name == "hsrl":
        return HSRLAgent(features, SLATE, index, 0, HISTORY, cfg, seed=1)
    if name == "grpo":
        return GRPOAgent(features, SLATE, index, 0, HISTORY, cfg, seed=1)
    if name == "a2c":
        return A2CItemAgent(features, SLATE, 0, HISTORY, cfg, seed=1)
    return RandomAgent(features, SLATE, seed=1)


def _generator(agent: Agent) -> torch.Generator:
    return agent.policy.generator if isinstance(agent, GRPOAgent) else agent.generator  # type: ignore[attr-defined]


def test_a_foreign_generator_state_does_not_fit_set_state():
    """The bug this guards against: ``set_state`` refuses a state of another device type's size."""
    with pytest.raises(RuntimeError):
        torch.Generator().set_state(CUDA_STATE)
    gen = torch.Generator()
    restore_generator(gen, CUDA_STATE)
    again = torch.Generator()
    restore_generator(again, CUDA_STATE.clone())
    assert torch.equal(gen.get_state(), again.get_state())  # reseeded from the bytes: deterministic
    same = torch.Generator().manual_seed(5)
    restore_generator(gen, same.get_state())  # a state that fits is restored as it is
    assert torch.equal(gen.get_state(), same.get_state())


@pytest.mark.parametrize("name", ["hsrl", "grpo", "a2c", "random"])
def test_an_agent_saved_on_another_device_type_loads(tmp_path, name):
    agent = _agent(name)
    path = agent.save(tmp_path / "agent.pt")
    blob = torch.load(path, weights_only=True)
    assert blob["state"]["generator"].numel() != CUDA_STATE.numel()
    blob["state"]["generator"] = CUDA_STATE  # as if the agent had lived on a GPU
    torch.save(blob, path)

    loaded = hsrl.load_agent(path)
    assert type(loaded) is type(agent) and loaded.n_items == agent.n_items
    twice = type(agent).load(path)
    assert torch.equal(_generator(loaded).get_state(), _generator(twice).get_state())
    if name != "random":  # greedy slates never read the generator
        assert torch.equal(loaded.recommend(HISTORIES), agent.recommend(HISTORIES))
    slates = loaded.recommend(HISTORIES)
    assert slates.shape == (len(HISTORIES), SLATE) and all(len(set(row)) == SLATE for row in slates.tolist())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("name", ["hsrl", "grpo", "a2c", "random"])
def test_an_agent_moves_between_gpu_and_cpu(tmp_path, name):
    on_gpu = _agent(name, "cuda")
    path = on_gpu.save(tmp_path / "gpu.pt")
    on_cpu = hsrl.load_agent(path)  # a CUDA generator's state into a CPU generator
    assert on_cpu.item_features.device.type == "cpu"
    back = hsrl.load_agent(path, device="cuda")  # a state that fits: restored exactly
    assert torch.equal(_generator(back).get_state(), _generator(on_gpu).get_state())
    if name != "random":
        assert torch.equal(back.recommend(HISTORIES).cpu(), on_gpu.recommend(HISTORIES).cpu())
    slates = on_cpu.recommend(HISTORIES)
    assert slates.shape == (len(HISTORIES), SLATE) and all(len(set(row)) == SLATE for row in slates.tolist())
    again = hsrl.load_agent(on_cpu.save(tmp_path / "cpu.pt"), device="cuda")  # and a CPU state into a CUDA one
    assert again.item_features.device.type == "cuda"
    assert again.recommend(HISTORIES).shape == (len(HISTORIES), SLATE)


def test_the_index_meets_the_protocols_agents_and_decoding_read():
    from hsrl.sid.protocols import SIDIndex, SIDTrie

    index = _agent("hsrl").index  # type: ignore[attr-defined]
    assert isinstance(index, SIDIndex) and isinstance(index, SIDTrie)

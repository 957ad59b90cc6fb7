"""Agents: HSRL and the baselines, all on the shared state encoder and the ``Agent`` interface.

Every agent is listed once, in ``hsrl.agents.registry``; ``LEARNED`` and ``REFERENCE`` are read from
that table when asked for, so an agent registered later is in them too.
"""

from typing import Any

from hsrl.agents import registry
from hsrl.agents.a2c import A2CItemAgent
from hsrl.agents.base import Agent
from hsrl.agents.ddpg import DDPGAgent
from hsrl.agents.grpo import GRPOAgent
from hsrl.agents.hac import HACAgent
from hsrl.agents.heuristics import OracleGreedyAgent, PopularAgent, RandomAgent
from hsrl.agents.hsrl import HSRLAgent
from hsrl.agents.registry import register
from hsrl.agents.supervised import LoggedSlates, SupervisedAgent
from hsrl.agents.td3 import TD3Agent


def __getattr__(name: str) -> Any:
    if name == "LEARNED":
        return registry.learned_names()
    if name == "REFERENCE":
        return registry.reference_names()
    raise AttributeError(f"module 'hsrl.agents' has no attribute '{name}'")


__all__ = [
    "Agent",
    "HSRLAgent",
    "SupervisedAgent",
    "LoggedSlates",
    "A2CItemAgent",
    "DDPGAgent",
    "TD3Agent",
    "HACAgent",
    "GRPOAgent",
    "RandomAgent",
    "PopularAgent",
    "OracleGreedyAgent",
    "LEARNED",
    "REFERENCE",
    "registry",
    "register",
]

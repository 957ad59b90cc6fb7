"""Agents: HSRL and the baselines, all on the shared state encoder and the ``Agent`` interface."""

from hsrl.agents.a2c import A2CItemAgent
from hsrl.agents.base import Agent
from hsrl.agents.ddpg import DDPGAgent
from hsrl.agents.hac import HACAgent
from hsrl.agents.heuristics import OracleGreedyAgent, PopularAgent, RandomAgent
from hsrl.agents.hsrl import HSRLAgent
from hsrl.agents.supervised import LoggedSlates, SupervisedAgent
from hsrl.agents.td3 import TD3Agent

LEARNED = ("hsrl", "sl", "a2c", "ddpg", "td3", "hac")
REFERENCE = ("random", "popular", "oracle")

__all__ = [
    "Agent",
    "HSRLAgent",
    "SupervisedAgent",
    "LoggedSlates",
    "A2CItemAgent",
    "DDPGAgent",
    "TD3Agent",
    "HACAgent",
    "RandomAgent",
    "PopularAgent",
    "OracleGreedyAgent",
    "LEARNED",
    "REFERENCE",
]

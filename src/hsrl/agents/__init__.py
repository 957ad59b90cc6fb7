"""Agents: HSRL and the baselines, all on the shared state encoder and the ``Agent`` interface."""

from hsrl.agents.base import Agent
from hsrl.agents.heuristics import OracleGreedyAgent, PopularAgent, RandomAgent
from hsrl.agents.hsrl import HSRLAgent

LEARNED = ("hsrl",)
REFERENCE = ("random", "popular", "oracle")

__all__ = ["Agent", "HSRLAgent", "RandomAgent", "PopularAgent", "OracleGreedyAgent", "LEARNED", "REFERENCE"]

"""User simulator: learned response model, slate environment, rewards (DESIGN §5)."""

from hsrl.simulator.observation import Observation

__all__ = ["Observation"]

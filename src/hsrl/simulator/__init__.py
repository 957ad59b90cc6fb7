"""User simulator: learned response model, slate environment, rewards (DESIGN §5).

``import hsrl`` registers the gymnasium id ``hsrl/Slate-v0`` (``hsrl.gym_registration``); without
importing hsrl first, ``gymnasium.make("hsrl:hsrl/Slate-v0", run=...)`` imports it.
"""

from hsrl.gym_registration import GYM_ID  # registered by ``import hsrl``, which any hsrl import runs first
from hsrl.simulator.env import SlateEnv, TrueWorldResponse, make_env
from hsrl.simulator.observation import Observation
from hsrl.simulator.response import ResponseModel, UserResponseModel, load_checkpoint, train_response_model
from hsrl.simulator.reward import make_reward, reward_ceiling

__all__ = [
    "GYM_ID",
    "Observation",
    "ResponseModel",
    "SlateEnv",
    "TrueWorldResponse",
    "UserResponseModel",
    "load_checkpoint",
    "make_env",
    "make_reward",
    "reward_ceiling",
    "train_response_model",
]

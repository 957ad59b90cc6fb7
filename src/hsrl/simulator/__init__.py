"""User simulator: learned response model, slate environment, rewards (DESIGN §5)."""

from hsrl.simulator.env import SlateEnv, TrueWorldResponse, make_env
from hsrl.simulator.observation import Observation
from hsrl.simulator.response import ResponseModel, UserResponseModel, load_checkpoint, train_response_model
from hsrl.simulator.reward import make_reward, reward_ceiling

__all__ = [
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

"""User simulator: learned response model, slate environment, rewards (DESIGN §5).

Importing this package registers the gymnasium id ``hsrl/Slate-v0`` (string entry points: the
adapters load only when an environment is made): ``gymnasium.make("hsrl/Slate-v0", run=RUN_DIR)`` is
one user, ``gymnasium.make_vec("hsrl/Slate-v0", num_envs=B, run=RUN_DIR)`` B users at once. Without
importing hsrl first, ``gymnasium.make("hsrl.simulator:hsrl/Slate-v0", run=...)`` imports it.
"""

from hsrl.simulator.env import SlateEnv, TrueWorldResponse, make_env
from hsrl.simulator.observation import Observation
from hsrl.simulator.response import ResponseModel, UserResponseModel, load_checkpoint, train_response_model
from hsrl.simulator.reward import make_reward, reward_ceiling

GYM_ID = "hsrl/Slate-v0"


def _register_gymnasium() -> None:
    from gymnasium.envs.registration import register, registry

    if GYM_ID not in registry:  # a re-import (e.g. importlib.reload) must not warn about a duplicate
        register(
            id=GYM_ID,
            entry_point="hsrl.simulator.gym_adapter:make_single",
            vector_entry_point="hsrl.simulator.gym_adapter:make_vector",
        )


_register_gymnasium()

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

"""The gymnasium id ``hsrl/Slate-v0``, registered with string entry points: importing ``hsrl`` (which
calls this) costs no torch import; the adapters load when an environment is made.

``gymnasium.make("hsrl/Slate-v0", run=RUN_DIR)`` is one user, ``gymnasium.make_vec("hsrl/Slate-v0",
num_envs=B, run=RUN_DIR)`` B users at once.
"""

from __future__ import annotations

GYM_ID = "hsrl/Slate-v0"


def register_gymnasium() -> None:
    """Register once (a re-import, e.g. ``importlib.reload``, must not warn about a duplicate)."""
    try:
        from gymnasium.envs.registration import register, registry
    except ImportError:  # gymnasium is a dependency; a stripped environment still imports hsrl
        return
    if GYM_ID not in registry:
        register(
            id=GYM_ID,
            entry_point="hsrl.simulator.gym_adapter:make_single",
            vector_entry_point="hsrl.simulator.gym_adapter:make_vector",
        )

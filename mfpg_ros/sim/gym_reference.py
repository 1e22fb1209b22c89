"""Gymnasium's own MuJoCo envs, as the reference the re-implemented tasks are checked and benchmarked against."""
from __future__ import annotations

import sys
import types


def make_gym_env(env_id: str, **kwargs):
    """gymnasium.make(env_id). Gymnasium's MuJoCo module imports imageio (the [mujoco] extra) only to save
    rendered frames; when it is not installed a stand-in module is registered so that physics-only use works."""
    try:
        import imageio  # noqa: F401
    except ImportError:
        sys.modules.setdefault('imageio', types.ModuleType('imageio'))
    import gymnasium as gym
    return gym.make(env_id, **kwargs)

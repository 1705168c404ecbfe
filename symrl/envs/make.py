"""Building Gymnasium environments for training and evaluation."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

from symrl.envs.registry import ensure_registered


def make_env(env_id: str) -> gym.Env:
    """One environment, with the flattening every symrl network expects."""
    ensure_registered(env_id)
    env = gym.make(env_id)
    if len(env.observation_space.shape or ()) != 1:
        env = gym.wrappers.FlattenObservation(env)
    return env


def make_vec_env(env_id: str, n_envs: int, vec_env: str = "sync") -> VectorEnv:
    """``n_envs`` copies stepped together. Same-step autoreset: when an episode ends, the returned
    observation is already the next episode's, and ``info['final_obs']`` holds the last one (needed
    to bootstrap on truncation)."""
    fns = [lambda: make_env(env_id) for _ in range(n_envs)]
    cls = AsyncVectorEnv if vec_env == "async" else SyncVectorEnv
    return cls(fns, autoreset_mode=AutoresetMode.SAME_STEP, copy=False)


def observation_dim(space: gym.Space) -> int:
    return int(np.prod(space.shape))

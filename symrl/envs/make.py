"""Building environments for training and evaluation, on the Gymnasium or envpool backend."""

from __future__ import annotations

import sys

import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

from symrl.envs.atari import AtariSettings, EnvpoolAtari, envpool_available, make_atari_env
from symrl.envs.registry import ensure_registered, is_atari
from symrl.envs.snapshot import SaveableState


def make_env(env_id: str, atari: AtariSettings | None = None) -> gym.Env:
    """One environment: Atari ids get the paper's preprocessing (raw rewards kept), others a
    flattened observation if theirs is not a vector."""
    if is_atari(env_id.rpartition(":")[2]):
        return make_atari_env(env_id, atari or AtariSettings())
    ensure_registered(env_id)
    env = gym.make(env_id)
    if len(env.observation_space.shape or ()) != 1:
        env = gym.wrappers.FlattenObservation(env)
    return env


def make_vec_env(env_id: str, n_envs: int, vec_env: str = "sync", backend: str = "gymnasium",
                 atari: AtariSettings | None = None) -> VectorEnv | EnvpoolAtari:
    """``n_envs`` copies stepped together. Same-step autoreset: when an episode ends, the returned
    observation is already the next episode's, and ``info['final_obs']`` holds the last one (needed
    to bootstrap on truncation). ``copy=False``: the trainer copies observations into its buffer.
    Each env exposes its state for checkpoints (``saves_env_state``)."""
    if backend == "envpool" and not envpool_available():
        print("symrl: envpool is not installed (pip install 'symrl[envpool]'); using the Gymnasium backend",
              file=sys.stderr)
        backend = "gymnasium"
    if backend == "envpool":
        return EnvpoolAtari(env_id, n_envs, atari or AtariSettings())
    fns = [lambda: SaveableState(make_env(env_id, atari)) for _ in range(n_envs)]
    cls = AsyncVectorEnv if vec_env == "async" else SyncVectorEnv
    return cls(fns, autoreset_mode=AutoresetMode.SAME_STEP, copy=False)


def observation_shape(space: gym.Space) -> tuple[int, ...]:
    return tuple(int(d) for d in space.shape)


def is_image(shape: tuple[int, ...]) -> bool:
    """(stack, height, width) observations go to the CNN; vectors to the MLP."""
    return len(shape) == 3


def saves_env_state(envs: VectorEnv | EnvpoolAtari) -> bool:
    """Whether checkpoints can hold these training envs' state (``symrl.envs.snapshot``)."""
    return not isinstance(envs, EnvpoolAtari) and all(envs.get_attr("saves_state"))

"""Saving and restoring the exact state of a training environment, so checkpoints never cut episodes.

A checkpoint that only saved the agent had to reset every training env (a "sync point"), cutting
the episodes in flight; on Atari with 8 to 16 envs and a checkpoint every 50k steps, long games
never reached their late stages in training. Where the simulator's state can be read and written,
the env's whole state goes into the checkpoint instead and a resumed run continues every episode
bit for bit:

* the Python state of every layer of the wrapper stack (time-limit counters, the frame stack,
  AtariPreprocessing's lives and frame buffers, the env's ``np_random``): the attributes whose
  values are plain data (numbers, arrays, random generators, and sequences of them);
* the simulator: the ALE's system state with its RNG (``cloneState(include_rng=True)``), or the
  whole ``MjData`` of a MuJoCo env (positions, velocities, warm start, and the derived quantities
  that the next step reads before it simulates, e.g. body positions).

Envs whose state lives elsewhere (Box2D worlds, envpool's C++ pool, unknown custom envs) are not
claimed: the trainer keeps the sync point for them and says so.
"""

from __future__ import annotations

import collections
import copy
from typing import Any

import gymnasium as gym
import numpy as np

_PLAIN = (bool, int, float, np.ndarray, np.generic, np.random.Generator, type(None))


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple, collections.deque)):
        return all(_plain(item) for item in value)
    return isinstance(value, _PLAIN)


def _layers(env: gym.Env) -> list[gym.Env]:
    layers = [env]
    while isinstance(layers[-1], gym.Wrapper):
        layers.append(layers[-1].env)
    return layers


def _simulator_kind(base: gym.Env) -> str | None:
    """'ale', 'mujoco' or 'python' (all state in plain attributes), or None when not known to be saveable."""
    module = type(base).__module__
    if module.startswith("ale_py"):
        return "ale"
    if module.startswith("gymnasium.envs.mujoco"):
        from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

        return "mujoco" if isinstance(base, MujocoEnv) else None  # mujoco-py's v2/v3 envs hold no MjData
    if module.startswith("gymnasium.envs.classic_control"):
        return "python"
    return None


def can_save_state(env: gym.Env) -> bool:
    return _simulator_kind(env.unwrapped) is not None


def capture(env: gym.Env) -> dict[str, Any]:
    """The env's whole state, as plain picklable data."""
    base = env.unwrapped
    kind = _simulator_kind(base)
    if kind is None:
        raise ValueError(f"{type(base).__name__}: its state cannot be saved")
    layers = [{name: copy.deepcopy(value) for name, value in vars(layer).items() if _plain(value)}
              for layer in _layers(env)]
    simulator = None
    if kind == "ale":
        simulator = base.ale.cloneState(include_rng=True)
    elif kind == "mujoco":
        simulator = copy.deepcopy(base.data)
    return {"kind": kind, "layers": layers, "simulator": simulator}


def restore(env: gym.Env, state: dict[str, Any]) -> None:
    """Put ``env`` (built the same way as the one captured) into the captured state."""
    base = env.unwrapped
    layers = _layers(env)
    if state["kind"] != _simulator_kind(base) or len(state["layers"]) != len(layers):
        raise ValueError("the saved environment state belongs to a different environment")
    for layer, values in zip(layers, state["layers"]):
        for name, value in values.items():
            setattr(layer, name, copy.deepcopy(value))
    if state["kind"] == "ale":
        base.ale.restoreState(state["simulator"])
    elif state["kind"] == "mujoco":
        import mujoco

        mujoco.mj_copyData(base.data, base.model, state["simulator"])


class SaveableState(gym.Wrapper):
    """Outermost wrapper that exposes the stack's state as the attribute ``env_state``, so vector
    envs (also asynchronous ones, whose envs live in worker processes) read it with
    ``get_attr('env_state')`` and write one value per env with ``set_attr('env_state', states)``."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.saves_state = can_save_state(env)

    @property
    def env_state(self) -> dict[str, Any]:
        return capture(self.env)

    @env_state.setter
    def env_state(self, state: dict[str, Any]) -> None:
        restore(self.env, state)

"""Saving and restoring the exact state of a training environment, so checkpoints never cut episodes.

A checkpoint that only saved the agent had to reset every training env (a "sync point"), cutting
the episodes in flight; on Atari with 8 to 16 envs and a checkpoint every 50k steps, long games
never reached their late stages in training. Where the simulator's state can be read and written,
the env's whole state goes into the checkpoint instead and a resumed run continues every episode
bit for bit:

* the Python state of every layer of the wrapper stack (time-limit counters, the frame stack,
  AtariPreprocessing's lives and frame buffers, the env's ``np_random``): the attributes whose
  values are plain data (numbers, numeric arrays, random generators, and sequences of them);
* the simulator: the ALE's system state with its RNG (``cloneState(include_rng=True)``), or the
  whole ``MjData`` of a MuJoCo env (positions, velocities, warm start, and the derived quantities
  that the next step reads before it simulates, e.g. body positions).

A captured state holds no Python objects beyond dicts, lists, strings, numbers and numpy arrays:
the simulators' states are their own binary forms as uint8 arrays, which the ALE and MuJoCo read
back (not pickle). ``arrays_to_tensors`` turns it into what ``torch.load(weights_only=True)``
reads, so that opening a checkpoint never runs code from it.

Envs whose state lives elsewhere (Box2D worlds, envpool's C++ pool, unknown custom envs) are not
claimed: the trainer keeps the sync point for them and says so.
"""

from __future__ import annotations

import collections
from typing import Any

import gymnasium as gym
import numpy as np

_NUMBERS = (bool, int, float, type(None))  # exactly these types: subclasses (enums) would need their class
_NUMERIC = "biufc"  # numpy dtype kinds of booleans and numbers
# numpy's bit generators, the only ones a saved ``np_random`` may name
_BIT_GENERATORS = {"MT19937": np.random.MT19937, "PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM,
                   "Philox": np.random.Philox, "SFC64": np.random.SFC64}


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple, collections.deque)):
        return all(_plain(item) for item in value)
    if isinstance(value, (np.ndarray, np.generic)):
        return value.dtype.kind in _NUMERIC
    if isinstance(value, np.random.Generator):
        return type(value.bit_generator).__name__ in _BIT_GENERATORS
    return type(value) in _NUMBERS


def _encode(value: Any) -> Any:
    """A plain attribute value as dicts, lists, numbers and arrays; ``_decode`` gives it back, types included."""
    if isinstance(value, np.ndarray):
        return np.array(value, order="C")
    if isinstance(value, np.generic):
        return {"numpy_scalar": np.array(value)}
    if isinstance(value, np.random.Generator):
        return {"generator": value.bit_generator.state}
    if isinstance(value, collections.deque):
        return {"deque": [_encode(item) for item in value], "maxlen": value.maxlen}
    if isinstance(value, tuple):
        return {"tuple": [_encode(item) for item in value]}
    if isinstance(value, list):
        return [_encode(item) for item in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    if "numpy_scalar" in value:
        return value["numpy_scalar"][()]
    if "generator" in value:
        state = value["generator"]
        name = state.get("bit_generator")
        if name not in _BIT_GENERATORS:
            raise ValueError(f"the saved environment state names the bit generator {name!r}; allowed: "
                             f"{', '.join(_BIT_GENERATORS)}")
        bit_generator = _BIT_GENERATORS[name]()
        bit_generator.state = state
        return np.random.Generator(bit_generator)
    if "deque" in value:
        return collections.deque((_decode(item) for item in value["deque"]), maxlen=value["maxlen"])
    if "tuple" in value:
        return tuple(_decode(item) for item in value["tuple"])
    raise ValueError(f"the saved environment state holds an unknown value {sorted(value)}")


def arrays_to_tensors(tree: Any) -> Any:
    """``tree`` (dicts, lists, plain values, numpy arrays and scalars) with each array or numpy scalar a
    torch tensor (a copy; a scalar comes back from ``tensors_to_arrays`` as a 0-d array)."""
    import torch  # here, not at the top: the env worker processes that capture states never need it

    if isinstance(tree, (np.ndarray, np.generic)):
        return torch.from_numpy(np.array(tree, order="C"))
    if isinstance(tree, dict):
        return {key: arrays_to_tensors(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [arrays_to_tensors(item) for item in tree]
    return tree


def tensors_to_arrays(tree: Any) -> Any:
    """The inverse of ``arrays_to_tensors``: each tensor a numpy array of the same dtype (a copy)."""
    import torch

    if isinstance(tree, torch.Tensor):
        return tree.numpy().copy()
    if isinstance(tree, dict):
        return {key: tensors_to_arrays(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [tensors_to_arrays(item) for item in tree]
    return tree


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
    """The env's whole state, as dicts, lists, plain values and numpy arrays."""
    base = env.unwrapped
    kind = _simulator_kind(base)
    if kind is None:
        raise ValueError(f"{type(base).__name__}: its state cannot be saved")
    layers = [{name: _encode(value) for name, value in vars(layer).items() if _plain(value)}
              for layer in _layers(env)]
    simulator = None
    if kind == "ale":
        simulator = base.ale.cloneState(include_rng=True).serialize()
    elif kind == "mujoco":
        simulator = base.data.__getstate__()  # MuJoCo's binary form of the whole MjData (what pickling it stores)
    if simulator is not None:
        simulator = np.frombuffer(simulator, np.uint8).copy()
    return {"kind": kind, "layers": layers, "simulator": simulator}


def restore(env: gym.Env, state: dict[str, Any]) -> None:
    """Put ``env`` (built the same way as the one captured) into the captured state."""
    base = env.unwrapped
    layers = _layers(env)
    if state["kind"] != _simulator_kind(base) or len(state["layers"]) != len(layers):
        raise ValueError("the saved environment state belongs to a different environment")
    for layer, values in zip(layers, state["layers"]):
        for name, value in values.items():
            setattr(layer, name, _decode(value))
    if state["kind"] == "ale":
        import ale_py

        base.ale.restoreState(ale_py.ALEState(state["simulator"].tobytes()))
    elif state["kind"] == "mujoco":
        import mujoco

        saved = mujoco.MjData.__new__(mujoco.MjData)
        saved.__setstate__(state["simulator"].tobytes())
        if any(getattr(saved, name).shape != getattr(base.data, name).shape for name in ("qpos", "qvel", "act")):
            raise ValueError("the saved environment state belongs to a different MuJoCo model")
        mujoco.mj_copyData(base.data, base.model, saved)


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

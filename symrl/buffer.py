"""Preallocated rollout storage: NumPy arrays written in place while acting, read as tensors.

Acting happens on the CPU in NumPy (see ``nets.InferenceSnapshot``), so the rollout is stored
there; ``tensors`` hands it to the update as torch tensors that share memory on the CPU and are
copied once per rollout to another training device.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

FIELDS = ("obs", "actor_out", "actions", "values", "rewards", "terminated", "truncated", "bootstrap")


class RolloutBuffer:
    """Time-major (T, N, ...) arrays for one rollout of ``n_steps`` × ``n_envs``.

    ``bootstrap[t, i]`` holds V(final observation) where step t of env i was truncated, else 0;
    ``truncated`` marks truncation without termination (a true end wins).
    """

    def __init__(self, n_steps: int, n_envs: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype,
                 n_outputs: int, action_shape: tuple[int, ...], action_dtype: torch.dtype):
        shape = (n_steps, n_envs)
        self.obs = np.zeros(shape + obs_shape, obs_dtype)
        self.actor_out = np.zeros(shape + (n_outputs,), np.float32)
        self.actions = np.zeros(shape + action_shape, np.int64 if action_dtype == torch.long else np.float32)
        self.values = np.zeros(shape, np.float32)
        self.rewards = np.zeros(shape, np.float32)
        self.terminated = np.zeros(shape, np.float32)
        self.truncated = np.zeros(shape, np.float32)
        self.bootstrap = np.zeros(shape, np.float32)
        self.n_steps, self.n_envs = n_steps, n_envs

    def tensors(self, device: torch.device) -> dict[str, Tensor]:
        """Every field as a tensor on ``device`` (no copy on the CPU)."""
        return {name: torch.from_numpy(getattr(self, name)).to(device) for name in FIELDS}


def flatten(rollout: dict[str, Tensor], log_probs: Tensor, advantages: Tensor,
            returns: Tensor) -> dict[str, Tensor]:
    """The rollout as one batch of n_steps·n_envs samples: what a minibatch is cut from."""
    n = advantages.numel()
    return {
        "obs": rollout["obs"].reshape((n,) + rollout["obs"].shape[2:]),
        "actions": rollout["actions"].reshape((n,) + rollout["actions"].shape[2:]),
        "log_probs": log_probs.reshape(n),
        "values": rollout["values"].reshape(n),
        "advantages": advantages.reshape(n),
        "returns": returns.reshape(n),
    }

"""Preallocated rollout storage on the training device: allocated once, written in place."""

from __future__ import annotations

import torch
from torch import Tensor


class RolloutBuffer:
    """Time-major (T, N, ...) tensors for one rollout of ``n_steps`` × ``n_envs``."""

    def __init__(self, n_steps: int, n_envs: int, obs_dim: int, action_shape: tuple[int, ...],
                 action_dtype: torch.dtype, device: torch.device):
        shape = (n_steps, n_envs)
        z = lambda *extra, dtype=torch.float32: torch.zeros(shape + extra, dtype=dtype, device=device)  # noqa: E731
        self.obs = z(obs_dim)
        self.actions = z(*action_shape, dtype=action_dtype)
        self.log_probs = z()
        self.values = z()
        self.rewards = z()
        self.terminated = z()
        self.truncated = z()
        self.bootstrap = z()  # V(final observation) where the step was truncated, else 0
        self.n_steps, self.n_envs = n_steps, n_envs

    @property
    def episode_end(self) -> Tensor:
        return torch.maximum(self.terminated, self.truncated)

    def flat(self, advantages: Tensor, returns: Tensor) -> dict[str, Tensor]:
        """The rollout as one batch of n_steps·n_envs samples for the update."""
        n = self.n_steps * self.n_envs
        return {
            "obs": self.obs.reshape(n, -1),
            "actions": self.actions.reshape((n,) + self.actions.shape[2:]),
            "log_probs": self.log_probs.reshape(n),
            "values": self.values.reshape(n),
            "advantages": advantages.reshape(n),
            "returns": returns.reshape(n),
        }

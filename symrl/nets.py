"""Actor-critic networks: separate MLPs (the paper's and SB3's MuJoCo default)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from symrl.distributions import ActionDist, HeadSpec

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def _layer(n_in: int, n_out: int, gain: float) -> nn.Linear:
    """Orthogonal weights and zero bias, the initialization both SB3 and CleanRL use for PPO."""
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(n_in: int, hidden: Sequence[int], n_out: int, activation: str, out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [_layer(n_in, width, math.sqrt(2)), ACTIVATIONS[activation]()]
        n_in = width
    layers.append(_layer(n_in, n_out, out_gain))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Policy and value networks over flat observations; the action head comes from ``spec``."""

    def __init__(self, obs_dim: int, spec: HeadSpec, hidden: Sequence[int] = (64, 64),
                 activation: str = "tanh", log_std_init: float = 0.0):
        super().__init__()
        self.spec = spec
        self.actor = mlp(obs_dim, hidden, spec.n_outputs, activation, out_gain=0.01)
        self.critic = mlp(obs_dim, hidden, 1, activation, out_gain=1.0)
        self.log_std = (nn.Parameter(torch.full((spec.n_outputs,), float(log_std_init)))
                        if spec.kind == "gaussian" else None)

    def forward(self, obs: Tensor) -> tuple[ActionDist, Tensor]:
        """The action distribution and V(s) (shape (B,)) for a batch of observations."""
        return self.spec.distribution(self.actor(obs), self.log_std), self.critic(obs).squeeze(-1)

    def value(self, obs: Tensor) -> Tensor:
        return self.critic(obs).squeeze(-1)

    def distribution(self, obs: Tensor) -> ActionDist:
        return self.spec.distribution(self.actor(obs), self.log_std)

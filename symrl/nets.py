"""Actor-critic networks: separate MLPs (the paper's and SB3's MuJoCo default)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
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
    """Policy and value networks over flat observations; the action head comes from ``spec``.

    The forward pass calls ``F.linear`` on the layers' parameters instead of going through
    ``nn.Sequential``: same math and parameter names, a fraction of the per-call overhead that
    dominates small-MLP RL on CPU.
    """

    def __init__(self, obs_dim: int, spec: HeadSpec, hidden: Sequence[int] = (64, 64),
                 activation: str = "tanh", log_std_init: float = 0.0):
        super().__init__()
        self.spec = spec
        self.actor = mlp(obs_dim, hidden, spec.n_outputs, activation, out_gain=0.01)
        self.critic = mlp(obs_dim, hidden, 1, activation, out_gain=1.0)
        self.log_std = (nn.Parameter(torch.full((spec.n_outputs,), float(log_std_init)))
                        if spec.kind == "gaussian" else None)
        self._act = torch.tanh if activation == "tanh" else torch.relu
        self._actor_layers = [m for m in self.actor if isinstance(m, nn.Linear)]
        self._critic_layers = [m for m in self.critic if isinstance(m, nn.Linear)]

    def _mlp(self, layers: list[nn.Linear], x: Tensor) -> Tensor:
        for layer in layers[:-1]:
            x = self._act(F.linear(x, layer.weight, layer.bias))
        return F.linear(x, layers[-1].weight, layers[-1].bias)

    def forward(self, obs: Tensor) -> tuple[ActionDist, Tensor]:
        """The action distribution and V(s) (shape (B,)) for a batch of observations."""
        return self.distribution(obs), self.value(obs)

    def inference_snapshot(self) -> Callable[[Tensor], tuple[ActionDist, Tensor]]:
        """``model(obs)`` for acting, from the current weights fused into one block-diagonal MLP.

        Actor and critic layers are stacked (first layer) or block-diagonal (the rest), so a step
        costs one matmul per depth instead of two; zeros in the off-diagonal blocks make the result
        the same as ``forward``. Valid until the weights change: take a new one after each update.
        """
        with torch.no_grad():
            weights, biases = [], []
            for i, (a, c) in enumerate(zip(self._actor_layers, self._critic_layers)):
                w = torch.cat([a.weight, c.weight]) if i == 0 else torch.block_diag(a.weight, c.weight)
                weights.append(w.t().contiguous())
                biases.append(torch.cat([a.bias, c.bias]))
        n_out, act, spec, log_std = self.spec.n_outputs, self._act, self.spec, self.log_std

        def forward(obs: Tensor) -> tuple[ActionDist, Tensor]:
            x = obs
            for w, b in zip(weights[:-1], biases[:-1]):
                x = act(torch.addmm(b, x, w))
            out = torch.addmm(biases[-1], x, weights[-1])
            return spec.distribution(out[:, :n_out], log_std), out[:, n_out]

        return forward

    def value(self, obs: Tensor) -> Tensor:
        return self._mlp(self._critic_layers, obs).squeeze(-1)

    def distribution(self, obs: Tensor) -> ActionDist:
        return self.spec.distribution(self._mlp(self._actor_layers, obs), self.log_std)

"""Actor-critic networks: separate MLPs (the paper's and SB3's MuJoCo default)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from symrl.distributions import ActionDist, HeadSpec

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def _init(layer: nn.Linear | nn.Conv2d, gain: float, ortho: bool) -> None:
    """Orthogonal weights scaled by ``gain`` and zero bias, the initialization both SB3 and CleanRL
    use; with ``ortho`` False torch's own (uniform) initialization stays, as SB3's
    ``ortho_init=False`` does for every layer (the authors' tuned Humanoid-v4 PPO)."""
    if ortho:
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)


def _layer(n_in: int, n_out: int, gain: float, ortho: bool) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    _init(layer, gain, ortho)
    return layer


def mlp(n_in: int, hidden: Sequence[int], n_out: int, activation: str, out_gain: float,
        ortho: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [_layer(n_in, width, math.sqrt(2), ortho), ACTIVATIONS[activation]()]
        n_in = width
    layers.append(_layer(n_in, n_out, out_gain, ortho))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Policy and value networks over flat observations; the action head comes from ``spec``.

    The forward pass calls ``F.linear`` on the layers' parameters instead of going through
    ``nn.Sequential``: same math and parameter names, a fraction of the per-call overhead that
    dominates small-MLP RL on CPU.
    """

    def __init__(self, obs_dim: int, spec: HeadSpec, hidden: Sequence[int] = (64, 64),
                 activation: str = "tanh", log_std_init: float = 0.0, ortho_init: bool = True):
        super().__init__()
        self.spec = spec
        self.actor = mlp(obs_dim, hidden, spec.n_outputs, activation, out_gain=0.01, ortho=ortho_init)
        self.critic = mlp(obs_dim, hidden, 1, activation, out_gain=1.0, ortho=ortho_init)
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

    def inference_snapshot(self) -> "InferenceSnapshot":
        """The current weights as a NumPy policy for acting (see ``InferenceSnapshot``)."""
        return InferenceSnapshot(self)

    def value(self, obs: Tensor) -> Tensor:
        return self._mlp(self._critic_layers, obs).squeeze(-1)

    def distribution(self, obs: Tensor) -> ActionDist:
        return self.spec.distribution(self._mlp(self._actor_layers, obs), self.log_std)


class InferenceSnapshot:
    """A frozen NumPy copy of an ``ActorCritic`` for acting: ``snapshot(obs) → (actor_out, value)``.

    Why NumPy: acting runs one tiny batch per env step, where each torch op costs microseconds of
    dispatch and NumPy a fraction of that; observations and actions are NumPy on both sides anyway.
    Actor and critic are fused into one block-diagonal MLP (first layers stacked, later layers
    block-diagonal), one matmul per depth; the zero blocks add exact zeros, so the outputs equal
    ``forward``'s up to float rounding (tested). Valid until the weights change: the trainer takes
    a new snapshot for every rollout.
    """

    def __init__(self, model: ActorCritic):
        with torch.no_grad():
            self.weights, self.biases = [], []
            for i, (a, c) in enumerate(zip(model._actor_layers, model._critic_layers)):
                w = torch.cat([a.weight, c.weight]) if i == 0 else torch.block_diag(a.weight, c.weight)
                self.weights.append(w.t().contiguous().cpu().numpy())
                self.biases.append(torch.cat([a.bias, c.bias]).cpu().numpy())
            self.std = None if model.log_std is None else model.log_std.exp().cpu().numpy()
        self.n_out = model.spec.n_outputs
        self._act = np.tanh if model._act is torch.tanh else (lambda x: np.maximum(x, 0.0))

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = obs
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            x = self._act(x @ w + b)
        out = x @ self.weights[-1] + self.biases[-1]
        return out[:, :self.n_out], out[:, self.n_out]


class CNNActorCritic(nn.Module):
    """The Nature DQN CNN (Mnih et al. 2015) as a trunk shared by the policy and value heads, on
    uint8 frame stacks scaled by 1/255 (the paper's Atari network, as in SB3 and CleanRL)."""

    def __init__(self, obs_shape: tuple[int, ...], spec: HeadSpec, ortho_init: bool = True):
        super().__init__()
        self.spec = spec
        channels, height, width = obs_shape
        gain = math.sqrt(2)
        convs = [nn.Conv2d(channels, 32, 8, stride=4), nn.Conv2d(32, 64, 4, stride=2), nn.Conv2d(64, 64, 3, stride=1)]
        for conv in convs:
            _init(conv, gain, ortho_init)
        with torch.no_grad():
            flat = nn.Sequential(*convs)(torch.zeros(1, channels, height, width)).numel()
        self.trunk = nn.Sequential(convs[0], nn.ReLU(), convs[1], nn.ReLU(), convs[2], nn.ReLU(), nn.Flatten(),
                                   _layer(flat, 512, gain, ortho_init), nn.ReLU())
        self.actor = _layer(512, spec.n_outputs, 0.01, ortho_init)
        self.critic = _layer(512, 1, 1.0, ortho_init)
        self.log_std = None

    def _features(self, obs: Tensor) -> Tensor:
        # channels_last: oneDNN's convolutions (the first one's backward above all) run ~30% faster on it
        return self.trunk((obs.float() / 255.0).contiguous(memory_format=torch.channels_last))

    def forward(self, obs: Tensor) -> tuple[ActionDist, Tensor]:
        h = self._features(obs)
        return self.spec.distribution(self.actor(h)), self.critic(h).squeeze(-1)

    def value(self, obs: Tensor) -> Tensor:
        return self.critic(self._features(obs)).squeeze(-1)

    def distribution(self, obs: Tensor) -> ActionDist:
        return self.spec.distribution(self.actor(self._features(obs)))

    def inference_snapshot(self) -> "TorchSnapshot":
        return TorchSnapshot(self)


class TorchSnapshot:
    """The acting interface of ``InferenceSnapshot`` for networks whose work is the convolutions:
    NumPy in and out, torch (on the model's device) inside. It reads the live weights, which do
    not change during a rollout."""

    def __init__(self, model: CNNActorCritic):
        self.model = model
        self.device = next(model.parameters()).device
        self.std = None

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            h = self.model._features(torch.from_numpy(np.ascontiguousarray(obs)).to(self.device))
            return self.model.actor(h).cpu().numpy(), self.model.critic(h).squeeze(-1).cpu().numpy()


def build_model(obs_shape: tuple[int, ...], spec: HeadSpec, hidden: Sequence[int], activation: str,
                log_std_init: float, ortho_init: bool) -> ActorCritic | CNNActorCritic:
    """The CNN for image observations (stack, height, width), separate MLPs for vectors."""
    if len(obs_shape) == 3:
        return CNNActorCritic(obs_shape, spec, ortho_init)
    return ActorCritic(int(np.prod(obs_shape)), spec, hidden, activation, log_std_init, ortho_init)

"""The acting path (NumPy snapshot, pre-drawn noise, batched log-probs) agrees with the training path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from symrl.distributions import head_spec
from symrl.nets import ActorCritic


@pytest.mark.parametrize("space,discretize,activation", [
    (spaces.Discrete(4), 0, "tanh"),
    (spaces.MultiDiscrete([3, 5]), 0, "relu"),
    (spaces.Box(-1, 1, (3,)), 11, "tanh"),
    (spaces.Box(-1, 1, (3,)), 0, "tanh"),
])
def test_inference_snapshot_equals_the_training_forward(space, discretize, activation):
    torch.manual_seed(0)
    spec = head_spec(space, discretize)
    model = ActorCritic(7, spec, (32, 16), activation, log_std_init=-0.5)
    with torch.no_grad():  # non-trivial weights in every layer, including the output layers
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    obs = np.random.default_rng(0).normal(size=(64, 7)).astype(np.float32)
    out, value = model.inference_snapshot()(obs)
    with torch.no_grad():
        logits = model._mlp(model._actor_layers, torch.from_numpy(obs))
        expected_value = model.value(torch.from_numpy(obs))
    np.testing.assert_allclose(out, logits.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(value, expected_value.numpy(), rtol=1e-5, atol=1e-5)


def test_snapshot_is_frozen_until_retaken():
    model = ActorCritic(3, head_spec(spaces.Discrete(2)))
    snapshot = model.inference_snapshot()
    obs = np.ones((1, 3), np.float32)
    before = snapshot(obs)[1].copy()
    with torch.no_grad():
        model.critic[-1].bias.add_(1.0)
    np.testing.assert_array_equal(snapshot(obs)[1], before)
    np.testing.assert_allclose(model.inference_snapshot()(obs)[1], before + 1.0, rtol=1e-6)


def _is_orthogonal(weight: torch.Tensor, gain: float) -> bool:
    """An orthogonal matrix scaled by ``gain`` has all its singular values equal to ``gain``."""
    singular_values = torch.linalg.svdvals(weight.detach())
    return torch.allclose(singular_values, torch.full_like(singular_values, gain), rtol=1e-4)


@pytest.mark.parametrize("space", [spaces.Box(-1, 1, (3,)), spaces.Discrete(4)])
def test_ortho_init_false_keeps_torchs_initialization(space):
    """SB3's ortho_init=False (the authors' tuned Humanoid-v4): every layer, the heads included,
    keeps nn.Linear's own init (uniform weights, non-zero biases); the log std is unaffected."""
    spec = head_spec(space)
    ortho = ActorCritic(7, spec, (32, 16), "relu", log_std_init=-2.0, ortho_init=True)
    plain = ActorCritic(7, spec, (32, 16), "relu", log_std_init=-2.0, ortho_init=False)
    gains = [2 ** 0.5, 2 ** 0.5, 0.01]
    for layers, out_gain in ((ortho._actor_layers, 0.01), (ortho._critic_layers, 1.0)):
        assert all(_is_orthogonal(layer.weight, gain) for layer, gain in zip(layers, gains[:2] + [out_gain]))
        assert all(torch.count_nonzero(layer.bias) == 0 for layer in layers)
    for layer in plain._actor_layers + plain._critic_layers:
        if min(layer.weight.shape) > 1:  # a single row is orthogonal whatever it holds
            assert not _is_orthogonal(layer.weight, float(torch.linalg.svdvals(layer.weight.detach())[0]))
        bound = 1 / layer.in_features ** 0.5  # nn.Linear's kaiming-uniform range for weights and biases
        assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
        assert torch.count_nonzero(layer.bias) == layer.out_features
    if plain.log_std is not None:
        assert torch.equal(plain.log_std.detach(), torch.full((spec.n_outputs,), -2.0))

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

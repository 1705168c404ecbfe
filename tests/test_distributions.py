"""Action heads: agreement with torch.distributions, seeded sampling, and head_spec per space."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributions as td
from gymnasium import spaces

from symrl.distributions import Categorical, DiagGaussian, MultiCategorical, head_spec

DT = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- vs torch.distributions

def test_categorical_matches_torch():
    g = _gen(0)
    logits = 2.0 * torch.randn(32, 7, generator=g, dtype=DT)
    actions = torch.randint(0, 7, (32,), generator=g)
    ours, ref = Categorical(logits), td.Categorical(logits=logits)
    torch.testing.assert_close(ours.log_prob(actions), ref.log_prob(actions))
    torch.testing.assert_close(ours.entropy(), ref.entropy())
    assert ours.log_prob(actions).shape == (32,)


def test_multicategorical_matches_torch():
    g = _gen(1)
    logits = 2.0 * torch.randn(16, 3, 5, generator=g, dtype=DT)
    actions = torch.randint(0, 5, (16, 3), generator=g)
    ours = MultiCategorical(logits)
    ref = td.Independent(td.Categorical(logits=logits), 1)
    torch.testing.assert_close(ours.log_prob(actions), ref.log_prob(actions))
    torch.testing.assert_close(ours.entropy(), ref.entropy())
    # joint probability = product over dimensions
    per_dim = td.Categorical(logits=logits).log_prob(actions).exp()
    torch.testing.assert_close(ours.log_prob(actions).exp(), per_dim.prod(-1))


def test_diag_gaussian_matches_torch():
    g = _gen(2)
    mean = torch.randn(16, 4, generator=g, dtype=DT)
    log_std = 0.5 * torch.randn(4, generator=g, dtype=DT)
    actions = torch.randn(16, 4, generator=g, dtype=DT)
    ours = DiagGaussian(mean, log_std)
    ref = td.Independent(td.Normal(mean, log_std.exp().expand_as(mean)), 1)
    torch.testing.assert_close(ours.log_prob(actions), ref.log_prob(actions))
    torch.testing.assert_close(ours.entropy(), ref.entropy())


# --------------------------------------------------------------------------- sampling (HeadSpec.act)

def _sample(spec, out: torch.Tensor, seed: int, std: np.ndarray | None = None) -> torch.Tensor:
    """Actions the way the trainer draws them: pre-drawn noise from a seeded generator, then act()."""
    noise = spec.draw_noise((out.shape[0],), _gen(seed))
    return torch.from_numpy(np.asarray(spec.act(out.float().numpy(), noise, std)))


def test_categorical_sampling_seeded_and_follows_probabilities():
    probs = torch.tensor([0.1, 0.2, 0.7], dtype=DT)
    spec = head_spec(spaces.Discrete(3))
    logits = probs.log().expand(20_000, 3)
    s1, s2 = _sample(spec, logits, 7), _sample(spec, logits, 7)
    assert torch.equal(s1, s2)
    assert not torch.equal(s1, _sample(spec, logits, 8))
    assert s1.shape == (20_000,) and s1.dtype == torch.long
    freq = torch.bincount(s1, minlength=3).double() / s1.numel()
    torch.testing.assert_close(freq, probs, rtol=0, atol=0.015)
    # no noise: the mode
    assert (torch.from_numpy(spec.act(logits[:5].float().numpy(), None)) == 2).all()


def test_multicategorical_sampling_seeded_and_follows_probabilities():
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.1, 0.1, 0.8]], dtype=DT)
    spec = head_spec(spaces.MultiDiscrete([3, 3]))
    logits = probs.clamp_min(1e-30).log().expand(10_000, 2, 3).reshape(10_000, 6)
    s1, s2 = _sample(spec, logits, 9), _sample(spec, logits, 9)
    assert torch.equal(s1, s2)
    assert s1.shape == (10_000, 2)
    assert (s1[:, 0] != 2).all()
    freq = torch.bincount(s1[:, 1], minlength=3).double() / 10_000
    torch.testing.assert_close(freq, probs[1], rtol=0, atol=0.02)


def test_gaussian_sampling_seeded():
    spec = head_spec(spaces.Box(-10, 10, (2,)))
    mean = torch.full((20_000, 2), 1.5, dtype=DT)
    std = np.array([1.0, 0.1], np.float32)
    s1, s2 = _sample(spec, mean, 10, std), _sample(spec, mean, 10, std)
    assert torch.equal(s1, s2)
    assert not torch.equal(s1, _sample(spec, mean, 11, std))
    torch.testing.assert_close(s1.double().mean(0), torch.tensor([1.5, 1.5], dtype=DT), rtol=0, atol=0.03)
    torch.testing.assert_close(s1.double().std(0), torch.tensor([1.0, 0.1], dtype=DT), rtol=0.03, atol=0)
    np.testing.assert_array_equal(spec.act(mean[:3].float().numpy(), None, std), mean[:3].float().numpy())


# --------------------------------------------------------------------------- head_spec

def test_head_spec_discrete():
    spec = head_spec(spaces.Discrete(5))
    assert spec.kind == "categorical" and spec.discrete
    assert spec.n_outputs == 5 and spec.action_shape == () and spec.action_dtype == torch.long
    out = torch.randn(4, 5, generator=_gen(0))
    dist = spec.distribution(out)
    assert isinstance(dist, Categorical)
    a = _sample(spec, out, 0)
    assert a.shape == (4,)
    np.testing.assert_array_equal(spec.to_env(a.numpy(), False), a.numpy())


def test_head_spec_multidiscrete_unequal_nvec():
    space = spaces.MultiDiscrete([3, 5, 2])
    spec = head_spec(space)
    assert spec.kind == "multicategorical" and spec.discrete
    assert spec.nvec == (3, 5, 2) and spec.n_outputs == 15 and spec.action_shape == (3,)
    # push mass onto the padded choices: they must still never be sampled
    out = torch.zeros(5000, 3, 5)
    out[:, 0, 3:] = 50.0
    out[:, 2, 2:] = 50.0
    dist = spec.distribution(out.reshape(5000, 15))
    a = _sample(spec, out.reshape(5000, 15), 1)
    assert (a[:, 0] < 3).all() and (a[:, 1] < 5).all() and (a[:, 2] < 2).all()
    assert len(torch.unique(a[:, 0])) == 3 and len(torch.unique(a[:, 2])) == 2
    for row in spec.to_env(a[:50].numpy(), False):
        assert space.contains(row.astype(space.dtype))
    ent = dist.entropy()
    assert torch.isfinite(ent).all()
    # valid choices share the logit 0 in dims 0 and 2 -> uniform over 3 and 2; dim 1 uniform over 5
    torch.testing.assert_close(ent, torch.full((5000,), math.log(3) + math.log(5) + math.log(2)))
    assert torch.isfinite(dist.log_prob(a)).all()
    torch.testing.assert_close(dist.log_prob(a).exp(), torch.full((5000,), 1 / 30))
    # gradients stay finite through the padding
    leaf = torch.randn(4, 15, dtype=DT, requires_grad=True)
    d = spec.distribution(leaf)
    (d.entropy().sum() + d.log_prob(torch.tensor([[2, 4, 1]] * 4)).sum()).backward()
    assert torch.isfinite(leaf.grad).all()


def test_head_spec_equal_nvec_no_padding():
    spec = head_spec(spaces.MultiDiscrete([4, 4]))
    assert spec.n_outputs == 8 and spec.nvec == (4, 4)
    out = torch.randn(3, 8, generator=_gen(2), dtype=DT)
    torch.testing.assert_close(spec.distribution(out).entropy(),
                               td.Independent(td.Categorical(logits=out.reshape(3, 2, 4)), 1).entropy())


def test_head_spec_box_discretized():
    space = spaces.Box(low=np.array([-2.0, 0.0, -1.0], np.float32),
                       high=np.array([2.0, 1.0, 3.0], np.float32))
    spec = head_spec(space, discretize=11)
    assert spec.kind == "multicategorical" and spec.discrete
    assert spec.nvec == (11, 11, 11) and spec.n_outputs == 33 and spec.action_shape == (3,)
    assert spec.action_dtype == torch.long
    bins = np.array([[0, 0, 0], [10, 10, 10], [5, 5, 5], [0, 10, 5]])
    env_actions = spec.to_env(bins, True)
    expected = np.array([[-2.0, 0.0, -1.0], [2.0, 1.0, 3.0], [0.0, 0.5, 1.0], [-2.0, 1.0, 1.0]])
    np.testing.assert_allclose(env_actions, expected, rtol=0, atol=1e-6)
    for row in env_actions:
        assert space.contains(row.astype(np.float32))
    # bins are evenly spaced
    np.testing.assert_allclose(spec.to_env(np.arange(11)[:, None].repeat(3, 1), True)[:, 0],
                               np.linspace(-2.0, 2.0, 11), atol=1e-6)
    # samples from the head are valid bins
    a = _sample(spec, torch.randn(200, 33, generator=_gen(3)), 3)
    assert a.shape == (200, 3) and a.min() >= 0 and a.max() <= 10


def test_head_spec_box_gaussian_clips():
    space = spaces.Box(low=np.array([-2.0, 0.0], np.float32), high=np.array([2.0, 1.0], np.float32))
    spec = head_spec(space)
    assert spec.kind == "gaussian" and not spec.discrete
    assert spec.n_outputs == 2 and spec.action_shape == (2,) and spec.action_dtype == torch.float32
    raw = np.array([[-5.0, 0.5], [5.0, 2.0], [1.0, -0.1]], np.float32)
    before = raw.copy()
    np.testing.assert_allclose(spec.to_env(raw, False), [[-2.0, 0.5], [2.0, 1.0], [1.0, 0.0]])
    np.testing.assert_array_equal(raw, before)  # the unclipped sample stays as it was
    dist = spec.distribution(torch.zeros(3, 2), torch.zeros(2))
    assert isinstance(dist, DiagGaussian)


@pytest.mark.parametrize("space", [spaces.Discrete(4), spaces.MultiDiscrete([2, 3])])
def test_discretize_on_discrete_space_is_a_clear_error(space):
    with pytest.raises(ValueError, match="discretize"):
        head_spec(space, discretize=11)


def test_unbounded_box_and_unsupported_space_are_errors():
    with pytest.raises(ValueError, match="infinite"):
        head_spec(spaces.Box(-np.inf, np.inf, (2,)))
    with pytest.raises(ValueError, match="not supported"):
        head_spec(spaces.MultiBinary(3))


def test_discrete_with_nonzero_start_reaches_env_in_its_range():
    space = spaces.Discrete(3, start=1)
    try:
        spec = head_spec(space)
    except ValueError:
        return  # refusing the space is also acceptable
    for a in spec.to_env(np.array([0, 1, 2]), False):
        assert space.contains(np.int64(a))

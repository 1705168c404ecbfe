"""GAE with Gymnasium's terminated/truncated semantics, and minibatch advantage normalization."""

from __future__ import annotations

import pytest
import torch

from symrl.advantages import gae, next_values_from_rollout, normalize, sign_change_share

DT = torch.float64
GAMMA, LAM = 0.9, 0.8

# T = 4 steps, N = 2 envs, time-major.
# env 0: episode ends by TERMINATION at t=1; a new episode starts at t=2.
# env 1: episode is TRUNCATED at t=2 with V(final obs) = 5.0, while the next episode's first value
#        (values[3, 1] = -2.0) is very different.
REWARDS = [[1.0, 0.5], [2.0, -1.0], [0.5, 1.5], [-1.0, 0.25]]
VALUES = [[0.3, 1.0], [0.7, 2.0], [1.1, 3.0], [0.4, -2.0]]
LAST_VALUES = [0.6, -0.7]  # V(s_T) after the last step
TERMINATED = [[0, 0], [1, 0], [0, 0], [0, 0]]
TRUNCATED = [[0, 0], [0, 0], [0, 1], [0, 0]]
BOOTSTRAP = [[0.0, 0.0], [0.0, 0.0], [0.0, 5.0], [0.0, 0.0]]  # V(final obs), only on truncation


def _t(x, dtype=DT):
    return torch.tensor(x, dtype=dtype)


def _run(rewards=REWARDS, values=VALUES, last=LAST_VALUES, bootstrap=BOOTSTRAP):
    values_t = _t(values)
    truncated = _t(TRUNCATED, torch.bool)
    terminated = _t(TERMINATED, torch.bool)
    nv = next_values_from_rollout(values_t, _t(last), _t(bootstrap), truncated)
    return gae(_t(rewards), values_t, nv, terminated, terminated | truncated, GAMMA, LAM)


def _reference(rewards=REWARDS, values=VALUES, last=LAST_VALUES, bootstrap=BOOTSTRAP):
    """An independent scalar implementation: explicit branches per step, plain Python floats."""
    T, N = len(rewards), len(rewards[0])
    adv = [[0.0] * N for _ in range(T)]
    for n in range(N):
        following = 0.0
        for t in reversed(range(T)):
            if TERMINATED[t][n]:
                next_v = 0.0
            elif TRUNCATED[t][n]:
                next_v = bootstrap[t][n]
            elif t == T - 1:
                next_v = last[n]
            else:
                next_v = values[t + 1][n]
            delta = rewards[t][n] + GAMMA * next_v - values[t][n]
            if TERMINATED[t][n] or TRUNCATED[t][n]:
                adv[t][n] = delta
            else:
                adv[t][n] = delta + GAMMA * LAM * following
            following = adv[t][n]
    return adv


def test_next_values_from_rollout():
    nv = next_values_from_rollout(_t(VALUES), _t(LAST_VALUES), _t(BOOTSTRAP), _t(TRUNCATED, torch.bool))
    # env 0: the following step's value (also at the termination step: gae zeroes it there)
    # env 1: V(final obs) = 5.0 at the truncation step, not the next episode's -2.0
    expected = [[0.7, 2.0], [1.1, 3.0], [0.4, 5.0], [0.6, -0.7]]
    assert torch.equal(nv, _t(expected))


def test_gae_matches_hand_computation():
    adv, ret = _run()
    torch.testing.assert_close(adv, _t(_reference()), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ret, adv + _t(VALUES), rtol=1e-12, atol=1e-12)

    # A few entries written out, γ = 0.9, λ = 0.8:
    # env 0, t=1 (terminated): δ = 2.0 − 0.7 = 1.3, no future value, no carry
    assert adv[1, 0].item() == pytest.approx(1.3)
    # env 0, t=3 (last step, bootstraps from V(s_T) = 0.6): δ = −1 + 0.54 − 0.4 = −0.86
    assert adv[3, 0].item() == pytest.approx(-0.86)
    # env 0, t=2: δ = 0.5 + 0.9·0.4 − 1.1 = −0.24; A = −0.24 + 0.72·(−0.86) = −0.8592
    assert adv[2, 0].item() == pytest.approx(-0.8592)
    # env 0, t=0: δ = 1 + 0.9·0.7 − 0.3 = 1.33; A = 1.33 + 0.72·1.3 = 2.266
    assert adv[0, 0].item() == pytest.approx(2.266)
    # env 1, t=2 (truncated): δ = 1.5 + 0.9·5.0 − 3.0 = 3.0 (bootstraps from V(final obs)), no carry
    assert adv[2, 1].item() == pytest.approx(3.0)
    # env 1, t=3: δ = 0.25 + 0.9·(−0.7) − (−2.0) = 1.62
    assert adv[3, 1].item() == pytest.approx(1.62)
    # env 1, t=1: δ = −1 + 0.9·3 − 2 = −0.3; A = −0.3 + 0.72·3.0 = 1.86
    assert adv[1, 1].item() == pytest.approx(1.86)
    # env 1, t=0: δ = 0.5 + 0.9·2 − 1 = 1.3; A = 1.3 + 0.72·1.86 = 2.6392
    assert adv[0, 1].item() == pytest.approx(2.6392)


def _perturb(table, t, n, delta):
    out = [row[:] for row in table]
    out[t][n] += delta
    return out


def test_termination_uses_no_future_value():
    adv, _ = _run()
    # changing the next episode's first value must not affect the terminated episode
    adv2, _ = _run(values=_perturb(VALUES, 2, 0, 10.0))
    assert torch.equal(adv2[:2, 0], adv[:2, 0])
    assert not torch.equal(adv2[2:, 0], adv[2:, 0])


def test_truncation_bootstraps_from_final_observation():
    adv, _ = _run()
    # V(final obs) enters the truncated step with weight γ, and earlier steps through the carry
    adv2, _ = _run(bootstrap=_perturb(BOOTSTRAP, 2, 1, 1.0))
    torch.testing.assert_close(adv2[2, 1] - adv[2, 1], torch.tensor(GAMMA, dtype=DT))
    torch.testing.assert_close(adv2[1, 1] - adv[1, 1], torch.tensor(GAMMA * GAMMA * LAM, dtype=DT))
    # the next episode's first value does not leak into the truncated episode
    adv3, _ = _run(values=_perturb(VALUES, 3, 1, 10.0))
    assert torch.equal(adv3[:3, 1], adv[:3, 1])


def test_recursion_does_not_cross_episode_boundaries():
    adv, _ = _run()
    # rewards of the next episode do not change advantages of the previous one
    adv_a, _ = _run(rewards=_perturb(REWARDS, 2, 0, 7.0))
    assert torch.equal(adv_a[:2, 0], adv[:2, 0])
    adv_b, _ = _run(rewards=_perturb(REWARDS, 3, 1, 7.0))
    assert torch.equal(adv_b[:3, 1], adv[:3, 1])
    # ... while inside an episode they do (λ-discounted)
    adv_c, _ = _run(rewards=_perturb(REWARDS, 1, 0, 1.0))
    torch.testing.assert_close(adv_c[0, 0] - adv[0, 0], torch.tensor(GAMMA * LAM, dtype=DT))
    # and the envs are independent of each other
    assert torch.equal(adv_a[:, 1], adv[:, 1])


def test_gae_lambda_one_no_ends_is_discounted_return_minus_value():
    g = torch.Generator().manual_seed(0)
    T, N = 6, 3
    r = torch.randn(T, N, generator=g, dtype=DT)
    v = torch.randn(T, N, generator=g, dtype=DT)
    last = torch.randn(N, generator=g, dtype=DT)
    no = torch.zeros(T, N, dtype=torch.bool)
    nv = next_values_from_rollout(v, last, torch.zeros(T, N, dtype=DT), no)
    adv, ret = gae(r, v, nv, no, no, GAMMA, 1.0)
    for n in range(N):
        for t in range(T):
            expected = sum(GAMMA ** (k - t) * r[k, n].item() for k in range(t, T))
            expected += GAMMA ** (T - t) * last[n].item()
            assert ret[t, n].item() == pytest.approx(expected, rel=1e-12)


def test_normalize_mean_zero_std_one():
    g = torch.Generator().manual_seed(1)
    a = 3.0 + 5.0 * torch.randn(257, generator=g, dtype=DT)
    z = normalize(a)
    assert abs(z.mean().item()) < 1e-12
    assert z.std().item() == pytest.approx(1.0, abs=1e-6)
    # hand example: mean 2.5, unbiased std sqrt(5/3)
    z = normalize(_t([1.0, 2.0, 3.0, 4.0]))
    s = (5.0 / 3.0) ** 0.5
    torch.testing.assert_close(z, _t([-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s]), rtol=1e-7, atol=1e-9)
    # constant minibatch: no division by zero
    assert torch.equal(normalize(_t([2.0, 2.0, 2.0])), _t([0.0, 0.0, 0.0]))


def test_sign_change_share_by_hand():
    before = _t([1.0, -1.0, 2.0, -2.0])
    after = _t([1.0, 1.0, -2.0, -2.0])
    assert sign_change_share(before, after).item() == pytest.approx(0.5)
    assert sign_change_share(before, before).item() == 0.0
    assert sign_change_share(before, -before).item() == 1.0
    # all-positive advantages [1, 2, 3, 10]: mean 4, so normalization flips the first three
    b = _t([1.0, 2.0, 3.0, 10.0])
    assert sign_change_share(b, normalize(b)).item() == pytest.approx(0.75)
    assert sign_change_share(b, normalize(b)).dim() == 0

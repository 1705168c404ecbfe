"""Training-data noise (PAPER.md §3): reward_flip, gaussian, uniform, adv_flip."""

from __future__ import annotations

import pytest
import torch

from symrl.algos.onpolicy import OnPolicyTrainer
from symrl.config import build_config
from symrl.noise import NOISE_KINDS, REWARD_NOISE, flip_advantages, noisy_rewards

N = 200_000


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _atari_rewards(dtype=torch.float32) -> torch.Tensor:
    """Clipped rewards in {−1, 0, 1} plus a non-clipped value, never 0.5 (where 1−r == r)."""
    choices = torch.tensor([-1.0, 0.0, 1.0, 2.5], dtype=dtype)
    return choices[torch.randint(0, 4, (N,), generator=_gen(123))]


def _advantages(dtype=torch.float32) -> torch.Tensor:
    a = torch.randn(N, generator=_gen(321), dtype=dtype)
    return torch.where(a == 0, torch.ones_like(a), a)


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_reward_flip(p):
    r = _atari_rewards()
    before = r.clone()
    out = noisy_rewards(r, "reward_flip", p, _gen(1))
    assert torch.equal(r, before)
    assert out.dtype == r.dtype and out.shape == r.shape
    flipped = out == 1.0 - r
    kept = out == r
    assert (flipped | kept).all()  # exactly r or 1 − r
    assert not (flipped & kept).any()
    assert flipped.double().mean().item() == pytest.approx(p, abs=0.005)


def test_reward_flip_extremes():
    r = _atari_rewards()[:1000]
    assert torch.equal(noisy_rewards(r, "reward_flip", 0.0, _gen(1)), r)
    assert torch.equal(noisy_rewards(r, "reward_flip", 1.0, _gen(1)), 1.0 - r)


@pytest.mark.parametrize("sigma", [0.05, 1.0])
def test_gaussian(sigma):
    r = torch.linspace(-3.0, 3.0, N, dtype=torch.float64)
    before = r.clone()
    out = noisy_rewards(r, "gaussian", sigma, _gen(2))
    assert torch.equal(r, before)
    assert out.dtype == r.dtype
    noise = out - r
    assert noise.std().item() == pytest.approx(sigma, rel=0.02)
    assert abs(noise.mean().item()) < 0.02 * sigma
    assert (noise != 0).all()


@pytest.mark.parametrize("w", [0.1, 2.0])
def test_uniform(w):
    r = torch.linspace(-3.0, 3.0, N, dtype=torch.float64)
    before = r.clone()
    out = noisy_rewards(r, "uniform", w, _gen(3))
    assert torch.equal(r, before)
    noise = out - r
    assert noise.abs().max().item() <= w * (1 + 1e-12)
    assert noise.min().item() < -0.99 * w and noise.max().item() > 0.99 * w  # spans the whole range
    assert noise.std().item() == pytest.approx(w / 3 ** 0.5, rel=0.02)
    assert abs(noise.mean().item()) < 0.02 * w


@pytest.mark.parametrize("p", [0.1, 0.4])
def test_adv_flip(p):
    a = _advantages()
    before = a.clone()
    out = flip_advantages(a, p, _gen(4))
    assert torch.equal(a, before)
    assert torch.equal(out.abs(), a.abs())
    flipped = torch.sign(out) != torch.sign(a)
    assert flipped.double().mean().item() == pytest.approx(p, abs=0.005)
    assert torch.equal(flip_advantages(a, 1.0, _gen(4)), -a)
    assert torch.equal(flip_advantages(a, 0.0, _gen(4)), a)


def test_none_and_non_matching_kinds_leave_data_unchanged():
    r = _atari_rewards()
    assert set(NOISE_KINDS) == {"none", "reward_flip", "gaussian", "uniform", "adv_flip"}
    for kind in NOISE_KINDS:
        if kind not in REWARD_NOISE:  # none, adv_flip
            assert torch.equal(noisy_rewards(r, kind, 0.5, _gen(5)), r)
    # and the reward kinds really do change rewards
    for kind in REWARD_NOISE:
        assert not torch.equal(noisy_rewards(r, kind, 0.5, _gen(5)), r)


@pytest.mark.parametrize("kind", ["reward_flip", "gaussian", "uniform", "adv_flip"])
def test_same_seed_same_output(kind):
    x = _atari_rewards(torch.float64)[:5000]

    def fn(data, gen):
        return flip_advantages(data, 0.3, gen) if kind == "adv_flip" else noisy_rewards(data, kind, 0.3, gen)

    out1 = fn(x, _gen(42))
    out2 = fn(x, _gen(42))
    out3 = fn(x, _gen(43))
    assert torch.equal(out1, out2)
    assert not torch.equal(out1, out3)
    # the generator advances: a second draw from the same generator differs
    g = _gen(42)
    assert not torch.equal(fn(x, g), fn(x, g))


def test_two_dimensional_rollout_shape_is_kept():
    r = torch.zeros(128, 8)  # (n_steps, n_envs) as in the rollout buffer
    for kind in REWARD_NOISE:
        out = noisy_rewards(r, kind, 0.5, _gen(6))
        assert out.shape == r.shape and out.dtype == r.dtype
    assert flip_advantages(r + 1.0, 0.5, _gen(6)).shape == r.shape


def test_adv_flip_draws_a_fresh_mask_for_every_minibatch_of_every_epoch(tmp_path):
    """As upstream (Symmetric_RL sppo.py:239-241, ppo.py:224-226): the flip happens inside the
    update, before normalization, so the two epochs over one rollout flip different samples."""
    n, batch_size, p = 256, 64, 0.3
    trainer = OnPolicyTrainer(build_config(None, {"noise": "adv_flip", "noise_scale": p, "n_epochs": 2,
                                                  "batch_size": batch_size, "n_steps": n, "out": str(tmp_path)}))
    obs = torch.randn(n, 4, generator=_gen(0))
    actions = torch.randint(0, 2, (n,), generator=_gen(1))
    with torch.no_grad():
        dist, values = trainer.model(obs)
        log_probs = dist.log_prob(actions)
    # every sample's advantage is distinct and positive, so a negative one names a flipped sample
    batch = {"obs": obs, "actions": actions, "log_probs": log_probs, "values": values,
             "advantages": torch.arange(1.0, n + 1.0), "returns": values}
    # the advantages each gradient step used, after adv_flip: the minibatches of learn()
    seen = [trainer.gradient_step(mb, 0.2)[1].advantages for mb in trainer.minibatches(batch)]
    trainer.close()
    per_epoch = n // batch_size
    assert len(seen) == 2 * per_epoch
    flipped = [{int(-a) for a in torch.cat(seen[e * per_epoch:(e + 1) * per_epoch]) if a < 0} for e in (0, 1)]
    assert flipped[0] != flipped[1]
    for epoch in flipped:
        assert len(epoch) == pytest.approx(p * n, abs=4 * (p * (1 - p) * n) ** 0.5)

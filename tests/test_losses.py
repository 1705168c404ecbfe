"""The symmetric RL loss (PAPER.md §1–2): baseline equivalence and what its gradient really is.

Gradients are compared in float64 with respect to the logits (the policy's raw output), so the
checks hold for any network on top of them.
"""

from __future__ import annotations

import dataclasses

import math

import pytest
import torch

from symrl.distributions import Categorical, MultiCategorical
from symrl.losses import (
    LossWeights,
    a2c_policy_loss,
    a2c_reverse_loss,
    effective_pg_multiplier,
    entropy_bonus,
    masked_mean,
    ppo_policy_loss,
    ppo_reverse_loss,
    symmetric_loss,
    value_loss,
)

DT = torch.float64
EPS = 0.2

# One sample per case; the first four lie outside [1−ε, 1+ε].
#   0: Â>0, r<1−ε  -> unclipped term is the min: has a gradient
#   1: Â<0, r<1−ε  -> clipped term is the min: NO gradient
#   2: Â>0, r>1+ε  -> clipped: NO gradient
#   3: Â<0, r>1+ε  -> unclipped: has a gradient
#   4..7: inside the clip range
RATIOS = [0.5, 0.6, 1.7, 1.5, 0.9, 1.1, 1.0, 1.15]
ADV_SIGNS = [1, -1, 1, -1, 1, -1, 1, -1]
CLIPPED = [1, 2]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _head_batch(head: str, seed: int = 0):
    """Logits (leaf), actions and a distribution factory for a Categorical or MultiCategorical head."""
    g = _gen(seed)
    b = len(RATIOS)
    if head == "categorical":
        logits = (0.5 * torch.randn(b, 6, generator=g, dtype=DT)).requires_grad_()
        actions = torch.randint(0, 6, (b,), generator=g)
        return logits, actions, Categorical
    logits = (0.5 * torch.randn(b, 3, 4, generator=g, dtype=DT)).requires_grad_()
    actions = torch.randint(0, 4, (b, 3), generator=g)
    return logits, actions, MultiCategorical


def _ppo_setup(head: str, seed: int = 0):
    """Logits, actions, dist class, advantages and old log-probs chosen so the ratios are RATIOS."""
    logits, actions, dist_cls = _head_batch(head, seed)
    g = _gen(seed + 100)
    mags = 0.5 + torch.rand(len(RATIOS), generator=g, dtype=DT)
    adv = mags * torch.tensor(ADV_SIGNS, dtype=DT)
    with torch.no_grad():
        lp = dist_cls(logits).log_prob(actions)
    old_lp = lp - torch.log(torch.tensor(RATIOS, dtype=DT))
    assert (old_lp < 0).all(), "old probabilities must be valid probabilities"
    return logits, actions, dist_cls, adv, old_lp


def _grad(loss: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(loss, leaf)
    return g


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _rows(g: torch.Tensor) -> torch.Tensor:
    """Per-sample view of a logits gradient: (B, everything else)."""
    return g.reshape(g.shape[0], -1)


def _ppo_grad(logits, actions, dist_cls, adv, old_lp, mask=None):
    lp = dist_cls(logits).log_prob(actions)
    ratio = torch.exp(lp - old_lp)
    return _grad(ppo_policy_loss(ratio, adv, EPS, mask), logits)


# --------------------------------------------------------------------------- baseline (α=1, β=0)

def _tiny_model(seed: int = 0):
    """A linear actor and critic so gradients w.r.t. real parameters can be compared."""
    g = _gen(seed)
    obs = torch.randn(16, 3, generator=g, dtype=DT)
    w_pi = torch.randn(3, 5, generator=g, dtype=DT).requires_grad_()
    w_v = torch.randn(3, generator=g, dtype=DT).requires_grad_()
    actions = torch.randint(0, 5, (16,), generator=g)
    adv = torch.randn(16, generator=g, dtype=DT)
    returns = torch.randn(16, generator=g, dtype=DT)
    old_values = torch.randn(16, generator=g, dtype=DT)
    # old policy: a perturbation large enough that some ratios get clipped
    old_lp = (Categorical(obs @ w_pi.detach()).log_prob(actions)
              + 0.4 * torch.randn(16, generator=g, dtype=DT))
    return obs, w_pi, w_v, actions, adv, returns, old_values, old_lp


@pytest.mark.parametrize("kind", ["ppo", "a2c"])
@pytest.mark.parametrize("clip_vf", [None, 0.2])
def test_alpha1_beta0_is_exactly_the_plain_baseline(kind, clip_vf):
    obs, w_pi, w_v, actions, adv, returns, old_values, old_lp = _tiny_model()
    params = [w_pi, w_v]
    vf, ent_coef = 0.5, 0.01

    def forward():
        dist = Categorical(obs @ w_pi)
        return dist, dist.log_prob(actions), obs @ w_v

    dist, lp, values = forward()
    weights = LossWeights(pg=1.0, reverse=0.0, vf=vf, ent=ent_coef, policy_loss=kind)
    terms, ratio = symmetric_loss(weights, lp, old_lp, adv, dist.entropy(), values, returns,
                                  old_values, EPS, clip_vf)
    got_grads = torch.autograd.grad(terms.total, params)

    dist, lp, values = forward()
    if kind == "ppo":
        hand_ratio = torch.exp(lp - old_lp)
        policy = ppo_policy_loss(hand_ratio, adv, EPS)
        # the batch really contains clipped samples, so this is not the trivial on-policy case
        assert ((hand_ratio - 1).abs() > EPS).any()
        assert torch.equal(ratio.detach(), hand_ratio.detach())
    else:
        policy = a2c_policy_loss(lp, adv)
        assert ratio is None
    hand = policy + vf * value_loss(values, returns, old_values, clip_vf) - ent_coef * dist.entropy().mean()
    hand_grads = torch.autograd.grad(hand, params)

    assert torch.equal(terms.total.detach(), hand.detach())
    for g_got, g_hand in zip(got_grads, hand_grads):
        assert torch.equal(g_got, g_hand)
    assert terms.reverse.item() == 0.0
    assert torch.equal(terms.policy, policy.detach())


# --------------------------------------------------------------------------- SPPO

@pytest.mark.parametrize("head", ["categorical", "multicategorical"])
@pytest.mark.parametrize("Z", [-1.0, -0.3, -2.5, -7.0])
def test_sppo_rce_gradient_is_abs_z_times_ppo_gradient(head, Z):
    logits, actions, dist_cls, adv, old_lp = _ppo_setup(head)
    g_ppo = _ppo_grad(logits, actions, dist_cls, adv, old_lp)

    lp = dist_cls(logits).log_prob(actions)
    ratio = torch.exp(lp - old_lp)
    # the batch contains clipped samples on both sides of the advantage sign
    unclipped_obj = ratio * adv
    clipped_obj = ratio.clamp(1 - EPS, 1 + EPS) * adv
    is_clipped = clipped_obj < unclipped_obj
    assert is_clipped.tolist() == [i in CLIPPED for i in range(len(RATIOS))]
    assert (adv[is_clipped] > 0).any() and (adv[is_clipped] < 0).any()
    assert ((ratio[~is_clipped] - 1).abs() > EPS).any()  # outside the range but not clipped

    rev = ppo_reverse_loss(ratio, old_lp.exp(), adv, EPS, "rce", Z)
    g_rev = _grad(rev, logits)

    assert _rel_err(g_rev, abs(Z) * g_ppo) < 1e-5
    rows_rev, rows_ppo = _rows(g_rev), _rows(g_ppo)
    torch.testing.assert_close(rows_rev, abs(Z) * rows_ppo, rtol=1e-5, atol=1e-12)
    for i in range(len(RATIOS)):
        if i in CLIPPED:
            assert torch.count_nonzero(rows_ppo[i]) == 0
            assert torch.count_nonzero(rows_rev[i]) == 0
        else:
            assert rows_ppo[i].abs().max() > 1e-3


@pytest.mark.parametrize("head", ["categorical", "multicategorical"])
def test_sppo_mae_gradient_is_twice_ppo_gradient(head):
    logits, actions, dist_cls, adv, old_lp = _ppo_setup(head)
    g_ppo = _ppo_grad(logits, actions, dist_cls, adv, old_lp)
    lp = dist_cls(logits).log_prob(actions)
    ratio = torch.exp(lp - old_lp)
    g_rev = _grad(ppo_reverse_loss(ratio, old_lp.exp(), adv, EPS, "mae"), logits)
    assert _rel_err(g_rev, 2.0 * g_ppo) < 1e-5
    assert torch.count_nonzero(_rows(g_rev)[CLIPPED]) == 0


def test_multicategorical_prob_is_product_over_dims():
    logits, actions, _ = _head_batch("multicategorical")
    joint = MultiCategorical(logits).log_prob(actions).exp()
    per_dim = [Categorical(logits[:, d]).log_prob(actions[:, d]).exp() for d in range(logits.shape[1])]
    torch.testing.assert_close(joint, per_dim[0] * per_dim[1] * per_dim[2])


@pytest.mark.parametrize("head", ["categorical", "multicategorical"])
@pytest.mark.parametrize("alpha,beta,Z,reverse", [
    (0.5, 1.0, -1.0, "rce"),   # Atari SPPO
    (0.5, 20.0, -1.0, "rce"),  # MuJoCo example
    (0.5, 0.4, -2.5, "rce"),
    (1.0, 0.3, -1.0, "mae"),
])
def test_symmetric_loss_ppo_policy_gradient_is_multiplier_times_ppo(head, alpha, beta, Z, reverse):
    logits, actions, dist_cls, adv, old_lp = _ppo_setup(head)
    g_ppo = _ppo_grad(logits, actions, dist_cls, adv, old_lp)

    dist = dist_cls(logits)
    values = torch.zeros(len(RATIOS), dtype=DT, requires_grad=True)
    returns = torch.ones(len(RATIOS), dtype=DT)
    w = LossWeights(pg=alpha, reverse=beta, vf=0.5, ent=0.0, reverse_kind=reverse, Z=Z)
    terms, _ = symmetric_loss(w, dist.log_prob(actions), old_lp, adv, dist.entropy(),
                              values, returns, clip_range=EPS)
    g = _grad(terms.total, logits)

    expected = alpha + beta * (abs(Z) if reverse == "rce" else 2.0)
    assert effective_pg_multiplier("sppo", alpha, beta, Z, reverse).value == pytest.approx(expected)
    assert _rel_err(g, expected * g_ppo) < 1e-5
    assert terms.reverse.item() != 0.0


@pytest.mark.parametrize("alpha,beta,Z", [(0.5, 1.0, -1.0), (0.5, 20.0, -1.0), (0.7, 0.4, -3.0)])
def test_sppo_equals_scaled_ppo_in_all_gradients(alpha, beta, Z):
    """The control the library ships: PPO with pg weight α+β|Z| and no reverse term."""
    obs, w_pi, w_v, actions, adv, returns, old_values, old_lp = _tiny_model(seed=3)
    params = [w_pi, w_v]

    def grads(weights):
        dist = Categorical(obs @ w_pi)
        terms, _ = symmetric_loss(weights, dist.log_prob(actions), old_lp, adv,
                                  dist.entropy(), obs @ w_v, returns, old_values, EPS, 0.2)
        return torch.autograd.grad(terms.total, params)

    sppo = grads(LossWeights(alpha, beta, 0.5, 0.01, "rce", Z))
    pg = effective_pg_multiplier("scaled_ppo", alpha, beta, Z).value
    scaled = grads(LossWeights(pg, 0.0, 0.5, 0.01, "rce", Z))
    plain = grads(LossWeights(alpha, 0.0, 0.5, 0.01, "rce", Z))
    for a, b in zip(sppo, scaled):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # and it is not just plain PPO with weight α
    assert _rel_err(sppo[0], plain[0]) > 0.1


# --------------------------------------------------------------------------- SA2C

@pytest.mark.parametrize("head", ["categorical", "multicategorical"])
@pytest.mark.parametrize("reverse,Z", [("rce", -1.0), ("rce", -2.5), ("mae", -1.0)])
def test_sa2c_reverse_gradient_is_prob_weighted_a2c_gradient(head, reverse, Z):
    logits, actions, dist_cls = _head_batch(head, seed=5)
    b = logits.shape[0]
    adv = torch.randn(b, generator=_gen(6), dtype=DT)

    g_a2c = _grad(a2c_policy_loss(dist_cls(logits).log_prob(actions), adv), logits)
    prob = dist_cls(logits).log_prob(actions).exp()
    g_rev = _grad(a2c_reverse_loss(prob, adv, reverse, Z), logits)

    scale = abs(Z) if reverse == "rce" else 2.0
    weight = (scale * prob.detach()).reshape(b, *([1] * (logits.dim() - 1)))
    torch.testing.assert_close(g_rev, weight * g_a2c, rtol=1e-5, atol=1e-12)
    # a genuine per-sample reweighting, not a constant multiple of A2C's gradient
    assert _rel_err(g_rev, scale * g_a2c) > 0.1

    # batch of one gives the same per-sample gradient (up to the 1/B of the mean)
    for i in (0, b - 1):
        leaf = logits.detach()[i:i + 1].clone().requires_grad_()
        g1_a2c = _grad(a2c_policy_loss(dist_cls(leaf).log_prob(actions[i:i + 1]), adv[i:i + 1]), leaf)
        p1 = dist_cls(leaf).log_prob(actions[i:i + 1]).exp()
        g1_rev = _grad(a2c_reverse_loss(p1, adv[i:i + 1], reverse, Z), leaf)
        torch.testing.assert_close(g1_rev, scale * p1.detach().item() * g1_a2c, rtol=1e-5, atol=1e-12)
        torch.testing.assert_close(g1_rev, b * g_rev[i:i + 1], rtol=1e-10, atol=1e-12)


def test_symmetric_loss_a2c_policy_gradient_per_sample():
    logits, actions, _ = _head_batch("categorical", seed=7)
    b = logits.shape[0]
    adv = torch.randn(b, generator=_gen(8), dtype=DT)
    alpha, beta, Z = 0.5, 1.0, -1.0
    g_a2c = _grad(a2c_policy_loss(Categorical(logits).log_prob(actions), adv), logits)
    dist = Categorical(logits)
    terms, ratio = symmetric_loss(LossWeights(alpha, beta, 0.25, 0.0, "rce", Z, "a2c"),
                                  dist.log_prob(actions), None, adv, dist.entropy(),
                                  torch.zeros(b, dtype=DT), torch.zeros(b, dtype=DT))
    assert ratio is None
    g = _grad(terms.total, logits)
    prob = dist.log_prob(actions).exp().detach()
    torch.testing.assert_close(g, (alpha + beta * abs(Z) * prob)[:, None] * g_a2c, rtol=1e-5, atol=1e-12)


# --------------------------------------------------------------------------- effective multiplier

@pytest.mark.parametrize("algo", ["ppo", "sppo", "scaled_ppo"])
def test_effective_multiplier_ppo_family(algo):
    assert effective_pg_multiplier(algo, 0.5, 1.0).value == pytest.approx(1.5)
    assert effective_pg_multiplier(algo, 0.5, 20.0, Z=-1.0).value == pytest.approx(20.5)
    assert effective_pg_multiplier(algo, 0.5, 0.4, Z=-2.5).value == pytest.approx(1.5)
    assert effective_pg_multiplier(algo, 1.0, 0.0, Z=-3.0).value == pytest.approx(1.0)
    assert effective_pg_multiplier(algo, 0.5, 1.0, Z=-5.0, reverse="mae").value == pytest.approx(2.5)
    assert effective_pg_multiplier(algo, 0.5, 0.2, reverse="mae").value == pytest.approx(0.9)


@pytest.mark.parametrize("algo", ["a2c", "sa2c"])
def test_effective_multiplier_a2c_family_is_per_sample(algo):
    m = effective_pg_multiplier(algo, 0.5, 1.0, Z=-2.0)
    assert m.value is None
    assert "π(a|s)" in m.formula
    assert "0.5" in m.formula and "2.5" in m.formula  # between α and α+β|Z|
    m_mae = effective_pg_multiplier(algo, 0.5, 1.0, reverse="mae")
    assert m_mae.value is None and "π(a|s)" in m_mae.formula and "2.5" in m_mae.formula


@pytest.mark.parametrize("Z", [0.0, 0.5, 1.0])
def test_effective_multiplier_rejects_nonnegative_z(Z):
    with pytest.raises(ValueError, match="Z"):
        effective_pg_multiplier("sppo", 0.5, 1.0, Z=Z)


def test_effective_multiplier_rejects_unknown_algo():
    with pytest.raises(ValueError, match="algo"):
        effective_pg_multiplier("trpo", 0.5, 1.0)


def test_effective_multiplier_rejects_unknown_reverse():
    with pytest.raises(ValueError):
        effective_pg_multiplier("sppo", 0.5, 1.0, reverse="rc")


def test_unknown_reverse_kind_rejected_by_loss():
    p = torch.tensor([0.3, 0.6], dtype=DT)
    a = torch.tensor([1.0, -1.0], dtype=DT)
    with pytest.raises(ValueError, match="reverse"):
        a2c_reverse_loss(p, a, reverse="rc")


def test_symmetric_loss_rejects_bad_kind_and_missing_old_log_prob():
    x = torch.zeros(3, dtype=DT)
    w = LossWeights(1.0, 0.0, 0.5, 0.0)
    with pytest.raises(ValueError, match="policy_loss"):
        symmetric_loss(dataclasses.replace(w, policy_loss="trpo"), x, x, x, x, x, x)
    with pytest.raises(ValueError, match="old_log_prob"):
        symmetric_loss(w, x, None, x, x, x, x)


# --------------------------------------------------------------------------- masks (LLM tokens)

def test_masked_mean_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 3.0, 1000.0], [4.0, -500.0, 7e6, 9.0]], dtype=DT)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    assert masked_mean(x, mask).item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert masked_mean(x).item() == pytest.approx(x.mean().item())
    assert masked_mean(x, mask.float()).item() == pytest.approx(2.5)
    # changing a padded value changes nothing
    x2 = x.clone()
    x2[~mask] = -123.0
    assert masked_mean(x2, mask).item() == masked_mean(x, mask).item()
    # the mask also applies to the entropy and value terms
    assert entropy_bonus(x, mask).item() == pytest.approx(2.5)
    assert value_loss(x, torch.zeros_like(x), mask=mask).item() == pytest.approx((1 + 4 + 9 + 16) / 4)


def _token_setup():
    g = _gen(11)
    b, t, vocab = 3, 5, 7
    logits = (0.7 * torch.randn(b, t, vocab, generator=g, dtype=DT)).requires_grad_()
    tokens = torch.randint(0, vocab, (b, t), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    adv = torch.randn(b, t, generator=g, dtype=DT)
    with torch.no_grad():
        lp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    # ratios spread over [0.5, 1.7] so that some tokens are clipped
    ratios = 0.5 + 1.2 * torch.rand(b, t, generator=g, dtype=DT)
    old_lp = lp - ratios.log()
    return logits, tokens, mask, adv, old_lp


def _token_log_prob(logits, tokens):
    return torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)


def test_masked_ppo_loss_equals_loss_over_real_tokens_only():
    logits, tokens, mask, adv, old_lp = _token_setup()
    lp = _token_log_prob(logits, tokens)
    ratio = torch.exp(lp - old_lp)
    masked = ppo_policy_loss(ratio, adv, EPS, mask)
    selected = ppo_policy_loss(ratio[mask], adv[mask], EPS)
    torch.testing.assert_close(masked, selected, rtol=1e-12, atol=0)
    rev_masked = ppo_reverse_loss(ratio, old_lp.exp(), adv, EPS, "rce", -1.0, mask)
    rev_sel = ppo_reverse_loss(ratio[mask], old_lp.exp()[mask], adv[mask], EPS)
    torch.testing.assert_close(rev_masked, rev_sel, rtol=1e-12, atol=0)


@pytest.mark.parametrize("alpha,beta,Z", [(0.5, 0.4, -1.0), (0.5, 0.2, -2.0)])
def test_masked_sppo_gradient_is_multiplier_times_ppo_per_token(alpha, beta, Z):
    logits, tokens, mask, adv, old_lp = _token_setup()
    lp = _token_log_prob(logits, tokens)
    ratio = torch.exp(lp - old_lp)
    assert ((ratio[mask] - 1).abs() > EPS).any()
    g_ppo = _grad(ppo_policy_loss(ratio, adv, EPS, mask), logits)

    lp = _token_log_prob(logits, tokens)
    entropy = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)
    values = torch.zeros_like(adv, requires_grad=True)
    terms, _ = symmetric_loss(LossWeights(alpha, beta, 0.5, 0.0, "rce", Z), lp, old_lp, adv,
                              entropy, values, torch.ones_like(adv), clip_range=EPS, mask=mask)
    g = _grad(terms.total, logits)

    torch.testing.assert_close(g, (alpha + beta * abs(Z)) * g_ppo, rtol=1e-5, atol=1e-12)
    assert torch.count_nonzero(g[~mask]) == 0
    assert torch.count_nonzero(g_ppo[~mask]) == 0
    assert torch.count_nonzero(g[mask]) > 0


# --------------------------------------------------------------------------- value loss

VALUES = [1.0, 2.0, 0.5, -1.0]
RETURNS = [1.5, 0.0, 0.6, 1.0]
OLD_VALUES = [1.3, 2.5, 0.0, -1.0]


def test_value_loss_unclipped_by_hand():
    v, r = torch.tensor(VALUES, dtype=DT), torch.tensor(RETURNS, dtype=DT)
    # (−0.5)² + 2² + (−0.1)² + (−2)² = 8.26
    assert value_loss(v, r).item() == pytest.approx(8.26 / 4)
    # clip without old values, or old values without clip: plain MSE
    assert value_loss(v, r, old_values=torch.tensor(OLD_VALUES, dtype=DT)).item() == pytest.approx(8.26 / 4)
    assert value_loss(v, r, clip_range_vf=0.2).item() == pytest.approx(8.26 / 4)


def test_value_loss_clipped_by_hand():
    v, r, old = (torch.tensor(x, dtype=DT) for x in (VALUES, RETURNS, OLD_VALUES))
    # clipped values: 1.3−0.2=1.1, 2.5−0.2=2.3, 0+0.2=0.2, −1.0
    # squared errors: unclipped [0.25, 4, 0.01, 4], clipped [0.16, 5.29, 0.16, 4]
    # elementwise max: [0.25, 5.29, 0.16, 4] -> mean 9.70 / 4
    assert value_loss(v, r, old, 0.2).item() == pytest.approx(9.70 / 4)
    mask = torch.tensor([True, True, False, True])
    assert value_loss(v, r, old, 0.2, mask).item() == pytest.approx((0.25 + 5.29 + 4.0) / 3)
    # a wide clip range is plain MSE
    assert value_loss(v, r, old, 10.0).item() == pytest.approx(8.26 / 4)


def test_value_loss_clipped_gradient_by_hand():
    v = torch.tensor(VALUES, dtype=DT, requires_grad=True)
    r, old = torch.tensor(RETURNS, dtype=DT), torch.tensor(OLD_VALUES, dtype=DT)
    g = _grad(value_loss(v, r, old, 0.2), v)
    # sample 0: unclipped term wins -> 2(v−R)/4; sample 1, 2: clipped term wins (and is clamped) -> 0;
    # sample 3: v == old, both terms equal and inside the clip range -> 2(v−R)/4
    expected = [2 * (1.0 - 1.5) / 4, 0.0, 0.0, 2 * (-1.0 - 1.0) / 4]
    torch.testing.assert_close(g, torch.tensor(expected, dtype=DT))
    assert math.isfinite(g.sum().item())


@pytest.mark.parametrize("reverse", ["rce", "mae"])
def test_reverse_terms_equal_the_papers_literal_formulas(reverse):
    """The library computes (1−π)/π_old as 1/π_old − r; the value must equal the formula as written."""
    gen = torch.Generator().manual_seed(3)
    lp = torch.log(torch.rand(64, generator=gen, dtype=torch.float64) * 0.9 + 0.05)
    old_lp = torch.log(torch.rand(64, generator=gen, dtype=torch.float64) * 0.9 + 0.05)
    adv = torch.randn(64, generator=gen, dtype=torch.float64)
    prob, old_prob, ratio, Z, eps = lp.exp(), old_lp.exp(), torch.exp(lp - old_lp), -1.7, 0.2
    clipped = ratio.clamp(1 - eps, 1 + eps)
    f = (((ratio >= 1 - eps) & (ratio <= 1 + eps)) | (ratio * adv <= clipped * adv)).double()
    core = -adv * Z * (1 - prob) if reverse == "rce" else adv * (1 - prob) - adv * prob
    literal_ppo = (f * core / old_prob).mean()
    torch.testing.assert_close(ppo_reverse_loss(ratio, old_prob, adv, eps, reverse, Z), literal_ppo)
    torch.testing.assert_close(a2c_reverse_loss(prob, adv, reverse, Z), core.mean())
    weights = LossWeights(pg=0.5, reverse=1.0, vf=0.0, ent=0.0, reverse_kind=reverse, Z=Z)
    zeros = torch.zeros(64, dtype=torch.float64)
    terms, _ = symmetric_loss(weights, lp, old_lp, adv, zeros, zeros, zeros, clip_range=eps)
    torch.testing.assert_close(terms.reverse, literal_ppo)
    # the gym trainer's path: 1/π_old given, once per rollout
    given, _ = symmetric_loss(weights, lp, old_lp, adv, zeros, zeros, zeros, clip_range=eps, inv_old_prob=1 / old_prob)
    torch.testing.assert_close(given.reverse, literal_ppo)


@pytest.mark.parametrize("reverse", ["rce", "mae"])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "token weights"])
def test_symmetric_loss_reverse_term_is_the_reference_formula_and_padding_never_leaks(reverse, mask_kind):
    """symmetric_loss computes β·L_rev as one dot product (its hot-loop form); value and gradient
    must equal β·ppo_reverse_loss with a mask of either kind, padding must get no gradient, and an
    infinite old log-prob on padding must not reach the value."""
    gen = torch.Generator().manual_seed(5)
    lp0 = torch.log(torch.rand(4, 6, generator=gen, dtype=DT) * 0.9 + 0.05)
    old_lp = torch.log(torch.rand(4, 6, generator=gen, dtype=DT) * 0.9 + 0.05)
    adv = torch.randn(4, 6, generator=gen, dtype=DT)
    valid = torch.rand(4, 6, generator=gen) > 0.3
    mask = {"none": None, "bool": valid, "token weights": valid * torch.rand(4, 6, generator=gen, dtype=DT)}[mask_kind]
    beta, Z, eps = 0.7, -1.7, 0.2
    weights = LossWeights(pg=0.0, reverse=beta, vf=0.0, ent=0.0, reverse_kind=reverse, Z=Z)
    zeros = torch.zeros_like(adv)

    def loss(old: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lp = lp0.clone().requires_grad_()
        terms, _ = symmetric_loss(weights, lp, old, adv, zeros, zeros, zeros, clip_range=eps, mask=mask)
        return terms.total, terms.reverse, lp

    total, term, lp = loss(old_lp)
    grad = _grad(total, lp)
    lp_ref = lp0.clone().requires_grad_()
    reference = ppo_reverse_loss(torch.exp(lp_ref - old_lp), old_lp.exp(), adv, eps, reverse, Z, mask)
    torch.testing.assert_close(term, reference.detach())
    torch.testing.assert_close(grad, _grad(beta * reference, lp_ref))
    if mask is not None:
        assert torch.count_nonzero(grad[~valid]) == 0
        total, term, _ = loss(torch.where(valid, old_lp, torch.tensor(-float("inf"), dtype=DT)))
        torch.testing.assert_close(term, reference.detach())
        assert torch.isfinite(total)

def test_sppo_on_17_dim_discretized_actions_is_exact_in_float32_where_upstream_is_noise():
    """UPSTREAM.md point 10: with 17 dimensions × 11 bins (Humanoid, HumanoidStandup) π_old ≈ 11⁻¹⁷.
    The released code writes 1 − π as prod_d(Σ_k softmax) − π, whose float32 rounding (analytically
    a zero gradient) is then divided by π_old; symrl's 1/π_old − r keeps float32 exact."""
    torch.manual_seed(0)
    n, dims, bins = 64, 17, 11
    logits = (0.01 * torch.randn(n, dims, bins)).requires_grad_()  # SB3's action-head init scale
    dist = MultiCategorical(logits)
    actions = torch.randint(bins, (n, dims))
    old_lp = dist.log_prob(actions).detach()
    adv = torch.randn(n)
    def ratio() -> torch.Tensor:
        return torch.exp(MultiCategorical(logits).log_prob(actions) - old_lp)

    exact = _grad(ppo_reverse_loss(ratio(), old_lp.exp(), adv, EPS, "rce", -1.0), logits)
    reference = _grad(ppo_policy_loss(ratio(), adv, EPS), logits)  # ∇L_rev = |Z|·∇L_PPO
    assert _rel_err(exact, reference) < 1e-4

    def released(logits: torch.Tensor) -> torch.Tensor:  # the released formula, float32 as it ran
        split = logits.softmax(-1)
        all_probs = split.sum(-1).prod(-1)
        prob = split.gather(-1, actions.unsqueeze(-1)).squeeze(-1).prod(-1)
        r = prob / old_lp.exp()  # f as the released code writes it
        f = (((r >= 1 - EPS) & (r <= 1 + EPS)) | (r * adv <= r.clamp(1 - EPS, 1 + EPS) * adv)).float()
        return -(f * adv * -1.0 * (all_probs - prob) / old_lp.exp()).mean()

    noisy = _grad(released(logits), logits)
    assert noisy.norm() > 100 * reference.norm()


def test_symmetric_loss_reverse_term_mixes_dtypes_as_elementwise_ops_do():
    """bf16 log-probs and advantages beside float32 old log-probs (as under bf16 autocast): the
    reverse term's dot products must promote as the elementwise reference does, not fail."""
    gen = torch.Generator().manual_seed(2)
    lp = torch.log(torch.rand(4, 6, generator=gen) * 0.9 + 0.05).to(torch.bfloat16).requires_grad_()
    old_lp = torch.log(torch.rand(4, 6, generator=gen) * 0.9 + 0.05)
    adv = torch.randn(4, 6, generator=gen).to(torch.bfloat16)
    mask = torch.rand(4, 6, generator=gen) > 0.3
    zeros = torch.zeros(4, 6)
    terms, _ = symmetric_loss(LossWeights(0.5, 0.4, 0.0, 0.0), lp, old_lp, adv, zeros, zeros, zeros, mask=mask)
    reference = ppo_reverse_loss(torch.exp(lp.detach() - old_lp), old_lp.exp(), adv, EPS, "rce", -1.0, mask)
    torch.testing.assert_close(terms.reverse.float(), reference.float(), rtol=2e-2, atol=1e-3)
    terms.total.backward()
    assert torch.isfinite(lp.grad).all()


def test_symmetric_loss_reverse_term_broadcasts_sequence_advantages_and_survives_an_all_padding_batch():
    """One advantage per sequence (B, 1) against (B, T) tokens, as the elementwise reference
    broadcasts it; a micro-batch of padding only gives a zero term, not NaN, for any β|Z|."""
    gen = torch.Generator().manual_seed(9)
    lp = torch.log(torch.rand(3, 5, generator=gen, dtype=DT) * 0.9 + 0.05).requires_grad_()
    old_lp = torch.log(torch.rand(3, 5, generator=gen, dtype=DT) * 0.9 + 0.05)
    adv = torch.randn(3, 1, generator=gen, dtype=DT)
    mask = torch.rand(3, 5, generator=gen) > 0.3
    zeros = torch.zeros(3, 5, dtype=DT)
    for m in (None, mask):
        terms, _ = symmetric_loss(LossWeights(0.0, 0.7, 0.0, 0.0), lp, old_lp, adv, zeros, zeros, zeros, mask=m)
        reference = ppo_reverse_loss(torch.exp(lp.detach() - old_lp), old_lp.exp(), adv, EPS, "rce", -1.0, m)
        torch.testing.assert_close(terms.reverse, reference)
    for empty in (torch.zeros(3, 5, dtype=torch.bool), torch.zeros(3, 5)):
        terms, _ = symmetric_loss(LossWeights(0.5, 1.0, 0.0, 0.0, "rce", -5.0), lp.float(), old_lp.float(),
                                  adv.float(), zeros.float(), zeros.float(), zeros.float(), mask=empty)
        assert terms.total.item() == 0.0 and terms.reverse.item() == 0.0

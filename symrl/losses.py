"""The symmetric RL loss: pure tensor functions shared by the gym and language-model trainers.

Every function takes per-element tensors (one element = one sample for gym agents, one generated
token for language models) and an optional ``mask`` of the same shape; masked-out elements do not
count in any mean. Notation follows Byun & Perrault (ICML 2025): advantage Â, ratio
r = π_θ(a|s)/π_old(a|s), clip ε, and Z < 0 standing for log 0.

What the gradient is (tested in tests/test_losses.py):
  * PPO + RCE reverse term: ∇L_rev = |Z|·∇L_PPO sample by sample, so SPPO is PPO whose policy loss
    is weighted by α + β|Z| (MAE variant: α + 2β).
  * A2C + RCE reverse term: ∇L_rev = |Z|·π(a|s)·∇L_A2C, a per-sample reweighting by the action's
    probability (MAE variant: 2·π(a|s)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from symrl import advantages as adv_ops

Reverse = Literal["rce", "mae"]
PolicyLoss = Literal["a2c", "ppo"]


def masked_mean(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over all elements, or over the elements where ``mask`` is true (tokens, not padding); a
    float ``mask`` weights them: Σ w·x / Σ w (``token_weights``: other loss aggregations)."""
    if mask is None:
        return x.mean()
    # where(), not x·mask alone: a non-finite value on a padding element must not leak in as inf·0 = NaN
    kept = torch.where(mask.bool(), x, torch.zeros_like(x))
    return (kept * mask if mask.is_floating_point() else kept).sum() / _mask_total(mask)


def _mask_total(mask: Tensor) -> Tensor:
    """``masked_mean``'s denominator: the mask's sum, kept from 0 (no valid element gives a mean of 0)."""
    return mask.sum().clamp_min(torch.finfo(mask.dtype).tiny if mask.is_floating_point() else 1)


def token_weights(mask: Tensor, aggregation: str, max_len: int) -> tuple[Tensor, Tensor]:
    """Per-token weights ``w`` and the normalizer ``n`` of a minibatch's loss ``Σ w·x / n``:
    ``token-mean``: w = mask, n = its tokens; ``seq-mean-token-mean``: w = mask / the sequence's
    length, n = the sequences; ``seq-mean-token-sum-norm`` (Dr. GRPO): w = mask, n = sequences ×
    ``max_len``. A micro-batch's ``masked_mean(x, w)`` times its ``Σ w / n`` adds up to the
    minibatch's loss, whatever the split."""
    w = mask.to(torch.float32)
    rows = torch.tensor(float(mask.shape[0]), device=mask.device)
    if aggregation == "token-mean":
        return w, w.sum().clamp_min(1)
    if aggregation == "seq-mean-token-mean":
        return w / w.sum(1, keepdim=True).clamp_min(1), rows
    if aggregation == "seq-mean-token-sum-norm":
        return w, rows * max_len
    raise ValueError(f"loss_aggregation: got {aggregation!r}, allowed: token-mean, seq-mean-token-mean, "
                     "seq-mean-token-sum-norm")


def a2c_policy_loss(log_prob: Tensor, advantages: Tensor, mask: Tensor | None = None) -> Tensor:
    """``−mean(Â · log π_θ(a|s))``."""
    return -masked_mean(advantages * log_prob, mask)


def _ppo_surrogates(ratio: Tensor, advantages: Tensor, clip_range: float,
                    clip_range_high: float | None = None) -> tuple[Tensor, Tensor]:
    """``(r·Â, clip(r, 1−ε, 1+ε_high)·Â)``, shared by the PPO loss and the reverse term's mask;
    ε_high (DAPO's clip-higher) defaults to ε."""
    high = clip_range if clip_range_high is None else clip_range_high
    return ratio * advantages, ratio.clamp(1.0 - clip_range, 1.0 + high) * advantages


def ppo_policy_loss(
    ratio: Tensor, advantages: Tensor, clip_range: float, mask: Tensor | None = None
) -> Tensor:
    """``−mean(min(r·Â, clip(r, 1−ε, 1+ε)·Â))``."""
    return -masked_mean(torch.minimum(*_ppo_surrogates(ratio, advantages, clip_range)), mask)


def _reverse_core(p: Tensor, base: Tensor | float, advantages: Tensor, reverse: Reverse, Z: float) -> Tensor:
    """Per-element reverse loss written as ``scale·Â·(base − k·p)``.

    A2C (p = π, base = 1):        RCE ``−Â·Z·(1−π)``;        MAE ``Â·(1−π) − Â·π = Â·(1−2π)``.
    PPO (p = r, base = 1/π_old):  RCE ``−Â·Z·(1−π)/π_old``;  MAE ``(Â·(1−π) − Â·π)/π_old``,
    using (1−π)/π_old = 1/π_old − r (π = r·π_old): the same quantity with fewer tensor ops.
    """
    scale, k = _reverse_coefficients(reverse, Z)
    return (advantages if scale == 1.0 else scale * advantages) * (base - (p if k == 1.0 else k * p))


def _reverse_coefficients(reverse: Reverse, Z: float) -> tuple[float, float]:
    """``(scale, k)`` of the reverse term ``scale·Â·(base − k·p)``: RCE (−Z, 1), MAE (1, 2)."""
    if reverse == "rce":
        return -Z, 1.0
    if reverse == "mae":
        return 1.0, 2.0
    raise ValueError(f"reverse: got {reverse!r}, allowed: 'rce', 'mae'")


def a2c_reverse_loss(
    prob: Tensor,
    advantages: Tensor,
    reverse: Reverse = "rce",
    Z: float = -1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Reverse term of SA2C: the reverse cross entropy (or MAE) of the taken action's probability."""
    return masked_mean(_reverse_core(prob, 1.0, advantages, reverse, Z), mask)


def ppo_reverse_loss(
    ratio: Tensor,
    old_prob: Tensor,
    advantages: Tensor,
    clip_range: float,
    reverse: Reverse = "rce",
    Z: float = -1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Reverse term of SPPO: ``−mean(f·Â·Z·(1−π)/π_old)`` (RCE), divided by π_old and masked by f
    exactly as the released code; π = r·π_old is implied by the ratio."""
    return masked_mean(_ppo_reverse_elements(ratio, 1.0 / old_prob, advantages, clip_range, None, reverse, Z), mask)


def _ppo_reverse_elements(ratio: Tensor, inv_old_prob: Tensor, advantages: Tensor, clip_range: float,
                          clip_range_high: float | None, reverse: Reverse, Z: float) -> Tensor:
    """SPPO's reverse term per element, f·s·Â·(1/π_old − k·r), f where PPO's objective clipped to
    [1−ε, 1+ε_high] has a gradient; where(), not f·x: a non-finite 1/π_old where f = 0 stays out."""
    unclipped, clipped = _ppo_surrogates(ratio, advantages, clip_range, clip_range_high)
    return torch.where(unclipped <= clipped, _reverse_core(ratio, inv_old_prob, advantages, reverse, Z), 0.0)


def reverse_per_element(
    log_prob: Tensor,
    advantages: Tensor,
    reverse: Reverse = "rce",
    Z: float = -1.0,
    old_log_prob: Tensor | None = None,
    clip_range: float = 0.2,
    clip_range_high: float | None = None,
) -> Tensor:
    """The reverse term of each element, not reduced: for a caller that reduces elements its own way
    (the TRL plug-in, symrl.llm.trl_grpo, reduces them as TRL's ``loss_type`` does).

    Without ``old_log_prob``, SA2C's form ``−Â·Z·(1−π)`` (gradient |Z|·π·∇(−Â·log π)); with it,
    SPPO's ``f·(−Â·Z·(1−π))/π_old``, f the gradient mask of PPO's objective clipped to
    [1−ε, 1+ε_high] (gradient |Z|·∇L_PPO). MAE: 2 in place of |Z|.
    """
    if old_log_prob is None:
        return _reverse_core(torch.exp(log_prob), 1.0, advantages, reverse, Z)
    return _ppo_reverse_elements(torch.exp(log_prob - old_log_prob), torch.exp(-old_log_prob), advantages, clip_range,
                                 clip_range_high, reverse, Z)


def value_loss(
    values: Tensor,
    returns: Tensor,
    old_values: Tensor | None = None,
    clip_range_vf: float | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """Squared error to the returns; with ``clip_range_vf`` the PPO-style clipped (pessimistic) form.

    Unscaled here: SB3 uses plain MSE, CleanRL and TRIL ``0.5·max(...)``. The factor is the
    config's ``value_loss_scale`` (1 for ``symrl train``, as SB3; 0.5 for ``symrl rlhf``, as TRIL),
    folded into the value weight by :func:`loss_weights`, so ``vf_coef`` stays as each paper writes it.
    """
    unclipped = (values - returns) ** 2
    if clip_range_vf is None or old_values is None:
        return masked_mean(unclipped, mask)
    clipped_values = old_values + (values - old_values).clamp(-clip_range_vf, clip_range_vf)
    return masked_mean(torch.maximum(unclipped, (clipped_values - returns) ** 2), mask)


def entropy_bonus(entropy: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean entropy; the total loss subtracts ``ent_coef`` times this."""
    return masked_mean(entropy, mask)


@dataclass(frozen=True)
class LossWeights:
    """The weights of the total loss ``pg·L_pg + reverse·L_rev + vf·L_value − ent·H`` and the policy
    loss they weight (``policy_loss``: 'ppo' for ppo/sppo/scaled_ppo, 'a2c' for a2c/sa2c).

    ``pg`` is α for a2c/sa2c/ppo/sppo and α+β|Z| (or α+2β) for scaled_ppo, whose ``reverse`` is 0.
    """

    pg: float
    reverse: float
    vf: float
    ent: float
    reverse_kind: Reverse = "rce"
    Z: float = -1.0
    policy_loss: PolicyLoss = "ppo"


@dataclass
class LossTerms:
    """The total loss and its parts (the parts detached, for logging). The reverse term is kept as
    weighted in the loss, β·L_rev, beside β: a division per minibatch would cost the hot loop a
    kernel, so ``reverse`` divides on demand and :func:`update_statistics` once per update."""

    total: Tensor
    policy: Tensor
    weighted_reverse: Tensor
    value: Tensor
    entropy: Tensor
    reverse_weight: float

    @property
    def reverse(self) -> Tensor:
        """L_rev, the reverse term before its weight β."""
        return _unweighted(self.weighted_reverse, self.reverse_weight)


def _unweighted(weighted_reverse: Tensor, weight: float) -> Tensor:
    """β·L_rev back to L_rev; with β = 0 the term was never computed and stays the zero it is."""
    return weighted_reverse / weight if weight else weighted_reverse


def symmetric_loss(
    weights: LossWeights,
    log_prob: Tensor,
    old_log_prob: Tensor | None,
    advantages: Tensor,
    entropy: Tensor,
    values: Tensor,
    returns: Tensor,
    old_values: Tensor | None = None,
    clip_range: float = 0.2,
    clip_range_vf: float | None = None,
    mask: Tensor | None = None,
    clip_range_high: float | None = None,
    inv_old_prob: Tensor | None = None,
) -> tuple[LossTerms, Tensor | None]:
    """α·L_pg + β·L_rev + vf·L_value − ent·H with the policy loss ``weights.policy_loss``.

    Returns the loss terms and, for PPO, the ratio (for approx-KL and clip-fraction logging).
    The reverse term is not computed when its weight is 0, so β = 0 is the plain baseline exactly.
    ``inv_old_prob``: 1/π_old, for SPPO's reverse term, when the caller has it (else exp(−old_log_prob)).
    """
    ratio = None
    weighted_reverse = None  # β·L_rev; not computed when β = 0
    kind = weights.policy_loss
    if kind == "ppo":
        if old_log_prob is None:
            raise ValueError("old_log_prob: required for kind='ppo'")
        ratio = torch.exp(log_prob - old_log_prob)
        unclipped, clipped = _ppo_surrogates(ratio, advantages, clip_range, clip_range_high)
        policy = -masked_mean(torch.minimum(unclipped, clipped), mask)
        if weights.reverse != 0.0:
            weighted_reverse = _weighted_ppo_reverse(weights, ratio, old_log_prob, advantages,
                                                     unclipped <= clipped, mask, inv_old_prob)
    elif kind == "a2c":
        policy = a2c_policy_loss(log_prob, advantages, mask)
        if weights.reverse != 0.0:
            weighted_reverse = weights.reverse * a2c_reverse_loss(torch.exp(log_prob), advantages,
                                                                  weights.reverse_kind, weights.Z, mask)
    else:
        raise ValueError(f"policy_loss: got {kind!r}, allowed: 'a2c', 'ppo'")

    # torch.add(..., alpha=w) is one kernel; w * tensor with a Python float adds a dtype conversion
    if weighted_reverse is not None:
        total = weighted_reverse.add(policy, alpha=weights.pg)
    else:
        weighted_reverse = torch.zeros((), dtype=log_prob.dtype, device=log_prob.device)
        total = policy if weights.pg == 1.0 else weights.pg * policy
    value = value_loss(values, returns, old_values, clip_range_vf, mask)
    ent = entropy_bonus(entropy, mask)
    total = total.add(value, alpha=weights.vf)
    if weights.ent != 0.0:
        total = total.sub(ent, alpha=weights.ent)
    terms = LossTerms(total, policy.detach(), weighted_reverse.detach(), value.detach(), ent.detach(), weights.reverse)
    return terms, ratio


def _weighted_ppo_reverse(weights: LossWeights, ratio: Tensor, old_log_prob: Tensor, advantages: Tensor,
                          gate: Tensor, mask: Tensor | None, inv_old_prob: Tensor | None = None) -> Tensor:
    """β·``ppo_reverse_loss``, the value the released code computes, in the form SPPO's hot loop can
    afford: β·mean(f·s·Â·(1/π_old − k·r)) as one dot product of constant weights w = −k·β·s·f·Â/N
    (masked_mean's weights and denominator where there is a mask) with r − (1/π_old)/k, where the
    elementwise form costs three times the kernels. Every constant goes into w, which needs no
    gradient: a Python number times a 0-d tensor costs a dtype conversion forward and backward, and
    r − … passes its gradient on untouched. ``inv_old_prob`` (1/π_old): a caller that has it per
    rollout saves two kernels per minibatch."""
    s, k = _reverse_coefficients(weights.reverse_kind, weights.Z)
    if advantages.shape != ratio.shape:  # one advantage per sequence, broadcast over its tokens
        advantages = advantages.expand_as(ratio)
    inv_old_prob = torch.exp(-old_log_prob) if inv_old_prob is None else inv_old_prob
    if mask is None:
        w = (advantages * gate).mul_(-k * weights.reverse * s / ratio.numel())
        difference = ratio.sub(inv_old_prob, alpha=1.0 / k)
    else:  # padding kept out as masked_mean keeps it: no inf·0 = NaN
        gate = gate & mask.bool()
        w = torch.where(gate, advantages * mask if mask.is_floating_point() else advantages, 0.0)
        # masked_mean's denominator: a tiny one must not overflow the weights, so it divides them afterwards
        w = w.mul_(-k * weights.reverse * s).div_(_mask_total(mask))
        difference = torch.where(gate, ratio.sub(inv_old_prob, alpha=1.0 / k), 0.0)
    # dot() does not promote as elementwise ops do (bf16 log-probs, float32 advantages under autocast)
    if w.dtype != difference.dtype:
        dtype = torch.promote_types(w.dtype, difference.dtype)
        w, difference = w.to(dtype), difference.to(dtype)
    if w.dim() > 1:  # tokens: rows × length
        w, difference = w.flatten(), difference.flatten()
    return torch.dot(w, difference)


@dataclass(frozen=True)
class PGMultiplier:
    """How strongly a configuration weights the policy gradient relative to plain A2C/PPO."""

    value: float | None
    """The constant multiplier (PPO family); None when it depends on each sample (A2C family)."""
    formula: str
    explanation: str


def effective_pg_multiplier(
    algo: str, alpha: float, beta: float, Z: float = -1.0, reverse: Reverse = "rce"
) -> PGMultiplier:
    """The multiplier that the symmetric term effectively puts on the plain policy gradient."""
    if Z >= 0:
        raise ValueError(f"Z: got {Z}, allowed: a negative number (it stands for log 0)")
    if reverse not in ("rce", "mae"):
        raise ValueError(f"reverse: got {reverse!r}, allowed: 'rce', 'mae'")
    rev_scale = abs(Z) if reverse == "rce" else 2.0
    rev_text = f"|Z| (= {abs(Z):g})" if reverse == "rce" else "2 (MAE)"
    if algo in ("ppo", "sppo", "scaled_ppo"):
        value = alpha + beta * rev_scale
        formula = f"α + β·{'|Z|' if reverse == 'rce' else '2'} = {alpha:g} + {beta:g}·{rev_scale:g} = {value:g}"
        if algo == "scaled_ppo":
            how = "scaled_ppo applies it directly to the plain PPO loss (no reverse term): the control for SPPO."
        elif beta == 0:
            how = "β = 0: this is plain PPO."
        else:
            how = (f"The reverse term's gradient is {rev_text} × PPO's gradient, sample by sample, so "
                   "SPPO equals PPO whose policy loss is scaled against the value, entropy and "
                   "gradient-clip terms; compare against scaled_ppo with the same α, β, Z.")
        return PGMultiplier(value, formula, how)
    if algo in ("a2c", "sa2c"):
        formula = (f"α + β·{'|Z|' if reverse == 'rce' else '2'}·π(a|s) = "
                   f"{alpha:g} + {beta * rev_scale:g}·π(a|s)  (between {alpha:g} and {alpha + beta * rev_scale:g})")
        how = ("β = 0: this is plain A2C." if beta == 0 else
               "Per sample: the reverse term reweights each sample's A2C gradient by the probability "
               "of its action, so confident actions get up to "
               f"{(alpha + beta * rev_scale) / alpha if alpha else float('inf'):g}× the weight of unlikely ones: "
               "genuinely different from A2C.")
        return PGMultiplier(None, formula, how)
    raise ValueError(f"algo: got {algo!r}, allowed: a2c, sa2c, ppo, sppo, scaled_ppo")


def loss_weights(cfg) -> LossWeights:
    """The weights of a ``LossConfig`` (of ``symrl train`` or ``symrl rlhf``). scaled_ppo is plain PPO with the policy
    loss weighted by SPPO's effective multiplier. The value weight is vf_coef·value_loss_scale: the
    one place where TRIL's 0.5 in front of its value loss enters (see :func:`value_loss`)."""
    vf = cfg.vf_coef * cfg.value_loss_scale
    kind: PolicyLoss = "a2c" if cfg.algo in ("a2c", "sa2c") else "ppo"
    if cfg.algo == "scaled_ppo":
        pg = effective_pg_multiplier("scaled_ppo", cfg.alpha, cfg.beta, cfg.Z, cfg.reverse_kind).value
        return LossWeights(pg, 0.0, vf, cfg.ent_coef, cfg.reverse_kind, cfg.Z, kind)
    return LossWeights(cfg.alpha, cfg.beta, vf, cfg.ent_coef, cfg.reverse_kind, cfg.Z, kind)


# ---------------------------------------------------------------- one (micro)batch step, and its statistics

def approx_kl(log_ratio: Tensor, mask: Tensor | None = None) -> Tensor:
    """Schulman's k3 estimator of KL(old || new), as SB3, CleanRL and TRL log it."""
    return masked_mean(torch.expm1(log_ratio) - log_ratio, mask)


@dataclass
class LossStep:
    """What the statistics of one (micro)batch's loss are computed from, all detached. They are
    reduced once per update (:func:`update_statistics`), so the hot loop does no host sync and as
    few extra tensor ops as possible."""

    terms: LossTerms
    log_ratio: Tensor  # log π_θ − log π_old per element
    advantages: Tensor  # before normalization (after any adv_flip noise)
    used: Tensor  # what the loss used (normalized, or as given)
    mask: Tensor | None  # valid elements (tokens); None: all

    @property
    def count(self) -> Tensor | int:
        return self.log_ratio.numel() if self.mask is None else self.mask.sum()

    def approx_kl(self) -> Tensor:
        return approx_kl(self.log_ratio, self.mask)


def loss_step(
    weights: LossWeights,
    log_prob: Tensor,
    old_log_prob: Tensor,
    advantages: Tensor,
    entropy: Tensor,
    values: Tensor,
    returns: Tensor,
    old_values: Tensor | None,
    clip_range: float,
    clip_range_vf: float | None,
    norm_adv: bool,
    mask: Tensor | None = None,
    normalized: Tensor | None = None,
    clip_range_high: float | None = None,
    inv_old_prob: Tensor | None = None,
) -> tuple[Tensor, LossStep]:
    """The step both trainers take on a (micro)batch: advantage normalization over the valid elements
    (``norm_adv``; ``normalized`` instead when the caller whitened over a wider scope than this
    batch, as ``symrl rlhf`` does over a whole minibatch), then :func:`symmetric_loss`. Returns the
    total loss to backpropagate and the step's statistics."""
    if normalized is not None:
        used = normalized
    elif norm_adv and advantages.numel() > 1:
        used = adv_ops.normalize(advantages, mask)
    else:
        used = advantages
    terms, _ = symmetric_loss(weights, log_prob, old_log_prob, used, entropy, values, returns, old_values,
                              clip_range, clip_range_vf, mask, clip_range_high, inv_old_prob)
    valid = None if mask is None else mask.bool()  # statistics count tokens, whatever the loss's weights
    return terms.total, LossStep(terms, log_prob.detach() - old_log_prob, advantages.detach(), used.detach(), valid)


def update_statistics(steps: list[LossStep], clip_range: float) -> dict[str, Tensor]:
    """One 0-d tensor per statistic of an update: each a mean over every valid element of every
    (micro)batch, so both trainers log one definition under each name. approx_kl: k3 estimator;
    clip_fraction: share with |r − 1| > ε; sign_change: share whose advantage sign normalization
    flipped (the paper's argument for the reverse term)."""
    counts = torch.stack([torch.as_tensor(st.count, dtype=steps[0].terms.policy.dtype) for st in steps])
    share = counts / counts.sum()
    out = {name: (torch.stack([getattr(st.terms, field) for st in steps]) * share).sum()
           for name, field in (("policy_loss", "policy"), ("reverse_loss", "weighted_reverse"),
                               ("value_loss", "value"), ("entropy", "entropy"))}
    out["reverse_loss"] = _unweighted(out["reverse_loss"], steps[0].terms.reverse_weight)
    log_ratio = torch.cat([st.log_ratio for st in steps])
    mask = None if steps[0].mask is None else torch.cat([st.mask for st in steps])
    out["approx_kl"] = approx_kl(log_ratio, mask)
    out["clip_fraction"] = masked_mean((torch.expm1(log_ratio).abs() > clip_range).to(log_ratio.dtype), mask)
    out["sign_change"] = adv_ops.sign_change_share(torch.cat([st.advantages for st in steps]),
                                                   torch.cat([st.used for st in steps]), mask)
    return out

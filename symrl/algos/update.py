"""One gradient step on one (mini)batch: the piece PPO and A2C share.

Per-step statistics are kept as detached tensors and reduced once per update (``summarize``), so
the hot loop does no host sync and as few extra tensor ops as possible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from symrl import advantages as adv_ops
from symrl.flat import FlatParameters
from symrl.losses import LossWeights, symmetric_loss
from symrl.noise import flip_advantages
from symrl.optim import Optimizer


@dataclass(frozen=True)
class UpdateSettings:
    """Everything an update rule needs besides the data; ``clip_range`` is the current (annealed) one."""

    kind: str  # "ppo" | "a2c": which policy loss
    weights: LossWeights
    clip_range: float
    clip_range_vf: float | None
    norm_adv: bool
    max_grad_norm: float
    n_epochs: int = 1
    batch_size: int | None = None
    target_kl: float | None = None
    adv_flip: float = 0.0  # noise=adv_flip: the probability of flipping each advantage's sign, per minibatch


def gradient_step(model: nn.Module, params: FlatParameters, optimizer: Optimizer,
                  mb: dict[str, Tensor], s: UpdateSettings, noise_gen: torch.Generator) -> dict[str, Tensor]:
    """adv_flip noise on ``mb``'s advantages (with ``s.adv_flip`` > 0, drawn from ``noise_gen``),
    the loss, backward, clip the global gradient norm, step. With ``target_kl`` the step is skipped
    when this minibatch's approx KL already exceeds 1.5·target_kl (SB3's early stop: the update
    ends before the offending step); ``"stop"`` in the result says so.

    Returns detached loss terms plus the per-sample ``log_ratio`` and the advantages before and
    after normalization, from which ``summarize`` computes approx KL, clip fraction and the
    sign-change share. "Before" is after adv_flip: the share counts what normalization flips
    (upstream compares with the sign before adv_flip, so its logged share counts the flips too).
    """
    dist, values = model(mb["obs"])
    log_prob = dist.log_prob(mb["actions"])
    advantages = mb["advantages"]
    if s.adv_flip > 0:
        advantages = flip_advantages(advantages, s.adv_flip, noise_gen)
    used = adv_ops.normalize(advantages) if s.norm_adv and advantages.numel() > 1 else advantages
    if s.weights.ent != 0.0:
        entropy = dist.entropy()
    else:  # logged only: keep it out of the backward pass
        with torch.no_grad():
            entropy = dist.entropy()
    terms, _ = symmetric_loss(
        s.kind, s.weights, log_prob, mb["log_probs"], used, entropy, values,
        mb["returns"], mb["values"], s.clip_range, s.clip_range_vf,
    )
    log_ratio = log_prob.detach() - mb["log_probs"]
    stop = s.target_kl is not None and approx_kl(log_ratio).item() > 1.5 * s.target_kl
    if not stop:
        params.zero_grad()
        terms.total.backward()
        params.clip_grad_norm_(s.max_grad_norm)
        optimizer.step()
    return {"policy_loss": terms.policy, "reverse_loss": terms.reverse, "value_loss": terms.value,
            "entropy": terms.entropy, "log_ratio": log_ratio, "adv_raw": advantages, "adv_used": used.detach(),
            "stop": stop}


def approx_kl(log_ratio: Tensor) -> Tensor:
    """Schulman's k3 estimator of KL(old || new), as SB3 and CleanRL log it."""
    return (torch.expm1(log_ratio) - log_ratio).mean()


def summarize(steps: list[dict[str, Tensor]], clip_range: float) -> dict[str, Tensor]:
    """One 0-d tensor per statistic over all gradient steps of an update."""
    out = {k: torch.stack([st[k] for st in steps]).mean()
           for k in ("policy_loss", "reverse_loss", "value_loss", "entropy")}
    log_ratio = torch.cat([st["log_ratio"] for st in steps])
    out["approx_kl"] = approx_kl(log_ratio)
    out["clip_fraction"] = (torch.expm1(log_ratio).abs() > clip_range).float().mean()
    out["sign_change"] = adv_ops.sign_change_share(torch.cat([st["adv_raw"] for st in steps]),
                                                   torch.cat([st["adv_used"] for st in steps]))
    return out

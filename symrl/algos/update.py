"""One gradient step on one (mini)batch: the piece PPO and A2C share."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from symrl import advantages as adv_ops
from symrl.losses import LossWeights, symmetric_loss


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


def gradient_step(model: nn.Module, optimizer: torch.optim.Optimizer, mb: dict[str, Tensor],
                  s: UpdateSettings) -> dict[str, Tensor]:
    """Loss on ``mb``, backward, clip the global gradient norm, step. Returns detached statistics."""
    dist, values = model(mb["obs"])
    log_prob = dist.log_prob(mb["actions"])
    advantages = mb["advantages"]
    sign_change = torch.zeros(())
    if s.norm_adv and advantages.numel() > 1:
        normalized = adv_ops.normalize(advantages)
        sign_change = adv_ops.sign_change_share(advantages, normalized)
        advantages = normalized
    terms, ratio = symmetric_loss(
        s.kind, s.weights, log_prob, mb["log_probs"], advantages, dist.entropy(), values,
        mb["returns"], mb["values"], s.clip_range, s.clip_range_vf,
    )
    optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm, foreach=True)
    optimizer.step()

    stats = {"policy_loss": terms.policy, "reverse_loss": terms.reverse, "value_loss": terms.value,
             "entropy": terms.entropy, "sign_change": sign_change}
    with torch.no_grad():
        if ratio is None:
            ratio = torch.exp(log_prob.detach() - mb["log_probs"])
        log_ratio = torch.log(ratio.detach())
        # Schulman's k3 estimator of KL(old || new), as SB3 and CleanRL log it.
        stats["approx_kl"] = ((ratio.detach() - 1.0) - log_ratio).mean()
        stats["clip_fraction"] = ((ratio.detach() - 1.0).abs() > s.clip_range).float().mean()
    return stats


def mean_stats(collected: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Average per-step statistics into one 0-d tensor per name (no host sync)."""
    return {k: torch.stack([c[k] for c in collected]).mean() for k in collected[0]}

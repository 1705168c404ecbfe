"""The KL penalty of RLHF: per-token rewards and the KL coefficient's controllers (pure functions).

Each generated token is penalized by ``kl_coef · (log π(token) − log π_ref(token))`` (the sampled
estimate of KL(π‖π_ref)); the sequence's score is added at its last valid token.
"""

from __future__ import annotations

import torch
from torch import Tensor


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last valid token of each row of a prefix mask (B, T); a row of zeros gives 0."""
    return (mask.long().sum(dim=1) - 1).clamp(min=0)


def kl_penalized_rewards(scores: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor,
                         kl_coef: float) -> tuple[Tensor, Tensor]:
    """Per-token rewards (B, T) and the per-token KL estimate (B, T), both zero on padding."""
    valid = mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * valid
    rewards = -kl_coef * kl
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards, kl


def adaptive_kl_coef(coef: float, kl: float, target: float, horizon: int, n_samples: int) -> float:
    """Ziegler et al. (2019): move the coefficient toward the target KL per sequence, at most ±20%
    error per ``horizon`` samples, so the KL neither runs away nor collapses."""
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return coef * (1.0 + error * n_samples / horizon)


def next_kl_coef(controller: str, coef: float, kl: float, target: float, horizon: int, n_samples: int) -> float:
    """The coefficient for the next iteration: unchanged (``fixed``) or ``adaptive``."""
    return adaptive_kl_coef(coef, kl, target, horizon, n_samples) if controller == "adaptive" else coef

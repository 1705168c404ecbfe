"""Training-data noise for the robustness experiments (PAPER.md §3).

Pure functions of the data and a seeded ``torch.Generator``: they return new tensors and never
touch the environment, so evaluation stays clean by construction.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

NoiseKind = Literal["none", "reward_flip", "gaussian", "uniform", "adv_flip"]
NOISE_KINDS: tuple[str, ...] = ("none", "reward_flip", "gaussian", "uniform", "adv_flip")
REWARD_NOISE: tuple[str, ...] = ("reward_flip", "gaussian", "uniform")


def _draw_uniform(like: Tensor, gen: torch.Generator) -> Tensor:
    return torch.rand(like.shape, generator=gen, dtype=like.dtype).to(like.device)


def noisy_rewards(rewards: Tensor, kind: str, scale: float, gen: torch.Generator) -> Tensor:
    """Training rewards after noise ``kind`` with parameter ``scale``.

    reward_flip p: r ← 1 − r with probability p (after Atari reward clipping);
    gaussian σ: r ← r + N(0, σ²); uniform w: r ← r + U(−w, w). Other kinds return ``rewards``.
    """
    if kind == "reward_flip":
        flip = _draw_uniform(rewards, gen) < scale
        return torch.where(flip, 1.0 - rewards, rewards)
    if kind == "gaussian":
        return rewards + scale * torch.randn(rewards.shape, generator=gen, dtype=rewards.dtype).to(rewards.device)
    if kind == "uniform":
        return rewards + scale * (2.0 * _draw_uniform(rewards, gen) - 1.0)
    return rewards


def flip_advantages(advantages: Tensor, p: float, gen: torch.Generator) -> Tensor:
    """adv_flip p: flip the sign of each advantage with probability p. The update calls it on every
    minibatch of every epoch, before normalization, so each pass sees a fresh mask (as upstream
    Symmetric_RL sppo.py:239-241, ppo.py:224-226)."""
    flip = _draw_uniform(advantages, gen) < p
    return torch.where(flip, -advantages, advantages)

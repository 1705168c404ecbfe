"""A2C's update rule: one gradient step on the whole rollout."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from symrl.flat import FlatParameters
from symrl.algos.update import UpdateSettings, gradient_step, summarize


def make_optimizer(params: FlatParameters, lr: float) -> torch.optim.Optimizer:
    """RMSprop as in the paper and SB3's A2C (alpha 0.99, eps 1e-5); one step per rollout, so
    torch's own implementation costs nothing that matters."""
    return torch.optim.RMSprop([params.param], lr=lr, alpha=0.99, eps=1e-5)


def a2c_update(model: nn.Module, params: FlatParameters, optimizer: torch.optim.Optimizer,
               batch: dict[str, Tensor],
               s: UpdateSettings, gen: torch.Generator) -> dict[str, Tensor]:
    return summarize([gradient_step(model, params, optimizer, batch, s)], s.clip_range)

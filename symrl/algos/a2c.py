"""A2C's update rule: one gradient step on the whole rollout."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from symrl.flat import FlatParameters
from symrl.algos.update import UpdateSettings, gradient_step, summarize
from symrl.optim import Optimizer


def a2c_update(model: nn.Module, params: FlatParameters, optimizer: Optimizer,
               batch: dict[str, Tensor],
               s: UpdateSettings, gen: torch.Generator, noise_gen: torch.Generator) -> dict[str, Tensor]:
    """``gen`` (minibatch order) is unused: the one step takes the whole rollout; ``noise_gen``
    draws its adv_flip mask."""
    return summarize([gradient_step(model, params, optimizer, batch, s, noise_gen)], s.clip_range)

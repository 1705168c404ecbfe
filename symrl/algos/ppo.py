"""PPO's update rule: several epochs of shuffled minibatches over one rollout."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from symrl.flat import FlatParameters
from symrl.algos.update import UpdateSettings, gradient_step, summarize
from symrl.optim import Optimizer


def ppo_update(model: nn.Module, params: FlatParameters, optimizer: Optimizer,
               batch: dict[str, Tensor],
               s: UpdateSettings, gen: torch.Generator, noise_gen: torch.Generator) -> dict[str, Tensor]:
    """``n_epochs`` passes over ``batch`` in minibatches of ``batch_size`` shuffled by ``gen``; with
    ``target_kl`` the update stops at the first minibatch whose approx KL exceeds 1.5·target_kl,
    without its step (as SB3). ``noise_gen`` draws a fresh adv_flip mask for every minibatch."""
    n = batch["obs"].shape[0]
    steps = []
    for _ in range(s.n_epochs):
        order = torch.randperm(n, generator=gen).to(batch["obs"].device)
        # one gather per epoch; the minibatches are then contiguous slices (views, no copies)
        shuffled = {k: v[order] for k, v in batch.items()}
        for start in range(0, n, s.batch_size):
            mb = {k: v[start:start + s.batch_size] for k, v in shuffled.items()}
            steps.append(gradient_step(model, params, optimizer, mb, s, noise_gen))
            if steps[-1]["stop"]:
                return summarize(steps, s.clip_range)
    return summarize(steps, s.clip_range)

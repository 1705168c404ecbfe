"""PPO's update rule: several epochs of shuffled minibatches over one rollout."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from symrl.algos.update import UpdateSettings, gradient_step, mean_stats


def make_optimizer(params, lr: float) -> torch.optim.Optimizer:
    """Adam with eps 1e-5 (SB3, CleanRL); the fused kernel keeps per-step overhead low on CPU too."""
    return torch.optim.Adam(params, lr=lr, eps=1e-5, fused=True)


def ppo_update(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, Tensor],
               s: UpdateSettings, gen: torch.Generator) -> dict[str, Tensor]:
    """``n_epochs`` passes over ``batch`` in minibatches of ``batch_size``; with ``target_kl`` the
    update stops early once a minibatch's approx KL exceeds 1.5·target_kl (as SB3)."""
    n = batch["obs"].shape[0]
    collected = []
    for _ in range(s.n_epochs):
        order = torch.randperm(n, generator=gen).to(batch["obs"].device)
        # one gather per epoch; the minibatches are then contiguous slices (views, no copies)
        shuffled = {k: v[order] for k, v in batch.items()}
        for start in range(0, n, s.batch_size):
            mb = {k: v[start:start + s.batch_size] for k, v in shuffled.items()}
            stats = gradient_step(model, optimizer, mb, s)
            collected.append(stats)
            if s.target_kl is not None and stats["approx_kl"].item() > 1.5 * s.target_kl:
                return mean_stats(collected)
    return mean_stats(collected)

"""All parameters of a module in one contiguous buffer, gradients in another.

The optimizer, the gradient-norm clip and zero_grad then each touch one tensor instead of one
per layer: on CPU, small-MLP RL spends more time in that per-tensor Python and dispatch overhead
than in arithmetic. The module's own parameters stay ordinary leaf tensors (autograd and
``state_dict`` are unchanged); only their storage is moved into the flat buffers, and backward
accumulates in place into their gradient views.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FlatParameters:
    """Re-homes ``module``'s parameters into one buffer; ``param`` is what the optimizer steps.

    Use ``zero_grad`` and ``clip_grad_norm_`` below rather than the optimizer's and torch's: they
    are one or two ops on the flat gradient (measured 1 µs and 26 µs against 17 µs and 99 µs), and
    setting gradients to None would detach the per-parameter gradients from the flat buffer.
    """

    def __init__(self, module: nn.Module):
        params = [p for p in module.parameters() if p.requires_grad]
        total = sum(p.numel() for p in params)
        first = params[0]
        data = torch.empty(total, dtype=first.dtype, device=first.device)
        grad = torch.zeros_like(data)
        offset = 0
        for p in params:
            n = p.numel()
            data[offset:offset + n].copy_(p.detach().reshape(-1))
            p.data = data[offset:offset + n].view_as(p)
            p.grad = grad[offset:offset + n].view_as(p)
            offset += n
        self.param = nn.Parameter(data)
        self.param.grad = grad

    def zero_grad(self) -> None:
        self.param.grad.zero_()

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Scale the gradient to global norm ≤ ``max_norm`` exactly as ``nn.utils.clip_grad_norm_``."""
        grad = self.param.grad
        norm = torch.linalg.vector_norm(grad)
        grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
        return norm


class FlatAdam:
    """Adam on one flat parameter tensor, the same arithmetic as ``torch.optim.Adam`` (single-tensor
    path, no weight decay, no amsgrad), without its per-call Python overhead: ``torch.optim``'s
    step costs ~65 µs even for 100 elements (hooks, grouping, checks), this one 7 tensor ops.
    ``param_groups`` mirrors torch's, so schedules set ``param_groups[0]["lr"]`` the usual way.
    """

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.param = param
        self.param_groups = [{"params": [param], "lr": lr, "betas": betas, "eps": eps, "weight_decay": 0.0}]
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        grad = self.param.grad
        self.steps += 1
        self.exp_avg.lerp_(grad, 1.0 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        bias_correction1 = 1.0 - beta1 ** self.steps
        bias_correction2_sqrt = math.sqrt(1.0 - beta2 ** self.steps)
        denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(group["eps"])
        self.param.addcdiv_(self.exp_avg, denom, value=-group["lr"] / bias_correction1)

    def state_dict(self) -> dict:
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone(), "steps": self.steps,
                "group": group}

    def load_state_dict(self, state: dict) -> None:
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.steps = state["steps"]
        self.param_groups[0].update(state["group"])

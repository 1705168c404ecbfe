"""All parameters of a module in one contiguous buffer, gradients in another.

The optimizer, the gradient-norm clip and zero_grad then each touch one tensor instead of one
per layer: on CPU, small-MLP RL spends more time in that per-tensor Python and dispatch overhead
than in arithmetic. (torch's fused Adam on this one tensor measured as fast as a hand-written
flat Adam on the MLPs, and 5× faster on the Atari CNN's 1.7M parameters.) The module's own
parameters stay ordinary leaf tensors (autograd and ``state_dict`` are unchanged); only their
storage is moved into the flat buffers, and backward accumulates in place into their gradient views.
"""

from __future__ import annotations

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

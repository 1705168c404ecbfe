"""The optimizers of the gym trainers, each stepping the one flat parameter tensor of a model.

``adam``: PPO's (SB3, CleanRL), eps 1e-5, torch's fused implementation on the flat tensor.
``rmsprop``: SB3's A2C default, torch's RMSprop with alpha 0.99, eps 1e-5; the authors' MuJoCo/Box2D
A2C. ``rmsprop_tf``: TensorFlow's RMSprop, as SB3's
``RMSpropTFLike`` that the authors' Atari A2C uses (Symmetric_RL hyperparams/a2c.yml:13). The two
RMSprops differ where it matters most, in the first updates: torch starts the second moment at 0
and adds eps after the square root, so its first step is ≈ 10·lr·sign(g) whatever the gradient's
size; TF starts it at 1 and adds eps inside the root, so its first steps are ≈ lr·g.
"""

from __future__ import annotations

import torch
from torch import Tensor

from symrl.config import check_choice
from symrl.flat import FlatParameters


class FlatRMSpropTF:
    """RMSprop with TensorFlow's semantics on one flat tensor: ``v ← α·v + (1−α)·g²`` from
    ``v = 1``, ``θ ← θ − lr·g / sqrt(v + eps)``; no momentum, not centered (the authors' setting).
    ``param_groups`` mirrors torch's, so schedules set ``param_groups[0]["lr"]`` the usual way."""

    def __init__(self, param: Tensor, lr: float, alpha: float = 0.99, eps: float = 1e-5):
        self.param = param
        self.param_groups = [{"params": [param], "lr": lr, "alpha": alpha, "eps": eps}]
        self.square_avg = torch.ones_like(param)

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        grad = self.param.grad
        self.square_avg.mul_(group["alpha"]).addcmul_(grad, grad, value=1.0 - group["alpha"])
        self.param.addcdiv_(grad, self.square_avg.add(group["eps"]).sqrt_(), value=-group["lr"])

    def state_dict(self) -> dict:
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"square_avg": self.square_avg.clone(), "group": group}

    def load_state_dict(self, state: dict) -> None:
        self.square_avg.copy_(state["square_avg"])
        self.param_groups[0].update(state["group"])


Optimizer = torch.optim.Adam | FlatRMSpropTF | torch.optim.RMSprop


def make_optimizer(name: str, params: FlatParameters, lr: float) -> Optimizer:
    """The optimizer ``name`` (TrainConfig.optimizer) over ``params.param``."""
    check_choice("optimizer", name)
    if name == "adam":
        return torch.optim.Adam([params.param], lr=lr, eps=1e-5, fused=True)
    if name == "rmsprop":  # one step per A2C rollout: torch's per-call overhead does not matter
        return torch.optim.RMSprop([params.param], lr=lr, alpha=0.99, eps=1e-5)
    return FlatRMSpropTF(params.param, lr=lr, alpha=0.99, eps=1e-5)

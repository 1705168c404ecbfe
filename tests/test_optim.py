"""The gym trainers' optimizers: TF-style RMSprop equals SB3's RMSpropTFLike, each name builds what it says."""

from __future__ import annotations

import pytest
import torch
from stable_baselines3.common.sb2_compat import rmsprop_tf_like
from torch import nn

from symrl.config import CHOICES, ConfigError, build_config
from symrl.flat import FlatParameters
from symrl.optim import FlatRMSpropTF, make_optimizer


def _flat(seed: int = 0) -> FlatParameters:
    torch.manual_seed(seed)
    return FlatParameters(nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)))


def _run(optimizer, param: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    for grad in grads:
        param.grad.copy_(grad)
        optimizer.step()
    return param.detach().clone()


def test_rmsprop_tf_matches_sb3_rmsprop_tf_like():
    """Same start, same gradients, 10 steps: the authors' Atari A2C optimizer (hyperparams/a2c.yml:13)."""
    ours, theirs = _flat(), _flat()
    assert torch.equal(ours.param, theirs.param)
    gen = torch.Generator().manual_seed(1)
    # gradients of very different sizes, where the second-moment init and eps placement matter
    grads = [torch.randn(ours.param.shape, generator=gen) * 10.0 ** k for k in range(-4, 6)]
    ours_end = _run(make_optimizer("rmsprop_tf", ours, 7e-4), ours.param, grads)
    reference = rmsprop_tf_like.RMSpropTFLike([theirs.param], lr=7e-4, alpha=0.99, eps=1e-5)
    theirs_end = _run(reference, theirs.param, grads)
    torch.testing.assert_close(ours_end, theirs_end, rtol=0, atol=1e-6)
    # ... and is not torch's RMSprop, whose first step is ~10·lr·sign(g) at any gradient size
    torch_rms = _flat()
    torch_end = _run(make_optimizer("rmsprop", torch_rms, 7e-4), torch_rms.param, grads)
    assert (torch_end - ours_end).abs().max() > 1e-3


def test_rmsprop_tf_state_round_trips():
    """A restored optimizer continues exactly as the uninterrupted one (checkpoint/resume)."""
    gen = torch.Generator().manual_seed(2)
    grads = [torch.randn(_flat().param.shape, generator=gen) for _ in range(6)]
    whole = _flat()
    whole_end = _run(make_optimizer("rmsprop_tf", whole, 1e-2), whole.param, grads)
    first, second = _flat(), _flat()
    opt = make_optimizer("rmsprop_tf", first, 1e-2)
    _run(opt, first.param, grads[:3])
    state = opt.state_dict()
    second.param.data.copy_(first.param.data)
    resumed = make_optimizer("rmsprop_tf", second, 1e-2)
    resumed.load_state_dict(state)
    assert torch.equal(_run(resumed, second.param, grads[3:]), whole_end)


def test_every_optimizer_name_builds_its_optimizer():
    kinds = {name: type(make_optimizer(name, _flat(), 1e-3)) for name in CHOICES["optimizer"]}
    assert kinds == {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "rmsprop_tf": FlatRMSpropTF}
    adam = make_optimizer("adam", _flat(), 1e-3)
    assert (adam.param_groups[0]["eps"], adam.param_groups[0]["fused"]) == (1e-5, True)
    torch_rms = make_optimizer("rmsprop", _flat(), 1e-3).param_groups[0]
    assert (torch_rms["alpha"], torch_rms["eps"]) == (0.99, 1e-5)


def test_unknown_optimizer_is_one_clear_line():
    with pytest.raises(ConfigError, match=r"^optimizer: got 'sgd', allowed: adam, rmsprop, rmsprop_tf$"):
        build_config(None, {"optimizer": "sgd"})

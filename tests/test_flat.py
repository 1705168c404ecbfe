"""The flat parameter buffer: same gradients, same clipping, optimizer steps reach the module."""

from __future__ import annotations

import copy

import torch
from torch import nn

from symrl.flat import FlatParameters


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def test_flat_buffer_matches_per_parameter_training():
    plain, flat_net = _net(), _net()
    flat = FlatParameters(flat_net)
    opt_plain = torch.optim.Adam(plain.parameters(), lr=1e-2, eps=1e-5)
    opt_flat = torch.optim.Adam([flat.param], lr=1e-2, eps=1e-5)
    x = torch.randn(32, 5, generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        opt_plain.zero_grad()
        (plain(x) ** 2).sum().backward()
        expected_norm = nn.utils.clip_grad_norm_(plain.parameters(), 0.5)
        opt_plain.step()

        flat.zero_grad()
        (flat_net(x) ** 2).sum().backward()
        norm = flat.clip_grad_norm_(0.5)
        opt_flat.step()
        torch.testing.assert_close(norm, expected_norm)
    for a, b in zip(plain.parameters(), flat_net.parameters()):
        torch.testing.assert_close(a, b)


def test_parameters_and_gradients_live_in_the_flat_buffers():
    net = _net()
    flat = FlatParameters(net)
    (net(torch.ones(2, 5)).sum()).backward()
    total = sum(p.numel() for p in net.parameters())
    assert flat.param.numel() == total
    assert torch.equal(torch.cat([p.grad.reshape(-1) for p in net.parameters()]), flat.param.grad)
    with torch.no_grad():
        flat.param.add_(1.0)  # an optimizer step on the flat tensor moves the module's weights
    assert torch.equal(torch.cat([p.reshape(-1) for p in net.parameters()]), flat.param)
    # load_state_dict copies in place, so the aliasing survives a checkpoint round trip
    net.load_state_dict(copy.deepcopy(_net().state_dict()))
    assert torch.equal(torch.cat([p.reshape(-1) for p in net.parameters()]), flat.param)


def test_flat_adam_is_torch_adam_and_round_trips():
    from symrl.flat import FlatAdam

    ref = torch.nn.Parameter(torch.randn(50, generator=torch.Generator().manual_seed(0)))
    ours = torch.nn.Parameter(ref.detach().clone())
    torch_adam = torch.optim.Adam([ref], lr=3e-3, eps=1e-5, foreach=False)
    flat_adam = FlatAdam(ours, lr=3e-3, eps=1e-5)
    gen = torch.Generator().manual_seed(1)
    for i in range(20):
        grad = torch.randn(50, generator=gen)
        ref.grad, ours.grad = grad.clone(), grad.clone()
        if i == 10:  # a schedule changes the learning rate through param_groups, as with torch's
            torch_adam.param_groups[0]["lr"] = flat_adam.param_groups[0]["lr"] = 1e-3
        torch_adam.step()
        flat_adam.step()
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)
    clone = FlatAdam(torch.nn.Parameter(ours.detach().clone()), lr=1.0)
    clone.load_state_dict(flat_adam.state_dict())
    ours.grad = clone.param.grad = torch.ones(50)
    flat_adam.step()
    clone.step()
    assert torch.equal(clone.param, ours)

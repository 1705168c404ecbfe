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


def test_fused_adam_on_the_flat_buffer_is_torch_adam_per_layer_and_keeps_the_aliasing():
    """The gym trainers' Adam (fused, on the one flat tensor) moves every layer exactly as torch's
    per-layer Adam would, and the module's parameters still live in the flat buffer afterwards."""
    from symrl.optim import make_optimizer

    net, reference = _net(), _net()
    flat = FlatParameters(net)
    ours = make_optimizer("adam", flat, 3e-3)
    theirs = torch.optim.Adam(reference.parameters(), lr=3e-3, eps=1e-5, foreach=False)
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))
    for i in range(20):
        for model, optimizer in ((net, ours), (reference, theirs)):
            if i == 10:  # a schedule changes the learning rate through param_groups
                optimizer.param_groups[0]["lr"] = 1e-3
            if model is net:
                flat.zero_grad()
            else:
                optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()
    for mine, ref in zip(net.parameters(), reference.parameters()):
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-6)
    start, end = flat.param.data_ptr(), flat.param.data_ptr() + flat.param.numel() * flat.param.element_size()
    assert all(start <= p.data_ptr() < end for p in net.parameters())
    assert torch.equal(torch.cat([p.reshape(-1) for p in net.parameters()]), flat.param)
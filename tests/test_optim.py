"""The toolchain's Adam (toolchain/optim.py) against torch.optim.Adam: the same numbers, bit for bit."""
import copy

import pytest
import torch
import torch.nn as nn

from toolchain.training import optim
from toolchain.training import TrainConfig, make_optimizer, release_optimizer


def _net(seed=0):
    torch.manual_seed(seed)
    # sizes not multiples of the chunk, one larger than two chunks
    return nn.Sequential(nn.Linear(700, 800), nn.ReLU(), nn.Linear(800, 13), nn.Flatten())


def _train(net, opt, steps=6, lr_drop_at=3, seed=1, call_step=True):
    g = torch.Generator().manual_seed(seed)
    for i in range(steps):
        if i == lr_drop_at:
            for group in opt.param_groups:
                group["lr"] *= 0.1
        x = torch.randn(16, 700, generator=g)
        y = torch.randint(0, 13, (16,), generator=g)
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        if call_step:
            opt.step()


def _assert_same(a, b):
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("wd", [0.0, 1e-2])
@pytest.mark.parametrize("in_backward", [False, True])
def test_adam_is_torch_adam_bit_for_bit(monkeypatch, wd, in_backward):
    monkeypatch.setattr(optim, "CHUNK", 4096)         # many chunks, a ragged last one
    ref, net = _net(), _net()
    _train(ref, torch.optim.Adam(ref.parameters(), lr=1e-2, weight_decay=wd))
    opt = optim.Adam(net.parameters(), lr=1e-2, weight_decay=wd, step_in_backward=in_backward)
    _train(net, opt)
    _assert_same(ref, net)
    if in_backward:                                    # the gradients were freed as soon as they were used
        assert all(p.grad is None for p in net.parameters())


def test_adam_state_dict_interchangeable_with_torch():
    ref, net = _net(), _net()
    t_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    _train(ref, t_opt, steps=3)
    _train(net, torch.optim.Adam(net.parameters(), lr=1e-2), steps=3)
    ours = optim.Adam(net.parameters(), lr=1e-2, step_in_backward=True)
    ours.load_state_dict(copy.deepcopy(t_opt.state_dict()))   # a checkpoint written by torch's Adam resumes here
    _train(ref, t_opt, steps=3, seed=2, lr_drop_at=1)          # a schedule's change reaches the hooks too
    _train(net, ours, steps=3, seed=2, lr_drop_at=1)
    _assert_same(ref, net)
    assert ours.state_dict()["state"].keys() == t_opt.state_dict()["state"].keys()


def test_released_optimizer_no_longer_updates_in_backward():
    net = _net()
    opt = make_optimizer(list(net.parameters()), TrainConfig(optimizer="adam", lr=1e-2), step_in_backward=True)
    _train(net, opt, steps=1, call_step=False)
    after_one = [p.detach().clone() for p in net.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(after_one, _net().parameters()))   # it did update
    release_optimizer(opt)
    _train(net, opt, steps=1, call_step=False)
    assert all(torch.equal(a, p) for a, p in zip(after_one, net.parameters()))
    assert all(p.grad is not None for p in net.parameters())                          # grads kept, as usual


def test_adam_falls_back_to_torch_for_what_it_does_not_chunk():
    ref, net = _net(), _net()
    _train(ref, torch.optim.Adam(ref.parameters(), lr=1e-2, amsgrad=True))
    _train(net, optim.Adam(net.parameters(), lr=1e-2, amsgrad=True))
    _assert_same(ref, net)
    ref, net = _net(), _net()
    _train(ref, torch.optim.Adam(ref.parameters(), lr=1e-2, amsgrad=True))
    _train(net, optim.Adam(net.parameters(), lr=1e-2, amsgrad=True, step_in_backward=True), call_step=False)
    _assert_same(ref, net)

"""A recurrent dense layer's windows run in parallel (stream._neuron_windows) give, bit for bit, what running the
whole stream step by step gives (the step loop the stream path ran before, kept here as the oracle), and what
Lava gives on a network whose windows are coupled by their boundary spikes."""
from typing import Optional

import numpy as np
import pytest
import torch

from hw_targets.simulators.emulator import _M24, lava_decay, prepare, wrap_int32
from hw_targets.simulators.stream import _as_windows, _feedforward, _neuron_windows, _run_windows, _shift
from hw_targets.simulators.verify import verify
from toolchain.quantization.fixed_point import FxLayer, FxNetwork


def _step_by_step(p, a: torch.Tensor, bias_t: Optional[torch.Tensor], k: int, T: int):
    """The stream path's former neuron loop, verbatim: every step of the stream in turn, (1, H) @ (H, H)."""
    total = a.shape[0]
    u = torch.zeros(p.out_shape, dtype=torch.int64, device=a.device)
    v = torch.zeros_like(u)
    s_last = torch.zeros(p.out_shape, dtype=torch.float64, device=a.device)
    spikes = torch.empty((total,) + p.out_shape, dtype=torch.uint8, device=a.device)
    v_all, u_all = torch.empty_like(a), torch.empty_like(a)
    two24 = 2 * _M24
    reset_phase = (k + 1) % T
    for i in range(total):
        t = i + 1
        if t % T == reset_phase:
            u.zero_()
            v.zero_()
        a_t = a[i]
        if p.weight_rec is not None:
            rec = torch.round(s_last.reshape(1, -1) @ p.weight_rec).to(torch.int64).reshape(p.out_shape)
            a_t = wrap_int32(a_t + _shift(rec, p.weight_exp))
        dc = wrap_int32(lava_decay(u, p.du) + wrap_int32(torch.bitwise_left_shift(a_t, 6)))
        u = torch.where(dc > _M24, dc - two24, torch.where(dc <= -_M24, dc + two24, dc))
        vv = lava_decay(v, p.dv) + u
        if bias_t is not None:
            vv = vv + bias_t[i]
        elif p.bias is not None:
            vv = vv + p.bias
        vv = torch.clamp(wrap_int32(vv), -_M24 + 1, _M24 - 1)
        spk = vv > p.vth
        v = torch.where(spk, torch.zeros_like(vv), vv)
        spikes[i] = spk.to(torch.uint8)
        v_all[i], u_all[i] = v, u
        s_last = spk.to(torch.float64)
    return spikes, v_all, u_all


def _dense(name, rng, n_in, n_out, vth, lo=-60, hi=100, **extra):
    w = rng.integers(lo // 2, hi // 2, (n_out, n_in)) * 2
    return FxLayer(name=name, kind="dense", weight=w, input_shape=(n_in,), output_shape=(n_out,), vth=vth, **extra)


def _network(seed: int, T: int, rec_at: int, self_weight: int = 0, bias: int = 0, i_decay=1024, v_decay=128):
    """n_in 12 -> [dense 12 -> 10] -> dense_rec -> dense 4; the recurrent layer is layer rec_at (1 or 2), with
    random recurrent weights plus self_weight on the diagonal and a bias on its first neurons."""
    rng = np.random.default_rng(seed)
    layers, n_in = [], 12
    if rec_at == 2:
        layers.append(_dense("plain", rng, n_in, 10, vth=120))
        n_in = 10
    h = 10
    w_rec = rng.integers(-30, 40, (h, h)) * 2 + np.diag(np.full(h, self_weight))
    b = np.zeros(h, np.int64)
    b[:3] = bias
    layers.append(_dense("rec", rng, n_in, h, vth=150, weight_rec=np.clip(w_rec, -256, 254), bias=b,
                         i_decay=i_decay, v_decay=v_decay))
    layers.append(_dense("out", rng, h, 4, vth=200, is_output=True))
    return FxNetwork(input_shape=(12,), layers=layers, num_classes=4, timesteps=T, readout="spikes")


def _spikes(net, N: int, seed: int, rate=0.4):
    return (np.random.default_rng(seed).random((N, net.timesteps, 12)) < rate).astype(np.int64)


def _stream_of(net, x):
    """(prepared recurrent layer, its feed-forward input a over the stream, its depth k, the emulator's trace)."""
    from hw_targets.simulators.emulator import emulate
    N, T = x.shape[:2]
    trace = emulate(net, x, device="cpu", record_spikes=True)
    prepared = prepare(net, "cpu")
    k = next(i for i, p in enumerate(prepared, start=1) if p.weight_rec is not None)
    total = N * T + len(prepared)
    s_prev = _input_stream(x, total)
    if k == 2:
        s_prev = _step_by_step(prepared[0], _feedforward(prepared[0], s_prev), None, 1, T)[0]
        s_prev = s_prev.to(torch.float64)
    return prepared[k - 1], _feedforward(prepared[k - 1], s_prev), k, trace


def _input_stream(x, total):
    N, T = x.shape[:2]
    s = torch.zeros((total, 12), dtype=torch.float64)
    s[:N * T] = torch.as_tensor(x.reshape(N * T, 12), dtype=torch.float64)
    return s


def _zero_boundaries(p, a, k, T):
    """The windows run with every boundary zero (as if the recurrent layer forgot its last spikes at a window)."""
    M = -(-(a.shape[0] - k) // T)
    aw = _as_windows(a[k:], M, T)
    out = (torch.empty(aw.shape, dtype=torch.uint8), torch.empty_like(aw), torch.empty_like(aw))
    _run_windows(p, aw, None, torch.zeros(aw[:, 0].shape, dtype=torch.float64), out)
    return out, aw


def _assert_same(p, a, k, T, max_rounds=32):
    ref = _step_by_step(p, a, None, k, T)
    *got, rounds = _neuron_windows(p, a, None, k, T, max_rounds=max_rounds)
    for r, g in zip(ref, got):
        assert r.shape == g.shape and torch.equal(r, g)
    return ref, rounds


@pytest.mark.parametrize("seed,T,rec_at,bias", [(1, 5, 1, 0), (2, 4, 2, 0), (3, 6, 2, 3000), (4, 1, 2, 3000),
                                                (5, 3, 1, 2500), (6, 2, 2, -2000)])
def test_parallel_windows_equal_the_step_by_step_stream(seed, T, rec_at, bias):
    net = _network(seed, T, rec_at, self_weight=120, bias=bias)
    p, a, k, _ = _stream_of(net, _spikes(net, 12, seed))
    ref, rounds = _assert_same(p, a, k, T)
    assert int(ref[0].sum()) > 0
    if bias > 0:                                       # the neurons fed by the bias spike before the first window
        assert int(ref[0][:k].sum()) > 0


def test_the_boundaries_matter_and_take_several_rounds():
    """Strong self-excitation, no leak: a neuron that spikes at a window's last step starts the next window
    spiking, so windows depend on their predecessors; a few samples of strong inhibition break the chains."""
    T, N = 4, 40
    net = _network(7, T, 1, self_weight=254, i_decay=4096, v_decay=4096)
    p, a, k, _ = _stream_of(net, _spikes(net, N, 7, rate=0.15))
    ref, rounds = _assert_same(p, a, k, T)
    (zs, zv, _), aw = _zero_boundaries(p, a, k, T)
    boundaries = ref[0][k - 1::T][:N]                 # spikes of the step before each window
    assert int(boundaries[1:].sum()) > 0
    windows = ref[0][k:k + N * T].reshape(N, T, -1)
    assert not torch.equal(windows, zs[:N]) or not torch.equal(ref[1][k:k + N * T].reshape(N, T, -1), zv[:N])
    assert rounds >= 3


@pytest.mark.parametrize("max_rounds", [1, 2])
def test_the_window_by_window_finish_is_exact(max_rounds):
    T, N = 4, 40
    net = _network(7, T, 1, self_weight=254, i_decay=4096, v_decay=4096)
    p, a, k, _ = _stream_of(net, _spikes(net, N, 7, rate=0.15))
    _, rounds = _assert_same(p, a, k, T, max_rounds=max_rounds)
    assert rounds == max_rounds


def test_a_chain_across_every_window_is_exact():
    """One neuron, once started by an input spike in the first window, spikes through every window: each window's
    boundary depends on all before it (N rounds, or the window-by-window finish)."""
    T, N = 3, 50
    net = _network(8, T, 1, i_decay=4096, v_decay=4096)
    rec = net.layers[0]
    rec.weight_rec = np.diag(np.full(10, 254))
    rec.weight = np.zeros_like(rec.weight)
    rec.weight[0, 0] = 254
    x = np.zeros((N, T, 12), np.int64)
    x[0, 0, 0] = 1                                     # one input spike starts neuron 0 in the first window
    p, a, k, _ = _stream_of(net, x)
    ref, rounds = _assert_same(p, a, k, T)
    assert int(ref[0][:, 0].sum()) == ref[0].shape[0] - 1 and int(ref[0][:, 1:].sum()) == 0
    assert rounds == 32


@pytest.mark.lava
def test_coupled_windows_match_lava():
    """Lava on a network whose recurrent layer's windows are coupled by their boundary spikes."""
    T, N = 4, 6
    net = _network(7, T, 2, self_weight=254, bias=1500, i_decay=4096, v_decay=4096)
    x = _spikes(net, N, 7, rate=0.3)
    p, a, k, trace = _stream_of(net, x)
    zs = _zero_boundaries(p, a, k, T)[0][0]
    rec = trace.spikes[1].reshape(N, T, -1).to(torch.uint8)
    assert int(rec[:-1, -1].sum()) > 0 and not torch.equal(rec, zs[:N])   # the boundaries change the windows
    report = verify(net, x)
    assert report.ok, report.summary()


def test_an_input_neuron_fed_by_its_bias_runs_in_windows_as_step_by_step(tmp_path):
    """The stream path's other step-varying neuron: netx's input neuron whose bias is each sample's value."""
    from dataclasses import replace
    from netx_kinds import KINDS, write_input_neuron
    from hw_targets.simulators.stream import _bias_stream
    from toolchain.io.netx import read_netx
    net = read_netx(write_input_neuron(tmp_path))
    T, N = net.timesteps, 5
    x = torch.as_tensor(KINDS[2].inputs(net, N, seed=4))
    p = replace(prepare(net, "cpu")[0], kind="input-bias")
    bias_t = _bias_stream(x, T, N * T + len(net.layers))
    a = torch.zeros((bias_t.shape[0],) + p.out_shape, dtype=torch.int64)
    ref = _step_by_step(p, a, bias_t, 1, T)
    *got, rounds = _neuron_windows(p, a, bias_t, 1, T)
    assert all(torch.equal(r, g) for r, g in zip(ref, got)) and rounds == 1 and int(ref[0].sum()) > 0

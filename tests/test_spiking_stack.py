"""Runs of spiking layers a block of time steps at a time (toolchain/neurons/kernels/stack.py): the compiled kernels in
blocks (state carried forward, gradient carried back) against one pass over all steps, the model in blocks
against layer by layer in float32, the kernels on torch's OpenMP threads, and the allocator setting."""
import ctypes
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import toolchain.neurons.kernels.stack as ss
from models import build_model
from toolchain.training import allocator
from toolchain.neurons.kernels import native
from toolchain.coding import InputEncoder
from toolchain.neurons.kernels.layout import stdb_table, step_layout
from toolchain.neurons.kernels.subtractive import _native_backward, _native_forward
import toolchain.snn.model as snn_mod
from toolchain.neurons.run import BLOCK, LOOP, execution_path
from toolchain.neurons.subtractive import subtractive_step
from toolchain.snn import SnnConfig, SnnModel
from toolchain.neurons.surrogates import get_surrogate

needs_kernels = pytest.mark.skipif(native.compiler() is None, reason="no C compiler on this machine")


def _currents(dtype, T=9, B=3, C=8, H=6, seed=0):
    x = torch.randn(T * B, C, H, H, dtype=dtype, generator=torch.Generator().manual_seed(seed)) * 0.8
    if dtype == torch.float32:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.reshape(T, B, C, H, H)


def _in_blocks(a, stage, sur, K, g):
    """Forward and backward of one stage's neurons, K steps at a time: (spikes, codes, dts, v, count, grad)."""
    T = a.shape[0]
    st = ss._StageState(stage, a, T, save=True, keep_x=sur.name != "stdb", keep_dts=True, last=False)
    outs = []
    for t0 in range(0, T, K):
        out = ss._block_out(stage, st, a[t0:t0 + K])
        ss._neurons_forward(stage, st, a[t0:t0 + K], t0, out)
        outs.append(out.clone())
    codes = torch.cat([st.blocks[t0].code for t0 in range(0, T, K)])
    dts = torch.cat([st.blocks[t0].dts for t0 in range(0, T, K)])
    lut = stdb_table(sur.beta, a.dtype) if sur.name == "stdb" else None
    grads, carry = [], None
    for t0 in reversed(range(0, T, K)):
        t1 = min(T, t0 + K)
        gi = ss._neurons_backward(stage, st, sur, g[t0:t1], t0, t1, T, carry, lut)
        carry = gi[0].clone()
        grads.insert(0, gi.clone())
    assert not st.blocks                        # the backward freed every block as it went
    return torch.cat(outs), codes, dts, st.v, st.count, torch.cat(grads)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pool,dropout", [(0, False), (2, False), (0, True)])
@pytest.mark.parametrize("leak", [1.0, 0.9])
@pytest.mark.parametrize("surrogate", ["stdb", "linear"])
@pytest.mark.parametrize("K", [1, 4])
def test_kernels_in_blocks_equal_one_pass(dtype, pool, dropout, leak, surrogate, K):
    """Spikes, 1-byte dts, final v, counts and the currents' gradient bit for bit; the 1-byte codes decode to
    exactly the spikes."""
    a = _currents(dtype)
    B, C, H = a.shape[1], a.shape[2], a.shape[3]
    mask = None
    if dropout:
        torch.manual_seed(4)
        mask = F.dropout(torch.ones(B, C, H, H, dtype=dtype), 0.3, True)
        if dtype == torch.float32:
            mask = mask.contiguous(memory_format=torch.channels_last)
    sur = get_surrogate(surrogate)
    stage = ss.Stage("s", nn.Conv2d(1, C, 3), 0.7, leak, pool, mask)
    g = torch.randn((a.shape[0], B, C) + ((H // pool,) * 2 if pool else (H, H)), dtype=dtype,
                    generator=torch.Generator().manual_seed(1))
    spikes, codes, dts, v, count, grad = _in_blocks(a, stage, sur, K, g)

    ref_spikes, ref_v, _, ref_dts, x_all, ref_count = _native_forward(a, 0.7, leak, surrogate != "stdb", pool, True, mask)
    assert torch.equal(spikes, ref_spikes) and torch.equal(dts, ref_dts)
    assert torch.equal(v, ref_v) and torch.equal(count, ref_count) and int(count.sum()) > 0
    assert torch.equal(ss._decode(stage, codes, dtype, None if mask is None else mask), ref_spikes)

    class Ctx:                                      # the one-pass backward, as _SubtractiveRun calls it
        theta, surrogate, shape, layout = 0.7, sur, tuple(a.shape), step_layout(a)
    Ctx.leak, Ctx.pool = leak, pool
    assert torch.equal(grad, _native_backward(Ctx, g, None, ref_dts, x_all, mask))


def _vgg5_like(seed=1):
    torch.manual_seed(seed)
    net = build_model("vgg5", (3, 32, 32), 10)
    cfg = SnnConfig(thresholds={s.name: 1.0 for s in net.spiking_layers}, timesteps=6, coding="poisson",
                    surrogate={"name": "stdb", "alpha": 0.3, "beta": 0.01})
    return SnnModel(net, cfg).train()


@needs_kernels
@pytest.mark.parametrize("block", [1, 4])
def test_vgg5_in_blocks_equals_layer_by_layer_float32(block, monkeypatch):
    """The benchmark's network (conv runs with pooling and dropout, linear layers), float32, channels-last: blocks
    of 1 step (and of 4 of T = 6: a short last block) against layer by layer: logits and counts bit for bit,
    weight gradients to float32 rounding."""
    model = _vgg5_like()
    x, y = torch.rand(3, 3, 32, 32), torch.arange(3)
    results = []
    for mode in ["blocks", "layers"]:
        with monkeypatch.context() as m:
            if mode == "blocks":                # the first conv has 3 x 64 x 32 x 32 currents per step
                m.setattr(ss, "CONV_BLOCK_VALUES", block * 3 * 64 * 32 * 32)
            else:
                m.setattr(snn_mod, "execution_path", lambda *a, **k: LOOP)
            torch.manual_seed(2)
            model.zero_grad(set_to_none=True)
            out = model(x, 6, InputEncoder("poisson", seed=3))
            F.cross_entropy(out.logits, y).backward()
            results.append((out, {k: p.grad.clone() for k, p in model.named_parameters()}))
    (blk, gb), (lay, gl) = results
    assert torch.equal(blk.logits, lay.logits)
    assert all(torch.equal(blk.spike_counts[k], lay.spike_counts[k]) for k in lay.spike_counts)
    assert all(float(c.sum()) > 0 for c in lay.spike_counts.values())
    assert blk.neurons == lay.neurons
    for k in gl:
        assert gl[k].abs().max() > 0, k
        torch.testing.assert_close(gb[k], gl[k], rtol=1e-4, atol=1e-5 * float(gl[k].abs().max()), msg=k)


def _compare_with_layers(model, x, T, monkeypatch):
    """(logits, counts, weight grads) of the block path and of the layer-by-layer path."""
    results = []
    for mode in ["blocks", "layers"]:
        with monkeypatch.context() as m:
            m.setattr(ss, "CONV_BLOCK_VALUES", 1)
            if mode == "layers":
                m.setattr(snn_mod, "execution_path", lambda *a, **k: LOOP)
            torch.manual_seed(2)
            model.zero_grad(set_to_none=True)
            out = model(x, T, InputEncoder("poisson", seed=3))
            out.logits.square().sum().backward()
            results.append((out, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}))
    (blk, gb), (lay, gl) = results
    assert torch.equal(blk.logits, lay.logits)
    assert all(torch.equal(blk.spike_counts[k], lay.spike_counts[k]) for k in lay.spike_counts)
    assert gb.keys() == gl.keys()
    for k in gl:
        torch.testing.assert_close(gb[k], gl[k], rtol=1e-4, atol=1e-5 * float(gl[k].abs().max()), msg=k)
    return lay


@needs_kernels
def test_a_batch_of_one_in_float32(monkeypatch):
    """A batch of 1 (channels-last currents whose batch stride torch leaves arbitrary), pooled and dropped out."""
    _compare_with_layers(_vgg5_like(), torch.rand(1, 3, 32, 32), 4, monkeypatch)
    model = _vgg5_like().eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32), 3).logits.shape == (1, 10)


@needs_kernels
def test_pools_too_large_for_a_byte_count_run_layer_by_layer(monkeypatch):
    """A 16 x 16 pool's count of 256 would not fit the saved byte: that layer runs layer by layer (same numbers),
    and the kernel itself refuses to write such codes."""
    from toolchain.ir import AvgPool2d, Conv2d, Flatten, Linear, Network, Spike
    net = Network((Conv2d("c0", 1, 4, bias=True), Spike("s0"), AvgPool2d("p0", 16), Flatten("f"), Linear("fc", 4, 3)),
                  (1, 16, 16), 3)
    model = SnnModel(net, SnnConfig(thresholds={"s0": 0.3}, coding="direct", timesteps=4)).train()
    with torch.no_grad():
        model.layers["c0"].bias.fill_(5.0)                 # every neuron fires every step: counts of 256
    runs = []
    orig = ss.run_stages
    monkeypatch.setattr(ss, "run_stages", lambda x, st, sur: runs.append(len(st)) or orig(x, st, sur))
    lay = _compare_with_layers(model, torch.rand(2, 1, 16, 16), 4, monkeypatch)
    assert runs == [] and float(lay.spike_counts["s0"].min()) == 4 * 4 * 256   # 4 steps x 4 channels x 256

    a = torch.ones(2, 1, 1, 16, 16, dtype=torch.float64)
    stage = ss.Stage("big", nn.Conv2d(1, 1, 3), 0.5, 1.0, 16)
    st = ss._StageState(stage, a, 2, save=True, keep_x=False, keep_dts=True, last=False)
    with pytest.raises(native.KernelError, match="big"):
        ss._neurons_forward(stage, st, a, 0, ss._block_out(stage, st, a))


@needs_kernels
def test_a_forward_without_backward_frees_its_saved_state_at_once():
    """No reference cycle from the saved state to the outputs: dropping the outputs frees it without the
    cyclic garbage collector."""
    import gc
    import weakref
    stages = [ss.Stage("a", nn.Conv2d(3, 4, 3, padding=1), 1.0, 1.0, 2),
              ss.Stage("b", nn.Conv2d(4, 4, 3, padding=1), 1.0, 1.0, 0)]
    gc.disable()
    try:
        y, counts = ss.run_stages(torch.rand(3, 2, 3, 8, 8), stages, get_surrogate("stdb"))
        saved = weakref.ref(y.grad_fn.states[0].blocks[0].dts)
        assert saved() is not None
        del y, counts
        assert saved() is None
    finally:
        gc.enable()


@needs_kernels
def test_frozen_weights_get_no_gradient(monkeypatch):
    model = _vgg5_like()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("layers.fc"))      # the conv run's weights frozen
    out = model(torch.rand(2, 3, 32, 32), 3, InputEncoder("poisson", seed=1))
    out.logits.sum().backward()
    grads = {k for k, p in model.named_parameters() if p.grad is not None}
    assert grads and all(k.startswith("layers.fc") for k in grads)


@needs_kernels
def test_inference_in_blocks_keeps_nothing_for_a_backward():
    """Without gradients the runs go through no autograd node (nothing saved), with the same output."""
    model = _vgg5_like().eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x, 4, InputEncoder("poisson", seed=1))
    assert out.logits.grad_fn is None and out.logits.shape == (2, 10)
    stages = [ss.Stage("a", nn.Conv2d(3, 4, 3, padding=1), 1.0, 1.0, 2)]
    seq = torch.rand(4, 2, 3, 8, 8)
    y, counts = ss.run_stages(seq, stages, get_surrogate("stdb"))
    assert y.requires_grad and y.grad_fn is not None          # the weight wants a gradient
    with torch.no_grad():
        y2, counts2 = ss.run_stages(seq, stages, get_surrogate("stdb"))
    assert y2.grad_fn is None and torch.equal(y.detach(), y2) and torch.equal(counts[0], counts2[0])


@needs_kernels
def test_a_second_backward_is_refused_by_name():
    stages = [ss.Stage("a", nn.Conv2d(3, 4, 3, padding=1), 1.0, 1.0, 2)]
    y, _ = ss.run_stages(torch.rand(3, 2, 3, 8, 8), stages, get_surrogate("stdb"))
    y.sum().backward(retain_graph=True)
    with pytest.raises(ss.RetainGraphError, match="retain_graph"):
        y.sum().backward()


def test_unsupported_inputs_go_layer_by_layer(monkeypatch):
    sur = get_surrogate("stdb")
    x = torch.zeros(4, 2, 3)
    monkeypatch.setenv("SNNTC_NATIVE", "0")
    block = lambda x, spike_fn=sur: execution_path(subtractive_step, spike_fn, x, stage=True) == BLOCK  # noqa: E731
    assert not block(x)                                       # no compiled kernels: layer by layer, in torch ops
    monkeypatch.delenv("SNNTC_NATIVE")
    if native.library() is not None:
        assert block(x)                                       # the same input, with the kernels: block by block
    assert not block(torch.zeros(300, 2, 3))                  # dts are 1 byte: T < 255
    assert not block(x.to(torch.float16))
    assert not block(x, lambda v, dt: v)                      # not a Surrogate


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p), ("dli_sname", ctypes.c_char_p),
                ("dli_saddr", ctypes.c_void_p)]


@needs_kernels
def test_kernels_run_on_torchs_openmp_threads():
    """Built against torch's bundled OpenMP runtime: the OpenMP calls of the kernels' library resolve to that very
    file (one runtime, one thread pool), whatever other runtimes are loaded (scikit-learn bundles one too)."""
    if native.torch_openmp() is None:
        pytest.skip("this torch has no bundled libgomp")
    lib = native.library()
    assert lib is not None
    addr = ctypes.cast(lib.GOMP_parallel, ctypes.c_void_p).value     # looked up in the library's dependencies
    libc = ctypes.CDLL(None)
    libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    info = _DlInfo()
    assert libc.dladdr(addr, ctypes.byref(info)) != 0
    assert os.path.realpath(info.dli_fname.decode()) == os.path.realpath(str(native.torch_openmp()))


_REUSE = """
import ctypes, resource, sys
sys.path.insert(0, {root!r})
from toolchain.training.allocator import tune_for_training
tuned = tune_for_training()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def faults(mb):                 # page faults touching a buffer of this size right after freeing one
    n = mb << 20
    a = libc.malloc(n); libc.memset(a, 1, n); libc.free(a)
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    b = libc.malloc(n); libc.memset(b, 2, n)
    r = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
    libc.free(b)
    return r
if {release}:
    from toolchain.training.allocator import release
    release()
print(tuned, faults(100), faults(300))
"""


@pytest.mark.skipif(allocator._mallopt() is None, reason="not glibc")
@pytest.mark.parametrize("tune,released", [(True, False), (False, False), (True, True)])
def test_tuned_allocator_recycles_buffers_below_256_mb(tune, released):
    """Tuned, a freed 100 MB buffer is reused (no new pages to fault in); by default, and after `release`, it is
    unmapped on free and the next one is fresh memory (25,600 faults). 300 MB buffers are mapped afresh always."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, SNNTC_MALLOC_TUNE="1" if tune else "0")
    out = subprocess.run([sys.executable, "-c", _REUSE.format(root=root, release=released)], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == str(tune)
    small, large = int(out[1]), int(out[2])
    assert large >= 0.9 * (300 << 8)
    if tune and not released:
        assert small < 100
    else:
        assert small >= 0.9 * (100 << 8)


def test_allocator_left_alone_on_request(monkeypatch):
    monkeypatch.setenv("SNNTC_MALLOC_TUNE", "0")
    monkeypatch.setattr(allocator, "_tuned", False)
    assert allocator.tune_for_training() is False
    with allocator.training_allocator() as tuned:
        assert tuned is False and allocator._tuned is False


@pytest.mark.skipif(allocator._mallopt() is None, reason="not glibc")
def test_training_holds_the_allocator_settings_only_while_it_runs(monkeypatch):
    monkeypatch.setattr(allocator, "_tuned", False)
    with allocator.training_allocator() as tuned:
        assert tuned and allocator._tuned
        with allocator.training_allocator():                # nested: still held after the inner block
            pass
        assert allocator._tuned
    assert not allocator._tuned

"""The emulator's compiled CUBA neuron (snn_lava_cuba in toolchain/neurons/kernels/native) against its torch ops
(hw_targets/simulators/emulator.py `_neuron_torch`), bit for bit, on both of `_neuron`'s paths. That the torch ops
are Lava's own arithmetic is what tests/test_emulator_vs_lava.py and tests/test_netx_kinds.py check against Lava."""
import numpy as np
import pytest
import torch

from hw_targets.simulators import emulator as E
from toolchain.neurons.kernels import native
from toolchain.quantization.fixed_point import FxLayer, FxNetwork

pytestmark = pytest.mark.skipif(native.compiler() is None, reason="no C compiler on this machine")

M24, SAT, I32 = 2 ** 23, 2 ** 23 - 1, 2 ** 31


def neurons(out_shape, bias, vth, du, dv):
    """The constants `_neuron` reads of a layer (the rest belongs to the synapse)."""
    return E._Prepared(layer=None, kind="dense", weight=torch.zeros(0), weight32=torch.zeros(0), weight_exp=0,
                       graded_in=False, bias=bias, vth=vth, du=du, dv=dv, out_shape=tuple(out_shape),
                       in_shape=tuple(out_shape), w_abs_sum=1)


def bias_of(kind, b, out_shape, gen):
    """A bias (<< 6, int16 mantissas) of each shape prepare() and _bias_fed make."""
    shape = {"none": None, "scalar": (), "channel": (out_shape[0],) + (1,) * (len(out_shape) - 1),
             "neuron": tuple(out_shape), "sample": (b,) + tuple(out_shape), "beyond int16": tuple(out_shape)}[kind]
    if shape is None:
        return None
    if kind == "beyond int16":       # no file gives it; the only way decay(v) + u + bias leaves int32
        return torch.randint(-2 ** 33, 2 ** 33, shape, generator=gen)
    return torch.randint(-2 ** 15, 2 ** 15, shape, generator=gen) << 6


def both(p, a, record, is_output, fast):
    native_out = E._neuron_native(p, a, record, is_output, fast)
    assert native_out is not None, "the kernel did not run"
    return native_out, E._neuron_torch(p, a, record, is_output, fast)


def assert_same(got, want):
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if w is not None:
            assert g.dtype == w.dtype and g.shape == w.shape
            assert torch.equal(g, w)


@pytest.mark.parametrize("bias_kind", ["none", "scalar", "channel", "neuron", "sample"])
@pytest.mark.parametrize("du,dv", [(1024, 256), (0, 4096), (4096, 0), (4095, 1)])
@pytest.mark.parametrize("record,is_output", [(False, False), (True, False), (False, True), (True, True)])
def test_fast_path_equals_torch(bias_kind, du, dv, record, is_output):
    """|a| <= 2**18 (the int32 path), a conv-shaped layer of 3 x 1,209 neurons (blocks of 512 and a partial one,
    a count no thread count divides), int64 and int32 inputs."""
    gen = torch.Generator().manual_seed(du + 7 * dv)
    out_shape, b = (13, 3, 31), 3
    p = neurons(out_shape, bias_of(bias_kind, b, out_shape, gen), 2500 << 6, du, dv)
    a = torch.randint(-2 ** 18, 2 ** 18 + 1, (b, 9) + out_shape, generator=gen) // 8
    assert E._fast_ok(p, int(a.abs().max()))
    got, want = both(p, a, record, is_output, True)
    assert_same(got, want)
    assert 0 < int(want[0].sum()) < want[0].numel()
    assert_same(both(p, a.to(torch.int32), record, is_output, True)[0], want)


@pytest.mark.parametrize("bias_kind", ["none", "channel", "neuron", "sample", "beyond int16"])
@pytest.mark.parametrize("du,dv", [(256, 100), (0, 4096), (4096, 0), (5000, -3)])
def test_overflow_path_equals_torch(bias_kind, du, dv):
    """Huge a (the int64 path): a << 6 wraps int32, decay(u) + act wraps int32, Lava's 24-bit wrap of u both ways,
    v clipped at both ends, and (with a bias beyond int16's range) decay(v) + u + bias beyond int32. Each is
    asserted to happen, in the histories."""
    gen = torch.Generator().manual_seed(abs(du) + dv)
    out_shape, b, T = (37,), 5, 40
    p = neurons(out_shape, bias_of(bias_kind, b, out_shape, gen), 100_000 << 6, du, dv)
    a = torch.randint(-2 ** 26, 2 ** 26, (b, T) + out_shape, generator=gen)
    a[:, ::7] = torch.randint(-2 ** 40, 2 ** 40, (b, len(range(0, T, 7))) + out_shape, generator=gen)
    assert not E._fast_ok(p, int(a.abs().max()))
    got, want = both(p, a, True, True, False)
    assert_same(got, want)
    assert_same(both(p, wrap(a).to(torch.int32), True, True, False)[0], want)
    if (du, dv) == (256, 100):
        assert_overflows(p, a, want[2], want[1])
    assert 0 < int(want[0].sum()) < want[0].numel()


def wrap(x):
    return E.wrap_int32(x)


def assert_overflows(p, a, u, v):
    """The wraps and clips this test is about occur: recomputed from the recorded (u, v) before each step."""
    zero = torch.zeros_like(u[:, :1])
    u0, v0 = torch.cat([zero, u[:, :-1]], 1), torch.cat([zero, v[:, :-1]], 1)
    act = torch.bitwise_left_shift(a, 6)
    assert bool((act != wrap(act)).any())                                     # a << 6 beyond int32
    dc = E.lava_decay(u0, p.du) + wrap(act)
    assert bool((dc != wrap(dc)).any())                                       # decay(u) + act beyond int32
    dc = wrap(dc)
    assert bool((dc > M24).any()) and bool((dc <= -M24).any())               # the 24-bit wrap, both ways
    bias = 0 if p.bias is None else (p.bias.unsqueeze(1) if p.bias.dim() > len(p.out_shape) else p.bias)
    vv = E.lava_decay(v0, p.dv) + u + bias
    if p.bias is not None and int(p.bias.abs().max()) > 2 ** 23:
        assert bool((vv != wrap(vv)).any())                                   # decay(v) + u + bias beyond int32
    vv = wrap(vv)
    assert bool((vv > SAT).any()) and bool((vv < -SAT).any())                # v clipped at both ends


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("vth", [2 ** 22, 2 ** 23 + 5])
def test_edges_of_the_wraps_and_clips(fast, vth):
    """Each neuron's first step lands on one edge: dc = +-2**23 (kept / wrapped) and one past it, v = vth and one
    past it, v = -(2**23 - 1) and one past it (clipped), 2**23 (clipped; seen with a vth no v reaches)."""
    a0 = [2 ** 17, 2 ** 17 + 1, -2 ** 17, -2 ** 17 + 1, -2 ** 17 + 1, -2 ** 17 + 1, 2 ** 16, 2 ** 16, 2 ** 17]
    bias = [0, 0, 0, 0, -64, -63, 0, 1, 0]
    u_first = [M24, 64 - M24, M24, 64 - M24, 64 - M24, 64 - M24, 2 ** 22, 2 ** 22, M24]
    v_first = [SAT, 64 - M24, SAT, 64 - M24, -SAT, -SAT, 2 ** 22, 2 ** 22 + 1, SAT]
    p = neurons((len(a0),), torch.tensor(bias), vth, 0, 0)
    a = torch.tensor(a0).repeat(2, 4, 1)
    got, want = both(p, a, True, True, fast)
    assert_same(got, want)
    assert want[2][0, 0].tolist() == u_first
    assert want[1][0, 0].tolist() == [0 if v > vth else v for v in v_first]
    assert want[0][0, 0].tolist() == [int(v > vth) for v in v_first]


def test_empty_and_single_inputs():
    """b = 1, one neuron, one step; zero steps and zero samples give the torch path's empty outputs."""
    p = neurons((1,), torch.tensor([640]), 100, 2048, 2048)
    a = torch.tensor([[[30]]])
    assert_same(*both(p, a, True, True, True))
    for shape in ((0, 4, 1), (2, 0, 1)):
        assert_same(E._neuron(p, torch.zeros(shape, dtype=torch.int64), True, True, 1),
                    E._neuron_torch(p, torch.zeros(shape, dtype=torch.int64), True, True, True))


def test_non_contiguous_input():
    gen = torch.Generator().manual_seed(3)
    a = torch.randint(-2 ** 10, 2 ** 10, (5, 6, 4, 7), generator=gen).permute(0, 3, 2, 1)[:, :, 1:]   # (5, 7, 3, 6)
    p = neurons((3, 6), None, 300 << 6, 1024, 512)
    assert not a.is_contiguous()
    assert_same(*both(p, a, True, True, True))


def small_net():
    rng = np.random.default_rng(0)
    layers = [FxLayer("conv1", "conv", rng.integers(-40, 128, (4, 2, 3, 3)) * 2, (2, 8, 8), (4, 8, 8), vth=150,
                      i_decay=1024, v_decay=512, padding=(1, 1), bias=rng.integers(-10, 30, 4)),
              FxLayer("fc", "dense", rng.integers(-100, 128, (5, 256)) * 2, (4, 8, 8), (5,), vth=400,
                      bias=rng.integers(-50, 50, 5), flatten_before=True, is_output=True)]
    return FxNetwork((2, 8, 8), layers, num_classes=5, timesteps=7, input_bits=0)


def test_emulate_same_trace_without_the_kernel(monkeypatch):
    """SNNTC_NATIVE=0 runs the torch ops; the whole trace is the same as the kernel's."""
    net = small_net()
    x = (np.random.default_rng(1).random((6, 7, 2, 8, 8)) < 0.4).astype(np.int32)
    ran = []
    real = E._neuron_native
    monkeypatch.setattr(E, "_neuron_native", lambda *args: ran.append(1) or real(*args))
    with_kernel = E.emulate(net, x, record_voltages=True, device="cpu")
    assert len(ran) == 2 and native.library() is not None
    monkeypatch.setenv("SNNTC_NATIVE", "0")
    assert native.library() is None
    torch_ops = E.emulate(net, x, record_voltages=True, device="cpu")
    for name in ("spike_counts", "spikes", "voltages", "currents"):
        for g, w in zip(getattr(with_kernel, name), getattr(torch_ops, name)):
            assert torch.equal(g, w), name
    assert torch.equal(with_kernel.output_voltage, torch_ops.output_voltage)
    assert all(int(c.sum()) > 0 for c in torch_ops.spike_counts)


def test_synapse_chunks_of_both_paths_equal_the_float64_path(monkeypatch):
    """Chunks in time that take different paths (exact float32 -> int32, float64 -> int64) join as int64; every
    value is the float64 path's, and the neuron gives the same spikes on either."""
    net = small_net()
    p = E.prepare(net, "cpu")[0]
    gen = torch.Generator().manual_seed(4)
    s = torch.randint(-2, 3, (3, 6, 2, 8, 8), generator=gen).to(torch.float64)
    s[:, 3:] *= 2 ** 14                                  # steps 3.. beyond float32's exact range
    monkeypatch.setattr(E, "_SYNAPSE_BYTES", 3 * 256 * 8 * 2 * 3)     # 3 steps a chunk
    mixed = E._synapse_batched(p, s, 3, 6)
    assert E._synapse_batched(p, s[:, :3], 3, 3).dtype == torch.int32 and mixed.dtype == torch.int64
    monkeypatch.setattr(E, "_exact_float32", lambda p, s: False)
    exact = E._synapse_batched(p, s, 3, 6)
    assert torch.equal(mixed, exact) and bool((exact[:, :3] != 0).any())
    bound = E.synaptic_bound(p, int(s.abs().max()))
    assert_same(E._neuron(p, mixed[:, :3].to(torch.int32), True, True, bound),
                E._neuron(p, exact[:, :3], True, True, bound))


@pytest.mark.parametrize("threads", ["1", "3", "7"])
def test_any_thread_count_gives_the_same(threads, monkeypatch):
    """2 x 1,100 neurons = 2 x 3 blocks of up to 512, split over 1, 3 or 7 threads (more threads than blocks)."""
    monkeypatch.setenv("SNNTC_KERNEL_THREADS", threads)
    gen = torch.Generator().manual_seed(8)
    p = neurons((1100,), bias_of("neuron", 2, (1100,), gen), 900 << 6, 2000, 300)
    a = torch.randint(-2 ** 12, 2 ** 12, (2, 11, 1100), generator=gen)
    for fast in (True, False):
        assert_same(*both(p, a, True, True, fast))

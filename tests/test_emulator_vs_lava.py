"""The torch emulator against Lava's own fixed_pt simulation (real Lava, no mocks): zero
mismatches of spikes and voltages, every layer, every step, every sample."""
import h5py
import numpy as np
import pytest
import torch

from hw_targets.simulators.emulator import emulate, run_emulator
from hw_targets.simulators.lava import run_lava
from hw_targets.simulators.verify import compare_traces, verify
from toolchain.errors import SimulationError
from toolchain.quantization.fixed_point import FxLayer, FxNetwork

STATE_MAX = 2 ** 23 - 1


def conv_out(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def dense_net(seed, bias, i_decay=1024, v_decay=512, input_bits=0):
    rng = np.random.default_rng(seed)
    sizes = [20, 16, 12, 4]
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.integers(-60, 128, (n_out, n_in)) * 2        # mostly excitatory: lots of spikes
        layers.append(FxLayer(f"fc{i}", "dense", w, (n_in,), (n_out,), vth=250,
                              i_decay=i_decay, v_decay=v_decay,
                              bias=rng.integers(-40, 80, n_out) if bias else None,
                              is_output=(i == len(sizes) - 2)))
    return FxNetwork((sizes[0],), layers, num_classes=4, timesteps=6, input_bits=input_bits)


def conv_net(seed, input_bits=0):
    """conv (stride 2, padding, groups) -> conv (dilation, asymmetric padding, groups)
    -> flatten -> dense."""
    rng = np.random.default_rng(seed)
    c, h, w = 2, 9, 8
    h1, w1 = conv_out(h, 3, 2, 1, 1), conv_out(w, 3, 2, 1, 1)
    l1 = FxLayer("conv1", "conv", rng.integers(-40, 128, (4, 1, 3, 3)) * 2, (c, h, w),
                 (4, h1, w1), vth=150 if input_bits == 0 else 3000, i_decay=1024, v_decay=512,
                 stride=(2, 2), padding=(1, 1), groups=2, bias=rng.integers(-10, 30, 4))
    h2, w2 = conv_out(h1, 3, 1, 2, 2), conv_out(w1, 2, 1, 1, 1)
    l2 = FxLayer("conv2", "conv", rng.integers(-60, 128, (6, 2, 3, 2)) * 2, (4, h1, w1),
                 (6, h2, w2), vth=200, i_decay=2048, v_decay=256, stride=(1, 1), padding=(2, 1),
                 dilation=(2, 1), groups=2)
    l3 = FxLayer("fc", "dense", rng.integers(-100, 128, (5, 6 * h2 * w2)) * 2, (6, h2, w2), (5,),
                 vth=400, bias=rng.integers(-50, 50, 5), flatten_before=True, is_output=True)
    return FxNetwork((c, h, w), [l1, l2, l3], num_classes=5, timesteps=5, input_bits=input_bits,
                     input_coding="direct" if input_bits else "poisson")


def inputs_for(net, n, seed, graded_max=0):
    rng = np.random.default_rng(seed)
    shape = (n, net.timesteps) + tuple(net.input_shape)
    if graded_max:
        return rng.integers(-graded_max, graded_max + 1, shape)
    return (rng.random(shape) < 0.5).astype(np.int32)


def assert_match(report, net):
    assert report.ok, report.summary()
    assert report.samples >= 16
    # not vacuous: every hidden layer (and the output) spikes, in Lava and in the emulator
    assert all(c > 0 for c in report.lava_spikes), report.lava_spikes
    assert report.lava_spikes == report.emulator_spikes
    assert report.compared_values == 2 * report.samples * report.timesteps * sum(
        l.neurons for l in net.layers)


@pytest.mark.lava
@pytest.mark.parametrize("bias", [True, False])
def test_dense_binary(bias):
    net = dense_net(seed=1, bias=bias)
    assert_match(verify(net, inputs_for(net, 16, seed=2), device="cpu"), net)


@pytest.mark.lava
def test_dense_graded_signed_no_decay():
    net = dense_net(seed=3, bias=True, i_decay=4096, v_decay=0, input_bits=8)
    assert_match(verify(net, inputs_for(net, 16, seed=4, graded_max=127)), net)


@pytest.mark.lava
def test_conv_binary():
    net = conv_net(seed=5)
    assert_match(verify(net, inputs_for(net, 16, seed=6)), net)


@pytest.mark.lava
def test_conv_graded_signed():
    net = conv_net(seed=7, input_bits=8)
    assert_match(verify(net, inputs_for(net, 16, seed=8, graded_max=128)), net)


@pytest.mark.lava
def test_dense_24bit_wrap_and_clip():
    """Huge graded inputs: the int32 dot product, a << 6 and u overflow (Lava's one-shot 24-bit
    wrap), v saturates at +-(2**23 - 1)."""
    net = dense_net(seed=9, bias=True, i_decay=256, v_decay=100, input_bits=24)
    net.layers[0].vth = 100_000
    x = inputs_for(net, 16, seed=10, graded_max=2 ** 22)
    trace = emulate(net, x, record_voltages=True)
    v0, u0 = trace.voltages[0], trace.currents[0]
    assert int(v0.abs().max()) == STATE_MAX                  # clipped
    assert int(u0.abs().max()) > STATE_MAX                   # wrapped once, still out of range
    assert_match(verify(net, x), net)


@pytest.mark.lava
def test_conv_24bit_wrap():
    """Conv sums beyond int32 (Lava's float->int32 cast) and beyond 24 bits (signed_clamp)."""
    net = conv_net(seed=11, input_bits=24)
    net.layers[0].vth = 100_000
    x = inputs_for(net, 16, seed=12, graded_max=2 ** 22)
    trace = emulate(net, x, record_voltages=True)
    assert int(trace.voltages[0].abs().max()) == STATE_MAX
    assert_match(verify(net, x), net)


@pytest.mark.lava
def test_slayer_exported_file(tmp_path):
    """A netx file written by lava-dl slayer itself (no input layer, float weights, no
    toolchain attributes) runs identically in Lava and the emulator."""
    slayer = pytest.importorskip("lava.lib.dl.slayer")
    torch.manual_seed(0)
    params = {"threshold": 0.5, "current_decay": 0.25, "voltage_decay": 0.03,
              "requires_grad": False}
    blocks = torch.nn.ModuleList([
        slayer.block.cuba.Conv(params, 2, 4, 3, padding=1, stride=2, weight_scale=2),
        slayer.block.cuba.Flatten(),
        slayer.block.cuba.Dense(params, 4 * 4 * 4, 5, weight_scale=2)])
    x = (torch.rand(1, 2, 8, 8, 4) < 0.5).float()
    for b in blocks:
        x = b(x)
    path = tmp_path / "slayer.net"
    with h5py.File(path, "w") as f:
        layer = f.create_group("layer")
        for i, b in enumerate(blocks):
            b.export_hdf5(layer.create_group(str(i)))
    inputs = (np.random.default_rng(0).random((16, 4, 2, 8, 8)) < 0.5).astype(np.int32)
    report = verify(path, inputs, input_shape=(2, 8, 8))
    assert report.ok, report.summary()
    assert all(c > 0 for c in report.lava_spikes)


@pytest.mark.lava
@pytest.mark.parametrize("readout", ["voltage", "spikes"])
def test_run_lava_equals_run_emulator(readout):
    """SimulationResults agree; Lava runs in 4 segments (the source data is swapped between)."""
    net = dense_net(seed=13, bias=True)
    net.readout = readout
    x = inputs_for(net, 20, seed=14)
    labels = np.arange(20) % 4
    lava = run_lava(net, x, labels=labels, progress=False, segment_samples=6)
    emu = run_emulator(net, x, labels=labels, device="cpu")
    np.testing.assert_array_equal(lava.predictions, emu.predictions)
    np.testing.assert_array_equal(lava.output_values, emu.output_values)
    for a, b in zip(lava.spike_counts, emu.spike_counts):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(lava.input_spike_counts, emu.input_spike_counts)
    assert lava.accuracy == emu.accuracy and lava.samples == 20
    assert all(c.sum() > 0 for c in lava.spike_counts)


def test_loihi2_target_unavailable():
    with pytest.raises(SimulationError, match="Loihi 2 hardware is not available"):
        run_lava(dense_net(1, True), np.zeros((1, 6, 20), np.int32), target="loihi2")


def test_compare_traces_reports_first_mismatch():
    rng = np.random.default_rng(0)
    spikes = [rng.random((3, 4, 5)) < 0.5, rng.random((3, 4, 2, 2, 2)) < 0.5]
    volts = [rng.integers(-100, 100, (3, 4, 5)), rng.integers(-100, 100, (3, 4, 2, 2, 2))]
    n_s, n_v, first, _ = compare_traces(["a", "b"], spikes, volts, spikes, volts)
    assert (n_s, n_v, first) == (0, 0, None)
    v2 = [v.copy() for v in volts]
    v2[1][1, 1, 0, 1, 1] += 7   # Lava step 1*4 + 2 + 2 = 8
    v2[0][2, 0, 3] += 1
    s2 = [s.copy() for s in spikes]
    s2[0][1, 3, 4] = ~s2[0][1, 3, 4]      # Lava step 1*4 + 1 + 4 = 9
    n_s, n_v, first, _ = compare_traces(["a", "b"], spikes, volts, s2, v2)
    assert (n_s, n_v) == (1, 2)
    assert first.layer == "b" and first.quantity == "voltage" and first.sample == 1
    assert first.step == 1 and first.neuron == (0, 1, 1)
    assert first.emulator - first.lava == 7
    assert first.lava_step == 8


def test_emulator_batching_and_device_invariance():
    net = conv_net(seed=5)
    x = inputs_for(net, 10, seed=6)
    a = emulate(net, x, batch_size=3, record_voltages=True, device="cpu")
    b = emulate(net, torch.as_tensor(x), batch_size=64, record_voltages=True)
    for k in range(len(net.layers)):
        assert torch.equal(a.spikes[k], b.spikes[k])
        assert torch.equal(a.voltages[k], b.voltages[k])
        assert torch.equal(a.spike_counts[k], b.spike_counts[k])
    assert torch.equal(a.output_voltage, b.output_voltage)
    # every sample is independent of the others (zero state per sample)
    c = emulate(net, x[4:5], record_voltages=True, device="cpu")
    assert torch.equal(c.voltages[2][0], a.voltages[2][4])


@pytest.mark.lava
def test_dense_all_nonpositive_weights_with_minus_256():
    """netx + Lava turn -256 into -254 (or -255) in a dense matrix without positive weights
    (Lava's inhibitory sign mode clips |w| to 255, then truncates); the emulator does the same."""
    from hw_targets.simulators.emulator import dense_effective_weights
    net = dense_net(seed=15, bias=True)
    rng = np.random.default_rng(16)
    w = -rng.integers(0, 12, net.layers[1].weight.shape) * 2
    w[0, 0] = -256
    net.layers[1].weight = w
    net.layers[1].bias = np.full(w.shape[0], 400)
    w_eff, exp = dense_effective_weights(w)
    assert w_eff[0, 0] * 2.0 ** exp in (-254, -255)
    report = verify(net, inputs_for(net, 16, seed=17))
    assert_match(report, net)


def test_int32_fast_path_equals_overflow_exact_path(monkeypatch):
    """The int32 neuron path (used when no overflow is possible) equals the int64 path that
    emulates every int32 overflow of Lava."""
    import hw_targets.simulators.emulator as emulator
    for net, x in ((conv_net(seed=5), None), (dense_net(seed=1, bias=True), None)):
        x = inputs_for(net, 8, seed=3)
        fast = emulate(net, x, record_voltages=True, device="cpu")
        with monkeypatch.context() as m:
            m.setattr(emulator, "_fast_ok", lambda p, bound: False)
            slow = emulate(net, x, record_voltages=True, device="cpu")
        for k in range(len(net.layers)):
            assert torch.equal(fast.spikes[k], slow.spikes[k])
            assert torch.equal(fast.voltages[k], slow.voltages[k])
            assert torch.equal(fast.currents[k], slow.currents[k])


@pytest.mark.lava
def test_depth_exceeds_window():
    """T = 2 steps per sample with 3 layers: the per-layer reset offsets wrap around."""
    net = dense_net(seed=18, bias=True)
    net.timesteps = 2
    assert_match(verify(net, inputs_for(net, 16, seed=19)), net)

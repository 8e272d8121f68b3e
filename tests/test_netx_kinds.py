"""Each layer kind the stock netx loader builds, in a file written like slayer's exports, run by real Lava (the
stock loader on that file) and by the emulator: zero mismatches, spike for spike and voltage for voltage; and a
one-line refusal naming the layer for the kinds the emulator does not model."""
import h5py
import numpy as np
import pytest
import torch

from hw_targets.simulators.emulator import emulate
from hw_targets.simulators.verify import verify
from toolchain.errors import NetxError
from toolchain.io.netx import read_netx, write_netx

from netx_kinds import KINDS, write_input_neuron


def _ids(kinds):
    return [k.name.replace(" ", "-") for k in kinds]


@pytest.mark.lava
@pytest.mark.parametrize("kind", KINDS, ids=_ids(KINDS))
def test_each_kind_matches_lava(tmp_path, kind):
    path = kind.write(tmp_path)
    net = read_netx(path)
    net.input_feed = kind.feed
    inputs = kind.inputs(net, 4, seed=3)
    report = verify(net, inputs, source=path)
    assert report.ok, report.summary()
    assert all(c > 0 for c in report.lava_spikes), report.lava_spikes       # not vacuous: every layer spikes
    assert report.compared_values == 2 * 4 * net.timesteps * sum(l.neurons for l in net.layers)


def test_input_neuron_is_read_as_a_layer_and_written_back(tmp_path):
    net = read_netx(write_input_neuron(tmp_path))
    assert net.input_neuron and net.layers[0].kind == "input" and net.timesteps == 6
    assert net.layers[0].output_shape == (2, 8, 8) and len(net.layers) == 3
    write_netx(net, tmp_path / "again.net")
    with h5py.File(tmp_path / "again.net", "r") as f:
        assert f["layer/0/type"][0] == b"input" and int(f["layer/0/neuron/vThMant"][()]) == 8
    again = read_netx(tmp_path / "again.net")
    assert [l.kind for l in again.layers] == ["input", "conv", "dense"]


def test_bias_feed_takes_one_value_per_sample(tmp_path):
    net = read_netx(write_input_neuron(tmp_path))
    net.input_feed = "bias"
    x = np.zeros((1, net.timesteps) + net.input_shape, np.int64)
    x[0, 1, 0, 0, 0] = 1
    with pytest.raises(Exception, match="one value per sample"):
        emulate(net, x, device="cpu")


def test_message_bits_that_netx_cannot_run_are_refused(tmp_path):
    """lava-dl 0.6 hands the 'messageBits' dataset itself to Lava, whose builder then fails in a subprocess (and
    the run never returns): refused before Lava is started."""
    from netx_kinds import write_graded
    path = write_graded(tmp_path)
    with h5py.File(path, "a") as f:
        f.create_dataset("layer/1/neuron/messageBits", data=8)
    with pytest.raises(NetxError, match="layer 1 .*neuron 'messageBits' cannot be run by netx"):
        read_netx(path)


@pytest.mark.parametrize("neuron_type,text", [
    (b"RF_PHASE", "resonate-and-fire neurons ('RF_PHASE') are not supported"),
    (b"ADRF", "resonate-and-fire neurons ('ADRF') are not supported"),
])
def test_neurons_the_emulator_does_not_model_are_refused_by_name(tmp_path, neuron_type, text):
    path = write_input_neuron(tmp_path)
    with h5py.File(path, "a") as f:
        del f["layer/3/neuron/type"]
        f.create_dataset("layer/3/neuron/type", data=neuron_type)
    with pytest.raises(NetxError) as info:
        read_netx(path)
    assert text in str(info.value) and "layer 3" in str(info.value) and len(str(info.value).splitlines()) == 1


def test_recurrent_and_delayed_layers_are_read_and_written_back(tmp_path):
    from netx_kinds import write_delays, write_dense_rec
    rec = read_netx(write_dense_rec(tmp_path))
    assert rec.layers[0].weight_rec.shape == (16, 16) and rec.layers[1].weight_rec is None
    delayed = read_netx(write_delays(tmp_path))
    d0, d1 = delayed.layers[0].delay, delayed.layers[1].delay
    assert d0.shape == (16, 20) and np.all(d0 == d0[:, :1]) and d1.shape == (8, 16)   # axonal: one per output
    for net, name in ((rec, "rec.net"), (delayed, "delayed.net")):
        write_netx(net, tmp_path / name)
        back = read_netx(tmp_path / name)
        for a, b in zip(net.layers, back.layers):
            assert (a.weight_rec is None) == (b.weight_rec is None) and (a.delay is None) == (b.delay is None)
            if a.delay is not None:
                assert np.array_equal(a.delay, b.delay)


@pytest.mark.parametrize("edit,text", [
    ("dense_comp", "complex-valued dense layers (dense_comp) are not supported"),
    ("rec_delay", "a recurrent dense layer with synaptic delays is not supported"),
])
def test_layers_the_emulator_does_not_model_are_refused_by_name(tmp_path, edit, text):
    from netx_kinds import write_dense_rec
    path = write_dense_rec(tmp_path)
    with h5py.File(path, "a") as f:
        if edit == "dense_comp":
            del f["layer/1/type"]
            f.create_dataset("layer/1/type", (1,), "S10", [b"dense_comp"])
        else:
            f.create_dataset("layer/1/delay", data=np.ones(16, np.float32))
    with pytest.raises(NetxError) as info:
        read_netx(path)
    assert text in str(info.value) and "layer 1" in str(info.value)


def test_conv_delays_are_ignored_as_netx_ignores_them(tmp_path):
    from toolchain.errors import DeploymentWarning
    path = write_input_neuron(tmp_path)
    with h5py.File(path, "a") as f:
        f.create_dataset("layer/1/delay", data=np.ones(4, np.float32))
    with pytest.warns(DeploymentWarning, match="netx ignores a conv layer's synaptic delays"):
        net = read_netx(path)
    assert net.layers[1].delay is None


@pytest.mark.lava
def test_cli_verifies_an_input_neuron_fed_as_bias(tmp_path, capsys):
    import json
    from toolchain.cli import main
    path = write_input_neuron(tmp_path)
    images = np.random.default_rng(5).integers(0, 200, (2, 2, 8, 8)).astype(np.uint8)
    np.save(tmp_path / "x.npy", images)
    code = main(["verify", str(path), "--inputs", str(tmp_path / "x.npy"), "--coding", "direct", "--normalize",
                 "unit", "--input-feed", "bias", "--no-progress", "--json", str(tmp_path / "v.json")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["ok"] and report["timesteps"] == 6 and report["lava_spikes"][0] > 0


def _two_traces(tmp_path, kind, seed, first, second):
    """The traces of `first` and `second` (functions of (net, x)) on kind's network; asserts they are the same."""
    net = read_netx(kind.write(tmp_path))
    net.input_feed = kind.feed
    x = kind.inputs(net, 3, seed=seed)
    a, b = first(net, x), second(net, x)
    for k in range(len(net.layers)):
        assert torch.equal(a.spikes[k], b.spikes[k]) and torch.equal(a.voltages[k], b.voltages[k])
    assert torch.equal(a.output_voltage, b.output_voltage) and int(a.spike_counts[0].sum()) > 0


PLAIN = [k for k in KINDS if k.write is write_input_neuron] + [KINDS[3]]


@pytest.mark.parametrize("kind", PLAIN, ids=_ids(PLAIN))
def test_the_global_time_line_equals_the_batched_emulator_where_both_apply(tmp_path, kind):
    """Without recurrence or delays nothing crosses a window: the stream path gives the batched path's trace."""
    from hw_targets.simulators.stream import emulate_stream
    _two_traces(tmp_path, kind, 8, lambda net, x: emulate(net, x, device="cpu", record_voltages=True),
                lambda net, x: emulate_stream(net, x, device="cpu", record_voltages=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("kind", KINDS, ids=_ids(KINDS))
def test_cuda_gives_the_cpu_trace(tmp_path, kind):
    _two_traces(tmp_path, kind, 9, lambda net, x: emulate(net, x, device="cpu", record_voltages=True),
                lambda net, x: emulate(net, x, device="cuda", record_voltages=True))


# ---- sigma-delta (SDNN) neurons ----------------------------------------------------------------------------------

def _golden_sigma_delta(tmp_path):
    """Delta (vth 1) -> dense 1->1 weight 64, SigmaDelta vth 3 -> dense 1->1 weight 2, Sigma."""
    from netx_kinds import _dense_file, _retype, _dense
    def build(layers, rng):
        layers["0"].create_group("neuron")
        _retype(layers["0"], v_th=1)
        for i, (w, v_th, sigma) in enumerate(((64, 3, False), (2, None, True)), start=1):
            g = _dense(layers, i, rng, 1, 1, v_th=1)
            g["weight"][...] = np.float32([[w]])
            _retype(g, v_th=v_th, sigma_output=sigma)
    return _dense_file(tmp_path, "golden_sd.net", 1, 1, 4, build)


def test_sigma_delta_trajectory_is_the_hand_computed_one(tmp_path):
    """x = 3, 3, 5, 0. Delta: x << 12 = 12288, 12288, 20480, 0 against vth 1 << 12: sends the changes >> 6:
    192, 0, 128, -320. SigmaDelta (a = 64 m): sigma 12288, 12288, 20480, 0; against vth 3 << 12 = 12288 the change
    8192 stays in the residue and leaves with the next (-20480 + 8192): 192, 0, 0, -192. Sigma (a = 2 m) sends its
    running sum 384, 384, 384, 0."""
    net = read_netx(_golden_sigma_delta(tmp_path))
    assert [l.neuron for l in net.layers] == ["sdnn", "sdnn", "sigma"] and net.readout == "voltage"
    x = np.array([3, 3, 5, 0]).reshape(1, 4, 1)
    trace = emulate(net, x, device="cpu", record_voltages=True)
    got = [trace.spikes[k][0, :, 0].tolist() for k in range(3)]
    assert got == [[192, 0, 128, -320], [192, 0, 0, -192], [384, 384, 384, 0]]
    assert trace.voltages[1][0, :, 0].tolist() == [12288, 12288, 20480, 0]          # sigma
    assert trace.voltages[0][0, :, 0].tolist() == [0, 0, 0, 0]                      # the Delta's residue
    assert [int(c.sum()) for c in trace.spike_counts] == [3, 2, 3]


@pytest.mark.lava
def test_sigma_delta_int32_wraps_match_lava(tmp_path):
    """Inputs of up to 2**20: the Delta's << 12 wraps, the graded dot products and sigma's running sums wrap at 32
    bits (asserted, so that the check cannot pass vacuously); Lava and the emulator agree on every value."""
    from netx_kinds import write_sigma_delta_wraps
    path = write_sigma_delta_wraps(tmp_path)
    net = read_netx(path)
    x = np.random.default_rng(1).integers(-2 ** 20, 2 ** 20, (3, net.timesteps, 24))
    trace = emulate(net, x, device="cpu", record_voltages=True)
    running = torch.cumsum(trace.currents[1].reshape(-1, 16), dim=0)       # sigma before its int32 wrap
    assert bool((running.abs() >= 2 ** 31).any()) and bool((np.abs(x) >= 2 ** 19).any())
    report = verify(net, x, source=path)
    assert report.ok, report.summary()
    assert all(c > 0 for c in report.lava_spikes)


def test_sigma_delta_layers_are_written_back_as_slayer_does(tmp_path):
    from netx_kinds import write_sigma_delta
    net = read_netx(write_sigma_delta(tmp_path))
    write_netx(net, tmp_path / "again.net")
    with h5py.File(tmp_path / "again.net", "r") as f:
        assert f["layer/0/neuron/type"][()] == b"SDNN" and int(f["layer/0/neuron/vThMant"][()]) == 2
        assert bool(f["layer/4/neuron/sigma_output"][()]) and "vThMant" in f["layer/4/neuron"]   # as slayer writes it
    again = read_netx(tmp_path / "again.net")
    assert [(l.kind, l.neuron, l.vth) for l in again.layers] == [(l.kind, l.neuron, l.vth) for l in net.layers]
    assert np.array_equal(again.layers[2].bias, net.layers[2].bias) and again.readout == "voltage"
    x = np.random.default_rng(4).integers(0, 8, (2, net.timesteps) + net.input_shape)
    a, b = emulate(net, x, device="cpu"), emulate(again, x, device="cpu")
    assert torch.equal(a.output_voltage, b.output_voltage)


def test_a_sigma_output_with_a_bias_is_refused(tmp_path):
    from netx_kinds import write_sigma_delta
    path = write_sigma_delta(tmp_path)
    with h5py.File(path, "a") as f:
        f.create_dataset("layer/4/bias", data=np.ones(5, np.float32))
    with pytest.raises(NetxError, match="layer 4 .*Sigma process takes no bias"):
        read_netx(path)


def test_an_activation_other_than_relu_is_run_as_netx_runs_it(tmp_path):
    from toolchain.errors import DeploymentWarning
    from netx_kinds import write_sigma_delta
    path = write_sigma_delta(tmp_path)
    with h5py.File(path, "a") as f:
        del f["layer/1/neuron/activation"]
        f.create_dataset("layer/1/neuron/activation", data=b"tanh")
    with pytest.warns(DeploymentWarning, match="netx runs every SDNN neuron with a ReLU, not 'tanh'"):
        read_netx(path)


def test_a_sigma_delta_input_cannot_be_fed_as_bias(tmp_path):
    from toolchain.errors import SimulationError
    from netx_kinds import write_sigma_delta
    net = read_netx(write_sigma_delta(tmp_path))
    net.input_feed = "bias"
    x = np.ones((1, net.timesteps) + net.input_shape, np.int64)
    with pytest.raises(SimulationError, match="Delta\\) has no bias"):
        emulate(net, x, device="cpu")


def test_the_sigma_delta_kernel_keeps_int32_min_and_matches_torch_ops():
    """np.abs(-2**31) is -2**31 in int32, so that value never passes the threshold and stays in the residue (a Delta
    fed -2**19: << 12 is -2**31); the compiled kernel and the torch ops agree on random streams that wrap, for the
    Delta, the SigmaDelta (with a bias of each shape) and the Sigma."""
    from types import SimpleNamespace
    from hw_targets.simulators import sigma_delta
    from toolchain.neurons.kernels import native as kernels
    if kernels.library() is None:
        pytest.skip("no C compiler")
    delta = SimpleNamespace(kind="input", vth=4096, bias=None, layer=SimpleNamespace(neuron="sdnn", name="in"))
    a = torch.tensor([[0], [-2 ** 19], [0], [5]], dtype=torch.int64)
    for run in (sigma_delta.run_stream_native, sigma_delta.run_stream_steps):
        messages, residues = run(delta, a)
        assert messages[:, 0].tolist() == [0, 0, 0, 320] and residues[:, 0].tolist() == [0, -2 ** 31, 0, 0]
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-2 ** 29, 2 ** 29, (40, 3, 5, 70), generator=g, dtype=torch.int64)
    biases = (None, torch.randint(-2 ** 30, 2 ** 30, (3, 1, 1), generator=g), torch.tensor(7 << 12))
    cases = [("input", "sdnn", None), ("conv", "sigma", None)] + [("conv", "sdnn", b) for b in biases]
    for kind, neuron, bias in cases:
        p = SimpleNamespace(kind=kind, vth=2 ** 26, bias=bias, layer=SimpleNamespace(neuron=neuron, name="x"))
        x = a >> 10 if kind == "input" else a
        (m1, s1), (m2, s2) = sigma_delta.run_stream_native(p, x), sigma_delta.run_stream_steps(p, x)
        assert torch.equal(m1, m2) and torch.equal(s1, s2), (kind, neuron)
        assert neuron == "sigma" or 0 < int((m1 != 0).sum()) < m1.numel()
    assert bool((torch.cumsum(a, 0).abs() >= 2 ** 31).any())                # sigma wraps


def test_a_sigma_delta_file_takes_its_frames_as_they_are_from_the_cli(tmp_path, capsys):
    """A Delta input encodes the values it is given: without --coding the frames are fed as they are (direct, no
    normalization), the same run as with --coding direct --normalize none; the output is read by its sigma."""
    import json
    from netx_kinds import write_sigma_delta
    from toolchain.cli import main
    path = write_sigma_delta(tmp_path)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 8, (3, 2, 8, 8)))
    runs = []
    for extra in ([], ["--coding", "direct", "--normalize", "none"]):
        out = tmp_path / f"run{len(runs)}.json"
        code = main(["simulate", str(path), "--inputs", str(tmp_path / "x.npy"), "--backend", "emulator",
                     "--no-progress", "--json", str(out)] + extra)
        assert code == 0, capsys.readouterr().err
        runs.append(json.loads(out.read_text()))
    assert runs[0]["layers"] == runs[1]["layers"] and runs[0]["layers"][-1]["readout"] == "voltage"
    assert all(layer["spikes"] > 0 for layer in runs[0]["layers"][:-1])

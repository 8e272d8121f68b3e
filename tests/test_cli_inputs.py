"""`snntc simulate|verify|energy FILE --inputs X.npy [--labels Y.npy]`: any input from the command line, on files
that record no dataset (and on files that slayer writes, without an input layer), against real Lava."""
import json

import h5py
import numpy as np
import pytest

from toolchain.cli import main
from toolchain.deploy import encode_for_chip, simulate
from toolchain.io.netx import read_netx, write_netx
from toolchain.quantization.fixed_point import FxLayer, FxNetwork


def dense_file(tmp_path, classes=4, n_in=16, name="dense.net", **net_kw):
    rng = np.random.default_rng(3)
    l1 = FxLayer("fc1", "dense", rng.integers(-40, 128, (12, n_in)) * 2, (n_in,), (12,), vth=200, i_decay=1024,
                 v_decay=256)
    l2 = FxLayer("fc2", "dense", rng.integers(-100, 128, (classes, 12)) * 2, (12,), (classes,), vth=300,
                 is_output=True)
    net = FxNetwork((n_in,), [l1, l2], num_classes=classes, timesteps=5, **net_kw)
    path = tmp_path / name
    write_netx(net, path)              # no dataset recorded
    return path


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, text):
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert text in err, err


def test_samples_with_labels_on_a_file_without_a_dataset(tmp_path, capsys):
    path = dense_file(tmp_path)
    x = np.random.default_rng(0).random((6, 1, 4, 4)).astype(np.float32)     # reshaped to (16,)
    y = np.arange(6) % 4
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    code, out, err = run(capsys, "simulate", path, "--inputs", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
                         "--backend", "emulator", "--no-progress", "--json", tmp_path / "s.json")
    assert code == 0, err
    summary = json.loads((tmp_path / "s.json").read_text())
    _, api = simulate(str(path), x.reshape(6, 16), y, backend="emulator", progress=False)
    assert summary["samples"] == 6 and summary["accuracy"] == pytest.approx(api.accuracy)
    assert [l["spikes"] for l in summary["layers"]] == [int(c.sum()) for c in api.spike_counts]


def test_without_labels_there_is_no_accuracy(tmp_path, capsys):
    path = dense_file(tmp_path)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((3, 16)).astype(np.float32))
    code, out, err = run(capsys, "simulate", path, "--inputs", tmp_path / "x.npy", "--backend", "emulator",
                         "--no-progress")
    assert code == 0 and "no labels" in out, err


@pytest.mark.lava
def test_verify_and_energy_take_chip_input(tmp_path, capsys):
    path = dense_file(tmp_path)
    chip = (np.random.default_rng(1).random((3, 7, 16)) < 0.5).astype(np.int8)      # T = 7, not the file's 5
    np.save(tmp_path / "chip.npy", chip)
    code, out, err = run(capsys, "verify", path, "--inputs", tmp_path / "chip.npy", "--no-progress",
                         "--json", tmp_path / "v.json")
    assert code == 0, err
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["ok"] and report["samples"] == 3 and report["timesteps"] == 7 and sum(report["lava_spikes"]) > 0
    code, out, err = run(capsys, "energy", path, "--inputs", tmp_path / "chip.npy", "--backend", "emulator",
                         "--no-progress", "--json", tmp_path / "e.json")
    assert code == 0 and json.loads((tmp_path / "e.json").read_text())["counts"]["samples"] == 3, err


def test_graded_chip_input_raises_the_message_bits(tmp_path, capsys):
    """Values other than 0/1 reach the network as they are (graded events), not as unary spikes."""
    from toolchain.inputs import chip_inputs
    net = read_netx(dense_file(tmp_path))
    chip = np.random.default_rng(2).integers(-20, 21, (2, 5, 16))
    fed, x = chip_inputs(net, chip)
    assert net.input_bits == 0 and fed.input_bits == 8 and np.array_equal(x, chip)


@pytest.mark.parametrize("shape,text", [
    ((4, 15), "inputs have shape (4, 15); the network takes (N, T, *(16,)) or (N, *(16,))"),
    ((4, 5, 3, 5), "the network takes"),
])
def test_bad_shapes_are_one_line_and_write_nothing(tmp_path, capsys, shape, text):
    path = dense_file(tmp_path)
    np.save(tmp_path / "x.npy", np.zeros(shape, np.float32))
    code, _, err = run(capsys, "simulate", path, "--inputs", tmp_path / "x.npy", "--json", tmp_path / "s.json")
    one_line_error(code, err, text)
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("labels,text", [
    (np.arange(4) + 3, "labels span [3, 6] but the network has 4 classes"),
    (np.arange(3), "labels have shape (3,); expected (4,)"),
    (np.zeros((4, 2)), "expected (N,), one class index per sample"),
])
def test_labels_that_do_not_fit_are_an_error_not_an_accuracy(tmp_path, capsys, labels, text):
    path = dense_file(tmp_path)
    np.save(tmp_path / "x.npy", np.zeros((4, 16), np.float32))
    np.save(tmp_path / "y.npy", labels)
    code, _, err = run(capsys, "simulate", path, "--inputs", tmp_path / "x.npy", "--labels", tmp_path / "y.npy")
    one_line_error(code, err, text)


def test_a_dataset_with_another_class_count_is_an_error(tmp_path, capsys):
    path = dense_file(tmp_path, classes=3, n_in=64)
    code, _, err = run(capsys, "simulate", path, "--dataset", "digits", "--samples", "2")
    one_line_error(code, err, "dataset 'digits' has 10 classes, the network 3")


def test_dataset_samples_are_reshaped_when_the_sizes_agree(tmp_path, capsys):
    """digits are (1, 8, 8); a (64,)-input network takes them."""
    path = dense_file(tmp_path, classes=10, n_in=64)
    code, out, err = run(capsys, "simulate", path, "--dataset", "digits", "--samples", "4", "--backend", "emulator",
                         "--no-progress", "--json", tmp_path / "s.json")
    assert code == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["accuracy"] is not None


def test_coding_and_normalization(tmp_path):
    from toolchain.inputs import chip_inputs
    net = read_netx(dense_file(tmp_path))
    pixels = np.random.default_rng(0).integers(0, 256, (3, 16)).astype(np.uint8)
    fed, x = chip_inputs(net, pixels, coding="direct", how="unit", timesteps=4)
    unit = pixels / 255.0
    scale = 127 / unit.max()
    assert fed.input_coding == "direct" and fed.input_bits == 8 and fed.timesteps == 4
    assert x.shape == (3, 4, 16) and np.array_equal(x[:, 0], np.round(unit * scale).astype(np.int64))
    # the default: the file's (poisson) coding of the values as given, binary spikes with probability x
    fed, x = chip_inputs(net, unit, seed=5)
    assert fed.input_bits == 0 and set(np.unique(x)) <= {0, 1}
    assert np.array_equal(x, encode_for_chip(net, unit, seed=5))


def test_standard_normalization_uses_the_file_statistics(tmp_path, capsys):
    from toolchain.inputs import normalize
    net = read_netx(dense_file(tmp_path, mean=(10.0,), std=(2.0,)))
    assert np.allclose(normalize(np.full((1, 16), 14.0), net, "standard"), 2.0)
    path = dense_file(tmp_path, name="plain.net")
    np.save(tmp_path / "x.npy", np.zeros((2, 16), np.float32))
    code, _, err = run(capsys, "simulate", path, "--inputs", tmp_path / "x.npy", "--normalize", "standard")
    one_line_error(code, err, "this file records none")


def test_chip_input_and_timesteps_or_coding_conflict(tmp_path, capsys):
    path = dense_file(tmp_path)
    np.save(tmp_path / "chip.npy", np.zeros((2, 5, 16), np.int8))
    code, _, err = run(capsys, "simulate", path, "--inputs", tmp_path / "chip.npy", "--timesteps", "4")
    one_line_error(code, err, "the chip input has 5 time steps, --timesteps says 4")
    code, _, err = run(capsys, "simulate", path, "--inputs", tmp_path / "chip.npy", "--coding", "direct")
    one_line_error(code, err, "--coding applies to samples")


@pytest.mark.parametrize("content,text", [(b"not numpy", "is not a .npy array"), (None, "no such file")])
def test_unreadable_inputs(tmp_path, capsys, content, text):
    path = dense_file(tmp_path)
    if content is not None:
        (tmp_path / "x.npy").write_bytes(content)
    code, _, err = run(capsys, "simulate", path, "--inputs", tmp_path / "x.npy")
    one_line_error(code, err, text)


def slayer_conv_file(tmp_path, t_sample=None):
    """A conv-first file as slayer's blocks export it: no input layer, float weights, simulation/tSample."""
    rng = np.random.default_rng(4)
    path = tmp_path / "slayer.net"
    neuron = {"type": b"CUBA", "iDecay": 1024, "vDecay": 128, "vThMant": 80, "refDelay": 1, "gradedSpike": False}
    with h5py.File(path, "w") as f:
        if t_sample is not None:
            f.create_dataset("simulation/Ts", data=1.0)
            f.create_dataset("simulation/tSample", data=float(t_sample))
        conv = f.create_group("layer/0")
        conv.create_dataset("type", data=np.array([b"conv"], dtype="S10"))
        conv.create_dataset("shape", data=np.array([4, 4, 4]))
        for key, value in {"inChannels": 2, "outChannels": 4, "groups": 1}.items():
            conv.create_dataset(key, data=value)
        conv.create_dataset("kernelSize", data=np.array([3, 3]))
        conv.create_dataset("stride", data=np.array([2, 2]))
        conv.create_dataset("padding", data=np.array([1, 1]))
        conv.create_dataset("dilation", data=np.array([1, 1]))
        conv.create_dataset("weight", data=(rng.integers(-20, 60, (4, 2, 3, 3)) * 2).astype(np.float32))
        for key, value in neuron.items():
            conv.create_dataset(f"neuron/{key}", data=value)
        f.create_dataset("layer/1/type", data=np.array([b"flatten"], dtype="S10"))
        f.create_dataset("layer/1/shape", data=np.array([64, 1, 1]))
        dense = f.create_group("layer/2")
        dense.create_dataset("type", data=np.array([b"dense"], dtype="S10"))
        dense.create_dataset("shape", data=np.array([5]))
        dense.create_dataset("inFeatures", data=64)
        dense.create_dataset("outFeatures", data=5)
        dense.create_dataset("weight", data=(rng.integers(-60, 100, (5, 64)) * 2).astype(np.float32))
        for key, value in neuron.items():
            dense.create_dataset(f"neuron/{key}", data=value)
    return path


def test_the_sample_length_is_the_files_tsample(tmp_path):
    assert read_netx(slayer_conv_file(tmp_path, t_sample=9), input_shape=(2, 8, 8)).timesteps == 9


@pytest.mark.lava
def test_input_shape_from_the_command_line_for_a_conv_first_file(tmp_path, capsys):
    path = slayer_conv_file(tmp_path, t_sample=4)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((2, 2, 8, 8)).astype(np.float32))
    code, _, err = run(capsys, "simulate", path, "--inputs", tmp_path / "x.npy", "--no-progress")
    one_line_error(code, err, "pass input_shape")
    code, out, err = run(capsys, "verify", path, "--inputs", tmp_path / "x.npy", "--input-shape", "2,8,8",
                         "--no-progress", "--json", tmp_path / "v.json")
    assert code == 0, err
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["ok"] and report["timesteps"] == 4 and report["lava_spikes"][0] > 0


@pytest.mark.lava
@pytest.mark.parametrize("bits_as_written", [True, False])
def test_readme_runs_our_file_in_stock_lava(tmp_path, monkeypatch, bits_as_written):
    """The README's stock-Lava block, verbatim, on a direct-coded (8-bit graded input) conv file: the output
    layer's voltage is the emulator's, and with unary input messages (input_message_bits=0) it is not."""
    import os
    from hw_targets.simulators.emulator import emulate
    from test_emulator_vs_lava import conv_net
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    block = readme.split("<!-- stock-lava -->")[1].split("```python")[1].split("```")[0]
    if not bits_as_written:
        block = block.replace('int(f.attrs["input_bits"])', "0")
    net = conv_net(seed=1, input_bits=8)
    net.input_scale, net.readout = 100.0, "voltage"
    net.layers[-1].vth = 2 ** 17 - 1                    # as export writes the output layer: it never spikes
    write_netx(net, tmp_path / "model.net")
    monkeypatch.chdir(tmp_path)
    images = np.random.default_rng(0).uniform(-1, 1, (1,) + tuple(net.input_shape)).astype(np.float32)
    names = {"images": images}
    exec(block, names)
    trace = emulate(net, encode_for_chip(net, images), device="cpu")
    expected = trace.output_voltage[0, -1].numpy()
    assert np.abs(expected).max() > 0
    assert np.array_equal(names["voltage"], expected) == bits_as_written
    if bits_as_written:
        assert names["prediction"] == int(np.argmax(expected))

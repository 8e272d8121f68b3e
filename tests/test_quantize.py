"""The quantizer's edge cases, the written netx file's fields, and export -> stock netx -> Lava for
dense-only and conv networks (compared with the emulator and with the toolchain's own QAT model)."""
import h5py
import numpy as np
import pytest
import torch

from toolchain.io.checkpoint import Checkpoint
from toolchain.deploy import encode_for_chip, export_snn
from toolchain.errors import ConfigError, QuantizationError
from toolchain.quantization.fixed_point import VTH_MAX
from toolchain.ir import AvgPool2d, Conv2d, Flatten, Linear, Network, Spike
from toolchain.quantization.quantize import quantize_snn
from toolchain.snn import SnnConfig


def dense_ckpt(w1, w2, thresholds=(1.0,), coding="poisson", neuron="loihi-cuba"):
    net = Network((Linear("fc1", w1.shape[1], w1.shape[0]), Spike("s1"), Linear("out", w2.shape[1], w2.shape[0])),
                  (w1.shape[1],), w2.shape[0])
    state = {"layers.fc1.weight": torch.as_tensor(w1, dtype=torch.float32),
             "layers.out.weight": torch.as_tensor(w2, dtype=torch.float32)}
    cfg = SnnConfig(thresholds={"s1": thresholds[0]}, coding=coding, neuron=neuron, timesteps=4)
    return Checkpoint("snn", net, state, {"name": "none", "mean": [0.0], "std": [1.0]}, snn=cfg.to_dict())


def conv_ckpt(seed=0):
    torch.manual_seed(seed)
    net = Network((Conv2d("c1", 1, 4, 3, 1, 1), Spike("s1"), AvgPool2d("p1", 2), Conv2d("c2", 4, 6, 3, 1, 1),
                   Spike("s2"), AvgPool2d("p2", 2), Flatten("f"), Linear("out", 24, 3)), (1, 8, 8), 3)
    state = {"layers.c1.weight": torch.randn(4, 1, 3, 3), "layers.c2.weight": torch.randn(6, 4, 3, 3),
             "layers.out.weight": torch.randn(3, 24)}
    cfg = SnnConfig(thresholds={"s1": 0.8, "s2": 0.6}, coding="direct", neuron="loihi-cuba", timesteps=6,
                    input_scale=60.0)
    return Checkpoint("snn", net, state, {"name": "none", "mean": [0.0], "std": [1.0]}, snn=cfg.to_dict())


def test_all_positive_and_all_negative_weights_use_the_full_symmetric_range():
    w1 = np.array([[0.5, 0.25, 1.0], [0.1, 0.2, 0.3]])
    fx, _ = quantize_snn(dense_ckpt(w1, -np.abs(w1.T)), np.ones((1, 3)))
    assert fx.layers[0].weight.min() >= 0 and fx.layers[0].weight.max() == 254
    assert fx.layers[1].weight.max() <= 0 and fx.layers[1].weight.min() == -254
    assert np.all(fx.layers[0].weight % 2 == 0)          # 8-bit mantissa times 2
    # threshold 1.0 at scale 254 -> vth 254
    assert fx.layers[0].vth == 254 and fx.layers[1].vth == VTH_MAX and fx.layers[1].is_output


def test_tiny_weights_round_to_zero_and_are_reported():
    w1 = np.array([[1.0, 1e-4, -1e-4]])
    fx, report = quantize_snn(dense_ckpt(w1, np.array([[1.0], [0.5]])), np.ones((1, 3)))
    assert fx.layers[0].weight.tolist() == [[254, 0, 0]]
    assert report.layers[0].zeroed_weights == 2
    assert any("2 non-zero weights round to 0" in w for w in report.warnings)


def test_an_all_zero_dense_layer_is_an_error_naming_it():
    with pytest.raises(QuantizationError, match="layer 'fc1': every weight rounds to 0"):
        quantize_snn(dense_ckpt(np.zeros((2, 3)), np.ones((2, 2))), np.ones((1, 3)))


@pytest.mark.parametrize("threshold", [0.0, -1.0, float("nan"), float("inf")])
def test_thresholds_out_of_range_are_errors_naming_the_layer(threshold):
    """A threshold <= 0 or not finite cannot be given to an SNN at all (its configuration refuses it), so no
    stage, the quantizer included, meets one."""
    with pytest.raises(ConfigError, match=f"threshold of layer 's1' is {threshold}; thresholds must be finite numbers > 0"):
        dense_ckpt(np.ones((2, 3)), np.ones((2, 2)), (threshold,))


def test_a_huge_threshold_limits_the_scale_to_the_17_bit_threshold():
    # threshold 10000 x weights 1: the weight scale 254 would need vth 2,540,000 > 131071
    fx, _ = quantize_snn(dense_ckpt(np.ones((2, 3)), np.ones((2, 2)), (1e4,)), np.ones((1, 3)))
    assert fx.layers[0].vth == VTH_MAX
    assert fx.layers[0].weight.max() == 2 * round(VTH_MAX / 1e4 / 2)


def test_written_file_fields(tmp_path):
    ckpt = conv_ckpt()
    x = np.random.default_rng(0).normal(size=(4, 1, 8, 8)).astype(np.float32)
    path = tmp_path / "m.net"
    fx, _ = export_snn(ckpt, str(path), x)
    with h5py.File(path, "r") as f:
        layer = f["layer"]
        types = [layer[str(i)]["type"][()] for i in range(len(layer))]
        types = [t[0] if hasattr(t, "__len__") and not isinstance(t, bytes) else t for t in types]
        assert [t.decode() if isinstance(t, bytes) else t for t in types] == ["input", "conv", "conv", "flatten", "dense"]
        c2 = layer["2"]
        assert list(c2["shape"][()]) == [6, 4, 4] and list(np.ravel(c2["stride"][()])) in ([2], [2, 2])
        np.testing.assert_array_equal(c2["weight"][()].reshape(fx.layers[1].weight.shape), fx.layers[1].weight)
        assert int(np.ravel(c2["neuron"]["vThMant"][()])[0]) == fx.layers[1].vth
        assert int(np.ravel(c2["neuron"]["iDecay"][()])[0]) == 4096 and int(np.ravel(c2["neuron"]["vDecay"][()])[0]) == 0
        assert int(f.attrs["timesteps"]) == 6 and str(f.attrs["input_coding"]) == "direct"


@pytest.mark.lava
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_export_loads_in_stock_netx_and_lava_matches_the_toolchain(tmp_path, kind):
    from lava.lib.dl.netx.hdf5 import Network as NetxNetwork

    from hw_targets.simulators.emulator import run_emulator
    from hw_targets.simulators.lava import run_lava
    from toolchain.training.evaluate import load_snn
    rng = np.random.default_rng(1)
    if kind == "dense":
        ckpt = dense_ckpt(rng.normal(size=(12, 6)), rng.normal(size=(3, 12)), (0.7,), coding="direct")
        ckpt.snn.input_scale = 50.0
        x = rng.normal(size=(6, 6)).astype(np.float32)
    else:
        ckpt = conv_ckpt(1)
        x = rng.normal(size=(6, 1, 8, 8)).astype(np.float32)
    path = tmp_path / "m.net"
    fx, _ = export_snn(ckpt, str(path), x)
    stock = NetxNetwork(net_config=str(path))
    assert len(stock.layers) == len(fx.layers)
    inputs = encode_for_chip(fx, x)
    lava = run_lava(str(path), inputs, progress=False)
    emu = run_emulator(fx, inputs)
    np.testing.assert_array_equal(lava.output_values, emu.output_values)
    for a, b in zip(lava.spike_counts, emu.spike_counts):
        np.testing.assert_array_equal(a, b)
    assert sum(int(c.sum()) for c in lava.spike_counts[:-1]) > 0
    model = load_snn(ckpt).double()
    with torch.no_grad():
        logits = model(torch.as_tensor(x, dtype=torch.float64), fx.timesteps).logits.numpy()
    np.testing.assert_allclose(logits, emu.output_values / 64 / fx.layers[-1].scale / fx.timesteps, rtol=1e-9)


@pytest.mark.lava
def test_lava_floating_point_run_matches_fixed_point_without_decay_rounding(tmp_path):
    """With no decays to round (i_decay 4096, v_decay 0) Lava's float models compute the fixed-point network."""
    from hw_targets.simulators.lava import run_lava
    rng = np.random.default_rng(4)
    ckpt = conv_ckpt(2)
    x = rng.normal(size=(4, 1, 8, 8)).astype(np.float32)
    path = tmp_path / "m.net"
    fx, _ = export_snn(ckpt, str(path), x)
    inputs = encode_for_chip(fx, x)
    fixed = run_lava(str(path), inputs, progress=False)
    floating = run_lava(str(path), inputs, fixed_point=False, progress=False)
    for a, b in zip(fixed.spike_counts, floating.spike_counts):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(floating.output_values, fixed.output_values / 64)
    assert sum(int(c.sum()) for c in fixed.spike_counts[:-1]) > 0

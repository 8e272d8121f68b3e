"""Loihi 2 fit check: cores, chips and the limits a layer breaks."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from hw_targets.fit import (FitReport, check_fit, format_fit_table, load_limits, raise_if_not_fit,
                                   weight_bits_needed)
from toolchain.errors import HardwareFitError
from toolchain.quantization.fixed_point import FxLayer, FxNetwork


def conv(name, cin, cout, hw, k=3, stride=1, pad=1, groups=1, value=2):
    w = np.full((cout, cin // groups, k, k), value, dtype=np.int64)
    out = (hw + 2 * pad - (k - 1) - 1) // stride + 1
    return FxLayer(name, "conv", w, (cin, hw, hw), (cout, out, out), vth=10, stride=(stride, stride),
                   padding=(pad, pad), groups=groups)


def dense(name, n_out, n_in, value=2):
    return FxLayer(name, "dense", np.full((n_out, n_in), value, dtype=np.int64), (n_in,), (n_out,), vth=10)


def net_of(*layers):
    return FxNetwork(layers[0].input_shape, list(layers), num_classes=layers[-1].neurons, timesteps=8)


def test_limits_have_sources():
    lim = load_limits("loihi2")
    assert (lim.cores_per_chip, lim.neurons_per_core, lim.synaptic_memory_per_core) == (128, 8192, 128 * 1024)
    assert lim.fan_in_axons_per_core == 4096 and lim.weight_bits == 8
    assert all(lim.sources[k] for k in ("cores_per_chip", "neurons_per_core", "fan_in_axons_per_core"))
    assert "ASSUMED" in lim.sources["fan_in_axons_per_core"]        # no public Loihi 2 figure
    assert load_limits("loihi").neurons_per_core == 1024


def test_small_network_fits():
    net = net_of(conv("c0", 1, 2, 4, stride=2), dense("fc", 10, 8))
    net.layers[1].flatten_before = True
    rep = check_fit(net)
    assert rep.fits and rep.fits_one_chip
    c0, fc = rep.layers
    assert (c0.neurons, c0.fan_in, c0.cores) == (8, 1 * 3 * 3, 1)
    assert (fc.neurons, fc.fan_in, fc.cores) == (10, 8, 1)
    # conv shared weights: the core stores 2 output channels' 3x3 kernels at 1 byte each
    assert c0.synaptic_bytes == 2 * 9
    # dense: full matrix, 10 x 8 bytes
    assert fc.synaptic_bytes == 10 * 8
    assert rep.total_cores == 2 and rep.chips == 1
    rep.raise_if_not_fit()                                          # does not raise
    assert "fits" in format_fit_table(rep)


def test_dense_fan_in_over_axon_limit_names_layer_and_limit():
    net = net_of(dense("fc0", 10, 10000))
    rep = check_fit(net)
    assert not rep.fits
    with pytest.raises(HardwareFitError) as err:
        rep.raise_if_not_fit()
    msg = str(err.value)
    assert "layer 'fc0'" in msg and "fan-in 10000 axons exceeds the 4096" in msg and "Loihi 2" in msg
    with pytest.raises(HardwareFitError, match="fc0"):
        raise_if_not_fit(net)
    assert "DOES NOT FIT" in format_fit_table(rep)


def test_weights_wider_than_8_bits_do_not_fit():
    assert weight_bits_needed(np.array([-256, 254])) == 8           # even: 8-bit mantissa x 2
    assert weight_bits_needed(np.array([255])) == 9                 # odd: no exponent, 9 bits
    layer = dense("fc1", 4, 4)
    layer.weight[0, 0] = 255
    with pytest.raises(HardwareFitError, match=r"layer 'fc1': weights need 9 bits, wider than the 8"):
        check_fit(net_of(layer)).raise_if_not_fit()


def test_single_neuron_synapses_over_core_memory():
    limits = dict(load_limits("loihi2").to_json(), synaptic_memory_per_core=64, name="tiny")
    with pytest.raises(HardwareFitError, match=r"layer 'fc': one neuron's synapses need 100 bytes, more than the 64"):
        check_fit(net_of(dense("fc", 3, 100)), limits=limits).raise_if_not_fit()


def test_dense_cores_hand_counts():
    # neuron-limited: 20000 neurons / 8192 per core
    rep = check_fit(net_of(dense("big", 20000, 10)))
    assert rep.layers[0].cores == math.ceil(20000 / 8192) == 3
    assert rep.layers[0].limited_by == "neurons per core"
    # memory-limited: 1000 inputs x 1 byte per neuron -> 131072 // 1000 = 131 neurons per core
    rep = check_fit(net_of(dense("wide", 1000, 1000)))
    assert rep.layers[0].cores == math.ceil(1000 / (131072 // 1000)) == 8
    assert rep.layers[0].limited_by == "synaptic memory"


def test_conv_neuron_limited_on_loihi2_and_loihi():
    net = net_of(conv("c", 1, 64, 32))                              # 64 x 32 x 32 = 65536 neurons
    assert check_fit(net).layers[0].cores == 65536 // 8192 == 8
    assert check_fit(net, limits="loihi").layers[0].cores == 65536 // 1024 == 64


def test_conv_axon_limited_tiling():
    # 64 input channels of 32x32, 8 output channels: 8192 neurons fit one core by count, but a core
    # holding whole planes needs 64 x 32 x 32 = 65536 input axons. A tile of 8x4 outputs reads
    # (8+2) x (4+2) x 64 = 3840 <= 4096 inputs; 8x8 would read 10 x 10 x 64 = 6400. 32/8 x 32/4 = 32 tiles.
    rep = check_fit(net_of(conv("c", 64, 8, 32)))
    row = rep.layers[0]
    assert row.fits
    assert row.cores == (32 // 8) * (32 // 4) == 32
    assert row.axons_per_core <= 4096
    assert row.limited_by.startswith("fan-in axons")
    # a single neuron's fan-in over the axon limit: 512 channels x 3 x 3 = 4608 > 4096
    with pytest.raises(HardwareFitError, match=r"layer 'deep': fan-in 4608 axons exceeds the 4096"):
        check_fit(net_of(conv("deep", 512, 4, 8))).raise_if_not_fit()


def test_conv_expanded_weights_need_more_memory_than_shared():
    net = net_of(conv("c", 16, 16, 16))                             # 4096 neurons, fan-in 144
    shared = check_fit(net).layers[0]
    expanded = check_fit(net, conv_weights="expanded").layers[0]
    assert shared.synaptic_bytes == shared.cores * 16 * 144         # the 16 kernels stored on each core
    assert expanded.synaptic_bytes == 4096 * 144
    assert expanded.cores >= math.ceil(4096 * 144 / 131072) == 5


def test_fit_report_json_round_trip():
    net = net_of(dense("fc0", 10, 10000), dense("fc1", 3, 10))
    rep = check_fit(net)
    data = json.loads(json.dumps(rep.to_json()))
    assert data["fits"] is False and data["layers"][0]["fits"] is False and data["layers"][1]["fits"] is True
    assert "fc0" in data["problems"][0]
    assert data["limits"]["sources"]["neurons_per_core"]
    assert FitReport.from_json(data).to_json() == rep.to_json()


def test_fan_out_is_a_warning_only():
    # b: 4096 inputs x 1 byte per neuron -> 131072 // 4096 = 32 neurons per core -> 1000 / 32 -> 32 cores;
    # each of a's 4096 neurons (one core) then reaches 32 cores: 4096 x 32 output axons > 4096
    b = dense("b", 1000, 4096)
    rep = check_fit(net_of(dense("a", 4096, 10), b))
    assert rep.layers[1].cores == math.ceil(1000 / 32) == 32
    assert rep.fits
    assert len(rep.warnings) == 1 and "layer 'a'" in rep.warnings[0] and str(4096 * 32) in rep.warnings[0]


def test_input_neurons_and_recurrent_synapses_are_counted(tmp_path):
    """netx's input layer with a neuron takes cores for its neurons (one axon each, no synaptic memory); a dense_rec
    layer's neurons also receive their own spikes."""
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from netx_kinds import write_dense_rec, write_sigma_delta
    from toolchain.io.netx import read_netx
    report = check_fit(read_netx(write_sigma_delta(tmp_path)))
    first = report.layers[0]
    assert first.kind == "input" and first.neurons == 128 and first.synaptic_bytes == 0 and first.cores == 1
    assert report.fits and report.total_cores == 4
    rec = check_fit(read_netx(write_dense_rec(tmp_path))).layers[0]
    assert rec.fan_in == 20 + 16

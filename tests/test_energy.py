"""Operation counting and energy per inference, checked against hand counts."""
import json

import numpy as np
import pytest

from toolchain.targets import KINDS, TARGETS
from toolchain.analysis.energy import (EnergyReport, OpCounts, conv_fanout_map, count_operations, estimate_energy,
                              fanout_map, format_energy_table, plot_energy)
from toolchain.errors import ConfigError
from toolchain.quantization.fixed_point import FxLayer, FxNetwork, SimulationResult


def conv(name, cin, cout, hw, k=3, stride=1, pad=1, dil=1, groups=1, value=2, out_hw=None):
    w = np.full((cout, cin // groups, k, k), value, dtype=np.int64)
    out = out_hw if out_hw is not None else (hw + 2 * pad - dil * (k - 1) - 1) // stride + 1
    return FxLayer(name, "conv", w, (cin, hw, hw), (cout, out, out), vth=10, stride=(stride, stride),
                   padding=(pad, pad), dilation=(dil, dil), groups=groups)


def dense(name, weight, **kw):
    weight = np.asarray(weight, dtype=np.int64)
    return FxLayer(name, "dense", weight, (weight.shape[1],), (weight.shape[0],), vth=10, **kw)


def result(net, input_counts, layer_counts, samples=1, T=5):
    return SimulationResult(backend="hand", samples=samples, timesteps=T, predictions=np.zeros(samples),
                            labels=None, layer_names=[l.name for l in net.layers],
                            spike_counts=[np.asarray(c, dtype=np.int64) for c in layer_counts],
                            input_spike_counts=np.asarray(input_counts, dtype=np.int64))


def brute_fanout(layer):
    """Independent fan-out count: loop over every output neuron and kernel tap."""
    w = layer.weight
    cout, cpg, kh, kw = w.shape
    cin, h, wd = layer.input_shape
    _, ho, wo = layer.output_shape
    opg = cout // layer.groups
    fan = np.zeros((cin, h, wd), dtype=np.int64)
    for o in range(cout):
        g = o // opg
        for oy in range(ho):
            for ox in range(wo):
                for ci in range(cpg):
                    for ky in range(kh):
                        for kx in range(kw):
                            y = oy * layer.stride[0] - layer.padding[0] + ky * layer.dilation[0]
                            x = ox * layer.stride[1] - layer.padding[1] + kx * layer.dilation[1]
                            if 0 <= y < h and 0 <= x < wd and w[o, ci, ky, kx] != 0:
                                fan[g * cpg + ci, y, x] += 1
    return fan


# ------------------------------------------------------------------ fan-out maps, hand counts

def test_conv_fanout_3x3_pad1_stride1_corner_edge_interior():
    layer = conv("c", 1, 2, 4)                       # 1x4x4 -> 2x4x4
    fan = conv_fanout_map(layer)[0]
    # corner: the 3x3 windows of outputs (0,0),(0,1),(1,0),(1,1) cover it -> 2*2 positions x 2 channels
    assert fan[0, 0] == 2 * 2 * 2 == 8
    # edge (0,1): 2 rows x 3 columns of outputs, x 2 channels
    assert fan[0, 1] == 2 * 3 * 2 == 12
    # interior: 3x3 outputs x 2 channels
    assert fan[1, 1] == 3 * 3 * 2 == 18
    r = np.array([2, 3, 3, 2])                       # outputs per input row (and column)
    np.testing.assert_array_equal(fan, np.outer(r, r) * 2)
    # every connection counted once: 2 channels x (sum of valid fan-ins) = 2 * (2+3+3+2)**2
    assert fan.sum() == 2 * 10 ** 2


def test_conv_fanout_pad1_stride2():
    layer = conv("c", 1, 2, 4, stride=2)             # 1x4x4 -> 2x2x2
    assert layer.output_shape == (2, 2, 2)
    fan = conv_fanout_map(layer)[0]
    # output row oy reads input rows 2*oy-1 .. 2*oy+1: row 0 <- oy 0; row 1 <- oy 0 and 1; rows 2, 3 <- oy 1
    r = np.array([1, 2, 1, 1])
    np.testing.assert_array_equal(fan, np.outer(r, r) * 2)
    assert fan[0, 0] == 1 * 1 * 2
    assert fan[1, 1] == 2 * 2 * 2
    assert fan[3, 3] == 1 * 1 * 2
    np.testing.assert_array_equal(fan[None], brute_fanout(layer))


def test_conv_fanout_dilation_groups_matches_hand_and_brute_force():
    layer = conv("c", 2, 4, 5, k=3, pad=2, dil=2, groups=2)   # 2x5x5 -> 4x5x5, 2 out channels per group
    assert layer.output_shape == (4, 5, 5)
    fan = conv_fanout_map(layer)
    # input row y feeds output rows oy = y + 2 - 2k, k in 0..2, within 0..4:
    # y=0: {2,0} y=1: {3,1} y=2: {4,2,0} y=3: {3,1} y=4: {4,2}
    r = np.array([2, 2, 3, 2, 2])
    for c in range(2):                               # each input channel reaches the 2 channels of its group
        np.testing.assert_array_equal(fan[c], np.outer(r, r) * 2)
    assert fan[0, 2, 2] == 3 * 3 * 2 == 18
    np.testing.assert_array_equal(fan, brute_fanout(layer))


def test_conv_zero_weights_are_not_synapses_unless_asked():
    layer = conv("c", 1, 2, 4)
    layer.weight[1] = 0                              # second output channel: all weights zero
    layer.weight[0, 0, 0, 0] = 0                     # and one tap of the first
    fan = conv_fanout_map(layer)[0]
    np.testing.assert_array_equal(fan[None], brute_fanout(layer))
    # interior input (1,1): 3x3 outputs of channel 0, one tap missing -> 9 - 1
    assert fan[1, 1] == 9 - 1
    full = conv_fanout_map(layer, count_zero_weights=True)[0]
    assert full[1, 1] == 3 * 3 * 2


def test_conv_fanout_asymmetric_random_kernel_matches_brute_force_and_torch_gradient():
    rng = np.random.default_rng(0)
    w = rng.integers(-2, 3, size=(6, 2, 3, 2)) * 2               # zeros scattered through the kernel
    layer = FxLayer("odd", "conv", w, (6, 7, 6), (6, 3, 8), vth=10, stride=(2, 1), padding=(0, 2),
                    dilation=(1, 2), groups=3)
    fan = conv_fanout_map(layer)
    np.testing.assert_array_equal(fan, brute_fanout(layer))
    torch = pytest.importorskip("torch")
    x = torch.zeros((1, 6, 7, 6), dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.conv2d(x, torch.from_numpy((w != 0).astype(np.float64)), stride=(2, 1),
                                   padding=(0, 2), dilation=(1, 2), groups=3)
    assert tuple(y.shape[1:]) == (6, 3, 8)
    y.sum().backward()
    np.testing.assert_array_equal(fan, x.grad[0].numpy().astype(np.int64))


def test_conv_output_shape_mismatch_is_a_config_error():
    layer = conv("bad", 1, 2, 4, stride=2, out_hw=3)
    with pytest.raises(ConfigError, match="layer 'bad'"):
        conv_fanout_map(layer)


def test_dense_fanout_counts_nonzero_weights_per_column():
    layer = dense("fc", [[2, 0, 4], [0, 0, 2], [-2, 0, 2]])
    np.testing.assert_array_equal(fanout_map(layer), [2, 0, 3])
    np.testing.assert_array_equal(fanout_map(layer, count_zero_weights=True), [3, 3, 3])


# ------------------------------------------------------------------ counting

def small_net(coding="poisson", input_bits=0):
    c0 = conv("c0", 1, 2, 4, stride=2)               # 1x4x4 -> 2x2x2, 8 neurons, fan-in 9
    fc = dense("fc", [[2, 0, 4, 0, 0, 0, 0, 0],       # 2 x 8, columns' non-zeros: 2,0,2,1,0,0,0,1
                      [2, 0, 2, 2, 0, 0, 0, -2]], flatten_before=True, is_output=True)
    return FxNetwork((1, 4, 4), [c0, fc], num_classes=2, timesteps=5, input_coding=coding, input_bits=input_bits)


def small_result(net, samples=1):
    inp = np.zeros((1, 4, 4), dtype=np.int64)
    inp[0, 0, 0], inp[0, 1, 1], inp[0, 3, 3] = 3, 2, 1
    hidden = np.zeros((2, 2, 2), dtype=np.int64)
    hidden[0, 0, 0], hidden[0, 0, 1], hidden[1, 1, 1] = 4, 1, 2   # flat indices 0, 1, 7
    out = np.array([3, 1])
    return result(net, inp * samples, [hidden * samples, out * samples], samples=samples, T=5)


def test_count_operations_hand_counts():
    net = small_net()
    ops = count_operations(net, small_result(net))
    c0, fc = ops.layers
    # c0: fan-outs (0,0): 1*1*2, (1,1): 2*2*2, (3,3): 1*1*2
    assert c0.synaptic_ops == 3 * 2 + 2 * 8 + 1 * 2 == 24
    assert c0.input_events == 3 + 2 + 1
    assert c0.spikes == 4 + 1 + 2
    assert c0.neuron_updates == 8 * 5
    assert c0.ann_macs == 8 * 9
    assert c0.chip_macs == 0 and c0.input_kind == "spikes"
    # fc: inputs 0, 1, 7 spike 4, 1, 2 times; their non-zero fan-outs are 2, 0, 1
    assert fc.synaptic_ops == 4 * 2 + 1 * 0 + 2 * 1 == 10
    assert fc.spikes == 4
    assert fc.neuron_updates == 2 * 5
    assert fc.ann_macs == 2 * 8
    assert ops.total("synaptic_ops") == 34


def test_counts_are_per_inference():
    net = small_net()
    one = count_operations(net, small_result(net, samples=1))
    three = count_operations(net, small_result(net, samples=3))     # counts summed over 3 samples
    assert [l.synaptic_ops for l in three.layers] == [l.synaptic_ops for l in one.layers] == [24, 10]
    assert three.layers[0].spikes == 7


def test_count_zero_weights_option_counts_full_fanout():
    net = small_net()
    ops = count_operations(net, small_result(net), count_zero_weights=True)
    assert ops.layers[1].synaptic_ops == (4 + 1 + 2) * 2        # every column has 2 synapses
    assert ops.layers[0].synaptic_ops == 24                     # conv kernel had no zeros


def test_direct_coded_first_layer_is_counted_as_macs():
    net = small_net(coding="direct")
    ops = count_operations(net, small_result(net))
    c0, fc = ops.layers
    assert c0.input_kind == "direct"
    assert c0.synaptic_ops == 0
    assert c0.chip_macs == 8 * 9 * 5                # neurons x fan-in x T
    assert "MAC" in c0.note
    assert fc.input_kind == "spikes" and fc.synaptic_ops == 10 and fc.chip_macs == 0
    table = format_energy_table(estimate_energy(ops, "loihi"))
    assert "c0 *" in table and "counted as MACs" in table


def test_graded_input_spikes_are_booked_as_macs():
    net = small_net(input_bits=8)
    c0 = count_operations(net, small_result(net)).layers[0]
    assert c0.input_kind == "graded" and c0.synaptic_ops == 0 and c0.chip_macs == 24


def test_shape_mismatch_is_a_config_error():
    net = small_net()
    res = small_result(net)
    res.input_spike_counts = np.zeros((1, 5, 5))
    with pytest.raises(ConfigError, match="c0"):
        count_operations(net, res)
    res = small_result(net)
    res.spike_counts = res.spike_counts[:1]
    with pytest.raises(ConfigError, match="2"):
        count_operations(net, res)


# ------------------------------------------------------------------ energy arithmetic

@pytest.fixture
def ops():
    net = small_net()
    return count_operations(net, small_result(net))


def test_loihi_energy_hand_worked(ops):
    rep = estimate_energy(ops, "loihi")
    c0, fc = rep.layers
    # synops x 23.6 + inactive updates x 52 + active (spiking) updates x 81 + spikes x 1.7
    assert c0.snn_pj == pytest.approx(24 * 23.6 + (40 - 7) * 52 + 7 * 81 + 7 * 1.7)
    assert fc.snn_pj == pytest.approx(10 * 23.6 + (10 - 4) * 52 + 4 * 81 + 4 * 1.7)
    # ANN beside it: MACs x 4.6 pJ (FP32, Horowitz 45 nm)
    assert c0.ann_pj == pytest.approx(72 * 4.6)
    assert fc.ann_pj == pytest.approx(16 * 4.6)
    assert rep.snn_total_pj == pytest.approx(c0.snn_pj + fc.snn_pj)
    assert not rep.snn_is_upper_bound


def test_loihi2_is_an_upper_bound_from_hala_point(ops):
    rep = estimate_energy(ops, "loihi2")
    syn, neu = 2600 / 380e12 * 1e12, 2600 / 240e12 * 1e12      # pJ
    assert syn == pytest.approx(6.842, abs=1e-3)
    assert rep.layers[0].snn_pj == pytest.approx(24 * syn + 40 * neu)
    assert rep.snn_total_pj == pytest.approx(34 * syn + 50 * neu)
    assert rep.snn_is_upper_bound
    assert "UPPER BOUND" in format_energy_table(rep)


def test_cmos45nm_ac_versus_mac(ops):
    fp = estimate_energy(ops, "cmos45nm")
    assert fp.snn_total_pj == pytest.approx(34 * 0.9)           # accumulates, FP32 add
    assert fp.ann_total_pj == pytest.approx(88 * 4.6)           # MACs, FP32
    i8 = estimate_energy(ops, "cmos45nm", precision="int8")
    assert i8.snn_total_pj == pytest.approx(34 * 0.03)
    assert i8.ann_total_pj == pytest.approx(88 * 0.23)
    with pytest.raises(ConfigError):
        estimate_energy(ops, "cmos45nm", precision="fp16")


def test_memory_aware_adds_memory_and_addressing(ops):
    rep = estimate_energy(ops, "memory_aware")
    c0 = rep.layers[0]
    # per synop: AC 0.1 + address 0.1 + weight read 5 + potential read 5 + write 5
    # per neuron update: 0.1 + potential read 5 + write 5
    assert c0.snn_pj == pytest.approx(24 * (0.1 + 0.1 + 5 + 5 + 5) + 40 * (0.1 + 5 + 5))
    # ANN on the same model: per MAC 0.3 + weight read 5 + input read 5; per output neuron one write
    assert c0.ann_pj == pytest.approx(72 * (0.3 + 5 + 5) + 8 * 5)


def test_direct_layer_energy_uses_macs():
    net = small_net(coding="direct")
    ops = count_operations(net, small_result(net))
    cm = estimate_energy(ops, "cmos45nm")
    assert cm.layers[0].snn_pj == pytest.approx(8 * 9 * 5 * 4.6)     # chip MACs x FP32 MAC
    lo = estimate_energy(ops, "loihi")
    assert lo.layers[0].snn_pj == pytest.approx(360 * 23.6 + 33 * 52 + 7 * 81 + 7 * 1.7)


# ------------------------------------------------------------------ targets, JSON, table, plot

KNOWN_TARGETS = ("loihi", "loihi2", "cmos45nm", "memory_aware")


def load_target(name):
    return TARGETS.get(name).energy()


def test_targets_load_and_every_constant_is_sourced():
    assert TARGETS.names() == list(KNOWN_TARGETS)
    for name in KNOWN_TARGETS:
        t = load_target(name)
        assert t.constants and t.sources
        for key, c in t.constants.items():
            assert c.unit == "pJ" and c.source and c.kind in KINDS, (name, key)
    assert {c.kind for c in load_target("loihi2").constants.values()} == {"derived-bound"}
    assert load_target("loihi").pj("synop") == 23.6
    assert load_target("cmos45nm").pj("fp32_mac") == pytest.approx(0.9 + 3.7)


def test_unknown_target_lists_known_ones():
    with pytest.raises(ConfigError) as err:
        load_target("truenorth")
    for name in KNOWN_TARGETS:
        assert name in str(err.value)


def test_json_round_trip(ops):
    for name in KNOWN_TARGETS:
        rep = estimate_energy(ops, name)
        data = json.loads(json.dumps(rep.to_json()))
        assert data["totals"]["snn_pj"] == pytest.approx(rep.snn_total_pj)
        assert [row["name"] for row in data["layers"]] == ["c0", "fc"]
        assert data["sources"]
        assert EnergyReport.from_json(data).to_json() == rep.to_json()
    data = json.loads(json.dumps(ops.to_json()))
    assert OpCounts.from_json(data).to_json() == ops.to_json()
    assert data["totals"]["synaptic_ops"] == 34


def test_table_has_layers_and_totals(ops):
    text = format_energy_table(estimate_energy(ops, "loihi"))
    for word in ("c0", "fc", "total", "synaptic ops", "neuron updates", "SNN energy", "ANN energy", "Davies"):
        assert word in text
    total_line = [l for l in text.splitlines() if l.startswith("total")][0]
    assert "34" in total_line and "50" in total_line


def test_plot_written_atomically(tmp_path, ops):
    out = plot_energy(estimate_energy(ops, "loihi2"), tmp_path / "sub" / "energy.png")
    data = out.read_bytes()
    assert len(data) > 1000
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["energy.png"]     # no temp file left

"""The front end's stages: models, IR, conversion thresholds by hand, lowering, QAT vs emulator."""
import numpy as np
import pytest
import torch

from models import build_model
from toolchain.io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from toolchain.ir.passes import fold_batch_norms
from toolchain.training.convert import convert
from toolchain.errors import CheckpointError, LoweringError, ModelError, ShapeError
from toolchain.ir import AvgPool2d, Conv2d, Flatten, Linear, Network, Spike
from toolchain.neurons import run_neurons
from toolchain.neurons.subtractive import SubtractiveParams, subtractive_step
from toolchain.snn import SnnConfig, SnnModel
from toolchain.ir.torch_net import AnnModel


def tiny_net():
    return Network((Linear("fc1", 2, 2), Spike("s1"), Linear("fc2", 2, 2), Spike("s2"), Linear("out", 2, 2)), (2,), 2)


def tiny_ann():
    net = tiny_net()
    ann = AnnModel(net)
    with torch.no_grad():
        ann.layers["fc1"].weight.copy_(torch.tensor([[1.0, 1.0], [0.5, -1.0]]))
        ann.layers["fc2"].weight.copy_(torch.tensor([[2.0, 1.0], [1.0, 3.0]]))
        ann.layers["out"].weight.copy_(torch.eye(2))
    return Checkpoint("ann", net, ann.state_dict(), {"name": "tiny"})


def test_spike_thresholds_by_hand(tiny_dense_data):
    # fc1 current = W1 x = [1.5, 0] every step -> theta1 = 0.7 * 1.5 = 1.05; neuron 1 fires every step
    # (v 1.5, 1.95, 2.4 stays above 1.05), neuron 2 never: fc2 current = W2 [1, 0] = [2, 1] -> theta2 = 0.7 * 2 = 1.4
    snn = convert(tiny_ann(), tiny_dense_data, timesteps=3, scale=0.7, coding="direct", calib_samples=1)
    assert snn.snn.thresholds == pytest.approx({"s1": 1.05, "s2": 1.4})


def test_activation_thresholds_by_hand(tiny_dense_data):
    # ANN pre-activations: fc1 [1.5, 0]; fc2 W2 relu([1.5, 0]) = [3, 1.5] -> 0.7 * 1.5 and 0.7 * 3 in ANN units.
    # s1's spikes stand for 1.05 of the ANN's activation, so fc2 receives the ANN's current / 1.05: s2's threshold,
    # in those units, is 2.1 / 1.05 = 2
    snn = convert(tiny_ann(), tiny_dense_data, timesteps=3, method="activation", scale=0.7, coding="direct", calib_samples=1)
    assert snn.snn.thresholds == pytest.approx({"s1": 1.05, "s2": 2.0})


def test_percentile_threshold(tiny_dense_data):
    snn = convert(tiny_ann(), tiny_dense_data, timesteps=3, scale=1.0, percentile=50, coding="direct", calib_samples=1)
    # fc1 currents over 3 steps x 2 neurons: [1.5, 0] x 3 -> median 0.75
    assert snn.snn.thresholds["s1"] == pytest.approx(0.75)


def test_unknown_model_lists_known_ones():
    with pytest.raises(ModelError, match="known models: .*vgg-small"):
        build_model("vgg7", (1, 8, 8))


@pytest.mark.parametrize("name", ["vgg-small", "resnet-small"])
def test_small_models_run_as_ann_and_snn(name):
    net = build_model(name, (1, 8, 8), 10)
    x = torch.randn(3, 1, 8, 8)
    assert AnnModel(net)(x).shape == (3, 10)
    thresholds = {s.name: 1.0 for s in net.spiking_layers}
    out = SnnModel(net, SnnConfig(thresholds=thresholds, coding="direct", timesteps=4))(x)
    assert out.logits.shape == (3, 10) and set(out.spike_counts) == set(thresholds)


@pytest.mark.parametrize("name,shape", [("vgg5", (3, 32, 32)), ("vgg9", (3, 32, 32)), ("vgg11", (3, 32, 32)),
                                        ("vgg16", (3, 32, 32)), ("resnet20", (3, 32, 32)), ("resnet18", (3, 32, 32))])
def test_paper_models_build_with_consistent_shapes(name, shape):
    net = build_model(name, shape, 10)
    assert net.shapes[-1] == (10,)
    assert all(not getattr(l, "bias", False) for l in net.layers)


def test_shape_error_names_the_layer():
    with pytest.raises(ShapeError, match="layer 'fc'"):
        Network((Flatten("f"), Linear("fc", 10, 2)), (1, 3, 3), 2)


def pooled_net():
    return Network((Conv2d("c1", 1, 4, 3, 1, 1), Spike("s1"), AvgPool2d("p1", 2), Conv2d("c2", 4, 6, 3, 1, 1), Spike("s2"),
                    AvgPool2d("p2", 2), Flatten("f"), Linear("fc", 24, 8), Spike("s3"), Linear("out", 8, 3)), (1, 8, 8), 3)


def run_lowered_if(chain, x, T, leak=1.0):
    """The lowered chain simulated with the same IF neurons (float, no quantization)."""
    h = x.unsqueeze(0).expand(T, *x.shape)
    for layer in chain:
        a = torch.stack([layer.synapse(h[t]) for t in range(T)])
        if layer.threshold is None:
            return a.sum(0) / T
        h, _ = run_neurons(a, subtractive_step, SubtractiveParams(layer.threshold, leak), lambda z, dt: (z > 0).to(z.dtype))


def test_pooling_folded_into_next_layer_gives_the_same_outputs():
    torch.manual_seed(0)
    net = pooled_net()
    thresholds = {"s1": 0.5, "s2": 0.4, "s3": 0.3}
    model = SnnModel(net, SnnConfig(thresholds=thresholds, coding="direct", timesteps=6)).double()
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    ref = model(x).logits
    chain = model.lowered()
    assert [l.kind for l in chain] == ["conv", "conv", "dense", "dense"]
    assert chain[1].stride == (2, 2) and chain[1].padding == (2, 2) and chain[1].weight.shape[-1] == 6
    assert chain[2].flatten_before and chain[2].weight.shape == (8, 6 * 4 * 4)
    torch.testing.assert_close(run_lowered_if(chain, x, 6), ref)
    assert float(model(x).spike_counts["s2"].sum()) > 0


def test_lowering_carries_residual_blocks_through_relay_channels():
    net = build_model("resnet-small", (1, 8, 8), 10)
    model = SnnModel(net, SnnConfig(thresholds={s.name: 1.0 for s in net.spiking_layers}))
    chain = model.lowered()
    assert [l.name for l in chain] == ["stem", "layer1_0_conv1", "layer1_0_conv2", "layer2_0_conv1", "layer2_0_conv2",
                                       "out"]
    assert [(l.relays_in, l.relays_out) for l in chain] == [(0, 0), (0, 16), (16, 0), (0, 16), (16, 0), (0, 0)]


def test_batch_norm_folding_keeps_ann_outputs():
    torch.manual_seed(1)
    net = build_model("vgg-small", (1, 8, 8), 10, batch_norm=True)
    ann = AnnModel(net)
    for m in ann.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    ann.eval()
    x = torch.randn(4, 1, 8, 8)
    folded_net, state = fold_batch_norms(net, ann.state_dict(), prefix="layers.")
    folded = AnnModel(folded_net)
    folded.load_state_dict({k: v for k, v in state.items()})
    folded.eval()
    torch.testing.assert_close(folded(x), ann(x), atol=1e-5, rtol=1e-5)
    assert not any(type(l).__name__ == "BatchNorm2d" for l in folded_net.layers)


def test_checkpoint_kind_is_checked(tmp_path):
    path = tmp_path / "ann.pt"
    save_checkpoint(tiny_ann(), str(path))
    assert load_checkpoint(str(path), "ann").network == tiny_net()
    with pytest.raises(CheckpointError, match="is an ANN checkpoint, this command needs an SNN one"):
        load_checkpoint(str(path), "snn")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(str(tmp_path / "junk.pt"))


def test_a_checkpoint_from_before_the_typed_config_loads(tmp_path):
    """Older checkpoints hold the SNN settings as a plain dict without a version, input_scale 1.0 for "not set"; they
    load into the typed SnnConfig, and are written back as its versioned dict."""
    ann = tiny_ann()
    old = {"thresholds": {"s1": 1.5, "s2": 0.5}, "neuron": "loihi-cuba", "leak": 1.0, "coding": "direct",
           "timesteps": 7, "surrogate": {"name": "linear"}, "i_decay": 1024, "v_decay": 128, "input_scale": 1.0}
    payload = {**Checkpoint("snn", ann.network, ann.state_dict, {"name": "tiny"}).to_payload(), "snn": old}
    torch.save(payload, tmp_path / "old.pt")
    ckpt = load_checkpoint(str(tmp_path / "old.pt"), "snn")
    assert isinstance(ckpt.snn, SnnConfig) and ckpt.snn.input_scale is None
    assert (ckpt.snn.neuron, ckpt.snn.coding, ckpt.snn.timesteps, ckpt.snn.i_decay) == ("loihi-cuba", "direct", 7, 1024)
    assert ckpt.snn.thresholds == old["thresholds"] and ckpt.snn.deployed_input_scale() == 1.0
    save_checkpoint(ckpt, str(tmp_path / "new.pt"))
    stored = torch.load(tmp_path / "new.pt", weights_only=False)["snn"]
    assert stored["version"] == SnnConfig.VERSION and stored["input_scale"] is None
    assert load_checkpoint(str(tmp_path / "new.pt")).snn == ckpt.snn
    scaled = SnnConfig.from_dict({**ckpt.snn.to_dict(), "input_scale": 1.0})       # a versioned 1.0 is a scale
    assert scaled.input_scale == 1.0


def test_qat_forward_equals_the_bit_exact_emulator(tiny_dense_data):
    """The toolchain's loihi-cuba model (what training sees) computes what the deployed network computes."""
    from hw_targets.simulators.emulator import run_emulator
    from toolchain.deploy import encode_for_chip
    from toolchain.quantization.quantize import quantize_snn
    torch.manual_seed(2)
    net = pooled_net()
    ann = AnnModel(net)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 1, 8, 8)).astype(np.float32)
    from toolchain.data import Dataset
    data = Dataset("rand", x, np.zeros(24, np.int64), x, np.zeros(24, np.int64), ["a", "b", "c"], (1, 8, 8), (0.0,), (1.0,))
    snn = convert(Checkpoint("ann", net, ann.state_dict(), {"name": "rand"}), data, timesteps=6, scale=0.6,
                  coding="direct", neuron="loihi-cuba", calib_samples=24)
    snn.snn.input_scale = 127 / float(np.abs(x).max())
    fx, _ = quantize_snn(snn, x)
    model = SnnModel(net, SnnConfig.from_dict(snn.snn.to_dict())).double()
    model.load_state_dict(snn.state_dict)
    with torch.no_grad():
        out = model(torch.as_tensor(x, dtype=torch.float64), 6)
    emu = run_emulator(fx, encode_for_chip(fx, x, timesteps=6), np.zeros(24, np.int64))
    # readout: the emulator's voltage is 64 * accumulated input; the model's logits are that / (scale * T)
    expected = emu.output_values / 64 / fx.layers[-1].scale / 6
    np.testing.assert_allclose(out.logits.numpy(), expected, rtol=1e-9, atol=1e-9)
    for name, counts in zip(["s1", "s2", "s3"], emu.spike_counts):
        assert float(out.spike_counts[name].sum()) == float(counts.sum()) > 0


def test_conversion_folds_batch_norm_after_linear_layers_too():
    torch.manual_seed(3)
    net = build_model("vgg-small", (1, 8, 8), 10, batch_norm=True)
    assert any(type(l).__name__ == "BatchNorm1d" for l in net.layers)
    ann = AnnModel(net)
    for m in ann.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    ann.eval()
    folded_net, state = fold_batch_norms(net, ann.state_dict(), prefix="layers.")
    assert not any("BatchNorm" in type(l).__name__ for l in folded_net.layers)
    folded = AnnModel(folded_net)
    folded.load_state_dict(state)
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(folded.eval()(x), ann(x), atol=1e-5, rtol=1e-5)

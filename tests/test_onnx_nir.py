"""Bring your own ANN (ONNX import), the ANN as ONNX, and the SNN as NIR: imported models compute what
the originals compute and go through the pipeline; NIR files read back node for node and simulate
to the toolchain's SNN under the documented conventions; bad inputs give one clear line."""
import os
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
nir = pytest.importorskip("nir")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from toolchain.io.checkpoint import Checkpoint, load_checkpoint  # noqa: E402
from toolchain.cli import main  # noqa: E402
from toolchain.convert import convert  # noqa: E402
from toolchain.data import load_dataset  # noqa: E402
from toolchain.coding import InputEncoder  # noqa: E402
from toolchain.deploy import export_snn  # noqa: E402
from toolchain.errors import ExportError, ImportModelError  # noqa: E402
from toolchain.ir import (AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, Network, Residual, Spike,  # noqa: E402
                          iter_layers)
from toolchain.io.netx import read_netx  # noqa: E402
from toolchain.io.nir import NO_LEAK_STEPS, NirOptions, export_nir  # noqa: E402
from toolchain.io.onnx import export_onnx, import_onnx  # noqa: E402
from toolchain.quantization.quantize import quantize_snn  # noqa: E402
from toolchain.snn import SnnConfig, SnnModel  # noqa: E402
from toolchain.ir.torch_net import AnnModel  # noqa: E402


# -- models in plain torch (not the toolchain's modules) -----------------------------------------
def _randomize_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def vgg_style():
    torch.manual_seed(0)
    return _randomize_bn(nn.Sequential(
        nn.Conv2d(1, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2), nn.Dropout(0.2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 10)))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNetStyle(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.block1, self.block2 = BasicBlock(8, 8, 1), BasicBlock(8, 16, 2)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.block2(self.block1(self.stem(x)))), 1))


def resnet_style():
    torch.manual_seed(0)
    return _randomize_bn(ResNetStyle())


def to_onnx(model, path, shape=(1, 8, 8), fold=False):
    """Exported with dynamic batch; fold=False keeps BatchNormalization nodes after convs."""
    torch.onnx.export(model, torch.randn(2, *shape), str(path), opset_version=17, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, do_constant_folding=fold)
    return str(path)


def ann_of(ckpt):
    model = AnnModel(ckpt.network)
    model.load_state_dict(ckpt.state_dict)
    return model.eval()


def assert_same_outputs(original, path, ckpt, shape=(1, 8, 8)):
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours, ref = ann_of(ckpt)(x), original(x)
    runtime = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ort_out = runtime.run(None, {runtime.get_inputs()[0].name: x.numpy()})[0]
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)
    assert np.allclose(ours.numpy(), ort_out, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit=48)


@pytest.fixture(scope="module")
def vgg_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("vgg")
    model = vgg_style()
    return model, to_onnx(model, d / "vgg.onnx")


@pytest.fixture(scope="module")
def resnet_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("resnet")
    model = resnet_style()
    return model, to_onnx(model, d / "resnet.onnx")


# -- ONNX import ---------------------------------------------------------------------------------
def test_vgg_imports_with_the_original_outputs(vgg_files):
    model, path = vgg_files
    ckpt = import_onnx(path)
    types = [type(l).__name__ for l in ckpt.network.layers]
    # (torch leaves eval-mode dropout out of the ONNX graph; Dropout nodes are tested on a hand-written graph)
    assert types == ["Conv2d", "Spike", "AvgPool2d", "Conv2d", "Spike", "AvgPool2d", "Flatten", "Linear", "Spike", "Linear"]
    assert ckpt.kind == "ann" and ckpt.network.input_shape == (1, 8, 8) and ckpt.network.num_classes == 10
    # both batch norms were folded (the conv's and the dense layer's), giving those layers a bias
    assert ckpt.network.layers[0].bias and ckpt.network.layers[7].bias
    notes = ckpt.training["import"]["notes"]
    assert sum("batch norm" in n for n in notes) == 2 and not ckpt.training["import"]["warnings"]
    assert set(ckpt.state_dict) == {f"layers.{n}.{p}" for n in ("conv1", "conv2", "fc1", "fc2") for p in ("weight", "bias")}
    assert_same_outputs(model, path, ckpt)


def test_imported_vgg_converts_and_exports_to_netx(vgg_files, digits, tmp_path):
    ann = import_onnx(vgg_files[1])
    snn = convert(ann, digits, timesteps=6, calib_samples=16, coding="direct")
    out = SnnModel(snn.network, SnnConfig.from_dict(snn.snn.to_dict()))
    out.load_state_dict(snn.state_dict)
    assert out(torch.as_tensor(digits.test_x[:4])).logits.shape == (4, 10)
    fx, report = export_snn(snn, str(tmp_path / "vgg.net"), digits.train_x)
    back = read_netx(str(tmp_path / "vgg.net"))
    assert [l.kind for l in back.layers] == ["conv", "conv", "dense", "dense"]
    assert all(l.bias is not None for l in back.layers)          # imported biases go to the chip


def test_resnet_imports_with_residual_blocks_and_runs_as_snn(resnet_files, digits):
    model, path = resnet_files
    ckpt = import_onnx(path)
    blocks = [l for l in ckpt.network.layers if isinstance(l, Residual)]
    assert len(blocks) == 2
    assert [type(l).__name__ for l in blocks[0].body] == ["Conv2d", "Spike", "Conv2d"] and blocks[0].shortcut == ()
    (down,) = blocks[1].shortcut
    assert isinstance(down, Conv2d) and (down.kernel_size, down.stride, down.padding) == (1, 2, 0)
    after = [ckpt.network.layers[ckpt.network.layers.index(b) + 1] for b in blocks]
    assert all(isinstance(l, Spike) for l in after)                # the Relu after each Add
    pool = [l for l in ckpt.network.layers if isinstance(l, AvgPool2d)]
    assert [p.kernel_size for p in pool] == [4]                    # GlobalAveragePool of the 4x4 map
    assert not ckpt.training["import"]["warnings"]                # residual blocks go to netx (relay channels)
    assert_same_outputs(model, path, ckpt)
    snn = convert(ckpt, digits, timesteps=4, calib_samples=8, coding="direct")
    out = SnnModel(snn.network, SnnConfig.from_dict(snn.snn.to_dict()))
    out.load_state_dict(snn.state_dict)
    res = out(torch.as_tensor(digits.test_x[:3]))
    assert res.logits.shape == (3, 10) and set(res.spike_counts) == {s.name for s in snn.network.spiking_layers}


class ViewSoftmax(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, 2, 1), nn.Linear(64, 3)

    def forward(self, x):
        x = F.relu(self.conv(x))
        return torch.softmax(self.fc(x.view(x.size(0), -1)), 1)


def test_computed_reshape_and_final_softmax(tmp_path):
    torch.manual_seed(0)
    model = ViewSoftmax().eval()
    path = to_onnx(model, tmp_path / "view.onnx")       # x.view(x.size(0), -1) -> Shape/Gather/Concat/Reshape
    ckpt = import_onnx(path, num_classes=3)
    assert [type(l).__name__ for l in ckpt.network.layers] == ["Conv2d", "Spike", "Flatten", "Linear"]
    assert any("Softmax" in n and "dropped" in n for n in ckpt.training["import"]["notes"])
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        logits = model.fc(F.relu(model.conv(x)).flatten(1))
        assert torch.allclose(ann_of(ckpt)(x), logits, atol=1e-5, rtol=0)
    with pytest.raises(ImportModelError, match="has 3 outputs, but 5 classes"):
        import_onnx(path, num_classes=5)


def _graph_model(nodes, inits, in_shape, out_shape, opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", *in_shape])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", *out_shape])],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def test_hand_written_graph_matmul_bias_clip_reducemean_gemm(tmp_path):
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(2, 1, 3, 3)), rng.normal(size=(1, 2, 1, 1))
    m1, a1 = rng.normal(size=(2, 5)), rng.normal(size=(5,))
    g2, c2 = rng.normal(size=(5, 3)), rng.normal(size=(3,))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Add", ["c", "b"], ["cb"], name="conv_bias"),
             helper.make_node("Clip", ["cb", "zero"], ["r"], name="clip"),
             helper.make_node("ReduceMean", ["r"], ["m"], axes=[2, 3], keepdims=0, name="gap"),
             helper.make_node("MatMul", ["m", "m1"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "a1"], ["ha"], name="mm_bias"),
             helper.make_node("Relu", ["ha"], ["hr"], name="relu"),
             helper.make_node("Dropout", ["hr", "ratio"], ["hd"], name="drop"),
             helper.make_node("Gemm", ["hd", "g2", "c2"], ["y"], alpha=0.5, beta=2.0, name="gemm")]
    model = _graph_model(nodes, {"w": w, "b": b, "zero": 0.0, "m1": m1, "a1": a1, "g2": g2, "c2": c2, "ratio": 0.25},
                         (1, 4, 4), (3,), opset=17)
    path = str(tmp_path / "hand.onnx")
    onnx.save(model, path)
    ckpt = import_onnx(path)
    assert [type(l).__name__ for l in ckpt.network.layers] == ["Conv2d", "Spike", "AvgPool2d", "Flatten", "Linear",
                                                              "Spike", "Dropout", "Linear"]
    assert ckpt.network.layers[6].p == pytest.approx(0.25) and ckpt.network.layers[0].bias
    x = np.random.default_rng(1).normal(size=(3, 1, 4, 4)).astype(np.float32)
    runtime = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ours = ann_of(ckpt)(torch.as_tensor(x)).numpy()
    assert np.allclose(ours, runtime.run(None, {"x": x})[0], atol=1e-5, rtol=0)


# -- ONNX export ---------------------------------------------------------------------------------
def test_export_onnx_of_ann_and_snn_round_trips(vgg_files, digits, tmp_path):
    ann = import_onnx(vgg_files[1])
    snn = convert(ann, digits, timesteps=4, calib_samples=8, coding="direct")
    for ckpt, name in ((ann, "ann.onnx"), (snn, "snn.onnx")):
        path = str(tmp_path / name)
        export_onnx(ckpt, path)
        props = {p.key: p.value for p in onnx.load(path).metadata_props}
        assert props["snntc_kind"] == ckpt.kind and ("snntc_snn" in props) == (ckpt.kind == "snn")
        again = import_onnx(path)
        assert_same_outputs(ann_of(ckpt), path, again)


# -- NIR export ----------------------------------------------------------------------------------
def _snn_ckpt(net, neuron="if", leak=1.0, coding="direct", i_decay=4096, v_decay=0, seed=0, bias=False):
    torch.manual_seed(seed)
    ann = AnnModel(net)
    with torch.no_grad():
        for name, m in ann.layers.items():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
            elif bias and getattr(m, "bias", None) is not None:
                m.bias.uniform_(-0.1, 0.1)
    thresholds = {s.name: 0.3 + 0.1 * i for i, s in enumerate(net.spiking_layers)}
    cfg = SnnConfig(thresholds=thresholds, neuron=neuron, leak=leak, coding=coding, timesteps=6, i_decay=i_decay,
                    v_decay=v_decay)
    return Checkpoint("snn", net, {k: v.clone() for k, v in ann.state_dict().items()},
                      {"name": "digits", "mean": [1.0], "std": [2.0]}, snn=cfg.to_dict())


def dense_net():
    return Network((Linear("fc1", 6, 5, bias=True), Spike("s1"), Linear("fc2", 5, 4), Spike("s2"), Linear("out", 4, 3)),
                   (6,), 3, name="dense")


def conv_pool_net():
    return Network((Conv2d("c1", 1, 4, 3, 1, 1), BatchNorm2d("bn1", 4), Spike("s1"), AvgPool2d("p1", 2), Dropout("d1"),
                    Conv2d("c2", 4, 6, 3, 1, 1), Spike("s2"), AvgPool2d("p2", 2), Flatten("f"),
                    Linear("fc", 24, 8), Spike("s3"), Linear("out", 8, 3)), (1, 8, 8), 3, name="convpool")


def residual_net():
    body = (Conv2d("b_c1", 4, 4, 3, 1, 1), Spike("b_s1"), Conv2d("b_c2", 4, 4, 3, 1, 1))
    body2 = (Conv2d("d_c1", 4, 6, 3, 2, 1), Spike("d_s1"), Conv2d("d_c2", 6, 6, 3, 1, 1))
    return Network((Conv2d("stem", 1, 4, 3, 1, 1), Spike("stem_s"), Residual("blk", body), Spike("blk_s"),
                    Residual("down", body2, (Conv2d("d_sc", 4, 6, 1, 2, 0),)), Spike("down_s"),
                    AvgPool2d("gap", 4), Flatten("f"), Linear("out", 6, 3)), (1, 8, 8), 3, name="res")


def simulate_nir(graph, seq):
    """A reference NIR simulator of the conventions export_nir documents: per step, nodes in topological
    order, inputs summed over incoming edges, forward Euler of dt, reset as metadata 'reset' says."""
    dt = float(graph.metadata["dt"])
    preds = {n: [a for a, b in graph.edges if b == n] for n in graph.nodes}
    order, done = [], set()
    while len(order) < len(graph.nodes):
        for n in sorted(graph.nodes):
            if n not in done and all(p in done for p in preds[n]):
                order.append(n), done.add(n)
    state, total = {}, 0.0
    t64 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))     # noqa: E731
    for t in range(seq.shape[0]):
        val = {}
        for n in order:
            node = graph.nodes[n]
            if isinstance(node, nir.Input):
                val[n] = seq[t]
                continue
            x = sum(val[p] for p in preds[n])
            if isinstance(node, nir.Conv2d):
                y = F.conv2d(x, t64(node.weight), t64(node.bias), tuple(node.stride), tuple(node.padding))
            elif isinstance(node, nir.Affine):
                y = F.linear(x, t64(node.weight), t64(node.bias))
            elif isinstance(node, nir.Linear):
                y = F.linear(x, t64(node.weight))
            elif isinstance(node, nir.AvgPool2d):
                y = F.avg_pool2d(x, tuple(node.kernel_size), tuple(node.stride))
            elif isinstance(node, nir.SumPool2d):
                y = F.avg_pool2d(x, tuple(node.kernel_size), tuple(node.stride), divisor_override=1)
            elif isinstance(node, nir.Flatten):
                y = x.flatten(1)
            elif isinstance(node, (nir.IF, nir.LIF)):
                v = state.get(n, torch.zeros_like(x))
                if isinstance(node, nir.IF):
                    v = v + dt * t64(node.r) * x
                else:
                    v = v + dt / t64(node.tau) * (t64(node.v_leak) - v + t64(node.r) * x)
                th = t64(node.v_threshold)
                y = (v > th).double()
                assert node.metadata["reset"] == "subtract"
                state[n] = v - th * y
            elif isinstance(node, nir.Output):
                total = total + x
                continue
            else:
                raise AssertionError(type(node))
            val[n] = y
    return total / seq.shape[0]


def assert_graph_matches_checkpoint(graph, ckpt, dt=1e-4):
    """Node by node: the network's layers (batch norm folded, dropout left out), weights, neuron parameters."""
    from toolchain.ir.passes import fold_batch_norms
    net, state = fold_batch_norms(ckpt.network, ckpt.state_dict, prefix="layers.")
    cfg = SnnConfig.from_dict(ckpt.snn.to_dict())
    expected = {l.name for l in iter_layers(net.layers) if not isinstance(l, (Residual, Dropout))} | {"input", "output"}
    assert set(graph.nodes) == expected
    for layer in iter_layers(net.layers):
        node = graph.nodes.get(layer.name)
        if isinstance(layer, (Conv2d, Linear)):
            w = state[f"layers.{layer.name}.weight"].numpy() / node.metadata.get("weight_divided_by", 1)
            assert np.array_equal(node.weight, w)
            b = state.get(f"layers.{layer.name}.bias")
            if isinstance(layer, Conv2d):
                assert isinstance(node, nir.Conv2d)
                assert tuple(node.stride) == (layer.stride,) * 2 and tuple(node.padding) == (layer.padding,) * 2
                assert np.array_equal(node.bias, b.numpy() if b is not None else np.zeros(layer.out_channels, np.float32))
            elif b is not None:
                assert isinstance(node, nir.Affine) and np.array_equal(node.bias, b.numpy())
            else:
                assert isinstance(node, nir.Linear) or (isinstance(node, nir.Affine) and not np.any(node.bias))
        elif isinstance(layer, AvgPool2d):
            assert isinstance(node, (nir.AvgPool2d, nir.SumPool2d)) and list(node.kernel_size) == [layer.kernel_size] * 2
            assert list(node.stride) == [layer.kernel_size] * 2
        elif isinstance(layer, Flatten):
            assert isinstance(node, nir.Flatten) and node.start_dim == -len(node.input_type["input"])
        elif isinstance(layer, Spike):
            theta = np.float32(cfg.thresholds[layer.name])
            assert np.all(node.v_threshold == theta) and np.all(node.v_reset == 0)
            if cfg.neuron == "loihi-cuba":
                assert isinstance(node, nir.CubaLIF) and node.metadata["reset"] == "zero"
                assert np.allclose(node.tau_syn, dt * 4096 / cfg.i_decay) and np.allclose(node.w_in, 4096 / cfg.i_decay)
                assert np.all(node.tau_syn.astype(np.float64) >= dt * 4096 / cfg.i_decay)     # never below dt
                if cfg.v_decay:
                    assert np.allclose(node.tau_mem, dt * 4096 / cfg.v_decay) and np.allclose(node.r, 4096 / cfg.v_decay)
                else:       # no leak: finite, and 1 - dt / tau_mem is 1.0 in float32
                    assert np.all(node.r == NO_LEAK_STEPS) and np.all(np.float32(1 - dt / node.tau_mem) == 1.0)
            elif cfg.neuron == "lif" and cfg.leak < 1:
                assert isinstance(node, nir.LIF) and node.metadata["reset"] == "subtract"
                assert np.allclose(node.tau, dt / (1 - cfg.leak)) and np.allclose(node.r, 1 / (1 - cfg.leak))
                assert np.all(node.v_leak == 0)
            else:
                assert isinstance(node, nir.IF) and node.metadata["reset"] == "subtract" and np.allclose(node.r, 1 / dt)


def assert_same_graph(a, b):
    assert set(a.nodes) == set(b.nodes) and sorted(a.edges) == sorted(b.edges)
    for name, node in a.nodes.items():
        other = b.nodes[name]
        assert type(node) is type(other)
        for field in ("weight", "bias", "r", "tau", "tau_syn", "tau_mem", "v_threshold", "v_reset", "v_leak", "w_in",
                      "kernel_size", "stride", "padding"):
            if hasattr(node, field):
                assert np.array_equal(np.asarray(getattr(node, field)), np.asarray(getattr(other, field))), (name, field)


@pytest.mark.parametrize("make,neuron,leak,bias,options", [
    (dense_net, "if", 1.0, True, NirOptions()), (conv_pool_net, "lif", 0.8, False, NirOptions()),
    (conv_pool_net, "lif", 0.8, False, NirOptions(dt=1.0, pool="avg", dense="linear")),
    (residual_net, "if", 1.0, True, NirOptions(pool="avg"))])
def test_nir_round_trip_and_simulation_match_the_snn(make, neuron, leak, bias, options, tmp_path):
    net = make()
    ckpt = _snn_ckpt(net, neuron=neuron, leak=leak, bias=bias)
    x = torch.as_tensor(np.random.default_rng(0).normal(size=(4,) + net.input_shape).astype(np.float32))
    path = str(tmp_path / "model.nir")
    graph = export_nir(ckpt, path, x.numpy(), options)
    back = nir.read(path)
    assert_same_graph(graph, back)
    assert_graph_matches_checkpoint(back, ckpt, dt=options.dt)
    assert back.metadata["reset_mode"] == "subtract" and back.metadata["dt"] == options.dt
    pools = {type(n).__name__ for n in back.nodes.values() if "Pool" in type(n).__name__}
    assert pools <= {"SumPool2d" if options.pool == "sum" else "AvgPool2d"}
    assert back.metadata["timesteps"] == 6 and back.metadata["input_coding"] == "direct"
    if make is residual_net:        # the sums: two edges into the spiking layer after each block
        assert {a for a, b in back.edges if b == "blk_s"} == {"b_c2", "stem_s"}
        assert {a for a, b in back.edges if b == "down_s"} == {"d_c2", "d_sc"}
        assert not back.metadata["fixed_point"]["available"] and "residual" in back.metadata["fixed_point"]["reason"]
    else:
        assert back.metadata["fixed_point"]["available"]
    # the documented semantics reproduce the toolchain's SNN (direct coding, T = 6)
    model = SnnModel(net, SnnConfig.from_dict(ckpt.snn.to_dict()))
    model.load_state_dict(ckpt.state_dict)
    model.eval()
    with torch.no_grad():
        ours = model(x, 6, InputEncoder("direct")).logits.double()
    seq = torch.stack([x.double()] * 6)
    assert torch.allclose(simulate_nir(back, seq), ours, atol=1e-4, rtol=0)


def test_nir_loihi_cuba_parameters_and_fixed_point_metadata(tmp_path):
    net = conv_pool_net()
    ckpt = _snn_ckpt(net, neuron="loihi-cuba", coding="poisson", i_decay=1024, v_decay=128, bias=True)
    path = str(tmp_path / "cuba.nir")
    export_nir(ckpt, path, options=NirOptions(dt=1e-3))
    back = nir.read(path)
    assert_graph_matches_checkpoint(back, ckpt, dt=1e-3)
    assert back.metadata["reset_mode"] == "zero" and back.metadata["neuron_model"] == "loihi-cuba"
    fx, _ = quantize_snn(ckpt)
    assert back.metadata["fixed_point"]["available"] and back.metadata["fixed_point"]["input_coding"] == "poisson"
    spike_of = {"c1": "s1", "c2": "s2", "fc": "s3"}
    for layer in fx.layers:
        meta = back.nodes[layer.name].metadata["fixed_point"]
        assert np.array_equal(meta["weight"], layer.weight) and meta["scale"] == pytest.approx(layer.scale)
        assert list(meta["stride"]) == list(layer.stride) and list(meta["padding"]) == list(layer.padding)
        if layer.bias is not None:
            assert np.array_equal(meta["bias"], layer.bias)
        if layer.is_output:
            assert meta["is_output"] and meta["vth"] == layer.vth
        else:
            neuron = back.nodes[spike_of[layer.name]].metadata["fixed_point"]
            assert (neuron["vth"], neuron["i_decay"], neuron["v_decay"]) == (layer.vth, 1024, 128)
    assert "avgpool x2" in back.nodes["c2"].metadata["fixed_point"]["source"]     # pooling folded as netx holds it

    ckpt0 = _snn_ckpt(dense_net(), neuron="loihi-cuba", coding="poisson")           # v_decay 0: no leak
    export_nir(ckpt0, str(tmp_path / "cuba0.nir"))
    assert_graph_matches_checkpoint(nir.read(str(tmp_path / "cuba0.nir")), ckpt0)


# -- bad input -----------------------------------------------------------------------------------
class MaxPoolNet(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.conv, self.act, self.fc = nn.Conv2d(1, 4, 3, 1, 1), act, nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.max_pool2d(self.act(self.conv(x)), 2) if isinstance(self.act, nn.ReLU)
                                     else F.avg_pool2d(self.act(self.conv(x)), 2), 1))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "notes.onnx").write_text("this is not an ONNX model\n")
    torch.manual_seed(0)
    files = {"text": str(d / "notes.onnx"),
             "maxpool": to_onnx(MaxPoolNet(nn.ReLU()).eval(), d / "maxpool.onnx"),
             "sigmoid": to_onnx(MaxPoolNet(nn.Sigmoid()).eval(), d / "sigmoid.onnx"),
             "rgb": to_onnx(nn.Sequential(nn.Conv2d(3, 2, 3, 1, 1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 32 * 32, 10)).eval(),
                            d / "rgb.onnx", shape=(3, 32, 32))}
    return files


@pytest.mark.parametrize("key,pattern", [
    ("text", r"notes\.onnx: not an ONNX model"),
    ("maxpool", r"unsupported ONNX operator MaxPool \(node '[^']*MaxPool[^']*'\): use AveragePool"),
    ("sigmoid", r"unsupported ONNX operator Sigmoid \(node '[^']+'\): use Relu"),
])
def test_bad_onnx_inputs_give_one_clear_error(bad_files, key, pattern):
    with pytest.raises(ImportModelError, match=pattern) as info:
        import_onnx(bad_files[key])
    assert "\n" not in str(info.value)


def test_unsupported_structures(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("BatchNormalization", ["r", "g", "b", "m", "v"], ["y0"], name="bn_after_relu"),
             helper.make_node("Flatten", ["y0"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w"], ["y"], transB=1, name="fc")]
    one = np.ones(2)
    model = _graph_model(nodes, {"g": one, "b": one, "m": one, "v": one, "w": np.ones((3, 2))}, (2, 1, 1), (3,))
    with pytest.raises(ImportModelError, match="BatchNormalization node 'bn_after_relu': follows a Relu"):
        import_onnx(model)
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="left"), helper.make_node("Conv", ["x", "w"], ["b"], name="right"),
             helper.make_node("Concat", ["a", "b"], ["c"], axis=1, name="cat"),
             helper.make_node("Flatten", ["c"], ["f"]), helper.make_node("Gemm", ["f", "w2"], ["y"], transB=1)]
    model = _graph_model(nodes, {"w": np.ones((1, 1, 1, 1)), "w2": np.ones((3, 2))}, (1, 1, 1), (3,))
    with pytest.raises(ImportModelError, match="unsupported ONNX operator Concat \\(node 'cat'\\)"):
        import_onnx(model)


def test_nir_export_to_a_directory_or_under_a_file_fails_cleanly(tmp_path):
    ckpt = _snn_ckpt(dense_net())
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is a directory"):
        export_nir(ckpt, str(tmp_path / "dir"))
    with pytest.raises(ExportError, match="is a file, not a directory"):
        export_nir(ckpt, str(tmp_path / "file" / "model.nir"))
    with pytest.raises(ExportError, match="SNN checkpoint"):
        export_nir(Checkpoint("ann", ckpt.network, ckpt.state_dict), str(tmp_path / "a.nir"))
    assert sorted(os.listdir(tmp_path)) == ["dir", "file"] and os.listdir(tmp_path / "dir") == []


# -- the command line ----------------------------------------------------------------------------
def _one_line_error(capsys, argv, must_not_exist):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"snntc {argv[0]}: error:")
    assert not os.path.exists(must_not_exist)
    return err


def test_cli_import_convert_export(vgg_files, tmp_path, capsys):
    ann_path, snn_path = str(tmp_path / "ann.pt"), str(tmp_path / "snn.pt")
    assert main(["import", vgg_files[1], "-o", ann_path, "--limit", "40", "--num-classes", "10",
                 "--json", str(tmp_path / "import.json")]) == 0
    ckpt = load_checkpoint(ann_path, kind="ann")
    assert ckpt.dataset["name"] == "digits" and ckpt.dataset["limit"] == 40 and ckpt.metrics["test_accuracy"] is not None
    assert main(["convert", ann_path, "-o", snn_path, "--timesteps", "4", "--calibration-samples", "8"]) == 0
    assert main(["export", snn_path, "--format", "nir", "-o", str(tmp_path / "m.nir"),
                 "--json", str(tmp_path / "nir.json")]) == 0
    assert_graph_matches_checkpoint(nir.read(str(tmp_path / "m.nir")), load_checkpoint(snn_path))
    assert main(["export", snn_path, "--format", "onnx", "-o", str(tmp_path / "m.onnx")]) == 0
    assert import_onnx(str(tmp_path / "m.onnx")).network.to_dict()["layers"] == \
        import_onnx(vgg_files[1]).network.to_dict()["layers"]
    capsys.readouterr()
    (tmp_path / "dir").mkdir()
    err = _one_line_error(capsys, ["export", snn_path, "--format", "nir", "-o", str(tmp_path / "dir"), "--force"],
                          str(tmp_path / "dir" / "m.nir"))
    assert "is a directory" in err
    (tmp_path / "file").write_text("x")
    _one_line_error(capsys, ["export", snn_path, "--format", "nir", "-o", str(tmp_path / "file" / "m.nir")],
                    str(tmp_path / "file" / "m.nir"))


@pytest.mark.parametrize("key,pattern", [("text", "not an ONNX model"), ("maxpool", "MaxPool.*AveragePool"),
                                         ("rgb", r"inputs of shape \(3, 32, 32\), but dataset 'digits' has \(1, 8, 8\)")])
def test_cli_import_errors_are_one_line_and_write_nothing(bad_files, key, pattern, tmp_path, capsys):
    out = str(tmp_path / "ann.pt")
    err = _one_line_error(capsys, ["import", bad_files[key], "-o", out, "--limit", "10", "--json", out + ".json"], out)
    assert not os.path.exists(out + ".json")
    assert re.search(pattern, err), err

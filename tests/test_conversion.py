"""Conversion of networks with biases, batch norm and residual blocks: parameters in the units of the spikes each
layer receives (by hand), and converted SNNs that reach their ANN's accuracy at large T (trained networks: the
toolchain's own with batch norm, and plain-torch networks with batch norm imported from ONNX)."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import build_model
from toolchain.training.ann import ann_accuracy, load_ann, train_ann
from toolchain.io.checkpoint import Checkpoint
from toolchain.training.convert import convert, unit_plan
from toolchain.data import load_dataset
from toolchain.training.evaluate import evaluate_snn, load_snn
from toolchain.ir import Linear, Network, Spike
from toolchain.ir.torch_net import AnnModel
from toolchain.training import TrainConfig


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def biased_net():
    return Network((Linear("fc1", 2, 2, bias=True), Spike("s1"), Linear("fc2", 2, 2, bias=True), Spike("s2"),
                    Linear("out", 2, 2, bias=True)), (2,), 2)


def test_biases_take_the_unit_of_the_spikes_they_join(tiny_dense_data):
    # fc1 current = W1 x + b1 = [1.5 + 0.5, 0 + 0.5] = [2, 0.5] every step -> theta1 = 2 (scale 1, max).
    # s1 spikes stand for 2 ANN units, so fc2's bias b2 = [1, -1] becomes [0.5, -0.5]; out's bias, after s1 and s2,
    # is divided by theta1 * theta2
    net = biased_net()
    ann = AnnModel(net)
    with torch.no_grad():
        ann.layers["fc1"].weight.copy_(torch.tensor([[1.0, 1.0], [0.5, -1.0]]))
        ann.layers["fc1"].bias.copy_(torch.tensor([0.5, 0.5]))
        ann.layers["fc2"].weight.copy_(torch.tensor([[2.0, 1.0], [1.0, 3.0]]))
        ann.layers["fc2"].bias.copy_(torch.tensor([1.0, -1.0]))
        ann.layers["out"].weight.copy_(torch.eye(2))
        ann.layers["out"].bias.copy_(torch.tensor([3.0, 0.0]))
    snn = convert(Checkpoint("ann", net, ann.state_dict(), {"name": "tiny"}), tiny_dense_data, timesteps=4, scale=1.0,
                  coding="direct", calib_samples=1)
    th = snn.snn.thresholds
    assert th["s1"] == pytest.approx(2.0)
    sd = snn.state_dict
    torch.testing.assert_close(sd["layers.fc1.bias"], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(sd["layers.fc2.bias"], torch.tensor([0.5, -0.5]))
    torch.testing.assert_close(sd["layers.fc2.weight"], torch.tensor([[2.0, 1.0], [1.0, 3.0]]))   # weights unchanged
    torch.testing.assert_close(sd["layers.out.bias"], torch.tensor([3.0, 0.0]) / (th["s1"] * th["s2"]))
    # s1 fires every step ([2, 0.5] against 2: v 2 > 2 is false at t=0, then 4 - 2 ...), so fc2's current is
    # [2, 1] + [0.5, -0.5] at most: theta2 = 2.5
    assert th["s2"] == pytest.approx(2.5)


def test_residual_body_is_aligned_to_the_shortcut():
    net = build_model("resnet-small", (1, 8, 8), 10)
    plans, spike_units = unit_plan(net)
    by_layer = {p.layer: p for p in plans}
    # the body's second conv reads spikes of layer1_0_spike1 (unit: stem_spike, layer1_0_spike1) but adds onto the
    # block's input (unit: stem_spike): its weights take theta(layer1_0_spike1), its bias the block's unit
    p = by_layer["layer1_0_conv2"]
    assert p.input_unit == ("stem_spike", "layer1_0_spike1") and p.output_unit == ("stem_spike",)
    w, b = p.factors({"stem_spike": 2.0, "layer1_0_spike1": 3.0})
    assert (w, b) == (3.0, 0.5)
    # the projection shortcut reads the block's input and stays in its unit
    assert by_layer["layer2_0_down"].input_unit == by_layer["layer2_0_down"].output_unit == ("stem_spike", "layer1_0_spike")
    assert spike_units["layer2_0_spike"] == ("stem_spike", "layer1_0_spike")


def _accuracies(ann_ckpt, data, method):
    snn = convert(ann_ckpt, data, timesteps=100, method=method, scale=1.0, coding="direct",
                  percentile=99.9 if method == "activation" else 100.0)
    res = evaluate_snn(load_snn(snn), data.test_x, data.test_y, [200])
    return res[200]["accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["vgg-small", "resnet-small"])
def test_batch_norm_ann_converts_within_one_point(digits, tmp_path, model):
    ann = train_ann(digits, model, TrainConfig(epochs=8, lr=3e-3), str(tmp_path / "ann.pt"), batch_norm=True,
                    progress=False)
    ann_acc = ann_accuracy(load_ann(ann), digits.test_x, digits.test_y)
    assert ann_acc > 0.95
    for method in ("spike", "activation"):
        assert _accuracies(ann, digits, method) >= ann_acc - 0.01, method


# -- plain-torch networks with batch norm and biases, through ONNX -------------------------------------------------
class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout)
        self.down = None if stride == 1 and cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, stride),
                                                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.down is None else self.down(x)))


def torch_vgg():
    return nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(16, 32, 3, 1, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(128, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))


def torch_resnet():
    return nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(), Block(16, 16, 1), Block(16, 32, 2),
                         nn.AvgPool2d(4), nn.Flatten(), nn.Linear(32, 10))


def train_plain(model, data, epochs=10):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    x, y = torch.as_tensor(data.train_x), torch.as_tensor(data.train_y)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("build", [torch_vgg, torch_resnet], ids=["vgg", "resnet"])
def test_imported_batch_norm_networks_convert_within_one_point(digits, tmp_path, build):
    pytest.importorskip("onnx")
    from toolchain.io.onnx import import_onnx
    torch.manual_seed(1)
    model = train_plain(build(), digits)
    path = str(tmp_path / "model.onnx")
    torch.onnx.export(model, torch.randn(2, 1, 8, 8), path, opset_version=17, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, do_constant_folding=False)
    ann = import_onnx(path)
    ann.dataset = digits.info()
    with torch.no_grad():
        torch_acc = float((model(torch.as_tensor(digits.test_x)).argmax(1).numpy() == digits.test_y).mean())
    ann_acc = ann_accuracy(load_ann(ann), digits.test_x, digits.test_y)
    assert ann_acc == pytest.approx(torch_acc) and ann_acc > 0.95
    for method in ("spike", "activation"):
        assert _accuracies(ann, digits, method) >= ann_acc - 0.01, method

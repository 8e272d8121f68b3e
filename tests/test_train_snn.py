"""Direct SNN training (Ledinauskas et al. 2020): batch norm on input currents (IR, folding, export),
the exploding / vanishing gradient finding, the train-snn command."""
import json
import math

import numpy as np
import pytest
import torch

from models import build_model
from toolchain.io.checkpoint import load_checkpoint
from toolchain.cli import main
from toolchain.data import load_dataset
from toolchain.errors import LoweringError, ShapeError
from toolchain.ir import BatchNorm1d, BatchNorm2d, Conv2d, Flatten, Linear, Network, Spike, iter_layers
from toolchain.neurons import run_neurons
from toolchain.neurons.subtractive import SubtractiveParams, subtractive_step
from toolchain.snn import SnnConfig, SnnModel
from toolchain.neurons.surrogates import get_surrogate
from toolchain.training.direct import first_last_ratio, gradient_norms, snn_config_for, synaptic_layer_names

QUICK = ["--limit", "200", "--no-progress", "--timesteps", "4"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# -- IR and models -------------------------------------------------------------------------------
def test_batch_norm_1d_in_the_ir():
    net = Network((Flatten("f"), Linear("fc", 4, 3), BatchNorm1d("bn", 3), Spike("s"), Linear("out", 3, 2)), (1, 2, 2), 2)
    assert Network.from_dict(json.loads(json.dumps(net.to_dict()))) == net
    with pytest.raises(ShapeError, match="use BatchNorm1d after a dense layer"):
        Network((Linear("fc", 4, 3), BatchNorm2d("bn", 3), Spike("s"), Linear("out", 3, 2)), (4,), 2)
    with pytest.raises(ShapeError, match="layer 'bn'"):
        Network((Conv2d("c", 1, 3), BatchNorm1d("bn", 3), Flatten("f"), Linear("out", 12, 2)), (1, 2, 2), 2)


@pytest.mark.parametrize("name", ["vgg-small", "vgg-deep", "vgg9", "resnet-small"])
def test_batch_norm_follows_every_conv_and_hidden_linear(name):
    shape = (3, 32, 32) if name == "vgg9" else (1, 8, 8)
    net = build_model(name, shape, 10, batch_norm=True)
    layers = list(iter_layers(net.layers))
    for i, layer in enumerate(layers):
        if isinstance(layer, Conv2d):
            assert isinstance(layers[i + 1], BatchNorm2d) and layers[i + 1].num_features == layer.out_channels
        elif isinstance(layer, Linear) and layer.name != "out":
            assert isinstance(layers[i + 1], BatchNorm1d) and layers[i + 1].num_features == layer.out_features
    assert not isinstance(layers[-2], (BatchNorm1d, BatchNorm2d))
    plain = build_model(name, shape, 10)
    assert not any(isinstance(l, (BatchNorm1d, BatchNorm2d)) for l in iter_layers(plain.layers))


def test_vgg_deep_is_deep():
    net = build_model("vgg-deep", (1, 8, 8), 10)
    assert len(synaptic_layer_names(net)) >= 10


@pytest.mark.parametrize("name", ["resnet-small", "vgg-small"])
def test_models_with_batch_norm_train_as_snns(name, digits):
    """Adam steps on a digits batch: every weight gets a finite, non-zero gradient and the loss falls."""
    torch.manual_seed(0)
    net = build_model(name, digits.input_shape, 10, batch_norm=True)
    model = SnnModel(net, snn_config_for(net, 4, get_surrogate("rectangular", width=1.0, alpha=0.5)))
    x, y = torch.as_tensor(digits.train_x[:32]), torch.as_tensor(digits.train_y[:32])
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x).logits, y)
        loss.backward()
        for n in synaptic_layer_names(net):
            g = model.layers[n].weight.grad
            assert torch.isfinite(g).all() and float(g.norm()) > 0, n
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.9 * losses[0], losses


# -- batch-norm folding ---------------------------------------------------------------------------
def randomize_batch_norms(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.3)
            m.weight.data.copy_(torch.rand(n, generator=gen) * 1.5 + 0.25)
            m.bias.data.copy_(torch.rand(n, generator=gen) * 0.6 - 0.3)


def run_lowered_if(chain, x, T):
    """The lowered chain (batch norm folded: weights and bias) simulated with the same IF neurons, float."""
    h = x.unsqueeze(0).expand(T, *x.shape)
    counts = {}
    for layer in chain:
        a = torch.stack([layer.synapse(h[t]) for t in range(T)])
        if layer.bias is not None:
            a = a + layer.bias.reshape((-1,) + (1,) * (a.dim() - 3))
        if layer.threshold is None:
            return a.sum(0) / T, counts
        h, _ = run_neurons(a, subtractive_step, SubtractiveParams(layer.threshold), lambda z, dt: (z > 0).to(z.dtype))
        counts[layer.spike_name] = h.flatten(2).sum((0, 2))


@pytest.mark.parametrize("name", ["vgg-small", "vgg-deep"])
def test_batch_norm_folding_leaves_the_snn_outputs_unchanged(name):
    torch.manual_seed(3)
    net = build_model(name, (1, 8, 8), 10, batch_norm=True)
    model = SnnModel(net, SnnConfig(thresholds={s.name: 1.0 for s in net.spiking_layers}, coding="direct",
                                    timesteps=6)).double()
    randomize_batch_norms(model)
    model.eval()
    x = torch.randn(8, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
        chain = model.lowered()
        folded, counts = run_lowered_if(chain, x, 6)
    assert [l.source[-1] for l in chain[:-1]] == [f"bn{n[4:]}" if n.startswith("conv") else "fc_bn0"
                                                  for n in [l.name for l in chain[:-1]]]
    assert all(l.bias is not None for l in chain[:-1])
    torch.testing.assert_close(folded, ref.logits, rtol=1e-9, atol=1e-9)
    for name_, c in counts.items():
        assert torch.equal(c, ref.spike_counts[name_]), name_
    assert all(float(c.sum()) > 0 for c in counts.values()), "the test must exercise spikes in every layer"


def test_batch_norm_must_follow_its_synaptic_layer():
    net = Network((Linear("fc", 4, 4), Spike("s0"), BatchNorm1d("bn", 4), Spike("s"), Linear("out", 4, 2)), (4,), 2)
    model = SnnModel(net, SnnConfig(thresholds={"s0": 1.0, "s": 1.0}))
    with pytest.raises(LoweringError, match="layer 'bn': batch norm must follow a dense"):
        model.lowered()


def test_quantization_scale_keeps_a_large_folded_bias_in_range():
    from toolchain.quantization.fixed_point import BIAS_MAX
    from toolchain.quantization.quantize import layer_scale
    w = torch.tensor([[0.01, -0.02]])
    scale = layer_scale(w, 1.0, bias=torch.tensor([0.5]))     # weights alone would allow 254 / 0.02 = 12700
    assert round(0.5 * scale) <= BIAS_MAX and scale == pytest.approx(BIAS_MAX / 0.5)
    assert layer_scale(w, 1.0) == pytest.approx(254 / 0.02)


# -- the gradient finding ---------------------------------------------------------------------------
def ratio(digits, surrogate, width, height, seed, batch_norm=True, T=10):
    torch.manual_seed(seed)
    net = build_model("vgg-deep", digits.input_shape, 10, batch_norm=batch_norm, fc_dropout=0.0)
    model = SnnModel(net, snn_config_for(net, T, get_surrogate(surrogate, alpha=height, width=width)))
    idx = np.random.default_rng(seed).permutation(len(digits.train_x))[:32]
    norms = gradient_norms(model, torch.as_tensor(digits.train_x[idx]), torch.as_tensor(digits.train_y[idx]), T)
    return first_last_ratio(norms)


def test_tuned_surrogate_keeps_deep_snn_gradients_bounded_and_mistuned_ones_explode_or_vanish(digits):
    """14-layer plain SNN at T=10 with batch norm, at initialization: ||dL/dW|| of the first conv over that of
    the output layer. Measured (benchmarks/snn_gradients.py, 5 seeds, batch 64): tuned box (width 1, height 0.5)
    ~0.2; height 4: ~1e11; width 8: ~1e9; height 0.25: ~2e-5; the default fast-sigmoid: ~7e-6."""
    for seed in (0, 1):
        tuned = ratio(digits, "rectangular", 1.0, 0.5, seed)
        assert 1e-2 <= tuned <= 1e2, tuned
        assert ratio(digits, "rectangular", 1.0, 4.0, seed) > 1e6              # too high: explodes
        assert ratio(digits, "rectangular", 8.0, 1.0, seed) > 1e6              # too wide: explodes
        assert ratio(digits, "rectangular", 1.0, 0.2, seed) < 1e-4             # too low: vanishes


# -- the command ------------------------------------------------------------------------------------
def test_bad_surrogate_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "s.pt"
    code = main(["train-snn", "--surrogate", "sigmoid-ish", "-o", str(out)] + QUICK)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "unknown surrogate 'sigmoid-ish'; valid: stdb, linear, fast-sigmoid, arctan, rectangular" in err
    assert not out.exists()
    code = main(["train-snn", "--surrogate", "rectangular", "--width", "0", "-o", str(out)] + QUICK)
    assert code == 2 and "--width: expected a number > 0" in capsys.readouterr().err and not out.exists()


def test_train_snn_resumes_after_an_interruption(tmp_path, capsys, monkeypatch):
    import toolchain.training.loop as ts
    args = ["train-snn", "--model", "vgg-small", "--epochs", "3", "--seed", "5"] + QUICK
    straight, killed = str(tmp_path / "straight.pt"), str(tmp_path / "killed.pt")
    assert main(args + ["-o", straight, "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "g.png")]) == 0
    real_save = ts.save_checkpoint

    def save_then_die(ckpt, path):
        real_save(ckpt, path)
        if ckpt.training["state"]["epoch"] == 1:
            raise KeyboardInterrupt
    monkeypatch.setattr(ts, "save_checkpoint", save_then_die)
    assert main(args + ["-o", killed]) == 130
    assert load_checkpoint(killed).training["state"]["epoch"] == 1
    monkeypatch.setattr(ts, "save_checkpoint", real_save)
    assert main(args + ["-o", killed]) == 2 and "--resume" in capsys.readouterr().err     # no silent overwrite
    assert main(args + ["-o", killed, "--resume"]) == 0
    a, b = load_checkpoint(killed, "snn"), load_checkpoint(straight, "snn")
    assert a.training["state"]["history"] == b.training["state"]["history"]
    for key in b.state_dict:
        torch.testing.assert_close(a.state_dict[key], b.state_dict[key], rtol=0, atol=0)
    # the JSON summary and the plot: gradient norms of every synaptic layer, per epoch (mean and first batch)
    summary = json.loads((tmp_path / "s.json").read_text())
    layers = synaptic_layer_names(b.network)
    assert summary["layers"] == layers and len(summary["history"]) == 3
    for h in summary["history"]:
        assert list(h["grad_norms"]) == layers and list(h["grad_norms_first_batch"]) == layers
        assert all(v > 0 and math.isfinite(v) for v in h["grad_norms"].values())
        assert h["grad_ratio_first_last"] == pytest.approx(h["grad_norms"]["conv0"] / h["grad_norms"]["out"])
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b.snn.thresholds == {s.name: 1.0 for s in b.network.spiking_layers}
    assert b.snn.coding == "direct" and b.snn.surrogate == {"name": "rectangular", "alpha": 0.5, "beta": 0.0,
                                                                  "width": 1.0}
    # resuming with other settings is refused
    code = main(["train-snn", "--model", "vgg-small", "--epochs", "3", "--alpha", "0.7", "-o", killed, "--resume"] + QUICK)
    assert code == 2 and "other SNN settings (surrogate)" in capsys.readouterr().err


def test_trained_snn_checkpoint_serves_evaluate_and_finetune(tmp_path, capsys):
    snn, tuned = str(tmp_path / "snn.pt"), str(tmp_path / "ft.pt")
    assert main(["train-snn", "--epochs", "1", "-o", snn] + QUICK) == 0
    assert main(["evaluate", snn, "--timesteps", "2,4", "--no-progress", "--json", str(tmp_path / "e.json")]) == 0
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["kind"] == "snn" and res["timesteps"]["4"]["spikes_per_inference"] > 0
    assert main(["finetune", snn, "--epochs", "1", "--neuron", "loihi-cuba", "--surrogate", "rectangular", "--alpha",
                 "0.5", "--no-progress", "-o", tuned]) == 0
    ft = load_checkpoint(tuned, "snn")
    assert ft.snn.neuron == "loihi-cuba" and "fc_bn0.running_mean" in {k.split("layers.")[-1] for k in ft.state_dict}


@pytest.mark.lava
def test_batch_norm_trained_snn_exports_and_runs_in_lava(tmp_path, capsys):
    from toolchain.deploy import simulate
    snn, net_path = str(tmp_path / "snn.pt"), str(tmp_path / "model.net")
    assert main(["train-snn", "--epochs", "1", "-o", snn] + QUICK) == 0
    assert main(["export", snn, "-o", net_path, "--json", str(tmp_path / "x.json")]) == 0
    export = json.loads((tmp_path / "x.json").read_text())
    assert [l["source"] for l in export["layers"]][:3] == ["conv0+bn0", "avgpool x2+conv2+bn2", "avgpool x2+fc0+fc_bn0"]
    assert not any("saturate" in w for w in export["quantization"]["warnings"])
    capsys.readouterr()
    assert main(["simulate", net_path, "--samples", "4", "--backend", "lava", "--no-progress",
                 "--json", str(tmp_path / "sim.json")]) == 0
    lava = json.loads((tmp_path / "sim.json").read_text())
    assert lava["samples"] == 4 and lava["backend"].startswith("lava")
    data = load_dataset("digits", limit=200)
    _, emu = simulate(net_path, data.test_x[:4], data.test_y[:4], backend="emulator", progress=False)
    assert [l["spikes"] for l in lava["layers"]] == [l["spikes"] for l in emu.to_json()["layers"]]
    assert lava["accuracy"] == emu.accuracy and sum(l["spikes"] for l in lava["layers"]) > 0

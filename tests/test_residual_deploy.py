"""Residual networks deployed as chains with relay channels (toolchain/ir/relays.py): the lowered chain computes
the SNN's blocks, stock netx loads the file and Lava runs it spike for spike and voltage for voltage like the
emulator (real Lava), the QAT network computes what the chip computes, relays are exact copies, and energy and fit
count them."""
import numpy as np
import pytest
import torch

from toolchain.coding import InputEncoder
from toolchain.deploy import encode_for_chip, export_snn
from toolchain.errors import LoweringError
from toolchain.io.checkpoint import Checkpoint
from toolchain.ir import AvgPool2d, Conv2d, Flatten, Linear, Network, Residual, Spike
from toolchain.ir.models import build_model
from toolchain.ir.torch_net import build_modules
from toolchain.neurons.subtractive import SubtractiveParams, zero_reset_step
from toolchain.neurons import run_neurons
from toolchain.quantization.quantize import quantize_snn
from toolchain.snn import SnnConfig, SnnModel


def block(name, cin, cout, stride=1, depth=2, kernel=3):
    """A residual block: `depth` convs (spikes between them), identity or 1x1 projection shortcut."""
    body, c = [], cin
    for d in range(depth):
        body += [Conv2d(f"{name}_c{d}", c, cout, kernel, stride if d == 0 else 1, kernel // 2), Spike(f"{name}_s{d}")]
        c = cout
    body = tuple(body[:-1])
    shortcut = () if stride == 1 and cin == cout else (Conv2d(f"{name}_down", cin, cout, 1, stride, 0),)
    return [Residual(name, body, shortcut), Spike(f"{name}_s")]


def stem(c=4):
    return [Conv2d("stem", 1, c, 3, 1, 1), Spike("stem_s")]


def head(c, size):
    return [AvgPool2d("gp", size), Flatten("f"), Linear("out", c, 3)]


NETS = {
    "identity": lambda: stem() + block("b1", 4, 4) + head(4, 8),
    "projection": lambda: stem() + block("b1", 4, 6, stride=2) + head(6, 4),
    "pool_before_blocks": lambda: stem() + block("b1", 4, 4) + [AvgPool2d("p", 2)] + block("b2", 4, 6, stride=2)
    + [AvgPool2d("p2", 2), Flatten("f"), Linear("out", 6, 3)],
    "identity_after_pool": lambda: stem() + [AvgPool2d("p", 2)] + block("b1", 4, 4) + head(4, 4),
    "deep_body": lambda: stem() + block("b1", 4, 5, stride=2, depth=3) + block("b2", 5, 5, depth=1) + head(5, 4),
    "batch_norm": lambda: list(build_model("resnet-small", (1, 8, 8), 3, batch_norm=True).layers),
}


def make_ckpt(name, neuron="loihi-cuba", coding="poisson", seed=0, reset="subtract", threshold=1.0):
    torch.manual_seed(seed)
    net = Network(tuple(NETS[name]()), (1, 8, 8), 3, name=name)
    state = {f"layers.{k}": v.detach() for k, v in build_modules(net).state_dict().items()}
    for key in [k for k in state if "_bn." in k and state[k].is_floating_point()]:    # folded into biases
        state[key] = torch.rand_like(state[key]) * (0.5 if key.endswith("bias") else 1.0) + 0.5
    cfg = SnnConfig(thresholds={s.name: threshold for s in net.spiking_layers}, coding=coding, neuron=neuron,
                    timesteps=8, reset=reset, input_scale=40.0 if coding == "direct" else None)
    return Checkpoint("snn", net, state, {"name": "none", "mean": [0.0], "std": [1.0]}, snn=cfg.to_dict())


def images(n, seed=0):
    return (np.random.default_rng(seed).normal(size=(n, 1, 8, 8)) + 0.5).astype(np.float32)


def run_chain_zero_reset(chain, h):
    """The lowered chain in float with IF neurons that reset to zero (the chip's reset), no quantization."""
    for layer in chain:
        a = torch.stack([layer.synapse(h[t]) for t in range(len(h))])
        if layer.bias is not None:
            a = a + layer.bias.reshape((-1,) + (1,) * (a.dim() - 3))
        if layer.threshold is None:
            return a.sum(0) / len(h)
        h, _ = run_neurons(a, zero_reset_step, SubtractiveParams(layer.threshold, 1.0),
                           lambda z, dt: (z > 0).to(z.dtype))


@pytest.mark.parametrize("name", sorted(NETS))
def test_the_relayed_chain_computes_the_residual_snn(name):
    """Float, unquantized: the chain with relays gives the logits of the SNN that adds body and shortcut."""
    ckpt = make_ckpt(name, neuron="if", coding="direct", reset="zero")
    model = SnnModel(ckpt.network, ckpt.snn).double().eval()
    model.layers.load_state_dict({k[len("layers."):]: v for k, v in ckpt.state_dict.items()})
    x = torch.as_tensor(images(6), dtype=torch.float64)
    with torch.no_grad():
        ref = model(x, 8, InputEncoder("direct")).logits
        seq = torch.stack([InputEncoder("direct")(x, t) for t in range(8)])
        ours = run_chain_zero_reset(model.lowered(), seq)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
    chain = model.lowered()
    assert sum(l.relays_out for l in chain) == {"identity": 4, "projection": 4, "pool_before_blocks": 4 + 16,
                                                "identity_after_pool": 16, "deep_body": 2 * 4, "batch_norm": 32}[name]
    assert name != "batch_norm" or all(l.bias is not None for l in chain[:-1])
    assert float(ref.abs().sum()) > 0


def test_relay_layout_of_a_projection_block():
    fx, _ = quantize_snn(make_ckpt("projection"), images(4))
    first, last = fx.layers[1], fx.layers[2]
    assert first.output_shape == (6 + 4, 4, 4) and first.relays_out == 4       # one relay per input channel
    assert last.input_shape == (10, 4, 4) and last.relays_in == 4 and last.relays_out == 0
    rows = first.weight[-4:]                                                   # one-hot centre taps, 254 > vth
    assert (np.count_nonzero(rows.reshape(4, -1), axis=1) == 1).all() and (rows.max(axis=(1, 2, 3)) == 254).all()
    assert first.vth <= 252
    assert (last.weight[:, -4:, 0, 0] == 0).all() and np.any(last.weight[:, -4:, 1, 1])   # shortcut at the centre


# pool_before_blocks (an identity block, then a pool, then a projection block) and projection cover identity and
# projection shortcuts with and without pooling; the others run with the slow tests
LAVA_NETS = [pytest.param(n, marks=[] if n in ("pool_before_blocks", "projection") else [pytest.mark.slow])
             for n in sorted(NETS)]


@pytest.mark.lava
@pytest.mark.parametrize("name", LAVA_NETS)
def test_residual_networks_emulator_equals_lava(name, tmp_path):
    """Exported file -> stock netx -> Lava fixed point, every layer's spikes and voltages at every step, 16 samples;
    the relay channels copy the block's input spikes one step later (in the emulator's aligned windows: same tau)."""
    from hw_targets.simulators.emulator import emulate
    from hw_targets.simulators.verify import verify
    ckpt = make_ckpt(name)
    x = images(16, seed=1)
    path = tmp_path / "r.net"
    fx, _ = export_snn(ckpt, str(path), x)
    inputs = encode_for_chip(fx, x)
    report = verify(str(path), inputs)
    assert report.ok and report.samples == 16, report.summary()
    assert report.compared_values == 2 * 16 * fx.timesteps * sum(l.neurons for l in fx.layers)
    assert all(c > 0 for c in report.lava_spikes[:-1]), report.lava_spikes
    trace = emulate(fx, inputs, record_spikes=True)
    for i, layer in enumerate(fx.layers):
        if layer.relays_out and layer.stride == (1, 1) and not layer.relays_in:    # identity, unpooled: a copy
            relays = trace.spikes[i][:, :, -layer.relays_out:]
            if relays.shape[2:] == trace.spikes[i - 1].shape[2:]:
                assert torch.equal(relays, trace.spikes[i - 1]) and relays.any()


@pytest.mark.parametrize("name", ["pool_before_blocks", "deep_body", "batch_norm"])
def test_qat_network_computes_what_the_chip_computes(name):
    """--neuron loihi-cuba trains on the relayed chain: its logits are the emulator's readout, its spike counts the
    emulator's (relays left out of the training side's counts)."""
    from hw_targets.simulators.emulator import run_emulator
    ckpt = make_ckpt(name)
    x = images(8, seed=2)
    fx, _ = quantize_snn(ckpt, x)
    emu = run_emulator(fx, encode_for_chip(fx, x))
    model = SnnModel(ckpt.network, ckpt.snn)
    model.layers.load_state_dict({k[len("layers."):]: v for k, v in ckpt.state_dict.items()})
    with torch.no_grad():
        out = model(torch.as_tensor(x), fx.timesteps, InputEncoder("poisson", seed=0))
    np.testing.assert_allclose(out.logits.numpy(), emu.output_values / 64 / fx.layers[-1].scale / fx.timesteps,
                               rtol=1e-5, atol=1e-6)
    chip = {}
    for layer, counts in zip(fx.layers[:-1], emu.spike_counts[:-1]):
        own = counts[:counts.shape[0] - layer.relays_out]          # (C, H, W), summed over samples
        chip[layer.name] = int(own.sum())
    spiking = {l.name: l.spike_name for l in model.lowered() if l.spike_name}
    assert {spiking[n]: v for n, v in chip.items()} == {k: int(v.sum()) for k, v in out.spike_counts.items()}


def test_relays_are_trained_through():
    """A QAT step's gradient reaches the layers before a block through the relays and the shortcut."""
    ckpt = make_ckpt("projection")
    model = SnnModel(ckpt.network, ckpt.snn)
    model.layers.load_state_dict({k[len("layers."):]: v for k, v in ckpt.state_dict.items()})
    out = model(torch.as_tensor(images(4)), 8, InputEncoder("poisson", seed=0))
    out.logits.sum().backward()
    for name in ("stem", "b1_c0", "b1_c1", "b1_down"):
        assert model.layers[name].weight.grad is not None and model.layers[name].weight.grad.abs().sum() > 0, name


@pytest.mark.parametrize("layers,message", [
    (lambda: block("b1", 1, 4, stride=1) + head(4, 8), "reads the network input"),
    (lambda: stem() + [Residual("b1", (Conv2d("c", 4, 4, 3, 1, 1), Spike("s"), AvgPool2d("p", 2), Conv2d("c2", 4, 4, 3, 1, 1)),
                                (Conv2d("d", 4, 4, 1, 2, 0),)), Spike("b1_s")] + head(4, 4), "pooling inside a residual"),
    (lambda: stem() + [Residual("b1", (Conv2d("c", 4, 4, 3, 1, 1), Spike("s"), Conv2d("c2", 4, 4, 3, 1, 1)))]
     + head(4, 8), "must be followed by a spiking layer"),
])
def test_what_relays_cannot_carry_is_refused_by_name(layers, message):
    net = Network(tuple(layers()), (1, 8, 8), 3)
    model = SnnModel(net, SnnConfig(thresholds={s.name: 1.0 for s in net.spiking_layers}))
    with pytest.raises(LoweringError, match=message):
        model.lowered()


def test_relays_need_neurons_without_current_memory():
    ckpt = make_ckpt("identity")
    ckpt.snn.i_decay = 1024
    with pytest.raises(LoweringError, match="current decay 4096"):
        quantize_snn(ckpt, images(2))


def test_energy_and_fit_count_the_relays():
    from hw_targets.simulators.emulator import run_emulator
    from toolchain.analysis.energy import count_operations, estimate_energy, format_energy_table, relay_synapses
    from toolchain.targets import TARGETS
    fx, _ = quantize_snn(make_ckpt("projection"), images(4))
    result = run_emulator(fx, encode_for_chip(fx, images(4)))
    counts = count_operations(fx, result)
    first, last = counts.layers[1], counts.layers[2]
    assert first.relay_neurons == 4 * 4 * 4 and last.relay_neurons == 0
    assert 0 < first.relay_synaptic_ops < first.synaptic_ops and 0 < last.relay_synaptic_ops < last.synaptic_ops
    # relay synapses: one per relay neuron in (its tap), C_out per relay out (the 1x1 projection's column)
    assert relay_synapses(fx.layers[1]) == 64 and relay_synapses(fx.layers[2]) == np.count_nonzero(
        fx.layers[2].weight[:, -4:]) * 16
    # the ANN equivalent: the body's convs and the 1x1 projection, no relays
    assert first.ann_macs == 6 * 16 * 4 * 9
    assert last.ann_macs == 6 * 16 * 6 * 9 + np.count_nonzero(fx.layers[2].weight[:, -4:]) * 16
    text = format_energy_table(estimate_energy(counts, "loihi2"))
    assert "residual blocks as relay channels: 64 extra neurons (512 neuron updates" in text
    fit = TARGETS.get("loihi2").check_fit(fx)
    assert fit.layers[1].relay_neurons == 64 and "64 of the neurons are relays" in fit.format_fit_table()


@pytest.mark.slow
@pytest.mark.lava
def test_a_trained_resnet_deploys_bit_exact(tmp_path):
    """resnet-small trained briefly on digits -> converted -> one QAT epoch on the relayed chain -> exported: Lava
    equals the emulator on 16 samples, and the QAT network's accuracy is the emulator's on 300 test images (so brief a
    training stays near 20%: the test is about exactness)."""
    from hw_targets.simulators.emulator import run_emulator
    from hw_targets.simulators.verify import verify
    from toolchain.data import load_dataset
    from toolchain.training.ann import train_ann
    from toolchain.training.convert import convert
    from toolchain.training.evaluate import evaluate_snn, load_snn
    from toolchain.training.finetune import finetune
    from toolchain.training.loop import TrainConfig
    digits = load_dataset("digits", limit=300)
    ann = train_ann(digits, "resnet-small", TrainConfig(epochs=3, lr=3e-3), str(tmp_path / "ann.pt"), progress=False)
    snn = convert(ann, digits, timesteps=6, coding="direct", scale=0.5, calib_samples=64)
    qat = finetune(snn, digits, TrainConfig(epochs=1, lr=1e-3, batch_size=32), str(tmp_path / "qat.pt"),
                   neuron="loihi-cuba", progress=False)
    fx, _ = export_snn(qat, str(tmp_path / "r.net"), digits.train_x)
    assert sum(l.relays_out for l in fx.layers) == 32
    inputs = encode_for_chip(fx, digits.test_x)
    report = verify(str(tmp_path / "r.net"), inputs[:16])
    assert report.ok and report.samples == 16 and all(c > 0 for c in report.lava_spikes[:-1]), report.summary()
    emu = run_emulator(fx, inputs, digits.test_y)                                        # the whole test split
    ours = evaluate_snn(load_snn(qat), digits.test_x, digits.test_y, [fx.timesteps])[fx.timesteps]["accuracy"]
    assert emu.accuracy == pytest.approx(ours, abs=1e-9) and emu.accuracy > 0.1      # above chance (10 classes)

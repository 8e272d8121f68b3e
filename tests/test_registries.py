"""The registries as a new maintainer meets them: a neuron model, an input coding and a hardware target added at run
time, each as one module-like object plus its registry entry, go through training, export, emulation and Lava
(neuron), training and deployment (coding), energy and the CLI (target); toolchain/ imports neither hw_targets nor
models; unknown names are errors listing the known ones."""
import ast
import json
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import build_model
from toolchain.analysis.energy import count_operations, estimate_energy
from toolchain.cli import build_parser, main
from toolchain.coding import CODINGS, InputCoding, InputEncoder
from toolchain.data import load_dataset
from toolchain.deploy import encode_for_chip, export_snn, simulate
from toolchain.errors import ConfigError, DeploymentWarning, ModelError
from toolchain.ir.models import MODELS
from toolchain.ir.torch_net import AnnModel
from toolchain.io.checkpoint import Checkpoint, load_checkpoint
from toolchain.io.netx import read_netx
from toolchain.neurons import NEURONS, ChipNeuron, NeuronModel, NeuronState
from toolchain.neurons.base import next_dt
from toolchain.neurons.run import LOOP, execution_path
from toolchain.quantization.fixed_point import FxLayer, FxNetwork, SimulationResult
from toolchain.quantization.quantize import quantize_snn
from toolchain.snn import SnnConfig, SnnModel
from toolchain.targets import SIMULATORS, TARGETS, HardwareTarget
from toolchain.training import TrainConfig, TrainingWarning
from toolchain.training.convert import convert
from toolchain.training.finetune import finetune

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def restored_registries():
    """Whatever a test registers is gone after it."""
    saved = [(r, r.snapshot()) for r in (NEURONS, CODINGS, TARGETS, SIMULATORS, MODELS)]
    yield
    for registry, snapshot in saved:
        registry.restore(snapshot)


# -- a toy neuron: integrate-and-fire with reset to zero (Loihi's own reset, so its chip form is exact) ------------
def _toy_neuron_module():
    @dataclass(frozen=True)
    class Params:
        threshold: float

    def step(current, state, params, spike_fn):
        v = state.v + current
        spikes = spike_fn(v / params.threshold - 1.0, state.dt)
        return spikes, NeuronState(v * (1.0 - spikes.detach()), state.u, next_dt(spikes, state.dt))

    def nir(nir_mod, shape, theta, config, dt):
        full = lambda v: np.full(shape, v, dtype=np.float32)       # noqa: E731
        return nir_mod.IF(r=full(1.0 / dt), v_threshold=full(theta), v_reset=full(0.0), metadata={"toy": True})

    module = types.SimpleNamespace(Params=Params, step=step, calls=[])

    def params(config, threshold):
        module.calls.append(threshold)
        return Params(threshold)

    module.MODEL = NeuronModel(name="if-zero", summary="toy: integrate-and-fire, reset to zero", reset="zero",
                               step=step, params=params, chip=lambda config: ChipNeuron(4096, 0), nir=nir)
    return module


def _digits(limit=96):
    return load_dataset("digits", seed=0, limit=limit)


def _converted(data, neuron, coding, T=4, seed=0):
    torch.manual_seed(seed)
    net = build_model("vgg-small", data.input_shape, data.num_classes)
    ann = Checkpoint("ann", net, AnnModel(net).state_dict(), dict(data.info()))
    return convert(ann, data, timesteps=T, scale=0.5, coding=coding, neuron=neuron, calib_samples=32, seed=seed)


def _finetuned(snn: Checkpoint, data, path) -> Checkpoint:
    """Fine-tuned for one epoch (a few batches); its history holds the start (epoch 0) and the trained epoch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrainingWarning)           # a random network may not improve in one epoch
        tuned = finetune(snn, data, TrainConfig(epochs=1, lr=1e-3, batch_size=32), str(path),
                         surrogate={"name": "linear"}, progress=False)
    history = tuned.training["state"]["history"]
    assert len(history) == 2 and history[-1]["loss"] > 0
    return tuned


def test_a_toy_neuron_trains_exports_emulates_and_loads_in_lava(tmp_path):
    toy = _toy_neuron_module()
    NEURONS.register(toy.MODEL)
    data = _digits()
    snn = _converted(data, "if-zero", "direct")
    assert snn.snn.neuron == "if-zero" and toy.calls                       # conversion ran its neurons
    model = SnnModel(snn.network, snn.snn)
    model.load_state_dict(snn.state_dict)
    x = torch.as_tensor(data.train_x[:8])
    assert execution_path(toy.step, snn.snn.spike_fn(), torch.zeros(4, 8, 3)) == LOOP     # no fused run: the loop
    loss = F.cross_entropy(model(x, 4, InputEncoder("direct")).logits, torch.as_tensor(data.train_y[:8]))
    loss.backward()
    assert all(float(p.grad.abs().sum()) > 0 for n, p in model.named_parameters() if n.endswith("weight"))

    calls = len(toy.calls)
    tuned = _finetuned(snn, data, tmp_path / "toy.pt")
    assert len(toy.calls) > calls and load_checkpoint(str(tmp_path / "toy.pt")).snn.neuron == "if-zero"

    path = tmp_path / "toy.net"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeploymentWarning)                 # its chip form is exact: no warning
        fx, report = export_snn(tuned, str(path), data.train_x)
    assert all((layer.i_decay, layer.v_decay) == (4096, 0) for layer in fx.layers)
    assert read_netx(str(path)).metadata["neuron"] == "if-zero"
    net, emu = simulate(str(path), data.test_x[:40], data.test_y[:40], backend="emulator")
    assert emu.samples == 40 and sum(int(c.sum()) for c in emu.spike_counts[:-1]) > 0

    pytest.importorskip("lava.lib.dl.netx")
    from lava.lib.dl.netx.hdf5 import Network as NetxNetwork
    lava_net = NetxNetwork(net_config=str(path))                            # the stock loader builds it
    assert len(lava_net.layers) == len(fx.layers)
    report = SIMULATORS.get("lava").compare(str(path), encode_for_chip(net, data.test_x[:2]))
    assert report.ok and report.compared_values > 0


def test_a_neuron_without_a_chip_form_says_so_in_one_line(tmp_path):
    toy = _toy_neuron_module()
    NEURONS.register(NeuronModel(name="float-only", summary="toy without a Loihi form", reset="zero",
                                 step=toy.step, params=toy.MODEL.params))
    snn = _converted(_digits(48), "float-only", "direct")
    with pytest.raises(Exception, match="neuron model 'float-only' has no Loihi fixed-point form"):
        export_snn(snn, str(tmp_path / "x.net"), _digits(48).train_x)
    assert not (tmp_path / "x.net").exists()


def test_the_subtractive_reset_warns_python_users_at_export(tmp_path):
    data = _digits(48)
    snn = _converted(data, "if", "direct")
    with pytest.warns(DeploymentWarning, match="resets by subtraction; Loihi resets to zero"):
        export_snn(snn, str(tmp_path / "if.net"), data.train_x)


# -- a toy input coding: a spike where the normalized pixel is above zero ------------------------------------------
def _toy_coding_module():
    return types.SimpleNamespace(CODING=InputCoding(
        name="thresholded", summary="toy: one spike every step where x > 0",
        encode=lambda x, generator: (x > 0).to(x.dtype), input_bits=lambda signed: 0,
        nir="1 where the normalized image is > 0, else 0"))


def test_a_toy_coding_trains_and_the_chip_receives_what_training_saw(tmp_path):
    CODINGS.register(_toy_coding_module().CODING)
    data = _digits()
    snn = _converted(data, "if", "thresholded")
    _finetuned(snn, data, tmp_path / "t.pt")

    # deployed: trained under Loihi's own neuron, the toolchain's model computes what the emulator computes
    qat = _converted(data, "loihi-cuba", "thresholded", T=5)
    x = data.test_x[:24]
    fx, _ = quantize_snn(qat, data.train_x)
    assert fx.input_coding == "thresholded" and fx.input_bits == 0
    chip = encode_for_chip(fx, x, timesteps=5)
    assert np.array_equal(chip, np.repeat((x > 0)[:, None], 5, axis=1).astype(np.int64))
    model = SnnModel(qat.network, SnnConfig.from_dict(qat.snn.to_dict())).double()
    model.load_state_dict(qat.state_dict)
    with torch.no_grad():
        out = model(torch.as_tensor(x, dtype=torch.float64), 5)
    emu = SIMULATORS.get("emulator").run(fx, chip, np.zeros(len(x), np.int64))
    expected = emu.output_values / 64 / fx.layers[-1].scale / 5
    np.testing.assert_allclose(out.logits.numpy(), expected, rtol=1e-9, atol=1e-9)
    spikes = [float(c.sum()) for c in emu.spike_counts[:-1]]
    assert [float(out.spike_counts[n].sum()) for n in out.spike_counts] == spikes and min(spikes) > 0


# -- a toy energy target: one new module (its formula, its sourced constants) plus its registry entry --------------
def _toy_target_module(tmp_path):
    constants = {"synop": {"value": 2.0, "unit": "pJ", "source": "toy: test constant", "kind": "model"},
                 "update": {"value": 0.5, "unit": "pJ", "source": "toy: test constant", "kind": "model"}}
    energy = tmp_path / "energy.json"
    energy.write_text(json.dumps({"name": "toy-chip", "title": "Toy chip", "model": "toy-ops",
                                  "description": "toy: synaptic ops and neuron updates", "sources": ["a test"],
                                  "constants": constants}))

    def snn_energy(layer, table, precision):
        return {"synaptic_ops": (layer.synaptic_ops + layer.chip_macs) * table.pj("synop"),
                "neuron_updates": layer.neuron_updates * table.pj("update")}

    return types.SimpleNamespace(TARGET=HardwareTarget(
        name="toy-chip", summary="toy: 2 pJ per synaptic op, 0.5 pJ per neuron update", energy_file=energy,
        snn_energy=snn_energy, ann_target="cmos45nm"))


def _counted():
    w = np.array([[2, 0, -4], [0, 6, 8]], dtype=np.int64)
    net = FxNetwork(input_shape=(3,), layers=[FxLayer("out", "dense", w, (3,), (2,), vth=10, is_output=True)],
                    num_classes=2, timesteps=4)
    result = SimulationResult("emulator", 2, 4, np.zeros(2, np.int64), None, ["out"], [np.array([1, 3])],
                              np.array([4, 0, 2]))
    return net, result


def test_a_toy_target_prices_energy_and_appears_in_the_cli(tmp_path, capsys):
    TARGETS.register(_toy_target_module(tmp_path).TARGET)
    net, result = _counted()
    counts = count_operations(net, result)
    report = estimate_energy(counts, "toy-chip")
    synops = (4 * 1 + 2 * 2) / 2                                   # per inference: input spikes x their fan-out
    assert counts.layers[0].synaptic_ops == synops
    assert report.snn_total_pj == pytest.approx(synops * 2.0 + 2 * 4 * 0.5)
    assert report.ann_total_pj == pytest.approx(2 * 3 * 4.6) and report.ann_target == "cmos45nm"
    assert report.constants["toy-chip.synop"]["source"] == "toy: test constant"
    with pytest.raises(Exception, match="no fit mapper"):
        TARGETS.get("toy-chip").check_fit(net)

    energy = next(a for a in build_parser()._subparsers._group_actions[0].choices["energy"]._actions
                  if "--target" in a.option_strings)
    assert "toy-chip" in energy.choices and "2 pJ per synaptic op" in energy.help
    sim = tmp_path / "sim.json"
    from toolchain.cli.commands_deploy import result_to_json
    sim.write_text(json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in
                               result_to_json(net, result).items()}, default=lambda o: np.asarray(o).tolist()))
    from toolchain.io.netx import write_netx
    write_netx(net, tmp_path / "m.net")
    assert main(["energy", str(tmp_path / "m.net"), "--target", "toy-chip", "--from", str(sim)]) == 0
    assert "Toy chip" in capsys.readouterr().out


# -- the plugin boundary -------------------------------------------------------------------------------------------
def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_toolchain_imports_neither_hw_targets_nor_models():
    offending = [(str(p.relative_to(ROOT)), m) for p in sorted((ROOT / "toolchain").rglob("*.py"))
                 for m in _imports(p) if m.split(".")[0] in ("hw_targets", "models")]
    assert offending == []


def test_the_registries_find_the_plugins_entries():
    assert TARGETS.names() == ["loihi", "loihi2", "cmos45nm", "memory_aware"]
    assert SIMULATORS.names() == ["emulator", "lava"]
    assert {"vgg-small", "mnist-small", "vgg5", "resnet20"} <= set(MODELS.names())
    assert NEURONS.names() == ["if", "lif", "loihi-cuba"] and CODINGS.names() == ["poisson", "direct"]
    for name in ("loihi", "loihi2"):
        target = TARGETS.get(name)
        assert target.limits_file.parent == ROOT / "hw_targets" / name and target.fit is not None
    for target in TARGETS.entries():
        table = target.energy()
        assert target.energy_file.parent.parent == ROOT / "hw_targets"
        assert all(c.source for c in table.constants.values())


@pytest.mark.parametrize("lookup,name", [(NEURONS.get, "izhikevich"), (CODINGS.get, "latency"),
                                         (TARGETS.get, "truenorth"), (SIMULATORS.get, "brian")])
def test_an_unknown_name_is_an_error_listing_the_known_ones(lookup, name):
    with pytest.raises(ConfigError, match=f"unknown .* '{name}'; known .*: "):
        lookup(name)
    with pytest.raises(ModelError, match="known models: .*vgg-small"):
        MODELS.get("vgg7")
    with pytest.raises(ConfigError, match="if, lif, loihi-cuba"):
        SnnConfig(neuron="izhikevich")


def test_cli_choices_come_from_the_registries(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")                             # help lines unwrapped
    NEURONS.register(_toy_neuron_module().MODEL)
    CODINGS.register(_toy_coding_module().CODING)
    assert main(["convert", "--help"]) == 0
    out = capsys.readouterr().out
    assert "if-zero" in out and "thresholded" in out and "reset to zero" in out
    assert main(["convert", "a.pt", "-o", "b.pt", "--neuron", "izhikevich"]) == 2
    assert "invalid choice" in capsys.readouterr().err

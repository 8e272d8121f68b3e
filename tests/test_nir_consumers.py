"""snntc's NIR files in the libraries people load them into: snnTorch, Norse, Sinabs (installed with the
'consumers' extra) and SpikingJelly (its NIR support needs Python >= 3.11: set SNNTC_SPIKINGJELLY_PYTHON to an
interpreter with spikingjelly[nir] >= 2.0). Each loads the file unmodified through its own NIR import and runs the
same inputs step by step (tests/consumers/runners.py); its predictions are compared with the toolchain's.

Digits networks made by the command line (train-ann, convert, finetune), direct coding (no Poisson seeds):
- where the consumer's neurons are ours, the predictions agree 100%: reset-to-zero IF networks (finetune --reset
  zero) in snnTorch (--if-node lif), Norse and SpikingJelly; quantized CUBA networks (--quantized) in snnTorch,
  Norse and SpikingJelly; and every IF/LIF network in those that run it, against the toolchain's own reset-to-zero
  simulation of it (the effect `snntc export` warns about);
- where they are not, the measured figure (README, "NIR"): Sinabs fires several spikes per step and clips the
  potential at -threshold; Norse's LIF ignores r; snnTorch hard-codes dt = 1e-4;
- what a consumer cannot load raises there (AvgPool2d in Norse and Sinabs, IF nodes in snnTorch, CubaLIF in Sinabs).
"""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")

from toolchain.io.checkpoint import load_checkpoint  # noqa: E402
from toolchain.cli import main  # noqa: E402
from toolchain.data import load_recorded  # noqa: E402
from toolchain.training.evaluate import load_snn  # noqa: E402

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "consumers"))
import runners  # noqa: E402

pytestmark = pytest.mark.slow
SJ_PYTHON = os.environ.get("SNNTC_SPIKINGJELLY_PYTHON")
_PACKAGES = {"snntorch": "snntorch", "norse": "norse", "sinabs": "sinabs", "spikingjelly": "spikingjelly"}


def _has_spikingjelly_nir() -> bool:
    spec = importlib.util.find_spec("spikingjelly")
    return spec is not None and importlib.util.find_spec("spikingjelly.activation_based.nir_exchange") is not None


def missing(consumer: str):
    """Why this consumer cannot run here (one line), or None."""
    if consumer == "spikingjelly":
        if not (SJ_PYTHON or _has_spikingjelly_nir()):
            return ("SpikingJelly's NIR import (spikingjelly[nir] >= 2.0, Python >= 3.11) not found: set "
                    "SNNTC_SPIKINGJELLY_PYTHON to an interpreter that has it")
        return None
    return None if importlib.util.find_spec(_PACKAGES[consumer]) else \
        f"{consumer} not installed (pip install 'snntc[consumers]')"


def needs(*consumers):
    """Skip (before the module's networks are trained) where a consumer is missing."""
    reasons = [r for r in map(missing, consumers) if r]
    return pytest.mark.skipif(bool(reasons), reason=reasons[0] if reasons else "")


def case(*values):
    """A parameter set whose consumer (the first string among the values that names one) must be installed."""
    consumer = next(v for v in values if v in _PACKAGES)
    return pytest.param(*values, marks=needs(consumer))


if not any(missing(c) is None for c in _PACKAGES):
    pytest.skip("none of snnTorch, Norse, Sinabs, SpikingJelly is installed (pip install 'snntc[consumers]')",
                allow_module_level=True)


def run_consumer(consumer, path, x, T, dt, tmp_path):
    if consumer == "spikingjelly" and SJ_PYTHON and not _has_spikingjelly_nir():
        inputs, out = str(tmp_path / "inputs.npy"), str(tmp_path / "predictions.npy")
        np.save(inputs, x)
        proc = subprocess.run([SJ_PYTHON, os.path.join(HERE, "consumers", "runners.py"), consumer, path, inputs,
                               str(T), repr(dt), out], capture_output=True, text=True, timeout=600)
        if proc.returncode:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1])
        return np.load(out)
    return runners.RUNNERS[consumer](path, x, T, dt)


def cli(*argv):
    assert main([str(a) for a in argv]) == 0, argv


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    """Digits networks made as a user makes them: an ANN, converted to IF and LIF (reset by subtraction), fine-tuned
    under reset to zero and under Loihi's CUBA dynamics."""
    d = tmp_path_factory.mktemp("consumers")
    quick = ["--no-progress", "--force"]
    cli("train-ann", "--epochs", 5, "--limit", 600, "-o", d / "ann.pt", *quick)
    convert = ["--coding", "direct", "--scale", 0.5, "--timesteps", 5, "--force"]
    cli("convert", d / "ann.pt", *convert, "-o", d / "if.pt")
    cli("convert", d / "ann.pt", *convert, "--neuron", "lif", "--leak", 0.9, "-o", d / "lif.pt")
    cli("finetune", d / "if.pt", "--reset", "zero", "--epochs", 2, "-o", d / "if_zero.pt", *quick)
    cli("finetune", d / "if.pt", "--neuron", "loihi-cuba", "--epochs", 2, "-o", d / "cuba.pt", *quick)
    return d


class Case:
    """One exported file and the toolchain's predictions on the test split (as `snntc evaluate` computes them, and
    with the IF/LIF neurons reset to zero instead)."""

    def __init__(self, d, name, *options):
        self.ckpt = load_checkpoint(str(d / f"{name}.pt"))
        self.path = str(d / f"{name}{''.join(options).replace('-', '_')}.nir")
        cli("export", d / f"{name}.pt", "--format", "nir", "-o", self.path, "--force", *options)
        self.graph = nir.read(self.path)
        data = load_recorded(self.ckpt.dataset)
        self.x, self.y = data.test_x, data.test_y
        self.ours = self._predict()
        self.ours_zero = self._predict(reset="zero") if self.ckpt.snn.neuron != "loihi-cuba" else self.ours
        self.T, self.dt = int(self.graph.metadata["timesteps"]), float(self.graph.metadata["dt"])

    def _predict(self, **overrides):
        with torch.no_grad():
            return load_snn(self.ckpt, **overrides)(torch.as_tensor(self.x)).logits.argmax(1).numpy()

    def inputs(self):
        """The coded input as the file's metadata says (quantized direct coding: round(x * input_scale))."""
        meta = self.graph.metadata["input"]
        return np.round(self.x * meta["input_scale"]).astype(np.float32) if "input_scale" in meta else self.x

    def run(self, consumer, tmp_path):
        return run_consumer(consumer, self.path, self.inputs(), self.T, self.dt, tmp_path)


@pytest.fixture(scope="module")
def cases(networks):
    made = {}

    def get(name, *options):
        key = (name,) + options
        if key not in made:
            made[key] = Case(networks, name, *options)
        return made[key]
    return get


# -- 100%: the consumer's neurons are ours --------------------------------------------------------------------------
@pytest.mark.parametrize("consumer,options", [case("norse", ()), case("spikingjelly", ()),
                                              case("snntorch", ("--if-node", "lif"))])
def test_reset_to_zero_if_network_agrees_fully(cases, consumer, options, tmp_path):
    exported = cases("if_zero", *options)
    assert exported.graph.metadata["reset_mode"] == "zero"
    assert np.array_equal(exported.run(consumer, tmp_path), exported.ours)


@pytest.mark.parametrize("consumer", [case("norse"), case("spikingjelly"), case("snntorch")])
def test_quantized_cuba_network_agrees_fully(cases, consumer, tmp_path):
    exported = cases("cuba", "--quantized")
    assert {type(n).__name__ for n in exported.graph.nodes.values()} >= {"CubaLIF", "Conv2d", "Affine"}
    weights = [n.weight for n in exported.graph.nodes.values() if hasattr(n, "weight")]
    assert all(np.array_equal(w, np.round(w)) and np.abs(w).max() <= 256 for w in weights)    # Loihi's integers
    assert np.array_equal(exported.run(consumer, tmp_path), exported.ours)


@pytest.mark.parametrize("name,consumer,options", [
    case("if", "norse", ()), case("if", "spikingjelly", ()), case("if", "snntorch", ("--if-node", "lif")),
    case("lif", "spikingjelly", ()), case("lif", "snntorch", ())])
def test_subtracting_networks_run_as_reset_to_zero_and_export_says_so(cases, name, consumer, options, tmp_path,
                                                                        capsys):
    """A network that resets by subtraction runs in these consumers exactly as the toolchain's reset-to-zero
    simulation of it; the export's warning gives that simulation's change."""
    exported = cases(name, *options)
    predictions = exported.run(consumer, tmp_path)
    assert np.array_equal(predictions, exported.ours_zero)
    effect = exported.graph.metadata["reset_to_zero_effect"]
    assert effect["changed"] == int(np.sum(exported.ours != exported.ours_zero)) > 0
    assert effect["samples"] == len(exported.x)


# -- measured: the consumer's neurons differ ------------------------------------------------------------------------
@pytest.mark.parametrize("name,consumer,options,low,high", [
    case("if", "sinabs", (), 0.80, 0.95),         # several spikes per step, potential clipped at -threshold
    case("if_zero", "sinabs", (), 0.65, 0.85),    # ... and it subtracts
    case("cuba", "norse", (), 0.80, 0.95),        # the float weights, not the deployed integers (use --quantized)
    case("lif", "norse", (), 0.0, 0.3),           # Norse's LIF ignores r: the input is scaled by dt / tau = 1 - leak
])
def test_measured_agreement_where_semantics_differ(cases, name, consumer, options, low, high, tmp_path):
    exported = cases(name, *options)
    agreement = float(np.mean(exported.run(consumer, tmp_path) == exported.ours))
    assert low <= agreement <= high, agreement


@needs("snntorch", "spikingjelly")
def test_dt_other_than_1e_4_breaks_snntorch_but_not_spikingjelly(cases, tmp_path):
    lif = cases("lif", "--dt", "1e-3")
    assert np.mean(lif.run("snntorch", tmp_path) == lif.ours_zero) < 0.5      # snnTorch assumes dt = 1e-4
    assert np.array_equal(lif.run("spikingjelly", tmp_path), lif.ours_zero)


@needs("spikingjelly")
def test_avg_and_sum_pool_give_the_same_predictions(cases, tmp_path):
    summed, averaged = cases("if_zero"), cases("if_zero", "--pool", "avg")
    assert {type(n).__name__ for n in averaged.graph.nodes.values()} >= {"AvgPool2d"}
    assert np.array_equal(averaged.run("spikingjelly", tmp_path), summed.run("spikingjelly", tmp_path))


# -- what a consumer cannot load ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,consumer,options,error", [
    case("if_zero", "norse", ("--pool", "avg"), KeyError),       # no AvgPool2d mapping
    case("if_zero", "sinabs", ("--pool", "avg"), KeyError),
    case("if_zero", "snntorch", (), AssertionError),              # IF nodes: "r != 1 not supported"
    case("cuba", "sinabs", ("--quantized",), KeyError),           # no CubaLIF mapping
])
def test_what_consumers_cannot_load(cases, name, consumer, options, error, tmp_path):
    with pytest.raises(error):
        cases(name, *options).run(consumer, tmp_path)

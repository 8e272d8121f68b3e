"""NIR import: snntc's own files come back as the same network (weights, thresholds, predictions); networks that
SpikingJelly and Norse trained and wrote with their own exporters (tests/data/nir, made by
tests/consumers/make_source_networks.py) import with the accuracy they had there on the same inputs, and deploy:
fine-tuned under Loihi's dynamics, exported to netx, the emulator equals Lava on them. What is not supported is
named in one line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")

from toolchain.io.checkpoint import Checkpoint, load_checkpoint  # noqa: E402
from toolchain.cli import main  # noqa: E402
from toolchain.data import load_dataset  # noqa: E402
from toolchain.errors import ImportModelError  # noqa: E402
from toolchain.training.evaluate import load_snn  # noqa: E402
from toolchain.ir import AvgPool2d, Conv2d, Flatten, Linear, Network, Spike  # noqa: E402
from toolchain.io.nir import NirOptions, export_nir  # noqa: E402
from toolchain.io.nir_import import import_nir  # noqa: E402
from toolchain.snn import SnnConfig, SnnModel  # noqa: E402

HERE = os.path.dirname(__file__)
DATA = os.path.join(HERE, "data", "nir")


def vgg_like():
    return Network((Conv2d("c1", 1, 4, 3, 1, 1), Spike("s1"), AvgPool2d("p1", 2), Conv2d("c2", 4, 8, 3, 1, 1, bias=True),
                    Spike("s2"), AvgPool2d("p2", 2), Flatten("f"), Linear("fc", 32, 16), Spike("s3"),
                    Linear("out", 16, 10)), (1, 8, 8), 10, name="vgg-like")


def snn_checkpoint(net, seed=0, **config):
    torch.manual_seed(seed)
    model = SnnModel(net, SnnConfig(**config))
    thresholds = {s.name: float(0.3 + 0.1 * i + 1e-9 * (i + 1)) for i, s in enumerate(net.spiking_layers)}
    cfg = {"coding": "direct", "timesteps": 5, **config, "thresholds": thresholds}
    return Checkpoint("snn", net, model.state_dict(), {"name": "digits"}, snn=SnnConfig(**cfg).to_dict())


def predictions(ckpt, x):
    with torch.no_grad():
        return load_snn(ckpt)(torch.as_tensor(x)).logits.argmax(1).numpy()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# -- round trip -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config,options", [
    ({"neuron": "if"}, NirOptions()),
    ({"neuron": "if", "reset": "zero"}, NirOptions(if_node="lif")),
    ({"neuron": "lif", "leak": 0.85}, NirOptions(pool="avg", dense="linear", dt=1e-3)),
    ({"neuron": "loihi-cuba", "i_decay": 1024, "v_decay": 256}, NirOptions()),
])
def test_export_then_import_gives_the_same_network(config, options, digits, tmp_path):
    ckpt = snn_checkpoint(vgg_like(), **config)
    path = str(tmp_path / "m.nir")
    export_nir(ckpt, path, digits.train_x, options)
    back = import_nir(path)
    assert back.network.to_dict() == ckpt.network.to_dict()
    assert set(back.state_dict) == set(ckpt.state_dict)
    for key, value in ckpt.state_dict.items():          # the sum pool's 1/4 undone exactly
        assert torch.equal(back.state_dict[key], value), key
    mine, theirs = SnnConfig.of(ckpt.snn), SnnConfig.of(back.snn)
    assert theirs.thresholds == mine.thresholds                                   # float64, from the metadata
    for field in ("neuron", "leak", "reset", "coding", "timesteps", "i_decay", "v_decay"):
        assert getattr(theirs, field) == pytest.approx(getattr(mine, field), abs=1e-12), field
    x = digits.test_x[:64]
    assert np.array_equal(predictions(back, x), predictions(ckpt, x))


def test_the_metadata_records_the_split_and_the_coding(digits, tmp_path):
    ckpt = snn_checkpoint(vgg_like(), neuron="if")
    ckpt.dataset = digits.info()
    path = str(tmp_path / "m.nir")
    export_nir(ckpt, path, digits.train_x)
    meta = nir.read(path).metadata
    split = meta["dataset"]
    assert split["name"] == "digits" and split["fingerprint"] == digits.split["fingerprint"]
    assert split["seed"] == digits.split["seed"] and split["test_fraction"] == digits.split["test_fraction"]
    assert dict(split["sizes"]) == {k: v for k, v in digits.split["sizes"].items()}
    assert meta["input"]["coding"] == "direct" and np.allclose(meta["input"]["mean"], digits.mean)
    assert meta["dt"] == 1e-4 and np.isfinite([np.asarray(getattr(n, f)).max() for n in nir.read(path).nodes.values()
                                               for f in ("tau", "r", "tau_mem", "tau_syn") if hasattr(n, f)]).all()


# -- networks from SpikingJelly and Norse ---------------------------------------------------------------------------
def source(library):
    with open(os.path.join(DATA, f"{library}_digits.json")) as f:
        return os.path.join(DATA, f"{library}_digits.nir"), json.load(f)


@pytest.mark.parametrize("library", ["spikingjelly", "norse"])
def test_networks_from_spikingjelly_and_norse_predict_as_there(library, digits):
    path, info = source(library)
    assert info["fingerprint"] == digits.split["fingerprint"]          # the same test images, in the same order
    ckpt = import_nir(path, dt=info["import_dt"], timesteps=info["timesteps"], dataset_shape=digits.input_shape)
    assert ckpt.snn.reset == "zero" and ckpt.snn.neuron == "if"
    ours = predictions(ckpt, digits.test_x)
    assert np.array_equal(ours, np.array(info["test_predictions"]))
    assert np.mean(ours == digits.test_y) == pytest.approx(info["test_accuracy"])


@pytest.mark.slow
@pytest.mark.lava
@pytest.mark.parametrize("library", ["spikingjelly", "norse"])
def test_imported_network_deploys_and_the_emulator_equals_lava(library, tmp_path, capsys):
    path, info = source(library)
    d = tmp_path
    argv = ["import", path, "-o", d / "imported.pt", "--timesteps", info["timesteps"], "--dt", info["import_dt"],
            "--json", d / "import.json"]
    assert main([str(a) for a in argv]) == 0
    with open(d / "import.json") as f:
        assert json.load(f)["test_accuracy"] == pytest.approx(info["test_accuracy"])
    assert main([str(a) for a in ["finetune", d / "imported.pt", "--neuron", "loihi-cuba", "--epochs", 1, "--limit",
                                  300, "-o", d / "cuba.pt", "--no-progress"]]) == 0
    assert main(["export", str(d / "cuba.pt"), "-o", str(d / "cuba.net")]) == 0
    assert main(["verify", str(d / "cuba.net"), "--samples", "4", "--json", str(d / "verify.json")]) == 0
    with open(d / "verify.json") as f:
        report = json.load(f)
    assert report["ok"] and report["spike_mismatches"] == 0 and report["voltage_mismatches"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("library", ["spikingjelly", "norse"])
def test_freshly_trained_source_networks_import_too(library, digits, tmp_path):
    """The same as the stored files, from the libraries themselves where they are installed."""
    python = os.environ.get("SNNTC_SPIKINGJELLY_PYTHON") if library == "spikingjelly" else sys.executable
    if library == "norse":
        pytest.importorskip("norse", reason="norse not installed (pip install 'snntc[consumers]')")
    elif not python:
        pytest.skip("set SNNTC_SPIKINGJELLY_PYTHON to an interpreter with spikingjelly[nir] >= 2.0 (Python >= 3.11)")
    npz = str(tmp_path / "digits.npz")
    np.savez(npz, train_x=digits.train_x, train_y=digits.train_y, test_x=digits.test_x, test_y=digits.test_y,
             fingerprint=digits.split["fingerprint"])
    subprocess.run([python, os.path.join(HERE, "consumers", "make_source_networks.py"), library, npz, str(tmp_path)],
                   check=True, capture_output=True, timeout=900)
    with open(tmp_path / f"{library}_digits.json") as f:
        info = json.load(f)
    ckpt = import_nir(str(tmp_path / f"{library}_digits.nir"), dt=info["import_dt"], timesteps=info["timesteps"],
                      dataset_shape=digits.input_shape)
    assert np.array_equal(predictions(ckpt, digits.test_x), np.array(info["test_predictions"]))


# -- what is not imported ---------------------------------------------------------------------------------------------
def _write(graph, tmp_path, name="g.nir"):
    path = str(tmp_path / name)
    nir.write(path, graph)
    return path


def _chain(*nodes, type_check=True):
    return nir.NIRGraph.from_list(*nodes, type_check=type_check)


W = np.ones((4, 64), np.float32)
OUT = np.ones((10, 4), np.float32)


def _if(n=4, **kw):
    params = {"r": np.full(n, 1e4, np.float32), "v_threshold": np.full(n, 1.0, np.float32),
              "v_reset": np.zeros(n, np.float32)}
    params.update(kw)
    return nir.IF(**params)


@pytest.mark.parametrize("nodes,pattern", [
    ((nir.Input(np.array([64])), nir.Linear(W), nir.LI(np.full(4, 1e-3), np.ones(4), np.zeros(4)), nir.Linear(OUT),
      nir.Output(np.array([10]))), r"unsupported NIR nodes '.*' \(LI\); supported: Input, Output, Conv2d"),
    ((nir.Input(np.array([64])), nir.Linear(W), _if(), nir.Linear(OUT), _if(10), nir.Output(np.array([10]))),
     r"\(IF\) feeds Output; the toolchain reads the last dense layer's output"),
    ((nir.Input(np.array([64])), nir.Linear(W), _if(v_reset=np.full(4, -0.5, np.float32)), nir.Linear(OUT),
      nir.Output(np.array([10]))), r"\(IF\): v_reset must be 0"),
    ((nir.Input(np.array([64])), nir.Linear(W), _if(v_threshold=np.arange(1, 5, dtype=np.float32)), nir.Linear(OUT),
      nir.Output(np.array([10]))), r"\(IF\): v_threshold differs between neurons \(1 \.\. 4\)"),
    ((nir.Input(np.array([64])), nir.Linear(W),
      nir.LIF(np.full(4, 1e-5), np.ones(4), np.zeros(4), np.ones(4), v_reset=np.zeros(4)), nir.Linear(OUT),
      nir.Output(np.array([10]))), r"\(LIF\): tau = 1e-05 s gives a decay per step .* outside \(0, 1\] at dt = 0.0001 s"),
])
def test_unsupported_graphs_give_one_line(nodes, pattern, tmp_path):
    path = _write(_chain(*nodes), tmp_path)
    with pytest.raises(ImportModelError, match=pattern) as info:
        import_nir(path, timesteps=4)
    assert "\n" not in str(info.value)


def test_branches_and_bad_files_give_one_line(tmp_path):
    nodes = {"input": nir.Input(np.array([64])), "a": nir.Linear(W), "b": nir.Linear(W), "n": _if(),
             "out": nir.Linear(OUT), "output": nir.Output(np.array([10]))}
    edges = [("input", "a"), ("input", "b"), ("a", "n"), ("b", "n"), ("n", "out"), ("out", "output")]
    path = _write(nir.NIRGraph(nodes, edges), tmp_path)
    with pytest.raises(ImportModelError, match="nodes input, n branch or join"):
        import_nir(path, timesteps=4)
    (tmp_path / "notes.nir").write_text("not a graph")
    with pytest.raises(ImportModelError, match="notes.nir: not a readable NIR graph"):
        import_nir(str(tmp_path / "notes.nir"))
    ok = _write(_chain(nir.Input(np.array([64])), nir.Linear(W), _if(), nir.Linear(OUT), nir.Output(np.array([10]))),
                tmp_path, "ok.nir")
    with pytest.raises(ImportModelError, match="does not say how many time steps .* pass --timesteps"):
        import_nir(ok)


def test_cli_import_of_a_nir_file(tmp_path, capsys):
    path, info = source("spikingjelly")
    out = str(tmp_path / "sj.pt")
    assert main(["import", path, "-o", out, "--timesteps", "4"]) == 0
    printed = capsys.readouterr().out
    assert "reset to zero" in printed and f"{info['test_accuracy']:.2%}" in printed
    ckpt = load_checkpoint(out, kind="snn")
    assert ckpt.dataset["fingerprint"] == info["fingerprint"] and ckpt.training["import"]["format"] == "nir"
    other = str(tmp_path / "mnist.pt")
    assert main(["import", path, "-o", other, "--timesteps", "4", "--dataset", "mnist5k"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "takes inputs of shape (1, 8, 8)" in err and not os.path.exists(other)


def test_a_sum_pool_before_a_neuron_scales_the_synapse_before_it(tmp_path):
    """Conv -> SumPool -> IF: the toolchain's average pool gives a quarter of the sum, so the conv's weights (and
    bias) are multiplied by 4; a sum pool before a dense layer scales that layer instead."""
    w = np.random.default_rng(0).normal(size=(2, 1, 3, 3)).astype(np.float32)
    b = np.array([0.5, -0.25], np.float32)
    pool = dict(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    graph = _chain(nir.Input(np.array([1, 4, 4])), nir.Conv2d((4, 4), w, 1, 1, 1, 1, b), nir.SumPool2d(**pool),
                   nir.IF(r=np.full((2, 2, 2), 1e4, np.float32), v_threshold=np.ones((2, 2, 2), np.float32),
                          v_reset=np.zeros((2, 2, 2), np.float32)),
                   nir.SumPool2d(**pool), nir.Flatten(np.array([2, 1, 1]), start_dim=-3),
                   nir.Affine(np.ones((10, 2), np.float32), np.zeros(10, np.float32)), nir.Output(np.array([10])))
    ckpt = import_nir(_write(graph, tmp_path), timesteps=3)
    conv, out = [l.name for l in ckpt.network.layers if isinstance(l, (Conv2d, Linear))]
    assert torch.equal(ckpt.state_dict[f"layers.{conv}.weight"], torch.as_tensor(w) * 4)
    assert torch.equal(ckpt.state_dict[f"layers.{conv}.bias"], torch.as_tensor(b) * 4)
    assert torch.equal(ckpt.state_dict[f"layers.{out}.weight"], torch.full((10, 2), 4.0))
    assert [type(l).__name__ for l in ckpt.network.layers] == ["Conv2d", "AvgPool2d", "Spike", "AvgPool2d", "Flatten",
                                                             "Linear"]

"""Hostile input (issue 17): generated bad netx files, checkpoints, ONNX graphs, dataset files and arguments, each
given to the real command in-process. Every one must exit 2 with one line on stderr naming the problem, without a
traceback, and leave every file as it was. A crafted checkpoint, CIFAR pickle or ONNX file runs no code."""
from __future__ import annotations

import gzip
import os
import pickle
import shutil

import h5py
import numpy as np
import pytest
import torch

from hostile import (assert_refused, cifar_batch, digits_network, idx_bytes, make_artifacts, snapshot, write_png)
from toolchain.cli import main


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return make_artifacts(tmp_path_factory.mktemp("good"))


@pytest.fixture
def work(tmp_path, artifacts):
    """A fresh directory holding copies of the good artifacts; tests run commands in it."""
    for name, path in artifacts.items():
        shutil.copy(path, tmp_path / os.path.basename(path))
    old = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(old)


def test_the_good_artifacts_are_accepted(work, capsys):
    """The baseline the mutations below break: the same files pass the same commands."""
    assert main(["fit", "net.net"]) == 0
    assert main(["evaluate", "snn.pt", "--no-progress"]) == 0
    assert main(["simulate", "net.net", "--samples", "2", "--backend", "emulator", "--no-progress"]) == 0
    capsys.readouterr()


# -- code execution ------------------------------------------------------------------------------------------------
class Payload:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_with_a_reduce_payload_runs_no_code(work, capsys):
    marker = work / "PWNED"
    payload = torch.load("snn.pt", weights_only=True)
    payload["metrics"]["note"] = Payload(marker)
    torch.save(payload, "evil.pt")
    for argv in (["evaluate", "evil.pt"], ["export", "evil.pt", "-o", "x.net"], ["finetune", "evil.pt", "-o", "x.pt"],
                 ["convert", "evil.pt", "-o", "x.pt"], ["export", "evil.pt", "--format", "onnx", "-o", "x.onnx"]):
        assert_refused(argv, capsys, work, "holds Python objects besides tensors and plain data")
        assert not marker.exists()


def test_an_older_checkpoint_holding_numpy_objects_is_one_line_and_rewritten_once_if_trusted(work, capsys):
    """What an older snntc wrote (numpy scalars in its metrics) is refused, naming the one command that rewrites
    it; the rewritten file holds plain data and loads."""
    import subprocess
    import sys
    payload = torch.load("snn.pt", weights_only=True)
    payload["metrics"]["test_accuracy"] = np.float64(0.5)
    torch.save(payload, "old.pt")
    line = assert_refused(["evaluate", "old.pt"], capsys, work, "holds Python objects besides tensors and plain data")
    assert "python -m toolchain.io.checkpoint old.pt NEW.pt" in line
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "toolchain.io.checkpoint", "old.pt", "new.pt"], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=root), timeout=120)
    assert done.returncode == 0, done.stderr
    assert torch.load("new.pt", weights_only=True)["metrics"]["test_accuracy"] == 0.5
    assert main(["evaluate", "new.pt", "--no-progress"]) == 0
    capsys.readouterr()


def test_a_cifar_pickle_with_a_reduce_payload_runs_no_code(work, capsys):
    marker = work / "PWNED"
    d = work / "cifar" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"a"] * 10}, f)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / name, "wb") as f:
            pickle.dump({b"data": Payload(marker), b"labels": [0]}, f)
    assert_refused(["train-ann", "--dataset", "cifar10", "--data-root", work / "cifar", "-o", "a.pt"], capsys, work,
                   "refusing to load")
    assert not marker.exists()


def test_an_onnx_file_is_never_a_key_to_another_file(work, capsys):
    """External data would make the importer read any file the model names (here the checkpoint)."""
    from onnx import TensorProto
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[10, 64], data_location=TensorProto.EXTERNAL)
    entry = weight.external_data.add()
    entry.key, entry.value = "location", os.path.abspath("snn.pt")
    _save_onnx(_onnx_model(weight=weight), work / "ext.onnx")
    assert_refused(["import", "ext.onnx", "-o", "a.pt"], capsys, work, "keeps its data in another file")


# -- netx files ----------------------------------------------------------------------------------------------------
def _mutated_netx(work, mutate) -> str:
    shutil.copy("net.net", "bad.net")
    with h5py.File("bad.net", "a") as f:
        mutate(f)
    return "bad.net"


def _replace(f, key, value):
    del f[key]
    f[key] = value


def _weight_nan(f):
    w = f["layer/1/weight"][()]
    w[0, 0, 0, 0] = np.nan
    _replace(f, "layer/1/weight", w)


def _bias_inf(f):
    f["layer/1/bias"] = np.full(64, np.inf, np.float32)


def _dense_no_flatten(f):
    """The flatten before the dense layer removed, the layers renumbered."""
    f.move("layer/3", "layer/2x")
    del f["layer/2"]
    f.move("layer/2x", "layer/2")


NETX_MUTATIONS = {
    "NaN weight": (_weight_nan, "'weight' holds NaN or infinite values"),
    "inf bias": (_bias_inf, "'bias' holds NaN or infinite values"),
    "vThMant -5": (lambda f: _replace(f, "layer/1/neuron/vThMant", -5), "threshold -5 is outside the 17-bit range"),
    "vThMant 2^40": (lambda f: _replace(f, "layer/1/neuron/vThMant", 2 ** 40), "outside the 17-bit range"),
    "iDecay 99999": (lambda f: _replace(f, "layer/1/neuron/iDecay", 99999), "decays (current 99999"),
    "vDecay -100": (lambda f: _replace(f, "layer/3/neuron/vDecay", -100), "voltage -100"),
    "NaN vThMant": (lambda f: _replace(f, "layer/1/neuron/vThMant", np.nan), "'vThMant' holds NaN"),
    "weight 300": (lambda f: _replace(f, "layer/3/weight", np.full((10, 4096), 300.0, np.float32)),
                   "outside Loihi's [-256, 254]"),
    "unknown input_coding": (lambda f: f.attrs.__setitem__("input_coding", "morse"),
                             "attribute 'input_coding' is 'morse'; known: poisson, direct"),
    "unknown readout": (lambda f: f.attrs.__setitem__("readout", "vibes"), "attribute 'readout' is 'vibes'"),
    "conv stride 0": (lambda f: _replace(f, "layer/1/stride", np.array([0, 0])), "'stride' must be integers >= 1"),
    "conv groups 0": (lambda f: _replace(f, "layer/1/groups", 0), "in 0 groups"),
    "dense with 0 outputs": (lambda f: _replace(f, "layer/3/shape", np.array([0])), "'shape' must be integers >= 1"),
    "timesteps 0": (lambda f: f.attrs.__setitem__("timesteps", 0), "attribute 'timesteps' is [0]"),
    "timesteps -3": (lambda f: f.attrs.__setitem__("timesteps", -3), "attribute 'timesteps' is [-3]"),
    "timesteps 10^7": (lambda f: f.attrs.__setitem__("timesteps", 10 ** 7), "attribute 'timesteps' is [10000000]"),
    "layers attribute a number": (lambda f: f.attrs.__setitem__("layers", "42"), "attribute 'layers' is a JSON int"),
    "layers attribute of strings": (lambda f: f.attrs.__setitem__("layers", '["a", "b"]'),
                                    "attribute 'layers' holds 'a'"),
    "layers attribute with a NaN scale": (
        lambda f: f.attrs.__setitem__("layers", '[{"name": "a", "scale": NaN}, {"name": "b", "is_output": true}]'),
        "needs a name (string), a finite scale"),
    "dense after conv without flatten": (_dense_no_flatten, "needs a 'flatten' layer before it"),
    "no neuron": (lambda f: f.__delitem__("layer/3/neuron"), "the layer has no 'neuron'"),
    "input_scale NaN": (lambda f: f.attrs.__setitem__("input_scale", np.nan), "attribute 'input_scale'"),
    "input_bits 99": (lambda f: f.attrs.__setitem__("input_bits", 99), "attribute 'input_bits' is [99]"),
    "num_classes 0": (lambda f: f.attrs.__setitem__("num_classes", 0), "attribute 'num_classes' is [0]"),
    "std 0": (lambda f: f.attrs.__setitem__("std", np.array([0.0])), "attribute 'std' is [0.0]"),
    "mean with 3 channels": (lambda f: f.attrs.__setitem__("mean", np.zeros(3)), "one per input channel (1)"),
    "metadata a list": (lambda f: f.attrs.__setitem__("metadata", "[1, 2]"), "must be JSON objects"),
    "weights as strings": (lambda f: _replace(f, "layer/3/weight", np.array([b"x"] * 10)), "not numbers"),
    "input shape 0": (lambda f: _replace(f, "layer/0/shape", np.array([0, 8, 8])), "'shape' must be integers >= 1"),
}


@pytest.mark.parametrize("name", NETX_MUTATIONS)
def test_bad_netx_files_are_refused_by_fit(work, capsys, name):
    mutate, expect = NETX_MUTATIONS[name]
    path = _mutated_netx(work, mutate)
    assert_refused(["fit", path, "--json", "fit.json"], capsys, work, expect)


@pytest.mark.parametrize("name", ["NaN weight", "vThMant 2^40", "unknown input_coding", "timesteps 10^7"])
@pytest.mark.parametrize("command", [["simulate", "--samples", "2", "--backend", "emulator"],
                                     ["simulate", "--samples", "1", "--backend", "lava"],
                                     ["verify", "--samples", "1"], ["energy", "--samples", "2"]])
def test_bad_netx_files_are_refused_before_any_simulation(work, capsys, name, command):
    mutate, expect = NETX_MUTATIONS[name]
    path = _mutated_netx(work, mutate)
    assert_refused([command[0], path] + command[1:] + ["--json", "out.json", "--no-progress"], capsys, work, expect)


# -- simulation results (energy --from) -----------------------------------------------------------------------------
def _first_layer(d):
    return d["layers"][0]["name"]


SIMULATION_MUTATIONS = {
    "samples 0": (lambda d: d.update(samples=0), "samples and timesteps must be integers >= 1, got 0"),
    "timesteps a word": (lambda d: d.update(timesteps="4"), "samples and timesteps must be integers >= 1"),
    "negative counts": (lambda d: d["spike_count_maps"].update({_first_layer(d): [-1.0] * 4}),
                        "must be finite numbers >= 0"),
    "counts as text": (lambda d: d["spike_count_maps"].update(input="many"), "the spike counts of 'input'"),
    "counts of another shape": (lambda d: d["spike_count_maps"].update(input=[1, 2, 3]),
                                "was simulated on another network"),
    "no layers": (lambda d: d.pop("layers"), "not a JSON written by 'snntc simulate --json'"),
}


@pytest.mark.parametrize("name", SIMULATION_MUTATIONS)
def test_bad_simulation_results_are_refused_by_energy(work, capsys, name):
    import json
    assert main(["simulate", "net.net", "--samples", "2", "--backend", "emulator", "--no-progress",
                 "--json", "sim.json"]) == 0
    capsys.readouterr()
    d = json.load(open("sim.json"))
    SIMULATION_MUTATIONS[name][0](d)
    json.dump(d, open("bad.json", "w"))
    assert_refused(["energy", "net.net", "--from", "bad.json", "--json", "e.json"], capsys, work,
                   SIMULATION_MUTATIONS[name][1])


# -- checkpoints ---------------------------------------------------------------------------------------------------
def _mutated_checkpoint(mutate, source="snn.pt") -> str:
    payload = torch.load(source, weights_only=True)
    mutate(payload)
    torch.save(payload, "bad.pt")
    return "bad.pt"


def _set(*keys, value):
    def mutate(payload):
        d = payload
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return mutate


def _weight(value):
    def mutate(payload):
        payload["state_dict"]["layers.conv.weight"][0, 0, 0, 0] = value
    return mutate


def _conv_field(key, value):
    def mutate(payload):
        payload["network"]["layers"][0][key] = value
    return mutate


CHECKPOINT_MUTATIONS = {
    "no network": (lambda p: p.pop("network"), "has no 'network'"),
    "no state_dict": (lambda p: p.pop("state_dict"), "has no 'state_dict'"),
    "state_dict a list": (_set("state_dict", value=[1, 2]), "'state_dict' is a list, expected a dict"),
    "network a string": (_set("network", value="vgg"), "'network' is a str"),
    "kind xyz": (_set("kind", value="xyz"), "kind 'xyz' is neither"),
    "kind a number": (_set("kind", value=3), "'kind' is a int"),
    "version 99": (_set("version", value=99), "written by a newer snntc"),
    "no snn config": (_set("snn", value=None), "has no 'snn'"),
    "snn config a list": (_set("snn", value=[1]), "'snn' is a list"),
    "unknown neuron": (_set("snn", "neuron", value="hodgkin-huxley"), "hodgkin-huxley"),
    "unknown coding": (_set("snn", "coding", value="morse"), "morse"),
    "T = 0": (_set("snn", "timesteps", value=0), "timesteps must be an integer from 1"),
    "T a string": (_set("snn", "timesteps", value="5"), "timesteps must be an integer from 1"),
    "threshold 0": (_set("snn", "thresholds", "spike", value=0.0), "threshold of layer 'spike' is 0.0"),
    "threshold -1": (_set("snn", "thresholds", "spike", value=-1.0), "threshold of layer 'spike' is -1.0"),
    "threshold NaN": (_set("snn", "thresholds", "spike", value=float("nan")), "threshold of layer 'spike' is nan"),
    "threshold missing": (_set("snn", "thresholds", value={}), "the thresholds do not match the spiking layers"),
    "leak with loihi-cuba": (_set("snn", "leak", value=0.5), "leak 0.5 applies to lif neurons only"),
    "unknown surrogate": (_set("snn", "surrogate", value={"name": "magic"}), "unknown surrogate 'magic'"),
    "surrogate alpha NaN": (_set("snn", "surrogate", "alpha", value=float("nan")), "alpha and beta finite"),
    "unknown setting": (_set("snn", "colour", value="red"), "unknown settings ['colour']"),
    "NaN weight": (_weight(float("nan")), "'layers.conv.weight' holds NaN or infinite values"),
    "inf weight": (_weight(float("inf")), "'layers.conv.weight' holds NaN or infinite values"),
    "weight of another shape": (_set("state_dict", "layers.out.weight", value=torch.zeros(10, 5)),
                                "'layers.out.weight' has shape (10, 5), the network needs (10, 1024)"),
    "weight missing": (lambda p: p["state_dict"].pop("layers.out.weight"), "missing ['layers.out.weight']"),
    "weight a list": (_set("state_dict", "layers.out.weight", value=[1.0]), "must map parameter names to tensors"),
    "conv stride 0": (_conv_field("stride", 0), "stride is 0; it must be an integer >= 1"),
    "conv kernel -1": (_conv_field("kernel_size", -1), "kernel_size is -1"),
    "conv channels a float": (_conv_field("out_channels", 64.0), "out_channels is 64.0"),
    "unknown layer type": (_conv_field("type", "Transformer"), "unknown layer type 'Transformer'"),
    "layer a string": (_set("network", "layers", value=["conv"]), "a layer is described by str"),
    "no layers": (_set("network", "layers", value=[]), "has no layers"),
    "input shape 0": (_set("network", "input_shape", value=[0, 8, 8]), "input_shape [0, 8, 8]"),
    "dataset a string": (_set("dataset", value="digits"), "'dataset' is a str"),
}


@pytest.mark.parametrize("name", CHECKPOINT_MUTATIONS)
def test_bad_checkpoints_are_refused_by_evaluate(work, capsys, name):
    mutate, expect = CHECKPOINT_MUTATIONS[name]
    path = _mutated_checkpoint(mutate)
    assert_refused(["evaluate", path, "--json", "e.json", "--no-progress"], capsys, work, expect)


@pytest.mark.parametrize("name", ["NaN weight", "threshold -1", "T = 0", "unknown neuron", "no state_dict"])
@pytest.mark.parametrize("command", [["export", "-o", "x.net"], ["export", "--format", "nir", "-o", "x.nir"],
                                     ["export", "--format", "onnx", "-o", "x.onnx"],
                                     ["finetune", "-o", "x.pt", "--epochs", "1"]])
def test_bad_checkpoints_are_refused_by_every_stage(work, capsys, name, command):
    mutate, expect = CHECKPOINT_MUTATIONS[name]
    path = _mutated_checkpoint(mutate)
    assert_refused([command[0], path] + command[1:], capsys, work, expect)


@pytest.mark.parametrize("name", ["NaN weight", "conv stride 0", "weight missing"])
def test_bad_ann_checkpoints_are_refused_by_convert(work, capsys, name):
    mutate, expect = CHECKPOINT_MUTATIONS[name]
    path = _mutated_checkpoint(mutate, "ann.pt")
    assert_refused(["convert", path, "-o", "x.pt", "--timesteps", "2"], capsys, work, expect)


def test_truncated_and_garbage_checkpoints(work, capsys):
    data = open("snn.pt", "rb").read()
    for i, blob in enumerate((data[: len(data) // 2], data[:100], b"\x00" * 64, b"")):
        open(f"cut{i}.pt", "wb").write(blob)
        assert_refused(["evaluate", f"cut{i}.pt"], capsys, work, "not a readable checkpoint")


# -- ONNX ----------------------------------------------------------------------------------------------------------
def _onnx_model(opset=17, weight=None, bias=None):
    from onnx import TensorProto, helper, numpy_helper
    w = weight if weight is not None else numpy_helper.from_array(np.full((10, 64), 0.01, np.float32), "w")
    inits = [w] + ([numpy_helper.from_array(bias, "b")] if bias is not None else [])
    nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1, name="flat"),
             helper.make_node("Gemm", ["f", "w"] + (["b"] if bias is not None else []), ["y"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _save_onnx(model, path):
    import onnx
    onnx.save(model, str(path))


ONNX_MUTATIONS = {
    "opset 1": (dict(opset=1), "ONNX opset 1; supported: 9 to"),
    "opset 99": (dict(opset=99), "ONNX opset 99; supported: 9 to"),
    "NaN weight": (dict(weight=np.full((10, 64), np.nan, np.float32)), "initializer 'w' holds NaN or infinite"),
    "inf bias": (dict(bias=np.full(10, np.inf, np.float32)), "initializer 'b' holds NaN or infinite"),
}


def test_a_good_onnx_graph_imports(work, capsys):
    _save_onnx(_onnx_model(), work / "good.onnx")
    assert main(["import", "good.onnx", "-o", "a.pt", "--limit", "20"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("name", ONNX_MUTATIONS)
def test_bad_onnx_graphs_are_refused(work, capsys, name):
    from onnx import numpy_helper
    kwargs, expect = ONNX_MUTATIONS[name]
    if isinstance(kwargs.get("weight"), np.ndarray):
        kwargs = dict(kwargs, weight=numpy_helper.from_array(kwargs["weight"], "w"))
    _save_onnx(_onnx_model(**kwargs), work / "bad.onnx")
    assert_refused(["import", "bad.onnx", "-o", "a.pt", "--json", "a.json"], capsys, work, expect)


# -- NIR graphs ----------------------------------------------------------------------------------------------------
def _nir_graph(weight=None, threshold=1.0, metadata=None):
    """Input (64 values: the digits flattened) -> Affine -> IF -> Affine -> Output."""
    import nir
    weight = np.full((32, 64), 0.05, np.float32) if weight is None else weight
    nodes = {"input": nir.Input(input_type=np.array([64])),
             "fc1": nir.Affine(weight=weight, bias=np.zeros(32, np.float32)),
             "if1": nir.IF(r=np.ones(32, np.float32), v_threshold=np.full(32, threshold, np.float32)),
             "fc2": nir.Affine(weight=np.full((10, 32), 0.1, np.float32), bias=np.zeros(10, np.float32)),
             "output": nir.Output(output_type=np.array([10]))}
    edges = [("input", "fc1"), ("fc1", "if1"), ("if1", "fc2"), ("fc2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"timesteps": 4} if metadata is None else metadata)


def _nan_weight():
    w = np.full((32, 64), 0.05, np.float32)
    w[0, 0] = np.nan
    return w


NIR_MUTATIONS = {
    "NaN weight": (dict(weight=_nan_weight()), "'layers.fc1.weight' holds NaN or infinite values"),
    "threshold -1": (dict(threshold=-1.0), "v_threshold -1 must be > 0"),
    "threshold NaN": (dict(threshold=float("nan")), "v_threshold is nan, not a finite number"),
    "timesteps 10^7": (dict(metadata={"timesteps": 10 ** 7}), "timesteps must be an integer from 1 to 100,000"),
    "timesteps a word": (dict(metadata={"timesteps": "many"}), "got 'many'"),
    "no timesteps": (dict(metadata={}), "pass --timesteps"),
    "unknown input_coding": (dict(metadata={"timesteps": 4, "input_coding": "morse"}), "unknown input coding 'morse'"),
    "dt a word": (dict(metadata={"timesteps": 4, "dt": "abc"}), "dt must be a finite number > 0"),
    "dt inf": (dict(metadata={"timesteps": 4, "dt": float("inf")}), "dt must be a finite number > 0"),
}


def test_a_good_nir_graph_imports(work, capsys):
    import nir
    nir.write(str(work / "good.nir"), _nir_graph())
    assert main(["import", "good.nir", "-o", "a.pt", "--limit", "20"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("name", NIR_MUTATIONS)
def test_bad_nir_graphs_are_refused(work, capsys, name):
    import nir
    kwargs, expect = NIR_MUTATIONS[name]
    nir.write(str(work / "bad.nir"), _nir_graph(**kwargs))
    assert_refused(["import", "bad.nir", "-o", "a.pt", "--json", "a.json", "--limit", "20"], capsys, work, expect)


@pytest.mark.parametrize("argv,expect", [(["--dt", "inf"], "--dt: expected a finite number"),
                                         (["--dt", "0"], "--dt: expected a number > 0"),
                                         (["--timesteps", "0"], "--timesteps: expected a positive integer")])
def test_bad_nir_import_arguments(work, capsys, argv, expect):
    import nir
    nir.write(str(work / "good.nir"), _nir_graph())
    assert_refused(["import", "good.nir", "-o", "a.pt"] + argv, capsys, work, expect)


def test_bad_nir_export_arguments(work, capsys):
    for dt in ("nan", "-1e-3"):
        assert_refused(["export", "snn.pt", "--format", "nir", "-o", "x.nir", "--dt", dt], capsys, work, "--dt:")


# -- dataset files -------------------------------------------------------------------------------------------------
def _mnist_dir(work, images: bytes, labels: bytes, gz: bool = False):
    d = work / "mnist"
    d.mkdir()
    for split in ("train", "t10k"):
        for kind, blob in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            name = d / f"{split}-{kind}{'.gz' if gz else ''}"
            name.write_bytes(blob)
    return d


def _images(n=4, h=28, w=28):
    return idx_bytes(0x803, (n, h, w), bytes(n * h * w))


def _labels(n=4):
    return idx_bytes(0x801, (n,), bytes(n))


DATASET_CASES = {
    "corrupt gz": (lambda w: _mnist_dir(w, b"\x1f\x8b\x08\x00" + os.urandom(200), _labels(), gz=True),
                   "corrupt gzip data"),
    "truncated gz": (lambda w: _mnist_dir(w, gzip.compress(_images())[:-30], gzip.compress(_labels()), gz=True),
                     "cannot read"),
    "header declaring 40000x40000": (lambda w: _mnist_dir(w, idx_bytes(0x803, (1, 40000, 40000), bytes(16)), _labels()),
                                     "its header (1, 40000, 40000) says 1600000000"),
    "labels past 9": (lambda w: _mnist_dir(w, _images(), idx_bytes(0x801, (4,), bytes([0, 1, 2, 200]))),
                      "labels in [0, 200], expected 0..9"),
}


@pytest.mark.parametrize("name", DATASET_CASES)
def test_bad_mnist_files(work, capsys, name):
    make, expect = DATASET_CASES[name]
    root = make(work)
    assert_refused(["train-ann", "--dataset", "mnist", "--data-root", root, "-o", "a.pt"], capsys, work, expect)


def _cifar_dir(work, labels):
    d = work / "cifar" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(10)]}, f)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / name, "wb") as f:
            pickle.dump(cifar_batch(labels), f)
    return work / "cifar"


@pytest.mark.parametrize("labels,expect", [([0.5, 1.5], "holds 1-d float64"), ([[0, 1], [1]], "mixed or nested"),
                                           ([[0], [1]], "holds 2-d int64"), (["cat", "dog"], "holds 1-d <U3"),
                                           ([0, 10], "labels in [0, 10], expected 0..9")])
def test_bad_cifar_labels_name_the_labels(work, capsys, labels, expect):
    root = _cifar_dir(work, labels)
    line = assert_refused(["train-ann", "--dataset", "cifar10", "--data-root", root, "-o", "a.pt"], capsys, work,
                          expect)
    assert "b'data'" not in line


def test_an_image_header_declaring_40000x40000_is_refused(work, capsys):
    for split in ("train", "val"):
        d = work / "imgs" / split / "cat"
        d.mkdir(parents=True)
        write_png(d / "big.png", 40000, 40000)
    assert_refused(["train-ann", "--dataset", "imagefolder", "--data-root", work / "imgs", "-o", "a.pt"], capsys,
                   work, "decompression bomb")


# -- arguments -----------------------------------------------------------------------------------------------------
TRAIN = ["train-ann", "-o", "a.pt", "--epochs", "1", "--limit", "50"]
BAD_ARGUMENTS = [
    (TRAIN + ["--lr", "inf"], "--lr: expected a finite number"),
    (TRAIN + ["--lr", "nan"], "--lr: expected a finite number"),
    (TRAIN + ["--lr", "0"], "--lr: expected a number > 0"),
    (TRAIN + ["--lr", "fast"], "--lr: expected a number"),
    (TRAIN + ["--weight-decay", "-1"], "--weight-decay: expected a number >= 0"),
    (TRAIN + ["--weight-decay", "nan"], "--weight-decay: expected a finite number"),
    (TRAIN + ["--seed", str(2 ** 64)], "--seed: expected a seed from 0 to 4294967295"),
    (TRAIN + ["--seed", "-1"], "--seed: expected a seed from 0"),
    (TRAIN + ["--data-seed", "-1"], "--data-seed: expected a seed from 0"),
    (TRAIN + ["--device", "mps"], "unknown device 'mps'"),
    (TRAIN + ["--device", "cuda:99"], "cuda:99"),
    (TRAIN + ["--device", "cpu:1"], "unknown device 'cpu:1'"),
    (TRAIN + ["--val-fraction", "nan"], "--val-fraction: expected a finite number"),
    (TRAIN + ["--val-fraction", "1.0"], "val_fraction must be in [0, 1)"),
    (TRAIN + ["--augment", "99"], "--augment: expected a number of pixels from 0 to 8, got 99"),
    (TRAIN + ["--augment", "-1"], "--augment: expected a number of pixels from 0 to 8, got -1"),
    (TRAIN + ["--batch-size", "0"], "--batch-size: expected a positive integer"),
    (TRAIN + ["--epochs", "0"], "--epochs: expected a positive integer"),
    (["finetune", "snn.pt", "-o", "h.pt", "--alpha", "nan"], "--alpha: expected a finite number"),
    (["finetune", "snn.pt", "-o", "h.pt", "--beta", "nan"], "--beta: expected a finite number"),
    (["finetune", "snn.pt", "-o", "h.pt", "--beta", "inf"], "--beta: expected a finite number"),
    (["finetune", "snn.pt", "-o", "h.pt", "--width", "0"], "--width: expected a number > 0"),
    (["finetune", "snn.pt", "-o", "h.pt", "--surrogate", "magic"], "unknown surrogate 'magic'"),
    (["finetune", "snn.pt", "-o", "h.pt", "--timesteps", "0"], "--timesteps: expected a positive integer"),
    (["finetune", "snn.pt", "-o", "h.pt", "--neuron", "lif", "--lr", "-3"], "--lr: expected a number > 0"),
    (["finetune", "snn.pt", "-o", "h.pt", "--reset", "zero"], "'loihi-cuba' neurons have no choice of reset"),
    (["convert", "ann.pt", "-o", "s.pt", "--leak", "0.5"], "leak 0.5 applies to lif neurons only"),
    (["convert", "ann.pt", "-o", "s.pt", "--leak", "nan"], "--leak: expected a finite number"),
    (["convert", "ann.pt", "-o", "s.pt", "--neuron", "lif", "--leak", "1.5"], "leak must be in (0, 1]"),
    (["convert", "ann.pt", "-o", "s.pt", "--scale", "0"], "--scale: expected a number > 0"),
    (["convert", "ann.pt", "-o", "s.pt", "--scale", "inf"], "--scale: expected a finite number"),
    (["convert", "ann.pt", "-o", "s.pt", "--percentile", "101"], "percentile 101"),
    (["train-snn", "-o", "d.pt", "--threshold", "inf"], "--threshold: expected a finite number"),
    (["train-snn", "-o", "d.pt", "--threshold", "0"], "--threshold: expected a number > 0"),
    (["train-snn", "-o", "d.pt", "--leak", "0.9"], "leak 0.9 applies to lif neurons only"),
    (["evaluate", "snn.pt", "--timesteps", "1000000"], "expected time steps from 1 to 100,000"),
    (["evaluate", "snn.pt", "--timesteps", "5,-1"], "expected time steps from 1 to 100,000"),
    (["evaluate", "snn.pt", "--seed", "nan"], "--seed: expected an integer seed"),
    (["simulate", "net.net", "--samples", "0"], "--samples: expected a positive integer"),
    (["simulate", "net.net", "--timesteps", str(10 ** 6)], "expected at most 100,000 time steps"),
    (["models", "--input-shape", "0", "8", "8"], "--input-shape: expected a positive integer"),
    (["demo", "--seed", "-5", "--out", "d"], "--seed: expected a seed from 0"),
]


@pytest.mark.parametrize("argv,expect", BAD_ARGUMENTS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_are_one_line_before_any_work(work, capsys, argv, expect):
    assert_refused(argv, capsys, work, expect)


# -- resource bounds -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A network with a 32,768-neuron layer: at 100,000 time steps each run below needs hundreds of gigabytes."""
    return make_artifacts(tmp_path_factory.mktemp("big"), channels=512)


@pytest.mark.parametrize("argv", [["evaluate", "snn.pt", "--timesteps", "100000", "--no-progress"],
                                  ["simulate", "net.net", "--timesteps", "100000", "--backend", "emulator"],
                                  ["verify", "net.net", "--timesteps", "100000", "--samples", "100"],
                                  ["energy", "net.net", "--timesteps", "100000"],
                                  ["finetune", "snn.pt", "-o", "h.pt", "--timesteps", "100000", "--batch-size", "256"],
                                  ["convert", "ann.pt", "-o", "s.pt", "--timesteps", "100000"]])
def test_runs_beyond_memory_are_refused_before_they_start(tmp_path, big, capsys, argv):
    for path in big.values():
        shutil.copy(path, tmp_path / os.path.basename(path))
    os.chdir(tmp_path)
    line = assert_refused(argv, capsys, tmp_path, "of memory")
    assert "TB of memory" in line or "GB of memory" in line


def test_no_file_means_one_line_too(work, capsys):
    for argv in (["evaluate", "missing.pt"], ["fit", "missing.net"], ["import", "missing.onnx", "-o", "a.pt"],
                 ["simulate", str(work)], ["evaluate", str(work)]):
        assert_refused(argv, capsys, work)
    assert snapshot(work)

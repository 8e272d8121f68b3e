"""Train small digits classifiers in SpikingJelly and in Norse and write them as NIR files with each library's own
exporter: the files tests/test_nir_import.py imports (tests/data/nir/). Run by the interpreter that has the library:

    python make_source_networks.py spikingjelly DIGITS.npz OUT_DIR     # Python >= 3.11, spikingjelly[nir] 2.0
    python make_source_networks.py norse DIGITS.npz OUT_DIR            # the 'consumers' extra

DIGITS.npz holds snntc's digits split (train_x, train_y, test_x, test_y: normalized, as `load_dataset("digits")`
gives them). Each network reads the image directly every step (direct coding) for T steps, and its prediction is
the argmax of the last dense layer's output summed over the steps (the readout snntc uses). Besides the .nir file,
OUT_DIR gets <library>_digits.json: the library's version, T, dt and its own test predictions and accuracy,
computed by the trained network in the library (not from the file).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

T = 4


def _train(step_fn, params, x, y, epochs, lr, seed=0):
    """Adam on the summed output over T steps (cross-entropy), batch 64."""
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(step_fn(x[idx]), y[idx])
            loss.backward()
            opt.step()


def spikingjelly(data, out_dir):
    import spikingjelly
    from spikingjelly.activation_based import functional, layer, neuron, surrogate
    from spikingjelly.activation_based.nir_exchange import export_to_nir
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        layer.Conv2d(1, 8, 3, padding=1, bias=False), neuron.IFNode(v_reset=0.0, surrogate_function=surrogate.ATan()),
        layer.AvgPool2d(2),
        layer.Conv2d(8, 16, 3, padding=1, bias=False), neuron.IFNode(v_reset=0.0, surrogate_function=surrogate.ATan()),
        layer.AvgPool2d(2), layer.Flatten(), layer.Linear(64, 10, bias=False))
    functional.set_step_mode(net, "m")

    def run(xb):
        functional.reset_net(net)
        return net(xb[None].expand(T, *xb.shape)).sum(0)

    x, y = torch.as_tensor(data["train_x"]), torch.as_tensor(data["train_y"])
    _train(run, net.parameters(), x, y, epochs=8, lr=5e-3)
    with torch.no_grad():
        preds = run(torch.as_tensor(data["test_x"])).argmax(1).numpy()
    functional.reset_net(net)
    functional.set_step_mode(net, "s")
    path = os.path.join(out_dir, "spikingjelly_digits.nir")
    export_to_nir(net, torch.zeros(1, 1, 8, 8), save_path=path, dt=1e-4)
    return {"library": "spikingjelly", "version": spikingjelly.__version__ if hasattr(spikingjelly, "__version__")
            else _version("spikingjelly"), "dt": 1e-4, "import_dt": 1e-4}, preds


def norse(data, out_dir):
    import nir
    import norse.torch as norse_torch
    torch.manual_seed(0)
    p = norse_torch.IAFParameters(method="super", alpha=torch.as_tensor(100.0))
    net = norse_torch.SequentialState(torch.nn.Linear(64, 48, bias=False), norse_torch.IAFCell(p),
                                      torch.nn.Linear(48, 10, bias=False))

    def run(xb):
        xb, state, total = xb.flatten(1), None, 0
        for _ in range(T):
            out, state = net(xb, state)
            total = total + out
        return total

    x, y = torch.as_tensor(data["train_x"]), torch.as_tensor(data["train_y"])
    _train(run, net.parameters(), x, y, epochs=10, lr=3e-3)
    with torch.no_grad():
        preds = run(torch.as_tensor(data["test_x"])).argmax(1).numpy()
    graph = norse_torch.to_nir(net, torch.zeros(1, 64))
    path = os.path.join(out_dir, "norse_digits.nir")
    nir.write(path, graph, compression=None)     # Norse's scalar parameters cannot be written compressed
    # Norse writes IF nodes with r = 1 whatever its dt and integrates v += I: NIR's IF at dt = 1 / r = 1 s
    return {"library": "norse", "version": _version("norse"), "dt": 1e-3, "import_dt": 1.0}, preds


def _version(name):
    from importlib.metadata import version
    return version(name)


if __name__ == "__main__":
    library, npz, out_dir = sys.argv[1:4]
    data = dict(np.load(npz))
    torch.set_num_threads(2)
    info, preds = {"spikingjelly": spikingjelly, "norse": norse}[library](data, out_dir)
    info.update({"timesteps": T, "coding": "direct", "test_predictions": preds.tolist(),
                 "test_accuracy": float(np.mean(preds == data["test_y"])),
                 "fingerprint": str(data["fingerprint"]) if "fingerprint" in data else None})
    with open(os.path.join(out_dir, f"{library}_digits.json"), "w") as f:
        json.dump(info, f)
    print(library, info["version"], "test accuracy", info["test_accuracy"])

"""Run a NIR file in each consumer library as its documentation says, step by step over T time steps, and return
the predicted classes (argmax of the Output node summed over the steps, the readout the file's metadata states).

Each runner takes the graph file, the coded inputs (N, ...) (the same array every step: direct coding), T and dt,
and uses only the consumer's public NIR import. This module imports nothing from the toolchain: it is also run by
another interpreter (SpikingJelly's NIR support needs Python >= 3.11), as
    python runners.py spikingjelly MODEL.nir INPUTS.npy T DT OUT.npy
"""
from __future__ import annotations

import sys

import numpy as np
import torch


def _batches(x: np.ndarray, size: int = 128):
    for i in range(0, len(x), size):
        yield torch.as_tensor(x[i:i + size], dtype=torch.float32)


def _reset(module: torch.nn.Module) -> None:
    """Clear the hidden state that snnTorch / Sinabs neurons keep in the module between calls."""
    for m in module.modules():
        for name in ("reset_mem", "reset_states"):
            fn = getattr(m, name, None)
            if callable(fn) and m is not module:
                fn()


def _step_by_step(net, x: np.ndarray, T: int, before_sample=None) -> np.ndarray:
    """Call a (output, state) = net(input, state) module T times per batch, summing the outputs."""
    preds = []
    with torch.no_grad():
        for xb in _batches(x):
            if before_sample is not None:
                before_sample(net)
            state, total = None, 0
            for _ in range(T):
                out, state = net(xb, state)
                total = total + out
            preds.append(total.argmax(1))
    return torch.cat(preds).numpy()


def snntorch(path: str, x: np.ndarray, T: int, dt: float) -> np.ndarray:
    """snnTorch's import_from_nir (its LIF / CubaLIF mapping assumes dt = 1e-4, its neurons keep their state)."""
    import nir
    from snntorch.import_nir import import_from_nir
    return _step_by_step(import_from_nir(nir.read(path)), x, T, before_sample=_reset)


def norse(path: str, x: np.ndarray, T: int, dt: float) -> np.ndarray:
    import nir
    from norse.torch import from_nir
    return _step_by_step(from_nir(nir.read(path), dt=dt), x, T)


def sinabs(path: str, x: np.ndarray, T: int, dt: float) -> np.ndarray:
    import nir
    from sinabs import from_nir
    preds = []
    with torch.no_grad():
        for xb in _batches(x):
            net = from_nir(nir.read(path), batch_size=len(xb))    # Squeeze layers: (batch x time, ...) at once
            seq = xb[:, None].expand(len(xb), T, *xb.shape[1:]).reshape(len(xb) * T, *xb.shape[1:])
            out = net(seq)
            out = out[0] if isinstance(out, tuple) else out
            preds.append(out.reshape(len(xb), T, -1).sum(1).argmax(1))
    return torch.cat(preds).numpy()


def spikingjelly(path: str, x: np.ndarray, T: int, dt: float) -> np.ndarray:
    from spikingjelly.activation_based.nir_exchange import import_from_nir
    return _step_by_step(import_from_nir(path, dt=dt), x, T)


RUNNERS = {"snntorch": snntorch, "norse": norse, "sinabs": sinabs, "spikingjelly": spikingjelly}

if __name__ == "__main__":
    consumer, path, inputs, T, dt, out = sys.argv[1:7]
    np.save(out, RUNNERS[consumer](path, np.load(inputs), int(T), float(dt)))

"""What the hostile-input tests share: real artifacts made fast (an SNN checkpoint built from the IR and saved by
the toolchain, its netx export, an ANN checkpoint, an ONNX graph), and the contract every bad input must meet: exit
status 2, one line on stderr, no traceback, and no file created or changed in the directory it ran in."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from toolchain.cli import main
from toolchain.io.checkpoint import Checkpoint, save_checkpoint
from toolchain.ir import AvgPool2d, Conv2d, Flatten, Linear, Network, Spike
from toolchain.snn import SnnConfig

DIGITS = {"name": "digits"}


def digits_network(channels: int = 64) -> Network:
    """A conv net for the bundled 8x8 digits, cheap at a few time steps."""
    return Network((Conv2d("conv", 1, channels, 3, 1, 1), Spike("spike"), AvgPool2d("pool", 2), Flatten("flat"),
                    Linear("out", channels * 4 * 4, 10)), (1, 8, 8), 10, name="hostile")


def snn_checkpoint(neuron: str = "loihi-cuba", channels: int = 64) -> Checkpoint:
    torch.manual_seed(0)
    net = digits_network(channels)
    state = {"layers.conv.weight": torch.randn(channels, 1, 3, 3) * 0.5,
             "layers.out.weight": torch.randn(10, channels * 16) * 0.1}
    config = SnnConfig(thresholds={"spike": 1.0}, neuron=neuron, coding="direct", timesteps=4, input_scale=16.0)
    return Checkpoint("snn", net, state, dict(DIGITS), snn=config)


def make_artifacts(directory: Path, channels: int = 64) -> dict:
    """snn.pt, ann.pt (the same weights) and net.net (the SNN exported by the toolchain) in `directory`."""
    from toolchain.deploy import export_snn
    from toolchain.data import load_dataset
    paths = {name: directory / f"{name}{ext}" for name, ext in (("snn", ".pt"), ("ann", ".pt"), ("net", ".net"))}
    snn = snn_checkpoint(channels=channels)
    save_checkpoint(snn, str(paths["snn"]))
    save_checkpoint(Checkpoint("ann", snn.network, snn.state_dict, dict(DIGITS)), str(paths["ann"]))
    export_snn(snn, str(paths["net"]), load_dataset("digits", limit=64).train_x, allow_misfit=True)
    return {k: str(v) for k, v in paths.items()}


def snapshot(directory) -> dict:
    """Every file under `directory` (hidden ones included) with its size, mtime and content hash."""
    found = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            st = os.stat(path)
            found[os.path.relpath(path, directory)] = (st.st_size, st.st_mtime_ns, digest)
    return found


def assert_refused(argv, capsys, directory, expect: str = "", code: int = 2) -> str:
    """Run the command in-process; it must exit `code` with one line on stderr (containing `expect`), print no
    traceback, and leave every file in `directory` as it was (none created, changed or removed)."""
    before = snapshot(directory)
    got = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == code, f"exit {got} for {argv}: {err}{out[-500:]}"
    assert len(lines) == 1, f"{argv}: stderr is not one line: {err!r}"
    assert "Traceback" not in err + out
    assert lines[0].startswith(f"snntc {argv[0]}: "), lines[0]
    assert expect in lines[0], f"{argv}: {lines[0]!r} does not say {expect!r}"
    assert snapshot(directory) == before, f"{argv} created, changed or removed files"
    return lines[0]


def write_png(path: Path, width: int, height: int) -> None:
    """A real PNG whose header declares width x height (its one row of pixel data is all there is)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" + b"\x00" * 3 * min(width, 16))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def idx_bytes(magic: int, dims, payload: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in dims) + payload


def cifar_batch(labels, n: int = 2) -> dict:
    return {b"data": np.zeros((n, 3072), np.uint8), b"labels": labels}

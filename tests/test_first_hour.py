"""A new user's first hour: the flow `snntc --help` teaches, a cheap T sweep, a fast --help, readable files."""
import json
import os
import re
import subprocess
import sys

import pytest

from toolchain.cli import build_parser, main
from toolchain.io.checkpoint import load_checkpoint

SNNTC = [sys.executable, "-m", "toolchain"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def digits():
    from toolchain.data import load_dataset
    return load_dataset("digits", limit=300)


@pytest.fixture(scope="module")
def digits_ann(digits, tmp_path_factory):
    from toolchain.training import TrainConfig
    from toolchain.training.ann import train_ann
    return train_ann(digits, "vgg-small", TrainConfig(epochs=4, lr=3e-3), str(tmp_path_factory.mktemp("ann") / "a.pt"),
                     progress=False)


def typical_flow():
    """The commands of `snntc --help`'s 'Typical flow', as argument lists (remarks in parentheses dropped)."""
    epilog = build_parser().epilog
    flow = epilog.split("Typical flow:")[1].split(". Or")[0]
    flow = re.sub(r"\([^)]*\)", "", flow)
    return [cmd.split()[1:] for cmd in flow.split(";") if cmd.strip()]


def test_typical_flow_of_help_gives_a_low_T_hybrid(tmp_path, capsys):
    """train-ann, convert, finetune exactly as --help says (fewer epochs and samples, for time): the hybrid runs
    at T <= 10, and convert and finetune both say which T."""
    flow = typical_flow()
    names = [cmd[0] for cmd in flow]
    assert names[:3] == ["train-ann", "convert", "finetune"]
    os.chdir(tmp_path)
    quick = {"train-ann": ["--epochs", "3", "--limit", "300", "--no-progress"],
             "finetune": ["--epochs", "1", "--no-progress", "--limit", "300"], "convert": []}
    for cmd in flow[:3]:
        assert main(cmd + quick[cmd[0]]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    hybrid = load_checkpoint(tmp_path / "hybrid.pt", kind="snn")
    assert hybrid.snn.timesteps <= 10
    assert f"T={hybrid.snn.timesteps}" in out.split("converted SNN:")[1].splitlines()[0]
    assert f"T={hybrid.snn.timesteps}" in out.split("fine-tuned SNN")[1].splitlines()[0]
    conversion = hybrid.training["conversion"]
    assert conversion["calibration_timesteps"] == hybrid.snn.timesteps


def test_calibration_steps_are_not_the_snn_timesteps(digits_ann, digits):
    from toolchain.training.convert import convert
    long = convert(digits_ann, digits, timesteps=4, calibration_steps=40, coding="direct", calib_samples=32)
    short = convert(digits_ann, digits, timesteps=4, coding="direct", calib_samples=32)
    assert long.snn.timesteps == short.snn.timesteps == 4
    assert long.training["conversion"]["calibration_timesteps"] == 40
    assert short.training["conversion"]["calibration_timesteps"] == 4
    # the maximum current over 40 steps is at least that over the first 4: thresholds no lower
    first = next(iter(long.snn.thresholds))
    assert long.snn.thresholds[first] >= short.snn.thresholds[first] - 1e-6
    assert long.snn.thresholds != short.snn.thresholds

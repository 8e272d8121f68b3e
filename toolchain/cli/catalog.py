"""The commands by name: the module that defines each and its one-line help. Importing this costs nothing (no torch,
no Lava), so `snntc --help` and an unknown command answer at once; a command's module, and what it imports, is
loaded only when that command runs (or its own --help is asked for)."""
from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    module: str              # toolchain.cli.<module> defines it in its register(sub)
    help: str


COMMANDS = {
    "train-ann": Command("commands_train", "train an ANN under SNN constraints"),
    "models": Command("commands_train", "list the networks with their input size, parameters and Loihi 2 fit"),
    "convert": Command("commands_train", "convert an ANN checkpoint to an SNN by threshold balancing"),
    "finetune": Command("commands_train", "fine-tune an SNN with spike-based backpropagation (STDB)"),
    "evaluate": Command("commands_train", "accuracy and spikes of an ANN or SNN checkpoint"),
    "train-snn": Command("commands_snn", "train an SNN directly with a surrogate gradient (no ANN)"),
    "sweep": Command("commands_sweep", "accuracy, spikes and energy per number of time steps, and the T to deploy"),
    "export": Command("commands_deploy", "quantize an SNN to Loihi fixed point and write a netx HDF5 file"),
    "simulate": Command("commands_deploy", "run a netx file in Lava (or the bit-exact emulator) on test samples"),
    "verify": Command("commands_deploy", "compare the emulator with Lava spike for spike and voltage for voltage"),
    "energy": Command("commands_deploy", "energy per inference from counted synaptic operations"),
    "fit": Command("commands_deploy", "check that a netx network fits on Loihi 2"),
    "demo": Command("commands_demo", "run train -> convert -> finetune -> export -> simulate -> energy on bundled data"),
    "import": Command("commands_formats", "import an ANN from ONNX or an SNN from NIR (bring your own model)"),
}


def command_help(name: str) -> str:
    """The one-line help of a command (what `snntc --help` lists; the command's parser uses the same)."""
    return COMMANDS[name].help


def modules() -> tuple:
    """The command modules, each once, in the order of COMMANDS."""
    return tuple(dict.fromkeys(c.module for c in COMMANDS.values()))

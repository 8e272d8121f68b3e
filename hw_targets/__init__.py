"""What runs an exported network and what it costs: one subpackage per hardware target (its energy.json, every
constant with its source, and its limits.json and fit mapper where it has them), and the simulators
(simulators/: the bit-exact emulator, Lava, and their comparison).

`register` is this package's `snntc.plugins` entry point (pyproject.toml): the toolchain's registries call it on
their first lookup. A new target is one subpackage plus one line below.
"""


def register() -> None:
    """Register the hardware targets and the simulators with the toolchain's registries."""
    from toolchain.targets import SIMULATORS, TARGETS

    from . import cmos45nm, loihi, loihi2, memory_aware, simulators

    for target in (loihi.TARGET, loihi2.TARGET, cmos45nm.TARGET, memory_aware.TARGET):
        TARGETS.register(target)
    for simulator in (simulators.EMULATOR, simulators.LAVA):
        SIMULATORS.register(simulator)

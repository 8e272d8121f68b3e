"""The simulators that run an exported network, as the toolchain's SIMULATORS registry entries: the bit-exact
emulator (emulator.py, torch, batched, CPU or CUDA), Lava's own simulator or Loihi 2 (lava.py), and the comparison
of the two spike for spike and voltage for voltage (verify.py). The modules are imported when a run asks for them."""
from toolchain.targets import Simulator


def run_emulator(net, inputs, labels=None, source=None, fixed_point=True, hardware="sim", device=None,
                 progress=True):
    from .emulator import run_emulator as run
    return run(net, inputs, labels, device=device)


def run_emulator_prefixes(net, inputs, steps, labels=None, device=None):
    from .emulator import run_emulator_prefixes as run
    return run(net, inputs, steps, labels, device=device)


def run_lava(net, inputs, labels=None, source=None, fixed_point=True, hardware="sim", device=None, progress=True):
    from .lava import run_lava as run
    return run(source if source is not None else net, inputs, labels, fixed_point=fixed_point, target=hardware,
               progress=progress, net=net if source is not None else None)


def verify_against_emulator(net, inputs, progress=False, source=None):
    from .verify import verify
    return verify(net, inputs, progress=progress, source=source)


EMULATOR = Simulator(name="emulator", summary="bit-exact batched emulator of Lava's fixed-point models (torch)",
                     run=run_emulator, run_prefixes=run_emulator_prefixes)
LAVA = Simulator(name="lava", summary="Lava's own simulator (fixed or floating point), or Loihi 2 with lava-loihi",
                 run=run_lava, hardware=("sim", "loihi2"), fixed_point_only=False, verify=verify_against_emulator)

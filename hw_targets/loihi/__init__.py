"""Intel Loihi (14 nm, Davies et al. 2018): per-event energies from pre-silicon simulation, and the chip's limits.

SNN energy per layer = synaptic ops x 23.6 pJ + inactive neuron updates x 52 + active ones (that emitted a
spike) x 81 + spikes x 1.7 pJ (within tile); graded (direct) input MACs are charged as synaptic ops. The ANN beside
it is priced on 45 nm CMOS.
"""
from pathlib import Path

from toolchain.targets import HardwareTarget

from ..fit import fit_mapper

HERE = Path(__file__).resolve().parent


def snn_energy(layer, table, precision: str) -> dict:
    syn = table.pj("synop")
    active = layer.active_updates
    return {"synaptic_ops": layer.synaptic_ops * syn,
            "graded_macs": layer.chip_macs * syn,
            "neuron_updates_inactive": (layer.neuron_updates - active) * table.pj("neuron_update_inactive"),
            "neuron_updates_active": active * table.pj("neuron_update_active"),
            "spikes": layer.spikes * table.pj("spike_in_tile")}


TARGET = HardwareTarget(
    name="loihi", summary="Intel Loihi, per-event energies (Davies et al. 2018, pre-silicon simulation)",
    energy_file=HERE / "energy.json", snn_energy=snn_energy, ann_target="cmos45nm",
    graded_input_note="graded/direct input MACs on the chip are charged as synaptic ops of this target",
    limits_file=HERE / "limits.json", fit=fit_mapper("loihi"), simulators=("emulator", "lava"))

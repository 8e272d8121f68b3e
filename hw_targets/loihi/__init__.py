"""Intel Loihi (14 nm, Davies et al. 2018): per-event energies from pre-silicon simulation, and the chip's limits.

SNN energy per layer = synaptic ops x 23.6 pJ + inactive neuron updates x 52 + active ones (that emitted a
spike) x 81 + spikes x 1.7 pJ (within tile); graded (direct) input MACs are charged as synaptic ops. The ANN beside
it is priced on 45 nm CMOS.
"""
from pathlib import Path

from ..fit import neurocore_target

HERE = Path(__file__).resolve().parent


def snn_energy(layer, table, precision: str) -> dict:
    syn = table.pj("synop")
    active = layer.active_updates
    return {"synaptic_ops": layer.synaptic_ops * syn,
            "graded_macs": layer.chip_macs * syn,
            "neuron_updates_inactive": (layer.neuron_updates - active) * table.pj("neuron_update_inactive"),
            "neuron_updates_active": active * table.pj("neuron_update_active"),
            "spikes": layer.spikes * table.pj("spike_in_tile")}


TARGET = neurocore_target(
    "loihi", "Intel Loihi, per-event energies (Davies et al. 2018, pre-silicon simulation)",
    HERE, snn_energy)

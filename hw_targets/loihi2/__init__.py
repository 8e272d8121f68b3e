"""Intel Loihi 2: an upper bound of the energy from Hala Point system figures (no per-operation energy has been
published), and the chip's limits (fit: cores and chips per layer).

SNN energy per layer <= synaptic ops x 6.84 pJ + neuron updates x 10.83 pJ (whole-system bounds); graded (direct)
input MACs are charged as synaptic ops. The ANN beside it is priced on 45 nm CMOS.
"""
from pathlib import Path

from ..fit import neurocore_target

HERE = Path(__file__).resolve().parent


def snn_energy(layer, table, precision: str) -> dict:
    syn = table.pj("synop_bound")
    return {"synaptic_ops": layer.synaptic_ops * syn,
            "graded_macs": layer.chip_macs * syn,
            "neuron_updates": layer.neuron_updates * table.pj("neuron_op_bound")}


TARGET = neurocore_target(
    "loihi2", "Intel Loihi 2, an upper bound from Hala Point system figures; the default fit check",
    HERE, snn_energy)

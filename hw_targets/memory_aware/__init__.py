"""A memory-aware digital model (after Lemaire et al. 2022, Horowitz's 45 nm constants): SNN and ANN on the same
hardware, memory accesses and addressing counted beside the arithmetic. The ANN is priced on this same model."""
from pathlib import Path

from toolchain.targets import HardwareTarget

HERE = Path(__file__).resolve().parent


def snn_energy(layer, table, precision: str) -> dict:
    rd, wr = table.pj("sram_read"), table.pj("sram_write")
    return {"synaptic_ops": layer.synaptic_ops * (table.pj("ac") + table.pj("addr")),
            "synaptic_memory": layer.synaptic_ops * (rd + rd + wr),   # weight read, potential read + write
            "graded_macs": layer.chip_macs * table.pj("mac"),
            "graded_memory": layer.chip_macs * (rd + rd),              # weight read, input read
            "neuron_updates": layer.neuron_updates * table.pj("neuron_update_op"),
            "neuron_memory": layer.neuron_updates * (rd + wr)}        # potential read + write


def ann_energy(layer, table, precision: str) -> dict:
    rd, wr = table.pj("sram_read"), table.pj("sram_write")
    return {"macs": layer.ann_macs * table.pj("mac"),
            "memory": layer.ann_macs * (rd + rd) + layer.neurons * wr}


def ann_model(table, precision: str) -> str:
    return "memory-aware ANN on the same hardware: MACs x (MAC + weight read + input read) + output neurons x write"


TARGET = HardwareTarget(
    name="memory_aware", summary="memory-aware digital model (after Lemaire et al. 2022): SNN and ANN on the same hardware",
    energy_file=HERE / "energy.json", snn_energy=snn_energy, ann_energy=ann_energy, ann_model=ann_model)

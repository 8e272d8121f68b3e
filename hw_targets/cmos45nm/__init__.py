"""Conventional digital CMOS, 45 nm (Horowitz, ISSCC 2014), operations only: an SNN synaptic op is an accumulate
(one add), a graded input op and an ANN synaptic op a multiply-accumulate, at FP32 or INT8 precision. Neuron
updates and memory are not counted (see memory_aware). It prices the ANN beside the other targets."""
from pathlib import Path

from toolchain.targets import HardwareTarget

HERE = Path(__file__).resolve().parent


def snn_energy(layer, table, precision: str) -> dict:
    return {"synaptic_ops": layer.synaptic_ops * table.pj(f"{precision}_add"),
            "graded_macs": layer.chip_macs * table.pj(f"{precision}_mac")}


def ann_energy(layer, table, precision: str) -> dict:
    return {"macs": layer.ann_macs * table.pj(f"{precision}_mac")}


def ann_model(table, precision: str) -> str:
    return f"ANN-equivalent MACs x {precision.upper()} MAC ({table.pj(precision + '_mac')} pJ, {table.title})"


def ann_constants(precision: str) -> tuple:
    return (f"{precision}_mac",)


TARGET = HardwareTarget(
    name="cmos45nm", summary="45 nm CMOS, operations only (Horowitz 2014): accumulates for spikes, MACs for the ANN",
    energy_file=HERE / "energy.json", snn_energy=snn_energy, ann_energy=ann_energy, ann_model=ann_model,
    ann_constants=ann_constants)

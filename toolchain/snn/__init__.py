"""The spiking network in torch: its typed configuration (`config`) and the model (`model`)."""
from .model import SnnConfig, SnnModel, SnnOutput

__all__ = ["SnnConfig", "SnnModel", "SnnOutput"]

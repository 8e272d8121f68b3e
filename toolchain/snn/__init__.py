"""The spiking network in torch: its typed configuration (`config`), the model (`model`: the network as written),
the deployed network it trains quantization-aware on (`deployed`) and the time-batched helpers (`steps`)."""
from .config import SnnConfig
from .model import SnnModel, SnnOutput

__all__ = ["SnnConfig", "SnnModel", "SnnOutput"]

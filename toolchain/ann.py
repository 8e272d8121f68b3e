"""The documented entry point `toolchain.ann.train_ann` (README "From Python"); the stage lives in toolchain.training.ann."""
from .training.ann import train_ann

__all__ = ["train_ann"]

"""The documented entry point `toolchain.convert.convert` (README "From Python"); the stage lives in toolchain.training.convert."""
from .training.convert import convert

__all__ = ["convert"]

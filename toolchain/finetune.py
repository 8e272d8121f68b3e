"""The documented entry point `toolchain.finetune.finetune` (README "From Python"); the stage lives in toolchain.training.finetune."""
from .training.finetune import finetune

__all__ = ["finetune"]

"""Network definitions, registered by name with the toolchain (`snntc.plugins`): `build_model("vgg5", input_shape,
num_classes)`."""
from toolchain.ir.models import build_model

from .registry import SPECS, register

__all__ = ["SPECS", "build_model", "register"]

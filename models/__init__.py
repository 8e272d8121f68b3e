"""Network definitions, selected by name: `build_model("vgg5", input_shape, num_classes)`."""
from .registry import MODELS, SPECS, ModelSpec, build_model, describe, get_spec, model_help, model_names

__all__ = ["MODELS", "SPECS", "ModelSpec", "build_model", "describe", "get_spec", "model_help", "model_names"]

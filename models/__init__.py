"""Network definitions, selected by name: `build_model("vgg5", input_shape, num_classes)`."""
from .registry import MODELS, build_model, model_names

__all__ = ["MODELS", "build_model", "model_names"]

"""The dataset layer: local dataset loaders (`load_dataset`) and input spike coders."""
from .datasets import DATASETS, Dataset, load_dataset
from .encoding import CODINGS, InputEncoder, poisson_spikes

__all__ = ["DATASETS", "Dataset", "load_dataset", "CODINGS", "InputEncoder", "poisson_spikes"]

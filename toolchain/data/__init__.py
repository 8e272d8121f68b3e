"""The dataset layer: local dataset loaders (`load_dataset`, `load_recorded`) and input spike coders."""
from .datasets import DATASETS, Dataset, load_dataset, load_recorded
from .encoding import CODINGS, InputEncoder, poisson_spikes

__all__ = ["DATASETS", "Dataset", "load_dataset", "load_recorded", "CODINGS", "InputEncoder", "poisson_spikes"]

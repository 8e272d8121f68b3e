"""The dataset layer: local dataset loaders (`load_dataset`, `load_recorded`)."""
from .datasets import DATASETS, Dataset, load_dataset, load_recorded

__all__ = ["DATASETS", "Dataset", "load_dataset", "load_recorded"]

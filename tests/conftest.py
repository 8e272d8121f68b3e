import os

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_dense_data():
    """A 2-feature, 2-class dataset in the toolchain's Dataset form."""
    from toolchain.data import Dataset
    x = np.array([[1.0, 0.5]], dtype=np.float32)
    y = np.array([0])
    return Dataset("tiny", x, y, x, y, ["a", "b"], (2,), (0.0,), (1.0,))

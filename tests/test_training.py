"""The shared training loop: the output is the best epoch on validation (never chosen on the test split),
fine-tuning never ends below its starting network on validation and says so, resume continues the last epoch and
refuses other settings, augmentation shifts images reproducibly."""
import warnings

import numpy as np
import pytest
import torch

from toolchain.training.ann import ann_accuracy, load_ann, train_ann
from toolchain.io.checkpoint import load_checkpoint
from toolchain.convert import convert
from toolchain.data import load_dataset
from toolchain.errors import CheckpointError, ConfigError
from toolchain.training.evaluate import evaluate_snn, load_snn
from toolchain.finetune import finetune
from toolchain.training import TrainConfig, TrainingWarning, random_shifts


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit=300)


@pytest.fixture(scope="module")
def ann(digits, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ann") / "ann.pt")
    return train_ann(digits, "vgg-small", TrainConfig(epochs=6, lr=3e-3), path, progress=False)


def test_output_is_the_best_epoch_on_validation(ann, digits):
    history = ann.training["state"]["history"]
    vals = [h["val_accuracy"] for h in history]
    best = int(np.argmax(vals)) + 1                    # the first epoch reaching the best
    assert ann.metrics["best_epoch"] == best == history[best - 1]["epoch"] and history[best - 1].get("best")
    model = load_ann(ann)
    assert ann_accuracy(model, digits.val_x, digits.val_y) == pytest.approx(vals[best - 1])
    assert ann.metrics["test_accuracy"] == pytest.approx(ann_accuracy(model, digits.test_x, digits.test_y))
    assert "test_accuracy" not in history[0]           # the test split is looked at once, at the end
    # the last epoch's weights ride along for --resume
    last = ann.training["state"]["last_weights"]
    assert set(last) == set(ann.state_dict)


def test_finetuning_never_ends_below_its_start(ann, digits, tmp_path):
    snn = convert(ann, digits, timesteps=4, coding="direct", scale=0.5)
    start = evaluate_snn(load_snn(snn), digits.val_x, digits.val_y, [4])[4]["accuracy"]
    with pytest.warns(TrainingWarning, match="did not improve on the starting network"):
        out = finetune(snn, digits, TrainConfig(epochs=2, lr=5.0, batch_size=32), str(tmp_path / "ft.pt"),
                       surrogate={"name": "linear"}, progress=False)
    assert out.metrics["best_epoch"] == 0 and out.metrics["val_accuracy"] == pytest.approx(start)
    for key, value in snn.state_dict.items():           # the starting weights, exactly
        torch.testing.assert_close(out.state_dict[key], value, rtol=0, atol=0)
    history = out.training["state"]["history"]
    assert history[0]["epoch"] == 0 and [h["epoch"] for h in history] == [0, 1, 2]
    assert max(h["val_accuracy"] for h in history[1:]) < start


def test_finetuning_that_improves_returns_its_best_epoch(ann, digits, tmp_path):
    snn = convert(ann, digits, timesteps=4, coding="direct", scale=0.5)
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingWarning)
        out = finetune(snn, digits, TrainConfig(epochs=2, lr=1e-3, batch_size=32), str(tmp_path / "ft.pt"),
                       surrogate={"name": "linear"}, progress=False, log=lines.append)
    history = out.training["state"]["history"]
    assert out.metrics["best_epoch"] >= 1 and out.metrics["val_accuracy"] > history[0]["val_accuracy"]
    # one log line per epoch (and the start), naming the neurons and surrogate actually used
    assert len(lines) == 3 and all("if neurons, linear surrogate, T=4" in line for line in lines)
    assert "val accuracy" in lines[1] and "spikes/inference" in lines[1]


def test_resume_continues_and_refuses_other_settings(digits, tmp_path):
    path = str(tmp_path / "ann.pt")
    cfg = TrainConfig(epochs=2, lr=3e-3)
    first = train_ann(digits, "vgg-small", cfg, path, progress=False)
    assert first.training["state"]["epoch"] == 2
    with pytest.raises(CheckpointError, match=r"other settings \(epochs 2"):
        train_ann(digits, "vgg-small", TrainConfig(epochs=3, lr=3e-3), path, resume=True, progress=False)
    with pytest.raises(CheckpointError, match=r"other settings \(lr 0.003"):
        train_ann(digits, "vgg-small", TrainConfig(epochs=2, lr=1e-3), path, resume=True, progress=False)
    again = train_ann(digits, "vgg-small", cfg, path, resume=True, progress=False)     # nothing left to run
    assert again.training["state"]["history"] == first.training["state"]["history"]


def test_random_shifts_move_images_reproducibly():
    x = torch.zeros(3, 1, 6, 6)
    x[:, 0, 2, 3] = 1.0
    a = random_shifts(x, 2, torch.Generator().manual_seed(4))
    b = random_shifts(x, 2, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and a.shape == x.shape
    for img in a:                                   # the one bright pixel moved by at most 2 in each direction
        (r, c), = torch.nonzero(img[0]).tolist()
        assert abs(r - 2) <= 2 and abs(c - 3) <= 2
    assert not all(torch.equal(img, x[0]) for img in a)
    with pytest.raises(ConfigError, match="augment 0..8"):
        TrainConfig(augment=-1)

"""The demo on real MNIST digits (mnist5k), reduced: every stage runs end to end, the hybrid is chosen on the
validation split, the deployed network's emulator run covers the whole (limited) test split and agrees with Lava."""
import json

import pytest

from toolchain.cli import main
from toolchain.demo import PRESETS, demo_config
from toolchain.errors import ConfigError


def test_presets_and_overrides():
    cfg = demo_config("mnist5k", ann_epochs=2, coding=None)
    assert cfg.dataset == "mnist5k" and cfg.model == "mnist-small" and cfg.ann_epochs == 2
    assert cfg.coding == PRESETS["mnist5k"].coding
    with pytest.raises(ConfigError, match="no demo for dataset 'cifar10'; demos: digits, mnist5k"):
        demo_config("cifar10")


@pytest.mark.slow
@pytest.mark.lava
def test_reduced_mnist5k_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--dataset", "mnist5k", "--limit", "120", "--ann-epochs", "2", "--finetune-epochs", "1",
                 "--deploy-epochs", "1", "--lava-samples", "2", "--no-progress", "--out", str(out),
                 "--json", str(tmp_path / "demo.json")]) == 0
    log = capsys.readouterr().out
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["dataset"] == "mnist5k" and summary["split"]["sizes"] == {"train": 120, "val": 120, "test": 120}
    hybrid = summary["hybrid"]
    # the hybrid that goes on is the better one on validation (ties: STDB)
    val = hybrid["val_by_surrogate"]
    assert hybrid["surrogate"] == max(val, key=lambda k: (val[k], k == "stdb"))
    deploy = summary["deploy"]
    assert deploy["emulator_samples"] == 120 and deploy["lava"]["agrees_with_emulator"] is True
    assert "ANN mnist-small on mnist5k (120 train / 120 validation / 120 test images)" in log
    for name in ("ann.pt", "converted.pt", "hybrid_linear.pt", "hybrid_stdb.pt", "loihi.pt", "model.net",
                 "accuracy_vs_timesteps.png", "energy_loihi.png"):
        assert (out / name).exists(), name

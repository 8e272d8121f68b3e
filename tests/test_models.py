"""The model registry as a user meets it: `snntc models`, the `--model` help, and export refusing a network that
does not fit Loihi 2 (nothing written) unless told to write it anyway."""
import json

import pytest
import torch

from models import SPECS, build_model
from toolchain.analysis.model_facts import describe
from toolchain.ir.models import model_help
from toolchain.io.checkpoint import Checkpoint, save_checkpoint
from toolchain.cli import main
from toolchain.snn import SnnConfig
from toolchain.ir.torch_net import AnnModel


def test_every_model_builds_at_the_input_it_suits_and_says_what_it_is():
    for spec in SPECS:
        net = build_model(spec.name, spec.input_shape, 10)
        assert net.input_shape == spec.input_shape and spec.summary and spec.name in model_help()


def test_fit_claims_in_the_summaries_are_measured():
    """A summary that says 'fits Loihi 2' must fit (measured on its deployed form); the 28x28 models are meant to."""
    for spec in SPECS:
        row = describe(spec.name)
        if "fits Loihi 2" in spec.summary:
            assert row["fits_loihi2"] is True, spec.name
    assert describe("mnist-vgg")["fits_loihi2"] and describe("mnist-small")["fits_loihi2"]
    # vgg-small adapts to 28x28, but its dense layer's fan-in (pooling folded in: 32 x 14 x 14) exceeds a core's
    row = describe("vgg-small", (1, 28, 28))
    assert row["fits_loihi2"] is False and "fan-in 6272" in row["fit_problem"]


def test_describe_counts_parameters_like_torch():
    for name in ("vgg-small", "mnist-vgg", "resnet-small"):
        spec = next(s for s in SPECS if s.name == name)
        net = build_model(name, spec.input_shape, 10)
        assert describe(name)["parameters"] == sum(p.numel() for p in AnnModel(net).parameters())


def test_models_command(capsys, tmp_path):
    assert main(["models", "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    for spec in SPECS:
        assert spec.name in out
    rows = json.loads((tmp_path / "m.json").read_text())["models"]
    assert {r["name"] for r in rows} == {s.name for s in SPECS}
    assert main(["models", "--input-shape", "1", "28", "28"]) == 0
    out = capsys.readouterr().out
    assert "does not take this input" in out and "fan-in 6272" in out


def test_unknown_model_is_a_one_line_error(capsys, tmp_path):
    assert main(["train-ann", "--model", "vgg7", "-o", str(tmp_path / "a.pt")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "vgg7" in err and not (tmp_path / "a.pt").exists()


def test_export_refuses_a_network_that_does_not_fit(tmp_path, capsys):
    torch.manual_seed(0)
    net = build_model("vgg-small", (1, 28, 28), 10)
    model = AnnModel(net)
    config = SnnConfig(thresholds={s.name: 1.0 for s in net.spiking_layers}, coding="poisson", timesteps=4)
    ckpt = str(tmp_path / "snn.pt")
    save_checkpoint(Checkpoint("snn", net, model.state_dict(), {"name": "mnist5k"}, snn=config.to_dict()), ckpt)
    out = tmp_path / "model.net"
    assert main(["export", ckpt, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "does not fit Loihi 2" in err and "fan-in 6272" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main(["export", ckpt, "-o", str(out), "--allow-misfit", "--json", str(tmp_path / "x.json")]) == 0
    assert out.exists() and json.loads((tmp_path / "x.json").read_text())["fit"]["fits"] is False
    assert "DOES NOT FIT" in capsys.readouterr().out

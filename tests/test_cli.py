"""The command line as a user meets it: one-line errors, nothing overwritten, resume after a kill."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch

from toolchain.io.checkpoint import load_checkpoint
from toolchain.cli import main

SNNTC = [sys.executable, "-m", "toolchain"]
QUICK = ["--limit", "200", "--no-progress"]


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args,message", [
    (["train-ann", "--model", "vgg7", "-o", "{tmp}/a.pt"], "invalid choice: 'vgg7' (choose from 'vgg-small'"),
    (["train-ann", "--dataset", "mnist", "--data-root", "{tmp}/missing", "-o", "{tmp}/a.pt"], "MNIST: missing"),
    (["train-ann", "--dataset", "cifar11", "-o", "{tmp}/a.pt"], "cifar11"),
    (["convert", "{tmp}/none.pt", "-o", "{tmp}/s.pt"], "no such checkpoint file"),
    (["evaluate", "{tmp}/junk.pt"], "not a readable checkpoint"),
    (["convert", "{tmp}/junk.pt", "-o", "{tmp}/s.pt", "--scale", "-1"], "not a readable checkpoint"),
    (["simulate", "{tmp}/junk.pt"], "HDF5"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    args = [a.format(tmp=tmp_path) for a in args]
    code, out, err = run_cli(args, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "s.pt").exists()


def test_argument_errors_are_one_line(capsys):
    assert main(["evaluate", "x.pt", "--timesteps", "5,zero"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "comma-separated" in err


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    target = tmp_path / "ann.pt"
    target.write_bytes(b"precious")
    code, _, err = run_cli(["train-ann", "--epochs", "1", "-o", str(target)] + QUICK, capsys)
    assert code == 2 and "--force" in err and target.read_bytes() == b"precious"


@pytest.mark.slow
def test_front_end_commands_chain_and_write_json(tmp_path, capsys):
    ann, snn, hyb = (str(tmp_path / n) for n in ("ann.pt", "snn.pt", "hybrid.pt"))
    assert run_cli(["train-ann", "--epochs", "3", "-o", ann, "--json", str(tmp_path / "a.json")] + QUICK, capsys)[0] == 0
    assert run_cli(["convert", ann, "-o", snn, "--timesteps", "4", "--coding", "direct"], capsys)[0] == 0
    code, out, _ = run_cli(["finetune", snn, "-o", hyb, "--epochs", "1", "--no-progress"], capsys)
    assert code == 0 and "fine-tuned SNN" in out
    code, out, _ = run_cli(["evaluate", hyb, "--timesteps", "2,4", "--json", str(tmp_path / "e.json"), "--no-progress"], capsys)
    assert code == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert set(result["timesteps"]) == {"2", "4"}
    assert 0.0 <= result["timesteps"]["4"]["accuracy"] <= 1.0 and result["timesteps"]["4"]["spikes_per_inference"] > 0
    assert json.loads((tmp_path / "a.json").read_text())["test_accuracy"] > 0.3
    code, out, _ = run_cli(["evaluate", ann, snn, hyb, "--timesteps", "4", "--json", str(tmp_path / "side.json"),
                            "--no-progress"], capsys)
    side = json.loads((tmp_path / "side.json").read_text())
    assert code == 0 and [m["kind"] for m in side["models"]] == ["ann", "snn", "snn"]
    assert "ann.pt" in out.splitlines()[-3] and "hybrid.pt" in out.splitlines()[-3]
    code, _, err = run_cli(["finetune", ann, "-o", str(tmp_path / "x.pt")], capsys)
    assert code == 2 and "needs an SNN one" in err


@pytest.mark.slow
def test_interrupted_training_resumes_losing_at_most_one_epoch(tmp_path):
    """Kill train-ann after its second checkpoint, resume, and get what an uninterrupted run gets."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    epochs = 30      # enough that the run is still going when the watcher sees epoch 2 (an epoch here is ~0.1 s)
    common = ["train-ann", "--epochs", str(epochs), "--limit", "300", "--no-progress", "--seed", "3"]
    killed = str(tmp_path / "killed.pt")
    proc = subprocess.Popen(SNNTC + common + ["-o", killed], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        if os.path.exists(killed) and load_checkpoint(killed).training["state"]["epoch"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = load_checkpoint(killed).training["state"]["epoch"]
    assert 2 <= done < epochs, "the run must have been interrupted part-way"
    subprocess.run(SNNTC + common + ["-o", killed, "--resume"], env=env, check=True, capture_output=True)
    straight = str(tmp_path / "straight.pt")
    subprocess.run(SNNTC + common + ["-o", straight], env=env, check=True, capture_output=True)
    a, b = load_checkpoint(killed), load_checkpoint(straight)
    assert a.training["state"]["epoch"] == epochs and len(a.training["state"]["history"]) == epochs
    for key in b.state_dict:
        torch.testing.assert_close(a.state_dict[key], b.state_dict[key], rtol=0, atol=0)


def test_console_script_and_module_entry_point():
    out = subprocess.run(SNNTC + ["--help"], capture_output=True, text=True, check=True).stdout
    for command in ["train-ann", "convert", "finetune", "evaluate", "export", "simulate", "verify", "energy", "fit", "demo"]:
        assert command in out


def test_lava_imports_after_a_progress_bar():
    """tqdm's default multiprocessing lock would fix the start method and break Lava's import."""
    code = ("from toolchain.progress import tqdm\nfor _ in tqdm(range(2)): pass\n"
            "import lava.lib.dl.netx\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-500:]


def _export_tiny(tmp_path, kind="conv"):
    import numpy as np
    from test_quantize import conv_ckpt, dense_ckpt
    from toolchain.deploy import export_snn
    rng = np.random.default_rng(0)
    if kind == "conv":
        ckpt, x = conv_ckpt(0), rng.normal(size=(2, 1, 8, 8)).astype(np.float32)
    else:
        ckpt, x = dense_ckpt(rng.normal(size=(4, 6)), rng.normal(size=(3, 4)), (0.5,)), rng.normal(size=(2, 6))
    path = tmp_path / f"{kind}.net"
    export_snn(ckpt, str(path), x)
    return path


def test_simulate_rejects_inputs_of_the_wrong_shape(tmp_path, capsys):
    path = _export_tiny(tmp_path, "dense")
    code, _, err = run_cli(["simulate", str(path), "--dataset", "digits", "--samples", "2", "--json",
                            str(tmp_path / "s.json")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "inputs have shape (1, 8, 8), the network expects (6,)" in err and not (tmp_path / "s.json").exists()


def test_loihi2_target_says_it_is_not_available(tmp_path, capsys):
    path = _export_tiny(tmp_path)
    code, _, err = run_cli(["simulate", str(path), "--dataset", "digits", "--samples", "2", "--target", "loihi2"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Loihi 2 hardware is not available here" in err


def test_export_of_a_residual_network_writes_a_chain_with_relay_channels(tmp_path, capsys):
    from models import build_model
    from toolchain.io.checkpoint import Checkpoint, save_checkpoint
    from toolchain.snn import SnnConfig, SnnModel
    net = build_model("resnet-small", (1, 8, 8), 10)
    model = SnnModel(net, SnnConfig(thresholds={s.name: 1.0 for s in net.spiking_layers}))
    save_checkpoint(Checkpoint("snn", net, model.state_dict(), {"name": "digits"}, snn=model.config.to_dict()),
                    str(tmp_path / "r.pt"))
    code, out, _ = run_cli(["export", str(tmp_path / "r.pt"), "-o", str(tmp_path / "r.net"), "--json",
                            str(tmp_path / "e.json")], capsys)
    assert code == 0 and "stock netx loads and Lava runs unchanged" in out
    assert "residual blocks as relay channels: 1,280 extra neurons" in out       # 16 x 8 x 8 + 16 x 4 x 4
    assert json.loads((tmp_path / "e.json").read_text())["residual_relays"]["neurons"] == 1280


def test_export_does_not_overwrite_without_force(tmp_path, capsys):
    target = tmp_path / "conv.net"
    target.write_bytes(b"keep")
    code, _, err = run_cli(["export", str(tmp_path / "x.pt"), "-o", str(target)], capsys)
    assert code == 2 and "--force" in err and target.read_bytes() == b"keep"


def test_energy_from_a_simulation_json_and_plot(tmp_path, capsys):
    path = _export_tiny(tmp_path)
    sim = tmp_path / "sim.json"
    code, out, _ = run_cli(["simulate", str(path), "--dataset", "digits", "--samples", "8", "--backend", "emulator",
                            "--json", str(sim), "--energy", "--energy-target", "loihi"], capsys)
    assert code == 0 and "synaptic ops" in out
    code, out, _ = run_cli(["energy", str(path), "--from", str(sim), "--target", "loihi2", "--plot",
                            str(tmp_path / "e.png"), "--json", str(tmp_path / "e.json")], capsys)
    assert code == 0 and "UPPER BOUND" in out
    assert (tmp_path / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["target"] == "loihi2" and report["energy"]["snn_is_upper_bound"] is True
    from_sim = json.loads(sim.read_text())
    assert report["counts"]["samples"] == from_sim["samples"] == 8


def test_fit_command_passes_and_fails_with_the_layer_named(tmp_path, capsys):
    import numpy as np
    from toolchain.quantization.fixed_point import FxLayer, FxNetwork
    from toolchain.io.netx import write_netx
    path = _export_tiny(tmp_path)
    code, out, _ = run_cli(["fit", str(path)], capsys)
    assert code == 0 and "fits" in out
    wide = FxNetwork((5000,), [FxLayer("big", "dense", np.full((10, 5000), 2), (5000,), (10,), 100, is_output=True)],
                     10, 4)
    write_netx(wide, tmp_path / "big.net")
    code, _, err = run_cli(["fit", str(tmp_path / "big.net")], capsys)
    assert code == 2 and "layer 'big'" in err and "4096" in err

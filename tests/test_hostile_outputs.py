"""Outputs and faults (issue 17): no output destroys an input or another output, nothing is overwritten without
--force, every output is checked before any work, a training's output is locked, a kill or a full disk leaves the
old file intact and its temporary file is cleaned up by the next run, a NaN stops training in one line, --resume
refuses other settings, and start-up errors and interrupts are one line too. In-process where the command alone
matters; a subprocess where a real process boundary does (kill, signals, rlimit, start-up, Lava's output)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from hostile import assert_refused, make_artifacts, snapshot, snn_checkpoint
from toolchain.cli import main
from toolchain.io.checkpoint import load_checkpoint, save_checkpoint
from toolchain.io.files import stale_temps
from toolchain.io.outputs import OutputLock

PYTHON = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--epochs", "1", "--limit", "50", "--no-progress"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return make_artifacts(tmp_path_factory.mktemp("good"))


@pytest.fixture
def work(tmp_path, artifacts):
    for path in artifacts.values():
        shutil.copy(path, tmp_path / os.path.basename(path))
    old = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(old)


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")


def _snntc(args, **kw):
    return subprocess.Popen([PYTHON, "-m", "toolchain"] + [str(a) for a in args], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _dead_pid() -> int:
    proc = subprocess.Popen([PYTHON, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- no output destroys an input or another output ---------------------------------------------------------------
CLOBBERS = [
    (["evaluate", "snn.pt", "--json", "snn.pt"], "--json snn.pt is the input snn.pt"),
    (["evaluate", "snn.pt", "ann.pt", "--json", "ann.pt", "--force"], "--json ann.pt is the input ann.pt"),
    (["simulate", "net.net", "--json", "net.net", "--force"], "--json net.net is the input net.net"),
    (["simulate", "net.net", "--energy", "--plot", "net.net"], "--plot net.net is the input net.net"),
    (["energy", "net.net", "--plot", "./net.net", "--force"], "--plot ./net.net is the input net.net"),
    (["verify", "net.net", "--json", "net.net"], "is the input"),
    (["fit", "net.net", "--json", "net.net", "--force"], "is the input"),
    (["export", "snn.pt", "-o", "snn.pt", "--force"], "-o snn.pt is the input snn.pt"),
    (["export", "snn.pt", "-o", "x.net", "--json", "x.net"], "-o and --json are the same file"),
    (["export", "snn.pt", "-o", "x.nir", "--format", "nir", "--json", "snn.pt"], "is the input"),
    (["convert", "ann.pt", "-o", "ann.pt", "--force"], "is the input"),
    (["finetune", "snn.pt", "-o", "snn.pt", "--resume"], "is the input"),
    (["train-ann", "-o", "a.pt", "--json", "a.pt"], "-o and --json are the same file"),
    (["train-snn", "-o", "d.pt", "--plot", "d.pt"], "-o and --plot are the same file"),
    (["import", "net.net", "-o", "net.net", "--force"], "is the input"),
    (["demo", "--out", "d", "--json", "d/ann.pt"], "are the same file"),
]


@pytest.mark.parametrize("argv,expect", CLOBBERS, ids=[" ".join(a) for a, _ in CLOBBERS])
def test_an_output_never_replaces_an_input_or_another_output(work, capsys, argv, expect):
    assert_refused(argv, capsys, work, expect)


def test_a_hard_link_or_symlink_to_the_input_is_the_input(work, capsys):
    os.link("net.net", "hard.json")
    os.symlink("net.net", "soft.json")
    for name in ("hard.json", "soft.json"):
        assert_refused(["fit", "net.net", "--json", name, "--force"], capsys, work, "is the input")


EXISTING = [["evaluate", "snn.pt", "--no-progress"], ["fit", "net.net"], ["models"],
            ["simulate", "net.net", "--samples", "2", "--backend", "emulator", "--no-progress"],
            ["export", "snn.pt", "-o", "new.net"]]


@pytest.mark.parametrize("argv", EXISTING, ids=[a[0] for a in EXISTING])
def test_an_existing_json_is_kept_without_force_and_replaced_with_it(work, capsys, argv):
    (work / "summary.json").write_text("keep")
    assert_refused(argv + ["--json", "summary.json"], capsys, work, "--json summary.json exists; pass --force")
    assert main(argv + ["--json", "summary.json", "--force"]) == 0
    assert (work / "summary.json").read_text().startswith("{")
    capsys.readouterr()


def test_existing_outputs_of_every_kind_need_force(work, capsys):
    for name in ("x.pt", "x.net", "x.png", "d/ann.pt"):
        os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
        open(name, "w").write("keep")
    assert_refused(["export", "snn.pt", "-o", "x.net"], capsys, work, "-o x.net exists; pass --force")
    assert_refused(["convert", "ann.pt", "-o", "x.pt"], capsys, work, "-o x.pt exists; pass --force")
    assert_refused(["train-ann", "-o", "x.pt"], capsys, work, "pass --force to overwrite it (or --resume")
    assert_refused(["train-snn", "-o", "y.pt", "--plot", "x.png"], capsys, work, "--plot x.png exists")
    assert_refused(["simulate", "net.net", "--energy", "--plot", "x.png"], capsys, work, "--plot x.png exists")
    assert_refused(["demo", "--out", "d"], capsys, work, "an artifact of --out d/ann.pt exists; pass --force")


UNWRITABLE = [
    (["train-ann", "--dataset", "mnist", "--data-root", "missing", "-o", "snn.pt/a.pt"], "-o snn.pt/a.pt:"),
    (["train-snn", "-o", "d.pt", "--plot", "snn.pt/g.png"], "--plot snn.pt/g.png:"),
    (["evaluate", "snn.pt", "--json", "net.net/e.json"], "is not a directory"),
    (["demo", "--out", "snn.pt/demo"], "--out snn.pt/demo:"),
    (["demo", "--out", "net.net"], "is a file, not a directory"),
    (["export", "snn.pt", "-o", "."], "-o . is a directory"),
]
if os.path.isdir("/proc/self"):
    UNWRITABLE += [(["train-ann", "--dataset", "mnist", "--data-root", "missing", "-o", "/proc/a.pt"], "cannot write in /proc"),
                   (["demo", "--out", "/proc/snntc-demo"], "cannot write in /proc"),
                   (["finetune", "snn.pt", "-o", "h.pt", "--json", "/proc/h.json"], "cannot write in /proc")]


@pytest.mark.parametrize("argv,expect", UNWRITABLE, ids=[" ".join(a) for a, _ in UNWRITABLE])
def test_unwritable_outputs_are_refused_before_any_work(work, capsys, argv, expect):
    """The dataset of the first cases does not exist either: the output is what is checked first."""
    assert_refused(argv, capsys, work, expect)


# -- locks, temporary files, kills, full disks ---------------------------------------------------------------------
_HOLDER = ("import sys, time\nfrom toolchain.io.outputs import OutputLock\n"
           "with OutputLock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)\n")


def test_a_second_training_to_the_same_output_is_refused_while_the_first_runs(work, capsys):
    holder = subprocess.Popen([PYTHON, "-c", _HOLDER, "a.pt"], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert_refused(["train-ann", "-o", "a.pt", "--force"] + QUICK, capsys, work,
                       f"-o {os.path.abspath('a.pt')} is being written by another snntc run (pid {holder.pid})")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert os.path.exists(".a.pt.snntc.lock")          # a killed run's lock file holds no lock ...
    with OutputLock("a.pt"):
        pass
    assert not os.path.exists(".a.pt.snntc.lock")      # ... and the next run takes it and removes it


def test_stale_temporary_files_are_removed_and_live_ones_kept(work, capsys):
    dead = f".fit.json.snntc-{_dead_pid()}-abcdef12.tmp"
    live = f".fit.json.snntc-{os.getpid()}-abcdef12.tmp"
    for name in (dead, live):
        open(name, "wb").write(b"x" * 1000)
    assert main(["fit", "net.net", "--json", "fit.json"]) == 0
    capsys.readouterr()
    assert not os.path.exists(dead) and os.path.exists(live) and os.path.exists("fit.json")


_WRITER = ("import sys, torch\nfrom toolchain.io.checkpoint import Checkpoint, save_checkpoint\n"
           "from toolchain.ir import Flatten, Linear, Network\n"
           "net = Network((Flatten('flat'), Linear('out', 4_000_000, 10)), (1, 2000, 2000), 10)\n"
           "ckpt = Checkpoint('ann', net, {'layers.out.weight': torch.zeros(10, 4_000_000)})\n"
           "print('ready', flush=True)\n"
           "while True:\n    save_checkpoint(ckpt, sys.argv[1])\n")


def test_a_kill_during_a_checkpoint_write_leaves_the_old_file_and_the_next_write_cleans_up(work):
    """kill -9 while a 160 MB checkpoint is being written: the file at the path is a whole checkpoint (the old one or
    a finished new one); the temporary file left behind is removed by the next write of that path."""
    save_checkpoint(snn_checkpoint(), "c.pt")
    writer = subprocess.Popen([PYTHON, "-c", _WRITER, "c.pt"], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        deadline = time.time() + 60
        while time.time() < deadline and not any(n.startswith(".c.pt.snntc-") for n in os.listdir(".")):
            time.sleep(0.005)
        time.sleep(0.05)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    left = stale_temps("c.pt")
    assert left, "the writer must have been killed inside a write"
    ckpt = load_checkpoint("c.pt")                     # the old checkpoint or a complete new one, never a torn one
    assert ckpt.kind == "snn"
    save_checkpoint(snn_checkpoint(), "c.pt")
    assert not stale_temps("c.pt") and not any(os.path.exists(t) for t in left)


_LIMITED = ("import resource, sys\nresource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))\n"
            "from toolchain.cli import main\nsys.exit(main(sys.argv[2:]))\n")


SLOW = pytest.mark.slow


@pytest.mark.parametrize("argv,limit", [(["export", "snn.pt", "-o", "old.out", "--force"], 20_000),
                                        pytest.param(["export", "snn.pt", "--format", "nir", "-o", "old.out", "--force"],
                                                     20_000, marks=SLOW),
                                        pytest.param(["export", "snn.pt", "--format", "onnx", "-o", "old.out", "--force"],
                                                     20_000, marks=SLOW),
                                        pytest.param(["convert", "ann.pt", "-o", "old.out", "--force", "--timesteps", "2"],
                                                     20_000, marks=SLOW),
                                        (["fit", "net.net", "--json", "old.out", "--force"], 200)])
def test_a_full_disk_is_one_line_with_the_old_file_intact(work, argv, limit):
    """A file-size limit (RLIMIT_FSIZE) makes every write past it fail as a full disk does."""
    open("old.out", "wb").write(b"the old file")
    before = snapshot(work)
    proc = subprocess.run([PYTHON, "-c", _LIMITED, str(limit)] + argv, env=_env(), capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in proc.stderr.strip().splitlines() if ": warning: " not in line]   # export's own
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "old.out: the file-size limit is reached (the existing file is unchanged)" in lines[0], lines[0]
    assert snapshot(work) == before


# -- signals and start-up ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_during_training_exits_in_one_line_and_leaves_no_temporary_file(work):
    proc = _snntc(["train-ann", "-o", "t.pt", "--epochs", "200", "--limit", "50", "--no-progress"])
    deadline = time.time() + 600                       # the first epoch's checkpoint (minutes on a busy machine)
    while time.time() < deadline and not os.path.exists("t.pt") and proc.poll() is None:
        time.sleep(0.05)
    assert os.path.exists("t.pt"), "no epoch finished"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "snntc train-ann: terminated (t.pt holds the last finished epoch; --resume continues)"
    assert "Traceback" not in err
    assert load_checkpoint("t.pt").kind == "ann"
    assert sorted(os.listdir(".")) == sorted(["ann.pt", "net.net", "snn.pt", "t.pt"])


def test_ctrl_c_while_starting_is_one_line(work):
    proc = _snntc(["evaluate", "snn.pt"])
    time.sleep(0.4)                                    # importing torch takes seconds
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err


def test_a_broken_installation_is_one_line_at_start_up(work, tmp_path_factory):
    """torch failing to import (a missing shared library) is one line pointing at make setup, exit 2."""
    fake = tmp_path_factory.mktemp("fake") / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('libtorch_cpu.so: cannot open shared object file')\n")
    env = dict(_env(), PYTHONPATH=str(fake.parent) + os.pathsep + ROOT)
    done = subprocess.run([PYTHON, "-m", "toolchain", "evaluate", "snn.pt"], env=env, capture_output=True, text=True,
                          timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("snntc: error: cannot start: ImportError: libtorch_cpu.so") and "make setup" in lines[0]


@pytest.mark.slow
@pytest.mark.lava
def test_lava_prints_none_of_its_import_noise_and_ctrl_c_promises_nothing(work):
    done = subprocess.run([PYTHON, "-m", "toolchain", "simulate", "net.net", "--samples", "1", "--backend", "lava",
                           "--no-progress"], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "Prophesee" not in done.stdout and "lava-fixed_pt: 1 samples" in done.stdout
    # a run far longer than the test (100,000 steps), interrupted once it has had time to start (Lava's progress bar,
    # the old start signal, is drawn only on a terminal)
    proc = _snntc(["simulate", "net.net", "--samples", "1", "--timesteps", "100000", "--backend", "lava"])
    time.sleep(20)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert "interrupted" in last and "--resume" not in last and "checkpoint" not in last, err


@pytest.mark.parametrize("how", ["env", "flag"])
def test_debug_shows_the_traceback(work, capsys, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("SNNTC_DEBUG", "1")
    assert main(["evaluate", "missing.pt"] + (["--debug"] if how == "flag" else [])) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("snntc evaluate: error: missing.pt")


# -- training: NaN, resume -----------------------------------------------------------------------------------------
def test_a_nan_during_training_stops_it_naming_the_epoch_and_the_cause(work, capsys):
    line = assert_refused(["train-ann", "-o", "a.pt", "--optimizer", "sgd", "--lr", "1e30", "--epochs", "3",
                           "--limit", "100", "--no-progress"], capsys, work, "training diverged in epoch 1")
    assert "the learning rate (1e+30) is likely too high" in line


def test_a_nan_in_fine_tuning_keeps_the_last_good_epoch(work, capsys):
    assert main(["finetune", "snn.pt", "-o", "h.pt", "--epochs", "1", "--limit", "60", "--no-progress"]) == 0
    capsys.readouterr()
    good = open("h.pt", "rb").read()
    os.remove("h.pt")
    shutil.copy("snn.pt", "s2.pt")
    code = main(["finetune", "s2.pt", "-o", "h.pt", "--epochs", "2", "--limit", "60", "--no-progress",
                 "--lr", "1e25", "--alpha", "1e20", "--optimizer", "sgd"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "training diverged in epoch" in err[-1] and "Traceback" not in "".join(err)
    assert not os.path.exists("h.pt") or load_checkpoint("h.pt").kind == "snn"
    assert good


def test_resume_refuses_other_settings(work, capsys):
    assert main(["train-ann", "-o", "a.pt"] + QUICK) == 0
    capsys.readouterr()
    for extra, named in ((["--seed", "1"], "seed 0"), (["--lr", "0.1"], "lr 0.003"), (["--optimizer", "sgd"], "optimizer 'adam'"),
                         (["--epochs", "2"], "epochs 1"), (["--batch-size", "8"], "batch_size 64")):
        argv = ["train-ann", "-o", "a.pt", "--resume", "--limit", "50", "--no-progress"]
        argv += [] if "--epochs" in extra else ["--epochs", "1"]
        assert_refused(argv + extra, capsys, work, f"was trained with other settings ({named}")
    assert main(["finetune", "snn.pt", "-o", "h.pt"] + QUICK) == 0
    capsys.readouterr()
    assert_refused(["finetune", "snn.pt", "-o", "h.pt", "--resume", "--surrogate", "stdb"] + QUICK, capsys, work,
                   "was fine-tuned with other SNN settings (surrogate)")
    assert_refused(["finetune", "snn.pt", "-o", "h.pt", "--resume", "--timesteps", "3"] + QUICK, capsys, work,
                   "(timesteps)")


def test_checkpoints_hold_plain_data_for_every_schedule_and_optimizer(work, capsys):
    """torch.load(weights_only=True) reads back every checkpoint training writes (MultiStepLR's Counter included),
    and --resume continues from it."""
    for schedule, optimizer in (("step", "sgd"), ("cosine", "adam"), ("none", "sgd")):
        out = f"{schedule}.pt"
        assert main(["train-ann", "-o", out, "--schedule", schedule, "--optimizer", optimizer, "--epochs", "1",
                     "--limit", "50", "--no-progress"]) == 0
        payload = torch.load(out, weights_only=True)
        assert payload["training"]["state"]["scheduler"] is not None
        assert main(["train-ann", "-o", out, "--schedule", schedule, "--optimizer", optimizer, "--epochs", "1",
                     "--limit", "50", "--no-progress", "--resume"]) == 0
    capsys.readouterr()

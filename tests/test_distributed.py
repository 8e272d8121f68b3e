"""Data-parallel training (toolchain.training.distributed, toolchain.sharding, `--nproc`): 2 gloo processes on the
CPU give the weights of one process running the same global batches with the same seed; rank 0 alone writes; a
job killed whole resumes (under another number of processes) losing at most the epoch it was in; a killed process
fails the run in one line.

Tolerance: weights within 1e-4 (absolute; weights are O(1), up to 14 for batch-norm scales) of one process after
2 epochs. Two processes sum each gradient in another order (two partial sums, then the all-reduce) and batch norm
combines per-process statistics in float64 (Chan et al.), so results differ in float32 rounding only: measured
7.5e-6 at most (ANN 4.4e-6, STDB 7.5e-6, QAT 7.5e-6 after 1 epoch, direct with batch norm 4.4e-6). A spike that
flips at its threshold because of such rounding would show as a larger difference; with these seeds none does.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNNTC = [sys.executable, "-m", "toolchain"]
WEIGHT_ATOL = 1e-4


# -- one process: nothing changes ------------------------------------------------------------------------------------
def test_shard_rows_split_a_batch_into_contiguous_ranges_in_rank_order():
    from toolchain.training.distributed import shard_rows
    for n in (1, 2, 5, 32, 33):
        for size in (1, 2, 3):
            ranges = [shard_rows(n, r, size) for r in range(size)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1


def test_random_draws_of_a_shard_are_the_global_batchs_rows():
    from toolchain import sharding
    full = torch.rand((6, 3), generator=torch.Generator().manual_seed(4))
    with sharding.shard_of_batch(sharding.BatchShard(6, 2, 5)):
        part = sharding.rand((3, 3), generator=torch.Generator().manual_seed(4))
    assert torch.equal(part, full[2:5])
    torch.manual_seed(7)
    mask = torch.nn.functional.dropout(torch.ones(6, 4), 0.5, True)
    torch.manual_seed(7)
    with sharding.shard_of_batch(sharding.BatchShard(6, 3, 6)):
        assert torch.equal(sharding.dropout_mask(torch.zeros(3, 4), 0.5), mask[3:6])


def test_without_torchrun_a_process_is_the_whole_run(monkeypatch):
    from toolchain.training import distributed
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.world() == (0, 1) and distributed.is_main() and distributed.batch_shard(5) is None
    assert distributed.all_sum([1.5, 2.0]) == [1.5, 2.0]


def test_a_command_that_does_not_run_data_parallel_refuses_under_torchrun():
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_WORLD_SIZE": "2"}
    proc = subprocess.run(SNNTC + ["models"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "snntc models: error: 'models' runs in one process; start it without torchrun (data-parallel: train-ann, "
        "convert, finetune, train-snn)"]


# -- two processes -----------------------------------------------------------------------------------------------------
def _torchrun(script_args, tmp, timeout=900):
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
                          + script_args, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _close(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), rtol=0, atol=WEIGHT_ATOL), \
            f"{what} {k}: {float((a[k].double() - b[k].double()).abs().max()):.3g}"


@pytest.mark.slow
def test_two_processes_train_the_weights_of_one(tmp_path):
    """ANN training (batch norm, dropout, shifted images), conversion (max and a subsampled percentile), STDB
    fine-tuning (Poisson input, dropout), QAT fine-tuning (loihi-cuba) and direct training with batch norm over
    batch and time (Poisson input), each SNN epoch ending with a batch shorter than the processes' count."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import distributed_worker
    _torchrun([os.path.join(ROOT, "tests", "distributed_worker.py"), str(tmp_path / "two")], tmp_path)
    one = distributed_worker.run_stages(str(tmp_path / "one"), 0)
    two = [torch.load(tmp_path / "two" / f"result{r}.pt") for r in (0, 1)]
    for stage in ("ann", "stdb", "qat", "direct"):
        for key in ("last", "best"):
            assert all(torch.equal(two[0][stage][key][k], two[1][stage][key][k]) for k in two[0][stage][key])
            _close(one[stage][key], two[0][stage][key], f"{stage} {key}")
        for h1, h2 in zip(one[stage]["history"], two[0][stage]["history"], strict=True):
            assert h1.get("val_accuracy") == h2.get("val_accuracy")             # evaluation sharded and summed
            assert h1.get("loss") == pytest.approx(h2.get("loss"), rel=1e-6)
        assert one[stage]["metrics"]["test_accuracy"] == two[0][stage]["metrics"]["test_accuracy"]
    for method in ("max", "percentile"):                                       # calibration of the global batch
        assert two[0][method] == pytest.approx(one[method], rel=1e-5)
    assert two[0]["processes"] == 2 and two[0]["threads"] == max(1, (os.cpu_count() or 1) // 2)
    # rank 0 alone writes: checkpoints and JSON under rank0/, nothing under rank1/
    assert sorted(os.listdir(tmp_path / "two" / "rank0")) == ["ann.pt", "direct.pt", "qat.pt", "stdb.pt", "summary.json"]
    assert not (tmp_path / "two" / "rank1").exists()


def _children(pid: int) -> dict:
    """{RANK: pid} of the processes `pid` started (the launcher's torchrun workers)."""
    found = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            for child in map(int, f.read().split()):
                with open(f"/proc/{child}/environ", "rb") as e:
                    env = dict(v.split(b"=", 1) for v in e.read().split(b"\0") if b"=" in v)
                if b"RANK" in env:
                    found[int(env[b"RANK"])] = child
    return found


def _start_training(out, epochs: int) -> subprocess.Popen:
    proc = subprocess.Popen(SNNTC + ["train-ann", "--nproc", "2", "--epochs", str(epochs), "--limit", "300",
                                     "--batch-size", "32", "-o", str(out), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 300
    while not out.exists():                   # the checkpoint of epoch 1
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    return proc


def _gone(pids, within_s: float = 30.0) -> bool:
    deadline = time.time() + within_s
    while time.time() < deadline:
        if not any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z" for p in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("rank", [1])
def test_a_killed_process_fails_the_run_in_one_line(tmp_path, rank):
    proc = _start_training(tmp_path / "ann.pt", epochs=500)
    workers = _children(proc.pid)
    assert sorted(workers) == [0, 1]
    os.kill(workers[rank], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)                     # not a hang
    assert proc.returncode == 2
    assert err.strip().splitlines() == [
        f"snntc train-ann: error: process {rank} of 2 was killed (SIGKILL); the run stopped (the checkpoint written "
        f"after the last finished epoch is kept: --resume continues)"]
    assert _gone(workers.values())


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_job_killed_whole_resumes_in_one_process_losing_at_most_one_epoch(tmp_path):
    from toolchain.io.checkpoint import load_checkpoint
    out = tmp_path / "ann.pt"
    epochs = 4
    proc = _start_training(out, epochs)
    workers = _children(proc.pid)
    proc.kill()                                                # the launcher: its processes die with it
    proc.communicate(timeout=60)
    assert _gone(workers.values())
    done = load_checkpoint(str(out)).training["state"]["history"]
    assert 1 <= len(done) < epochs
    # it was in epoch len(done) + 1 when killed (the checkpoint is written after every epoch): that one is lost
    resumed = subprocess.run(SNNTC + ["train-ann", "--epochs", str(epochs), "--limit", "300", "--batch-size", "32",
                                      "-o", str(out), "--no-progress", "--resume"],
                             capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = load_checkpoint(str(out)).training["state"]["history"]
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    assert history[:len(done)] == done                         # the epochs before the kill are kept, not redone

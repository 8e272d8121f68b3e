"""The STDB step benchmark runs end to end (tiny settings; the timings themselves are measured by hand, not tested)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("surrogate", ["stdb", "linear"])
def test_stdb_step_benchmark_reports_a_step(tmp_path, surrogate):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "stdb_step.py"), "--timesteps", "3",
                           "--batch-size", "2", "--steps", "1", "--warmup", "0", "--surrogate", surrogate,
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())["results"]
    assert len(res) == 1 and res[0]["timesteps"] == 3 and res[0]["surrogate"] == surrogate
    assert res[0]["seconds"] > 0 and res[0]["peak_mb"] > 100
    rates = res[0]["spike_rates"]                       # spikes per neuron and step, every spiking layer of VGG5
    assert set(rates) == {"spike0", "spike2", "spike3", "fc_spike0", "fc_spike1"}
    assert 0 < rates["spike0"] < 1
    assert "reference" not in res[0]                    # batch 2 is not the reference's setting: no ratio claimed


def test_qat_step_benchmark_reports_both_sides_and_their_ratio(tmp_path):
    out = tmp_path / "qat.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "qat_step.py"), "--shapes", "1x8x8",
                           "--timesteps", "2", "--batch-size", "2", "--steps", "1", "--warmup", "0", "--surrogates",
                           "linear", "--threads", "1", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())["results"]
    assert {(r["side"], r["surrogate"]) for r in res} == {("if", "linear"), ("loihi-cuba", "linear")}
    assert all(r["seconds"] > 0 and r["timesteps"] == 2 and r["input_shape"] == [1, 8, 8] for r in res)
    qat = next(r for r in res if r["side"] == "loihi-cuba")
    assert qat["ratio"] > 0 and qat["ratio_paired"] > 0 and set(qat["spike_rates"]) == {"spike0", "spike2", "fc_spike0"}
    assert "QAT/float" in proc.stdout


def test_hybrid_method_benchmark_reports_steps_ratios(tmp_path):
    out = tmp_path / "hybrid.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "hybrid_method.py"), "--datasets", "digits",
                           "--codings", "direct", "--ann-epochs", "1", "--finetune-epochs", "1", "--limit", "64",
                           "--max-timesteps", "10", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(out.read_text())["results"][0]
    assert row["dataset"] == "digits" and len(row["codings"]) == 1
    r = row["codings"][0]
    assert set(r["converted"]) == {"1", "2", "3", "4", "5", "6", "8", "10"} == set(r["converted_long_calibration"])
    assert r["hybrid_timesteps"] == 5 and 0 <= r["hybrid_accuracy"] <= 1
    assert "steps ratio" in proc.stdout


@pytest.mark.slow
def test_distributed_step_benchmark_reports_one_and_two_processes(tmp_path):
    out = tmp_path / "dist.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "distributed_step.py"), "--model",
                           "vgg-small", "--timesteps", "2", "--batch-size", "4", "--steps", "1", "--warmup", "0",
                           "--modes", "ddp", "--one-process-threads", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    per_process = max(1, (os.cpu_count() or 1) // 2)
    assert {(r["mode"], r["processes"], r["threads_per_process"]) for r in res["results"]} == \
        {("ddp", 1, 1), ("ddp", 2, per_process)}
    two = next(row for row in res["summary"] if row["processes"] == 2)
    assert set(two["speedup_vs_one_process"]) == {"1 threads"} and two["seconds"] > 0
    assert "2 processes x" in proc.stdout


@pytest.mark.lava
def test_emulator_vs_lava_reports_steady_states_and_refuses_in_one_line(tmp_path):
    """Lava's compile, steady state and read-back apart, the emulator's preparation and steady state, their ratio;
    a file that cannot be read is one line, never a traceback."""
    bad = tmp_path / "bad.net"
    bad.write_bytes(b"not hdf5")
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "emulator_vs_lava.py"), str(bad),
                           "--samples", "2,4", "--timesteps", "3", "--lava-samples", "2", "--repeats", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert "Traceback" not in proc.stdout + proc.stderr and proc.returncode == 1, proc.stderr[-2000:]
    res = json.loads(out.read_text())["results"]
    demo = [r for r in res if r["network"].startswith("demo")]
    assert [r["samples"] for r in demo] == [2, 4]
    for r in demo:
        assert r["identical"] is True and r["ratio_steady"] > 0
        assert r["lava"]["samples"] == 2 and r["lava"]["steady_steps"] == 2 * 3 + 5 - 1
        assert min(r["lava"][k] for k in ("build_s", "compile_s", "readback_s", "steady_ms_per_step")) > 0
        assert r["emulator"]["samples"] == r["samples"] and r["emulator"]["prepare_s"] > 0
    assert any(r["network"] == "bad.net" and "not an HDF5 file" in r["error"] for r in res)
    assert "bad.net" in proc.stdout and "cannot be read" in proc.stdout


def test_event_driven_benchmark_reports_measured_and_given_densities():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "event_driven.py"), "--samples", "2",
                           "--timesteps", "2", "--densities", "0.01", "--threads", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if "->" in line]
    assert len([line for line in lines if "(measured)" in line]) == 5          # 2 demo + 3 PilotNet dense layers
    assert len(lines) == 10 and all(line.rstrip().split()[-1].endswith("x") or "(measured)" in line for line in lines)

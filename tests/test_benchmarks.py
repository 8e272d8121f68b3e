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

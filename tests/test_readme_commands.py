"""The README's two commands, from a fresh clone: `make demo` (reduced budget) and the Python 3.10 finder."""
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_opens_with_the_two_commands():
    text = open(os.path.join(ROOT, "README.md")).read()
    block = text.split("```")[1]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert "make test" in ci


def test_python_finder_says_what_to_install_when_there_is_no_310(tmp_path):
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "PYENV_ROOT": str(tmp_path / "none")}
    bash = shutil.which("bash")
    out = subprocess.run([bash, os.path.join(ROOT, "scripts", "find_python310.sh")], env=env, capture_output=True,
                         text=True)
    if out.returncode == 0:      # the machine has a system-wide python3.10 in a standard prefix
        version = subprocess.run([out.stdout.strip(), "--version"], capture_output=True, text=True).stdout
        assert version.startswith("Python 3.10")
    else:
        assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
        assert "needs Python 3.10" in out.stderr and "pyenv install 3.10" in out.stderr


def test_python_finder_rejects_a_wrong_python_variable():
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "find_python310.sh")],
                         env=dict(os.environ, PYTHON=sys.executable if sys.version_info[:2] != (3, 10) else "/bin/false"),
                         capture_output=True, text=True)
    assert out.returncode == 1 and "not a Python 3.10" in out.stderr


@pytest.mark.slow
def test_make_demo_from_a_fresh_clone(tmp_path):
    if not shutil.which("git") or not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", ROOT, str(clone)], check=True)
    out_dir = tmp_path / "demo"
    args = "--limit 200 --ann-epochs 2 --finetune-epochs 1 --deploy-epochs 1 --lava-samples 2 --no-progress"
    run = subprocess.run(["make", "demo", f"OUT={out_dir}", f"DEMO_ARGS={args}", f"VENV={tmp_path / 'venv'}"],
                         cwd=clone, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    summary = json.loads((out_dir / "demo.json").read_text())
    assert {"ann_accuracy", "converted", "hybrid", "steps_ratio", "deploy"} <= set(summary)
    assert summary["deploy"]["lava"]["agrees_with_emulator"] is True
    assert (out_dir / "model.net").exists() and (out_dir / "accuracy_vs_timesteps.png").exists()


def test_readme_python_api_imports():
    """The README's "From Python" snippet imports the documented entry points; each is the stage itself."""
    text = open(os.path.join(ROOT, "README.md")).read()
    block = text.split("## From Python")[1].split("```python")[1].split("```")[0]
    imports = [line for line in block.splitlines() if line.startswith("from toolchain")]
    assert len(imports) == 6
    names = {}
    exec("\n".join(imports), names)
    from toolchain.training.ann import train_ann
    from toolchain.training.convert import convert
    from toolchain.training.finetune import finetune
    assert (names["train_ann"], names["convert"], names["finetune"]) == (train_ann, convert, finetune)
    assert callable(names["export_snn"]) and callable(names["simulate"]) and callable(names["load_dataset"])

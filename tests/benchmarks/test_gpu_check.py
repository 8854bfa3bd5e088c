"""benchmarks/gpu_check.py (issue #16): says so and exits 0 without a GPU; its CPU dry run exercises every
section with tiny sizes (slow tier)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks/gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the script would measure it")
def test_without_a_gpu_it_says_so_and_writes_nothing(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 0 and "no CUDA GPU" in r.stdout
    assert not (tmp_path / "out").exists()


def test_shell_entry_point_exits_0_without_a_gpu(tmp_path):
    r = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_run.sh"), str(tmp_path / "o"), "check"],
                       capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PY": sys.executable})
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert r.returncode == 0 and "no CUDA GPU visible" in r.stdout


@pytest.mark.slow
def test_cpu_dry_run_exercises_every_section(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(SCRIPT), str(out), "--cpu-dry-run", "--skip", "cuda_tests"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["gpu.json", "gpu.md", "train.log"] and len(files) <= 8
    res = json.loads((out / "gpu.json").read_text())
    for name in ("train", "assign", "latency", "tiled"):
        assert "error" not in res[name], res[name]
    assert res["environment"]["torch"] == str(torch.__version__)
    md = (out / "gpu.md").read_text()
    assert "failed" not in md and "| fss-n @128 |" in md and "| batch 4 |" in md

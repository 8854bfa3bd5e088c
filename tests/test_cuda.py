"""CUDA paths (issue #16). Marked ``cuda``; they skip where no CUDA GPU is visible, and
``benchmarks/gpu_check.py`` runs them on a lent GPU (``pytest -m cuda``). The torchrun test also
runs on the CPU (gloo), so the single-process launch path is covered everywhere."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fss_core.checkpoint import load_checkpoint, make_checkpoint, model_from_checkpoint, save_checkpoint
from fss_core.nn import build_model, load_card
from fss_deploy.backends import load_backend
from fss_deploy.detect import DEFAULT_MODEL, SAMPLE_IMAGE, TiledDetector
from fss_train.config import make_config
from fss_train.data.synth import SynthConfig, synthesize

ROOT = Path(__file__).resolve().parents[1]
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")
pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda")
    synthesize(root / "data", SynthConfig(num_images=8, size=128, objects=6, min_size=14, max_size=40, seed=5))
    return root / "data"


def train(data: Path, out: Path, device: str, epochs: int = 2, **extra):
    from fss_train.train import Run

    cfg = make_config({"data": str(data), "model": "fss-n", "assigner": "fss", "epochs": epochs, "batch": 4,
                       "imgsz": 128, "device": device, "workers": 0},
                      {"eval_interval": 1, "mosaic": 0.0, "lr_per_64": 0.16} | extra)
    run = Run(cfg, out)
    return run, run.fit(None)


@gpu
def test_detect_on_gpu_equals_cpu():
    image = np.ascontiguousarray(
        __import__("cv2").imread(str(SAMPLE_IMAGE))[:1024, :1024])
    model = DEFAULT_MODEL
    cpu = TiledDetector(load_backend(model, "torch", "cpu"), overlap=102, batch=4)(image)
    cuda = TiledDetector(load_backend(model, "torch", "cuda"), overlap=102, batch=4)(image)
    assert len(cpu) > 50 and abs(len(cpu) - len(cuda)) <= max(2, len(cpu) // 100)
    n = min(len(cpu), len(cuda))
    top_cpu = cpu[np.argsort(-cpu[:, 4])][: n // 2]
    top_gpu = cuda[np.argsort(-cuda[:, 4])][: n // 2]
    assert np.abs(top_cpu[:, :4] - top_gpu[:, :4]).max() < 0.5          # px
    assert np.abs(top_cpu[:, 4] - top_gpu[:, 4]).max() < 1e-3


@gpu
def test_checkpoint_written_on_gpu_loads_on_cpu(tmp_path):
    model = build_model(load_card("fss-n").with_classes(3)).cuda()
    path = save_checkpoint(make_checkpoint(model, ["a", "b", "c"], assigner={"name": "fss", "params": {}},
                                           input_size=(128, 128)), tmp_path / "gpu.pt")
    ckpt = load_checkpoint(path)
    assert all(t.device.type == "cpu" for t in ckpt["weights_raw"].values() if isinstance(t, torch.Tensor))
    cpu_model = model_from_checkpoint(ckpt)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(cpu_model.eval()(x), model.eval()(x.cuda()).cpu(), atol=1e-3)


@gpu
def test_amp_training_with_ema_and_precise_bn_on_cuda(tiny, tmp_path):
    run, final = train(tiny, tmp_path / "run", "cuda", epochs=3)
    assert run.scaler is not None                                    # AMP active on CUDA
    rows = json.loads((tmp_path / "run/results.json").read_text())
    assert all(np.isfinite(r["loss"]) for r in rows) and rows[-1]["loss"] < rows[0]["loss"]
    assert 0.0 <= final["AP50"] <= 1.0              # evaluated (NaN fails): the EMA model with precise BN on CUDA
    assert next(run.ema.ema.parameters()).device.type == "cuda"
    assert load_checkpoint(tmp_path / "run/last.pt")["weights_ema"] is not None


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=gpu)])
def test_torchrun_one_process_joins_the_process_group(tiny, tmp_path, device):
    """``torchrun --nproc_per_node 1``: gloo on the CPU, NCCL on a GPU, DDP-wrapped like a multi-GPU run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m",
                        "fss", "train", "--data", str(tiny), "--model", "fss-n", "--epochs", "1", "--batch", "4",
                        "--imgsz", "128", "--device", device, "--workers", "0", "--out", str(tmp_path / "run"),
                        "--set", "eval_interval=100"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "process group" in r.stderr and ("nccl" if device == "cuda" else "gloo") in r.stderr
    assert (tmp_path / "run/last.pt").is_file()


@gpu
def test_rotated_iou_and_nms_on_cuda_equal_cpu():
    """fss_core.polygon_iou is plain torch: on a GPU it gives the CPU's IoUs (float64) and the NMS keeps the same."""
    import math

    from fss_core.polygon_iou import polygon_iou_aligned
    from fss_core.rbox import rbox_to_poly
    from fss_core.rotated_nms import rotated_nms

    g = torch.Generator().manual_seed(0)
    rb = torch.cat([torch.rand(4000, 2, generator=g) * 500, torch.rand(4000, 2, generator=g) * 40 + 2,
                    torch.rand(4000, 1, generator=g) * math.pi], 1).double()
    a, b = rbox_to_poly(rb), rbox_to_poly(rb.roll(1, 0))
    cpu = polygon_iou_aligned(a, b)
    cuda = polygon_iou_aligned(a.cuda(), b.cuda())
    assert cuda.is_cuda and torch.allclose(cuda.cpu(), cpu, atol=1e-9)
    scores = torch.rand(4000, generator=g)
    assert torch.equal(rotated_nms(a.cuda(), scores.cuda(), 0.3).cpu(), rotated_nms(a, scores, 0.3))

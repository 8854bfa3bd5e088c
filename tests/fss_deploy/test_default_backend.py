"""A checkpoint on the CPU runs on the fastest accurate path measured (issue #33): onnxruntime over an in-memory
export — nothing written — unless torch is asked for; both give the same detections."""

import numpy as np
from conftest import grid_checkpoint

from fss_deploy.backends import OnnxBackend, TorchBackend, load_backend


def test_a_checkpoint_runs_on_onnxruntime_in_memory_unless_torch_is_asked(tmp_path):
    ckpt = grid_checkpoint(tmp_path / "grid.pt")
    before = sorted(p.name for p in tmp_path.iterdir())
    default = load_backend(ckpt)
    assert isinstance(default, OnnxBackend) and default.fixed_batch is None
    assert "in-memory ONNX export of grid.pt" in default.describe()["note"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before                    # nothing written beside it
    torch_backend = load_backend(ckpt, "torch")
    assert isinstance(torch_backend, TorchBackend) and "note" not in torch_backend.describe()
    x = np.random.default_rng(0).random((2, 3, 256, 256), dtype=np.float32)
    a, b = default.infer(x), torch_backend.infer(x)
    assert a.shape == b.shape == (2, 1344, 4 + 2)
    assert np.allclose(a[..., 4:], b[..., 4:], atol=1e-5) and np.allclose(a[..., :4], b[..., :4], atol=1e-3)
    oriented = load_backend(grid_checkpoint(tmp_path / "obb.pt", task="obb"), imgsz=128)
    assert oriented.task == "obb" and oriented.input_size == 128
    assert oriented.infer(x[:, :, :128, :128]).shape == (2, 336, 5 + 2)

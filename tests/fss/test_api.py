"""The public API as a user meets it: the README's example runs as written, and each piece behaves."""

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

import fss
from fss_deploy.detect import DEFAULT_MODEL, SAMPLE_IMAGE

ROOT = Path(__file__).resolve().parents[2]
IMAGE = SAMPLE_IMAGE


def test_readme_api_example_runs_as_written(tmp_path, monkeypatch):
    block = re.search(r"## Python API.*?```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)                    # a fresh working folder: bundled files are found by name
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "runs/api-detect/predictions.json").is_file()
    assert (tmp_path / "runs/api-train/last.onnx").is_file()


@pytest.fixture(scope="module")
def det():
    return fss.Detector(DEFAULT_MODEL, tile=512, overlap=0.2)


def test_detector_sources_and_result_conversions(det, tmp_path):
    crop = cv2.imread(str(IMAGE))[:900, :1100]
    cv2.imwrite(str(tmp_path / "a.png"), crop)
    cv2.imwrite(str(tmp_path / "b.jpg"), crop[:, ::-1])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    by_array = det(crop)[0]
    by_rgb = det(np.ascontiguousarray(crop[..., ::-1]), rgb=True)[0]
    by_file = det(tmp_path / "a.png")[0]
    assert det.tiled.overlap == 102                               # 0.2 of the 512 px tile
    assert len(by_array) > 0 and np.allclose(by_array.boxes, by_file.boxes) and np.allclose(by_rgb.boxes,
                                                                                            by_array.boxes)
    folder = det(tmp_path)                                         # the corrupt file is skipped, not fatal
    assert sorted(r.source.name for r in folder) == ["a.png", "b.jpg"]
    assert len(det([tmp_path / "a.png", str(tmp_path / "b.jpg")])) == 2
    r = by_file
    assert r.shape == (900, 1100) and r.boxes.dtype == np.float32 and len(r.names) == len(r)
    coco = r.to_coco(image_id=7)
    x, y, w, h = coco[0]["bbox"]
    assert coco[0]["image_id"] == 7 and coco[0]["category_id"] == r.class_ids[0] + 1
    assert [x, y, x + w, y + h] == pytest.approx(r.boxes[0].tolist(), abs=0.01)
    cls, line = r.to_dota()[0]
    assert cls == r.names[0] and line.startswith("a ")
    c, cx, cy, bw, bh, s = r.to_yolo()[0].split()
    assert int(c) == r.class_ids[0] and 0 < float(cx) < 1 and float(bw) == pytest.approx(w / 1100, abs=1e-5)
    plotted = r.plot()
    assert plotted.shape == crop.shape and not np.array_equal(plotted, crop)


def test_detector_errors_name_the_problem(det, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        fss.Detector(tmp_path / "nope.pt")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        det(tmp_path / "broken.png")
    with pytest.raises(ValueError, match="uint8"):
        det.detect(np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError, match="--overlap"):
        fss.Detector(DEFAULT_MODEL, overlap=700)
    with pytest.raises(ValueError, match="multiple of 32"):
        fss.Detector(DEFAULT_MODEL, tile=600)
    with pytest.raises(ValueError, match="formats: unknown"):
        det.run([IMAGE], tmp_path / "o", formats=["xml"])


def test_a_checkpoint_runs_at_any_tile_that_is_a_multiple_of_32():
    crop = cv2.imread(str(IMAGE))[:700, :700]
    big = fss.Detector(DEFAULT_MODEL, tile=640, overlap=0.2, device="cpu")
    assert big.tiled.tile == 640 and big.backend.input_size == 640 and big.tiled.overlap == 128
    assert len(big.detect(crop)) > 0


def test_evaluate_and_export_errors_raise_value_errors(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        fss.evaluate(data="x")
    with pytest.raises(ValueError, match="format must be onnx, engine or openvino"):
        fss.export(DEFAULT_MODEL, format="tflite")
    with pytest.raises(ValueError, match="multiple of 32"):
        fss.train("x", imgsz=100)


def test_import_is_light_and_lists_the_api():
    import subprocess
    import sys

    code = "import sys, fss; print('torch' in sys.modules, sorted(fss.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT).stdout
    assert out.startswith("False") and "Detector" in out and "train" in out


def test_api_leaves_the_callers_torch_threads_alone(tmp_path):
    """An ONNX model makes torch a post-processor (1 thread) only while fss runs: a notebook that detects with
    ONNX and then trains must not train on one thread."""
    import torch

    onnx = fss.export(DEFAULT_MODEL, imgsz=256, out=tmp_path / "m.onnx").onnx
    torch.set_num_threads(2)
    seen = []
    real = torch.set_num_threads
    det = fss.Detector(onnx)
    assert torch.get_num_threads() == 2
    try:
        torch.set_num_threads = lambda n: (seen.append(n), real(n))[1]
        det(cv2.imread(str(IMAGE))[:300, :300])
        fss.benchmark(onnx, warmup=0, iters=1)
    finally:
        torch.set_num_threads = real
    assert torch.get_num_threads() == 2 and seen[:2] == [1, 2]          # 1 while it ran, the caller's 2 after
    # a torch model's threads= holds while it detects or benchmarks, not after (it used to set the process's)
    during = []
    det = fss.Detector(DEFAULT_MODEL, threads=1, tile=256, backend="torch")
    assert torch.get_num_threads() == 2
    det.tiled.backend.graph.register_forward_pre_hook(lambda *_: during.append(torch.get_num_threads()))
    det(cv2.imread(str(IMAGE))[:300, :300])
    report = fss.benchmark(DEFAULT_MODEL, backend="torch", threads=1, imgsz=128, warmup=0, iters=1)
    assert torch.get_num_threads() == 2 and during and set(during) == {1}
    assert report["environment"]["threads"] == 1

"""INT8 export: calibrated on the user's images, the prediction convolutions and decode left in float."""

import cv2
import numpy as np
import onnx
import pytest

from fss.api import export
from fss_core.imageio import read_image
from fss_core.preprocess import letterbox, to_array
from fss_deploy.backends import load_backend
from fss_deploy.detect import DEFAULT_MODEL, SAMPLE_IMAGE
from fss_deploy.export import ExportError


@pytest.fixture(scope="module")
def quantised(tmp_path_factory):
    root = tmp_path_factory.mktemp("q")
    scene = read_image(SAMPLE_IMAGE)
    (root / "calib").mkdir()
    cv2.imwrite(str(root / "calib/a.png"), scene[:800, :800])
    cv2.imwrite(str(root / "calib/b.png"), scene[-800:, -800:])
    return export(DEFAULT_MODEL, imgsz=256, out=root / "m.onnx", int8=True, calib=root / "calib", calib_tiles=8)


def test_int8_model_keeps_the_head_predictions_and_decode_float(quantised):
    model = onnx.load(str(quantised.int8))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["precision"] == "int8" and meta["int8_calibration"].startswith("8 tiles of")
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 20                                   # the body is quantised …
    produced = {o: n for n in model.graph.node for o in n.output}
    preds = [n for n in model.graph.node if "_preds" in n.name and n.op_type == "Conv"]
    assert len(preds) == 9
    for conv in preds:                                                         # … the 9 prediction convs are not
        weight = produced.get(conv.input[1])
        assert weight is None or weight.op_type != "DequantizeLinear", conv.name
    assert "Exp" in ops and not any(n.op_type == "QuantizeLinear" and "Exp" in n.name for n in model.graph.node)


def test_int8_model_runs_and_scores_like_fp32(quantised):
    x = to_array([letterbox(read_image(SAMPLE_IMAGE)[1000:1256, 1000:1256], (256, 256))[0]])
    fp32 = load_backend(quantised.onnx).infer(x)
    int8 = load_backend(quantised.int8)
    assert int8.describe()["precision"] == "int8"
    q = int8.infer(x)
    assert q.shape == fp32.shape and np.abs(q[..., 4:] - fp32[..., 4:]).mean() < 0.02


def test_int8_needs_images_to_calibrate_on(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="no readable image to calibrate on"):
        export(DEFAULT_MODEL, imgsz=256, out=tmp_path / "m.onnx", int8=True, calib=tmp_path / "empty")
    with pytest.raises(ValueError, match="--calib DIR"):
        export(DEFAULT_MODEL, imgsz=256, out=tmp_path / "m.onnx", int8=True)

"""The OpenVINO backend: the IR export carries the fss metadata, runs the ONNX's numbers in FP32, BF16 on request."""

import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from fss.api import export
from fss.cli import app
from fss_core.imageio import read_image
from fss_core.preprocess import letterbox, to_array
from fss_deploy.backends import load_backend
from fss_deploy.detect import DEFAULT_MODEL, SAMPLE_IMAGE
from fss_deploy.export import ExportError, read_onnx

pytest.importorskip("openvino")
runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("ov") / "m.xml"
    res = export(DEFAULT_MODEL, format="openvino", imgsz=256, out=out)
    return res


def _tile():
    image = read_image(SAMPLE_IMAGE)[:256, :256]
    return to_array([letterbox(image, (256, 256))[0]])                         # (1, 3, 256, 256) RGB 0–1


def test_ir_carries_the_onnx_metadata(exported):
    from fss_deploy.openvino import read_metadata

    assert exported.openvino.suffix == ".xml" and exported.openvino.with_suffix(".bin").is_file()
    assert exported.onnx == exported.openvino.with_suffix(".onnx") and exported.path == exported.openvino
    assert read_metadata(exported.openvino) == read_onnx(exported.onnx, weights=False)[1]
    assert sorted(p.name for p in exported.openvino.parent.iterdir()) == ["m.bin", "m.onnx", "m.xml"]  # no scratch


def test_fp32_equals_onnxruntime_and_bf16_stays_close(exported):
    x = _tile()
    ort = load_backend(exported.onnx).infer(x)
    fp32 = load_backend(exported.openvino)
    assert fp32.name == "openvino" and fp32.describe()["precision"] == "fp32"
    a = fp32.infer(x)
    assert a.shape == ort.shape
    assert np.abs(a[..., :4] - ort[..., :4]).max() < 0.01 and np.abs(a[..., 4:] - ort[..., 4:]).max() < 1e-4
    direct = load_backend(exported.onnx, backend="openvino").infer(x)           # an .onnx loads directly too
    assert np.abs(direct - a).max() < 1e-3
    from fss_deploy.openvino import native_bf16

    if native_bf16():
        b = load_backend(exported.openvino, precision="bf16").infer(x)
        assert np.abs(b[..., 4:] - ort[..., 4:]).max() < 0.1                   # the same model, in BF16


def test_precision_is_refused_where_it_cannot_apply(exported):
    with pytest.raises(ExportError, match="only the openvino backend chooses its precision"):
        load_backend(exported.onnx, precision="bf16")
    with pytest.raises(ValueError, match="precision must be one of"):
        load_backend(exported.openvino, precision="int4")


def test_an_ir_without_fss_metadata_is_refused(tmp_path, exported):
    import openvino as ov

    model = ov.convert_model(str(exported.onnx))
    ov.save_model(model, str(tmp_path / "bare.xml"))
    with pytest.raises(ExportError, match="without fss metadata"):
        load_backend(tmp_path / "bare.xml")


def test_detect_and_bench_take_the_ir(exported, tmp_path):
    import cv2

    crop = tmp_path / "crop.png"
    cv2.imwrite(str(crop), read_image(SAMPLE_IMAGE)[:600, :600])
    r = runner.invoke(app, ["detect", str(crop), "--model", str(exported.openvino), "--out", str(tmp_path / "det"),
                            "--batch", "4"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["bench", str(exported.openvino), "--iters", "3", "--warmup", "1", "--out",
                            str(tmp_path / "bench")])
    assert r.exit_code == 0 and "openvino fp32" in r.output, r.output


def test_missing_openvino_is_a_clear_message(monkeypatch):
    from fss_deploy.openvino import OpenVinoUnavailable, import_openvino

    monkeypatch.setitem(sys.modules, "openvino", None)                        # as on a machine without it
    with pytest.raises(OpenVinoUnavailable, match=r"pip install 'fss\[openvino\]'"):
        import_openvino()


def test_an_ir_of_another_checkpoint_is_not_overwritten(exported, tmp_path):
    from fss_core.checkpoint import make_checkpoint, save_checkpoint
    from fss_core.nn import build_model, load_card

    other = save_checkpoint(make_checkpoint(build_model(load_card("fss-n").with_classes(2)), ["a", "b"]),
                            tmp_path / "other.pt")
    target = exported.openvino.parent / "m.xml"                      # the module's export of the default model
    before = target.read_bytes()
    with pytest.raises(FileExistsError, match="another checkpoint"):
        export(other, format="openvino", imgsz=256, out=target)
    assert target.read_bytes() == before
    again = export(DEFAULT_MODEL, format="openvino", imgsz=256, out=target)      # the same checkpoint: replaced
    assert again.openvino == target


def test_info_describes_the_ir(exported):
    r = runner.invoke(app, ["info", str(exported.openvino), "--json"])
    import json

    facts = json.loads(r.output)
    assert r.exit_code == 0 and facts["kind"] == "openvino ir" and facts["weights"].endswith(".bin")
    assert json.loads(facts["class_names"]) == load_backend(exported.onnx).class_names

"""Bad options and inputs get a one-line error naming the value and a non-zero exit, never a traceback
(issue #15). Each case runs the real CLI on the bundled model and real images."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models/fss-n-aerial.pt"
IMAGE = ROOT.parent / "shared/data/dota_devkit_example/images/P1888.png"
runner = CliRunner()


def invoke(args):
    r = runner.invoke(app, [str(a) for a in args])
    # an uncaught exception would surface as r.exception of another type (the CLI would print a traceback)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "m.onnx"
    assert invoke(["export", MODEL, "--out", out]).exit_code == 0
    return out


@pytest.mark.parametrize("args,message", [
    (["--overlap", "-50"], "--overlap must be 0 or more"),
    (["--batch", "0"], "--batch must be at least 1"),
    (["--tile", "0"], "--tile must be at least 32"),
    (["--conf", "1.5"], "--conf must lie in [0, 1]"),
    (["--iou", "-0.1"], "--iou must lie in [0, 1]"),
    (["--max-det", "0"], "--max-det must be at least 1"),
    (["--overlap", "600"], "must be smaller than the tile"),
])
def test_detect_rejects_bad_settings(tmp_path, args, message):
    r = invoke(["detect", IMAGE, "--model", MODEL, "--out", tmp_path / "o", *args])
    assert r.exit_code != 0 and message in r.output


@pytest.mark.parametrize("args,message", [
    (["--iters", "0"], "--iters and --batch must be at least 1"),
    (["--batch", "0"], "--iters and --batch must be at least 1"),
    (["--warmup", "-1"], "--warmup at least 0"),
])
def test_bench_rejects_bad_counts(tmp_path, args, message):
    r = invoke(["bench", MODEL, "--out", tmp_path / "b", *args])
    assert r.exit_code != 0 and message in r.output


@pytest.mark.parametrize("opset", ["5", "99"])
def test_export_rejects_unsupported_opsets(tmp_path, opset):
    r = invoke(["export", MODEL, "--out", tmp_path / "x.onnx", "--opset", opset])
    assert r.exit_code != 0 and f"--opset {opset} is not supported" in r.output
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "--epochs and --batch must be at least 1"),
    (["--batch", "0"], "--epochs and --batch must be at least 1"),
    (["--imgsz", "0"], "--imgsz must be a positive multiple of 32"),
    (["--imgsz", "100"], "--imgsz must be a positive multiple of 32"),
])
def test_train_rejects_bad_numbers(tmp_path, args, message):
    r = invoke(["train", "--data", ROOT.parent / "shared/data/dota_devkit_example", "--out", tmp_path / "t", *args])
    assert r.exit_code != 0 and message in r.output


def test_info_on_an_exported_onnx_file(onnx_file):
    r = invoke(["info", onnx_file])
    assert r.exit_code == 0 and "params" in r.output and " M" in r.output

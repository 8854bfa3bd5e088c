"""The embedded default: the bundled model really detects objects on the bundled sample scene."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fss.cli import app
from fss_core.checkpoint import load_checkpoint
from fss_deploy.detect import DEFAULT_MODEL, OBB_MODEL, SAMPLE_IMAGE

runner = CliRunner()


def test_default_model_is_shipped_and_self_describing():
    assert DEFAULT_MODEL.is_file() and SAMPLE_IMAGE.is_file() and SAMPLE_IMAGE.with_suffix(".txt").is_file()
    ckpt = load_checkpoint(DEFAULT_MODEL)
    assert ckpt["card"]["name"] == "fss-n" and ckpt["assigner"]["name"] == "fss"
    assert ckpt["class_names"] == ["small-vehicle", "large-vehicle", "ship", "plane", "storage-tank"]
    assert ckpt["optimizer"] is None                    # slimmed for shipping


def test_oriented_model_is_shipped_and_self_describing():
    ckpt = load_checkpoint(OBB_MODEL)
    assert ckpt["card"]["name"] == "fss-n" and ckpt["card"]["task"] == "obb" and ckpt["assigner"]["name"] == "fss"
    assert ckpt["class_names"] == load_checkpoint(DEFAULT_MODEL)["class_names"]
    assert ckpt["optimizer"] is None and ckpt["train_config"]["init"]["parts"] == "all"   # slimmed; from the default


@pytest.mark.slow        # the fast tier runs the same through the quick demo's oriented stage
def test_oriented_model_accuracy_on_the_sample_scene():
    from fss.demo import evaluate_obb_model

    result = evaluate_obb_model()                      # measured: Task1 mAP50 0.582, rotated mAP 0.237
    assert result["objects"] == 1500 and result["task1_mAP50"] > 0.45, result


def test_detect_with_no_arguments_uses_the_bundled_model_and_sample(tmp_path):
    r = runner.invoke(app, ["detect", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["processed"] == 1 and summary["detections"] > 500      # ~1500 objects in the scene


@pytest.mark.slow        # the fast tier checks the same through the quick demo's default-model stage
def test_default_model_accuracy_on_the_sample_scene():
    from fss.demo import evaluate_default_model

    result = evaluate_default_model()
    assert result["objects"] == 1500
    assert result["AP50"] > 0.5, result


def test_a_bundled_model_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    """`--model fss-n-aerial.pt` (or `fss-n-aerial`) is the bundled file wherever fss runs; a file of that name in
    the working folder comes first, and a path with a folder is never redirected."""
    from fss_core.nn.card import resolve_model_file

    monkeypatch.chdir(tmp_path)
    assert resolve_model_file("fss-n-aerial.pt") == DEFAULT_MODEL == resolve_model_file("fss-n-aerial")
    assert resolve_model_file("fss-n.yaml") == Path("fss-n.yaml")              # cards are not model files
    assert resolve_model_file("sample-scene.jpg") == Path("sample-scene.jpg")
    assert resolve_model_file("sub/fss-n-aerial.pt") == Path("sub/fss-n-aerial.pt")
    (tmp_path / "fss-n-aerial.pt").write_bytes(b"mine")
    assert resolve_model_file("fss-n-aerial.pt") == Path("fss-n-aerial.pt")

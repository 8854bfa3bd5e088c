"""The embedded default: the bundled model really detects objects on the bundled sample scene."""

import json

import pytest
from typer.testing import CliRunner

from fss.cli import app
from fss_deploy.detect import DEFAULT_MODEL, SAMPLE_IMAGE
from fss_train.checkpoint import load_checkpoint

runner = CliRunner()


def test_default_model_is_shipped_and_self_describing():
    assert DEFAULT_MODEL.is_file() and SAMPLE_IMAGE.is_file() and SAMPLE_IMAGE.with_suffix(".txt").is_file()
    ckpt = load_checkpoint(DEFAULT_MODEL)
    assert ckpt["card"]["name"] == "fss-n" and ckpt["assigner"]["name"] == "fss"
    assert ckpt["class_names"] == ["small-vehicle", "large-vehicle", "ship", "plane", "storage-tank"]
    assert ckpt["optimizer"] is None                    # slimmed for shipping


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

"""Habits users bring from Ultralytics and SAHI (issue #18): data.yaml path rules, no silent evaluation on
training images, the default model's notice, --device auto, -h / --version, --overlap as a fraction."""

from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from fss.api import resolve_device
from fss.cli import app
from fss_deploy.detect import DEFAULT_MODEL, SAMPLE_IMAGE

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def yolo(tmp_path_factory):
    root = tmp_path_factory.mktemp("yolo")
    assert runner.invoke(app, ["data", "synth", str(root / "ds"), "--num-images", "2", "--size", "128", "--objects",
                               "3"]).exit_code == 0
    assert runner.invoke(app, ["data", "convert", str(root / "ds"), "--to", "yolo", "--out",
                               str(root / "y")]).exit_code == 0
    return root


@pytest.mark.parametrize("text,where", [
    ("train: images/train\nnames: {0: a}\n", "y"),                    # no path: the yaml's folder
    ("path: .\ntrain: images/train\nnames: {0: a}\n", "y"),           # relative to the yaml's folder
    ("path: y\ntrain: images/train\nnames: {0: a}\n", "sub"),         # relative to the working folder
])
def test_data_yaml_path_rules(yolo, monkeypatch, text, where):
    monkeypatch.chdir(yolo)
    (yolo / where).mkdir(exist_ok=True)
    (yolo / where / "d.yaml").write_text(text)
    r = runner.invoke(app, ["data", "check", f"{where}/d.yaml", "--no-decode"])   # given by a relative path
    assert r.exit_code == 0 and "2 images" in r.output, r.output


def test_data_yaml_path_that_exists_nowhere_is_named(yolo, monkeypatch):
    monkeypatch.chdir(yolo)
    (yolo / "y/bad.yaml").write_text("path: nowhere\ntrain: images/train\nnames: {0: a}\n")
    r = runner.invoke(app, ["data", "check", "y/bad.yaml", "--no-decode"])
    assert r.exit_code == 1 and "'nowhere' is neither under the yaml's folder" in r.output


def test_eval_never_falls_back_to_the_training_images(yolo):
    r = runner.invoke(app, ["eval", str(DEFAULT_MODEL), "--data", str(yolo / "y/data.yaml")])
    assert r.exit_code == 1 and "no 'val' split" in r.output and "--split train" in r.output


def test_default_model_notice_and_overlap_fraction(tmp_path):
    crop = cv2.imread(str(SAMPLE_IMAGE))[:600, :700]
    cv2.imwrite(str(tmp_path / "crop.png"), crop)
    r = runner.invoke(app, ["detect", str(tmp_path / "crop.png"), "--out", str(tmp_path / "o"), "--overlap", "0.25",
                            "--formats", "coco"])
    assert r.exit_code == 0, r.output
    assert "demonstration model trained on synthetic scenes only" in r.output
    assert '"overlap": 128' in (tmp_path / "o/run.json").read_text()          # 0.25 of the 512 px tile
    r = runner.invoke(app, ["detect", str(tmp_path / "crop.png"), "--model", str(DEFAULT_MODEL),
                            "--out", str(tmp_path / "p"), "--formats", "coco"])
    assert r.exit_code == 0 and "demonstration model" not in r.output


def test_device_auto_help_and_version():
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cuda:1") == "cuda:1"
    assert "--device" in runner.invoke(app, ["detect", "-h"]).output
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith("fss ")
    assert "compare" in runner.invoke(app, ["export", "-h"]).output
    assert "Prove two models" in runner.invoke(app, ["export", "compare", "-h"]).output

"""DOTA Task1 evaluation equals the devkit's own (tests/fixtures/dota_task1, made by benchmarks/dota_devkit_fixture.py
running CAPTAIN-WHU/DOTA_devkit's dota_evaluation_task1.py and polyiou)."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fss.cli import app
from fss_core.polygon_iou import polygon_iou_aligned
from fss_train.data import read_dataset
from fss_train.obb_metrics import read_dota_task1, rotated_coco_map, task1_eval, voc12_ap

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "dota_task1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture(scope="module")
def scored():
    ds = read_dataset(FIXTURE)
    dets, problems = read_dota_task1(FIXTURE, ds)
    return ds, dets, problems


@pytest.mark.parametrize("kind", ["voc07", "voc12"])
def test_task1_aps_equal_the_devkits(scored, kind):
    ds, dets, problems = scored
    assert not problems and len(dets) == sum(EXPECTED["detections"].values())
    result = task1_eval(ds, dets, ap=kind)
    for name in EXPECTED["classes"]:
        assert result["positives"][name] == EXPECTED[kind]["npos"][name]
        assert result["per_class"][name] == pytest.approx(EXPECTED[kind]["ap"][name], abs=1e-12)
    assert result["mAP50"] == pytest.approx(EXPECTED[kind]["map"], abs=1e-12)


def test_polygon_iou_equals_the_devkits_polyiou():
    pairs = json.loads((FIXTURE / "polyiou_pairs.json").read_text())["pairs"]
    p = torch.tensor([x["p"] for x in pairs], dtype=torch.float64)
    q = torch.tensor([x["q"] for x in pairs], dtype=torch.float64)
    ours = polygon_iou_aligned(p, q).numpy()
    ref = np.array([x["iou"] for x in pairs])
    assert len({x["kind"] for x in pairs}) >= 8 and np.abs(ours - ref).max() < 1e-9


def test_rotated_coco_map_at_half_is_the_101_point_ap(scored):
    ds, dets, _ = scored
    r = rotated_coco_map(ds, dets)
    assert 0 < r["mAP"] < r["mAP50"] and r["mAP75"] < r["mAP50"]
    # at IoU .5 the matching is Task1's, only the AP differs: 101-point lies between VOC07's and VOC12's here
    assert abs(r["mAP50"] - EXPECTED["voc12"]["map"]) < 0.01


def test_voc12_ap_of_a_perfect_and_an_empty_curve():
    assert voc12_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == 1.0
    assert voc12_ap(np.array([0.0]), np.array([0.0])) == 0.0


def test_cli_scores_a_task1_folder_and_reports_bad_lines(tmp_path):
    folder = tmp_path / "preds"
    shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("labelTxt", "*.json"))
    with open(folder / "Task1_ship.txt", "a") as f:
        f.write("P9000 0.5 1 2 3\nP9999 0.4 0 0 10 0 10 10 0 10\n")
    (folder / "Task1_camel.txt").write_text("P9000 0.9 0 0 10 0 10 10 0 10\n")
    res = CliRunner().invoke(app, ["eval", "--data", str(FIXTURE), "--predictions", str(folder), "--metric", "dota",
                                   "--out", str(tmp_path / "ev")])
    assert res.exit_code == 1, res.output                 # scored, but the skipped lines make it no clean run
    assert "Task1_ship.txt:49" in res.output and "Task1_ship.txt:50" in res.output and "P9999" in res.output
    assert "Task1_camel.txt" in res.output and "Traceback" not in res.output
    record = json.loads((tmp_path / "ev/metrics.json").read_text())
    assert record["task"] == "Task1"
    assert record["result"]["mAP50"] == pytest.approx(EXPECTED["voc07"]["map"], abs=1e-12)   # bad lines skipped
    assert math.isfinite(record["result"]["rotated_coco"]["mAP"])


def test_task1_files_with_another_metric_are_refused(tmp_path):
    res = CliRunner().invoke(app, ["eval", "--data", str(FIXTURE), "--predictions", str(FIXTURE), "--metric", "coco",
                                   "--out", str(tmp_path / "ev")])
    assert res.exit_code != 0 and "--metric dota" in res.output and "Traceback" not in res.output

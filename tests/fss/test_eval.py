import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fss.cli import app
from fss_train.data import read_dataset
from fss_train.metrics import coco_eval, dota_eval, read_dota_task2, voc07_ap

runner = CliRunner()
REF = [0.504581, 0.696973, 0.572982, 0.585626, 0.519400, 0.501398, 0.386813, 0.593680, 0.595353, 0.639811,
       0.566421, 0.564291]
SYN = [0.694719, 0.694719, 0.694719, -1.0, 0.792079, 0.0, 0.666667, 0.75, 0.75, -1.0, 0.791667, 0.0]


def test_coco_reference_stats(shared_data):
    ref = shared_data / "coco_eval_reference/tests/dataset"
    stats = coco_eval(ref / "cocoapi/instances_val2014_100.json",
                      ref / "cocoapi/instances_val2014_fakebbox100_results.json")
    assert list(stats.values()) == pytest.approx(REF, abs=1e-4)
    stats = coco_eval(ref / "gt_dataset.json", ref / "dt_dataset.json")
    assert list(stats.values()) == pytest.approx(SYN, abs=1e-4)


def test_max_dets_path_reproduces_pycocotools_at_100(shared_data, monkeypatch):
    import fss_train.metrics as metrics
    ref = shared_data / "coco_eval_reference/tests/dataset/cocoapi"
    gt, dt = ref / "instances_val2014_100.json", ref / "instances_val2014_fakebbox100_results.json"
    standard = coco_eval(gt, dt)
    # our array-reading summary, forced at 100, equals pycocotools' own summarize()
    real = metrics._stats_at
    calls = []
    monkeypatch.setattr(metrics, "_stats_at", lambda ev, m: calls.append(m) or real(ev, m))
    from pycocotools.cocoeval import COCOeval
    monkeypatch.setattr(COCOeval, "summarize", lambda self: setattr(self, "stats", real(self, 100)))
    ours = coco_eval(gt, dt)
    assert list(ours.values()) == pytest.approx(list(standard.values()), abs=1e-12)
    # a larger cap can only keep or raise recall
    wide = coco_eval(gt, dt, max_dets=1000)
    assert wide["AR100"] >= standard["AR100"] - 1e-12 and wide["AP"] >= 0


def test_eval_cli_scores_saved_predictions(shared_data, tmp_path):
    ref = shared_data / "coco_eval_reference/tests/dataset/cocoapi"
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["eval", "--predictions", str(ref / "instances_val2014_fakebbox100_results.json"),
                                 "--data", str(ref / "instances_val2014_100.json"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["result"]["AP"] == pytest.approx(0.504581, abs=1e-4)


def test_voc07_eleven_points():
    assert voc07_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)


def _write_task2(folder, ds, preds):
    folder.mkdir()
    names = {r.image_id: r.path.stem for r in ds.records}
    for c, name in enumerate(ds.classes):
        lines = [f"{names[p['image_id']]} {p['score']} {p['bbox'][0]} {p['bbox'][1]} "
                 f"{p['bbox'][0] + p['bbox'][2]} {p['bbox'][1] + p['bbox'][3]}" for p in preds
                 if p["category_id"] == c + 1]
        if lines:
            (folder / f"Task2_{name}.txt").write_text("\n".join(lines) + "\n")


def test_dota_metric_perfect_partial_and_difficult(shared_data, tmp_path):
    ds = read_dataset(shared_data / "dota_devkit_yolo_demo/DOTA_demo")
    perfect = [{"image_id": r.image_id, "category_id": int(c) + 1, "score": 0.9,
                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
               for r in ds.records for b, c, d in zip(r.boxes, r.labels, r.difficult) if d == 0]
    result = dota_eval(ds, perfect)
    assert result["mAP50"] == pytest.approx(1.0)
    # detections of difficult objects are neither rewarded nor penalised
    with_difficult = perfect + [{"image_id": r.image_id, "category_id": int(c) + 1, "score": 0.95,
                                 "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
                                for r in ds.records for b, c, d in zip(r.boxes, r.labels, r.difficult) if d > 0]
    assert dota_eval(ds, with_difficult)["mAP50"] == pytest.approx(1.0)
    # half the non-difficult objects found -> recall 0.5, precision 1 -> 6/11
    half = [p for i, p in enumerate(perfect) if i % 2 == 0]
    per_class = dota_eval(ds, half)["per_class"]
    assert all(abs(v - 6 / 11) < 0.1 for v in per_class.values())
    # Task2 folders through the CLI, from labels alone
    _write_task2(tmp_path / "task2", ds, perfect)
    assert len(read_dota_task2(tmp_path / "task2", ds)) == len(perfect)
    result = runner.invoke(app, ["eval", "--predictions", str(tmp_path / "task2"), "--data",
                                 str(shared_data / "dota_devkit_yolo_demo/DOTA_demo"), "--metric", "dota"])
    assert result.exit_code == 0, result.output
    assert "mAP50 (VOC07, DOTA devkit) 1.0000" in result.output
    # from labels alone: a copy of the folder without images/
    import shutil
    labels_only = tmp_path / "labels_only"
    shutil.copytree(shared_data / "dota_devkit_yolo_demo/DOTA_demo/labelTxt", labels_only / "labelTxt")
    result = runner.invoke(app, ["eval", "--predictions", str(tmp_path / "task2"), "--data", str(labels_only),
                                 "--metric", "dota"])
    assert result.exit_code == 0, result.output
    assert "mAP50 (VOC07, DOTA devkit) 1.0000" in result.output


def test_eval_errors(tmp_path, shared_data):
    bad = tmp_path / "Task2_plane.txt"
    tmp_path.joinpath("t").mkdir()
    (tmp_path / "t/Task2_large-vehicle.txt").write_text("P0003 0.9 1 2 3\n")
    result = runner.invoke(app, ["eval", "--predictions", str(tmp_path / "t"), "--data",
                                 str(shared_data / "dota_devkit_yolo_demo/DOTA_demo"), "--metric", "dota"])
    assert result.exit_code == 1 and "Task2_large-vehicle.txt:1" in result.output
    del bad
    result = runner.invoke(app, ["eval", "--data", "x"])
    assert result.exit_code == 1 and "model checkpoint or predictions" in result.output

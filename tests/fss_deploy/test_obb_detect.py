"""Oriented models through export, the tiled runner, its merge and every output format (issue #31).

The model is conftest.grid_checkpoint(task="obb"): whatever the image, 64 cars (16 × 8 px, θ = π/6) and 256 ships
(6 × 6 px) per 256 px tile, so these tests are about geometry and files, never about how well a model detects.
"""

import json
import math

import numpy as np
import pytest
import torch
from conftest import grid_checkpoint
from typer.testing import CliRunner

from fss.cli import app
from fss_core.rbox import rbox_to_poly
from fss_deploy.export import export_onnx, verify_onnx
from fss_deploy.tiling import cut_by_interior_edge, merge, plan_tiles, to_image_coords

runner = CliRunner()


@pytest.fixture(scope="module")
def obb(tmp_path_factory):
    import cv2

    root = tmp_path_factory.mktemp("obb")
    ckpt = grid_checkpoint(root / "grid-obb.pt", task="obb")
    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir()
    cv2.imwrite(str(images / "one.png"), rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))
    cv2.imwrite(str(images / "wide.png"), rng.integers(0, 255, (256, 640, 3), dtype=np.uint8))
    return ckpt, root


def test_export_verifies_and_says_it_is_oriented(obb, tmp_path):
    ckpt, root = obb
    res = export_onnx(ckpt, tmp_path / "m.onnx")
    assert res.metadata["task"] == "obb" and "5 + num_classes" in res.metadata["output_layout"]
    import onnx

    out = onnx.load(str(res.path)).graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in out] == [1, 1344, 5 + 2]                       # (B, A, 5 + C) at 256 px
    check = verify_onnx(res.path, ckpt, [root / "images/one.png"])
    # 320 detections, capped at postprocess's 300
    assert check["within_tolerance"] and check["detections_torch"] == 300 and check["detection_f1"] == 1.0
    result = runner.invoke(app, ["info", str(res.path)])
    assert result.exit_code == 0 and "obb" in result.output
    result = runner.invoke(app, ["info", str(ckpt)])
    assert result.exit_code == 0 and "obb (oriented boxes" in result.output


def test_one_tile_gives_the_grid_as_oriented_boxes(obb):
    from fss import Detector

    ckpt, root = obb
    (r,) = Detector(str(ckpt))(str(root / "images/one.png"))
    assert len(r) == 320 and r.obb.shape == (320, 5) and r.polygons.shape == (320, 4, 2)
    cars = r.obb[r.class_ids == 0]
    assert len(cars) == 64
    assert np.allclose(cars[:, 2:4], [16, 8], atol=1e-3) and np.allclose(cars[:, 4], math.pi / 6, atol=1e-5)
    centres = np.sort(cars[:, 0] + 1000 * cars[:, 1])
    grid = np.sort([(16 + 32 * i) + 1000 * (16 + 32 * j) for i in range(8) for j in range(8)])
    assert np.allclose(centres, grid, atol=1e-2)
    # boxes are the polygons' envelopes; the corners follow fss_core.rbox's convention
    assert np.allclose(r.boxes[:, :2], r.polygons.min(1), atol=1e-3)
    ref = rbox_to_poly(torch.from_numpy(r.obb[:1].astype(np.float64))).numpy().reshape(4, 2)
    assert np.allclose(r.polygons[0], ref, atol=1e-3)
    lines = r.to_dota("one")
    assert len(lines) == 320 and len(lines[0][1].split()) == 10                 # image score x1 y1 … x4 y4
    yolo = r.to_yolo()
    values = np.array([[float(v) for v in line.split()[1:9]] for line in yolo])
    assert len(yolo[0].split()) == 10 and values.min() >= -0.05 and values.max() <= 1.05
    coco = r.to_coco(image_id=3)
    assert len(coco[0]["segmentation"][0]) == 8 and len(coco[0]["rbox"]) == 5


def test_tiles_are_merged_without_duplicates(obb):
    from fss import Detector

    ckpt, root = obb
    (r,) = Detector(str(ckpt), overlap=64)(str(root / "images/wide.png"))       # tiles at x 0, 192, 384
    cars = r.obb[r.class_ids == 0]
    # every tile's 64 cars lie on the image's 32 px lattice (origins are multiples of 32): 20 × 8 distinct places
    assert len(cars) == 160
    keys = np.round(cars[:, 0]) * 10000 + np.round(cars[:, 1])
    assert len(np.unique(keys)) == 160
    assert np.allclose(cars[:, 4], math.pi / 6, atol=1e-5)


def test_border_rule_by_polygon_area():
    tiles = plan_tiles(1800, 1024, 1024, 200)                                    # x origins 0 and 776
    theta = math.pi / 5
    whole = np.array([[1000.0, 130, 80, 30, theta, 0.9, 2]])                     # seen whole by the right tile
    cut = np.array([[992.0, 131, 70, 30, theta, 0.8, 2]])                        # the left tile sees it reach x 1024
    a = cut_by_interior_edge(cut, tiles[0], 1800, 1024)
    b = cut_by_interior_edge(whole, tiles[1], 1800, 1024)
    assert a.tolist() == [True] and b.tolist() == [False]
    out = merge(np.concatenate([cut, whole]), np.concatenate([a, b]), np.array([0, 1]), iou=0.95)
    assert len(out) == 1 and out[0, 5] == pytest.approx(0.9)                    # NMS at 0.95 alone keeps both
    other = whole.copy()
    other[0, 6] = 3                                                              # another class: both kept
    out = merge(np.concatenate([cut, other]), np.array([True, False]), np.array([0, 1]), iou=0.95)
    assert len(out) == 2
    # oriented boxes move by their centre and are never clipped to the image
    moved = to_image_coords(np.array([[10.0, 5, 40, 10, 0.3, 0.5, 0]]), tiles[1], 1800, 1024)
    assert moved[0, :5].tolist() == [786.0, 5.0, 40.0, 10.0, 0.3]


def test_nmm_merges_into_the_rectangle_of_the_union():
    dets = np.array([[100.0, 100, 40, 10, 0.2, 0.9, 0], [104.0, 101, 40, 10, 0.2, 0.8, 0]])
    out = merge(dets, np.zeros(2, bool), np.array([0, 1]), iou=0.3, mode="nmm")
    assert len(out) == 1 and out[0, 5] == pytest.approx(0.9) and out[0, 2] > 40


def test_detect_cli_writes_every_oriented_format(obb, tmp_path):
    ckpt, root = obb
    out = tmp_path / "det"
    result = runner.invoke(app, ["detect", str(root / "images/one.png"), "--model", str(ckpt), "--out", str(out),
                                 "--formats", "coco,dota,yolo,geojson", "--save-images"])
    assert result.exit_code == 0, result.output
    task1 = (out / "dota/Task1_car.txt").read_text().splitlines()
    assert len(task1) == 64 and all(len(line.split()) == 10 for line in task1)
    assert not list((out / "dota").glob("Task2_*"))
    yolo = (out / "yolo/one.txt").read_text().splitlines()
    assert len(yolo) == 320 and all(len(line.split()) == 10 for line in yolo)
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds) == 320 and all(len(p["segmentation"][0]) == 8 for p in preds)
    assert (out / "images/one.jpg").is_file()

"""Oriented detections in DOTA Task1, YOLO-OBB, COCO and GeoJSON: the polygon each format receives is the box's."""

import math

import numpy as np
import pytest
import torch

from fss_core.geojson import box_rings, geojson_features
from fss_core.raster import Georef
from fss_core.rbox import rbox_to_poly
from fss_core.rdetections import rdetections_to_coco, rdetections_to_dota, rdetections_to_yolo

DETS = np.array([[50, 40, 30, 10, math.pi / 6, 0.9, 1], [200, 100, 20, 20, 0.0, 0.5, 0]], np.float64)
NAMES = ["car", "ship"]


def _poly(k):
    return rbox_to_poly(torch.from_numpy(DETS[k, :5])).numpy()


def test_dota_task1_lines_hold_the_corners():
    lines = rdetections_to_dota(DETS, "P0001", NAMES)
    assert [c for c, _ in lines] == ["ship", "car"]
    parts = lines[0][1].split()
    assert parts[:2] == ["P0001", "0.90000"] and np.allclose([float(v) for v in parts[2:]], _poly(0), atol=0.05)


def test_yolo_obb_lines_are_normalised_corners_and_score():
    line = rdetections_to_yolo(DETS, 400, 200)[0].split()
    assert line[0] == "1" and line[-1] == "0.90000"
    assert np.allclose(np.array(line[1:9], float) * np.tile([400, 200], 4), _poly(0), atol=1e-3)


def test_coco_results_carry_polygon_envelope_and_rbox():
    r = rdetections_to_coco(DETS, 7)[0]
    poly = _poly(0)
    assert r["image_id"] == 7 and r["category_id"] == 2 and r["score"] == 0.9
    assert np.allclose(r["segmentation"][0], poly, atol=0.01)
    assert np.allclose(r["bbox"], [poly[0::2].min(), poly[1::2].min(), np.ptp(poly[0::2]), np.ptp(poly[1::2])],
                       atol=0.01)
    assert r["rbox"] == [50, 40, 30, 10, round(math.pi / 6, 5)]


def test_geojson_turns_oriented_boxes_through_the_affine_into_ccw_rings():
    georef = Georef((0.5, 0.2, 1000.0, 0.1, -0.5, 2000.0), "EPSG:32633", 32633)      # sheared, rotated, y up
    ring = box_rings(DETS, georef)[0]
    poly = _poly(0)
    xs, ys = georef.to_map(poly[0::2], poly[1::2])
    assert np.allclose(ring[0], ring[-1])                                              # closed
    assert {(round(x, 6), round(y, 6)) for x, y in ring[:-1]} == {(round(x, 6), round(y, 6)) for x, y in zip(xs, ys)}
    signed = np.sum(ring[:-1, 0] * ring[1:, 1] - ring[1:, 0] * ring[:-1, 1])
    assert signed > 0                                                                  # RFC 7946: counter-clockwise
    f = geojson_features(DETS, NAMES, None)[0]
    assert f["properties"]["name"] == "ship" and f["properties"]["angle_deg"] == pytest.approx(30)
    pixel_ring = np.array(f["geometry"]["coordinates"][0])[:-1]                     # pixels, y down: the corners
    assert {tuple(np.round(p, 6)) for p in pixel_ring} == {tuple(np.round(p, 6)) for p in _poly(0).reshape(4, 2)}


def test_boxes_still_give_their_rectangles():
    boxes = np.array([[10, 20, 30, 60, 0.8, 0]], np.float64)
    ring = box_rings(boxes, None)[0]
    assert {tuple(p) for p in ring[:-1]} == {(10, 20), (30, 20), (30, 60), (10, 60)}

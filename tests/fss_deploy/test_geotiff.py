"""`fss detect` on GeoTIFFs: window reads, nodata tiles skipped, detections back on the map (native CRS and WGS84)."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import Affine  # noqa: E402
from rasterio.warp import transform as warp  # noqa: E402

from fss.cli import app  # noqa: E402
from fss_train.data.synth import SynthConfig, make_scene  # noqa: E402

runner = CliRunner()
TRANSFORM = Affine(0.3, 0.0, 480000.0, 0.0, -0.3, 5100000.0)      # UTM 33N, 0.3 m pixels


def write_tif(path, bgr, crs="EPSG:32633", transform=TRANSFORM, nodata=None):
    data = np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1))
    with rasterio.open(path, "w", driver="GTiff", width=bgr.shape[1], height=bgr.shape[0], count=3, dtype="uint8",
                       crs=crs, transform=transform, nodata=nodata, tiled=True, blockxsize=256, blockysize=256,
                       compress="deflate") as ds:
        ds.write(data)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A synthetic 1024² scene as a georeferenced GeoTIFF, with its objects' boxes in map coordinates."""
    root = tmp_path_factory.mktemp("geo")
    image, boxes, labels, _ = make_scene(SynthConfig(size=1024, objects=40, min_size=16, max_size=64, seed=3), 0)
    tif = write_tif(root / "scene.tif", image)
    a, _, c, _, e, f = tuple(TRANSFORM)[:6]
    map_boxes = np.stack([c + a * boxes[:, 0], f + e * boxes[:, 3], c + a * boxes[:, 2], f + e * boxes[:, 1]], 1)
    return root, tif, map_boxes, labels


def _iou(a, b):
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return ix * iy / (area(a)[:, None] + area(b)[None, :] - ix * iy)


def _extents(fc):
    rings = [np.array(f["geometry"]["coordinates"][0]) for f in fc["features"]]
    return np.array([[r[:, 0].min(), r[:, 1].min(), r[:, 0].max(), r[:, 1].max()] for r in rings]).reshape(-1, 4)


def test_objects_come_back_at_their_map_coordinates(scene):
    root, tif, map_boxes, labels = scene
    res = runner.invoke(app, ["detect", str(tif), "--out", str(root / "utm"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "map layer" in res.output and "EPSG:32633" in res.output
    fc = json.loads((root / "utm" / "detections.geojson").read_text())
    assert fc["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    assert fc == json.loads((root / "utm" / "geojson" / "scene.geojson").read_text())
    found = _extents(fc)
    iou = _iou(map_boxes, found)                                      # in metres, on the map
    recall = (iou.max(1) >= 0.5).mean()
    assert recall >= 0.7, recall                                      # the bundled model finds synthetic objects
    # every polygon is exactly its pixel box through the transform (same detections as the pixel outputs)
    preds = json.loads((root / "utm" / "predictions.json").read_text())
    px = np.array([[p["bbox"][0], p["bbox"][1], p["bbox"][0] + p["bbox"][2], p["bbox"][1] + p["bbox"][3]]
                   for p in preds])
    a, _, c, _, e, f = tuple(TRANSFORM)[:6]
    expect = np.stack([c + a * px[:, 0], f + e * px[:, 3], c + a * px[:, 2], f + e * px[:, 1]], 1)
    assert len(found) == len(preds) and np.allclose(found, expect, atol=0.01)
    props = fc["features"][0]["properties"]
    assert set(props) == {"score", "class", "name", "image"} and props["image"] == "scene"
    summary = json.loads((root / "utm" / "summary.json").read_text())
    assert summary["georeferenced_images"] == 1 and summary["tiles_nodata"] == 0

    res = runner.invoke(app, ["detect", str(tif), "--out", str(root / "wgs"), "--device", "cpu", "--to-wgs84"])
    assert res.exit_code == 0, res.output
    wgs = json.loads((root / "wgs" / "detections.geojson").read_text())
    assert "crs" not in wgs                                           # RFC 7946: longitude/latitude
    ring_utm = np.array(fc["features"][0]["geometry"]["coordinates"][0])
    ring_wgs = np.array(wgs["features"][0]["geometry"]["coordinates"][0])
    lon, lat = warp("EPSG:32633", "EPSG:4326", ring_utm[:, 0].tolist(), ring_utm[:, 1].tolist())
    assert np.allclose(ring_wgs[:, 0], lon, atol=1e-9) and np.allclose(ring_wgs[:, 1], lat, atol=1e-9)
    assert 14.7 < ring_wgs[0, 0] < 14.8 and 46.0 < ring_wgs[0, 1] < 46.1      # 20 km west of 15° E, ~46° N
    # the GT objects in longitude/latitude come back there too
    gl, gt = warp("EPSG:32633", "EPSG:4326", map_boxes[:, [0, 2]].ravel().tolist(),
                  map_boxes[:, [1, 3]].ravel().tolist())
    gt_ll = np.stack([np.array(gl).reshape(-1, 2).min(1), np.array(gt).reshape(-1, 2).min(1),
                      np.array(gl).reshape(-1, 2).max(1), np.array(gt).reshape(-1, 2).max(1)], 1)
    assert (_iou(gt_ll, _extents(wgs)).max(1) >= 0.5).mean() >= 0.7


def test_nodata_tiles_are_skipped_and_counted(scene, tmp_path):
    root, _, _, _ = scene
    image, *_ = make_scene(SynthConfig(size=1024, objects=40, min_size=16, max_size=64, seed=3), 0)
    image[:, 512:] = 0                                                # right half nodata
    tif = write_tif(tmp_path / "half.tif", image, nodata=0)
    res = runner.invoke(app, ["detect", str(tif), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["tiles_nodata"] == 3 and s["tiles"] == 6                 # origins 0, 312, 512: the x=512 column is nodata
    assert "3 tiles held only nodata" in res.output
    found = _extents(json.loads((tmp_path / "o" / "detections.geojson").read_text()))
    assert len(found) and (found[:, 0] < 480000 + 0.3 * 512).all()    # nothing in the nodata half


def test_mixed_inputs_plain_images_and_two_crs(scene, tmp_path):
    """A PNG works as before (no GeoJSON of its own); images in two CRSs get one file each and no merged file,
    unless --to-wgs84 puts them in one."""
    root, tif, _, _ = scene
    image, *_ = make_scene(SynthConfig(size=512, objects=15, min_size=16, max_size=64, seed=4), 0)
    cv2.imwrite(str(tmp_path / "plain.png"), image)
    other = write_tif(tmp_path / "other.tif", image, crs="EPSG:3857", transform=Affine(0.5, 0, 1.6e6, 0, -0.5, 5.8e6))
    res = runner.invoke(app, ["detect", str(tif), str(other), str(tmp_path / "plain.png"), "--out",
                              str(tmp_path / "o"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "o"
    assert sorted(p.name for p in (out / "geojson").iterdir()) == ["other.geojson", "scene.geojson"]
    assert not (out / "detections.geojson").exists() and (out / "yolo" / "plain.txt").is_file()
    s = json.loads((out / "summary.json").read_text())
    assert s["georeferenced_images"] == 2 and "several" in s["geojson_crs"]
    res = runner.invoke(app, ["detect", str(tif), str(other), str(tmp_path / "plain.png"), "--out",
                              str(tmp_path / "o"), "--device", "cpu", "--to-wgs84"])
    merged = json.loads((out / "detections.geojson").read_text())
    assert {f["properties"]["image"] for f in merged["features"]} == {"scene", "other"}
    assert "0 processed, 3 already done" in res.output                # outputs rebuilt, nothing detected again
    # the same run over fewer inputs: the per-image files of the inputs left out are not left behind
    res = runner.invoke(app, ["detect", str(tif), "--out", str(tmp_path / "o"), "--device", "cpu", "--to-wgs84"])
    assert res.exit_code == 0, res.output
    assert [p.name for p in (out / "geojson").iterdir()] == ["scene.geojson"]
    assert [p.name for p in (out / "yolo").iterdir()] == ["scene.txt"]
    merged = json.loads((out / "detections.geojson").read_text())
    assert {f["properties"]["image"] for f in merged["features"]} == {"scene"}


def test_bad_band_option_and_corrupt_tif_are_reported(scene, tmp_path):
    root, tif, _, _ = scene
    res = runner.invoke(app, ["detect", str(tif), "--out", str(tmp_path / "o"), "--bands", "4,2,1"])
    assert res.exit_code == 1 and "band(s) [4]" in res.output and "3 band(s)" in res.output
    res = runner.invoke(app, ["detect", str(tif), "--out", str(tmp_path / "o"), "--bands", "3,2"])
    assert res.exit_code == 1 and "--bands" in res.output
    bad = tmp_path / "broken.tif"
    bad.write_bytes(Path(tif).read_bytes()[:5000])                    # header only: window reads fail
    res = runner.invoke(app, ["detect", str(bad), str(tif), "--out", str(tmp_path / "o2"), "--device", "cpu"])
    assert res.exit_code == 1 and "broken.tif" in res.output
    s = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert s["processed"] == 1 and len(s["failed"]) == 1 and "broken.tif" in s["failed"][0]["file"]


def test_api_result_to_geojson(scene):
    from fss import Detector

    root, tif, map_boxes, _ = scene
    [r] = Detector(device="cpu")(tif)
    assert r.georef is not None and r.georef.epsg == 32633 and r.shape == (1024, 1024)
    fc = r.to_geojson()
    assert len(fc["features"]) == len(r) and (_iou(map_boxes, _extents(fc)).max(1) >= 0.5).mean() >= 0.7
    assert "crs" not in r.to_geojson(wgs84=True)

"""GeoTIFF windows, bands, the 8-bit rule and georeference (fss_core/raster.py), GeoJSON (fss_core/geojson.py) and
vector labels (fss_train/data/vectors.py, geodata.py)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import Affine  # noqa: E402

from fss_core.geojson import box_rings, feature_collection, geojson_features  # noqa: E402
from fss_core.imageio import read_image  # noqa: E402
from fss_core.raster import Georef, Raster, parse_bands, parse_stretch  # noqa: E402
from fss_train.data import read_dataset  # noqa: E402
from fss_train.data.split import split_dataset  # noqa: E402
from fss_train.data.vectors import read_vector_labels  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
UTM = "EPSG:32633"
ORIGIN = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 5000000.0)          # 0.5 m pixels, north up


def write_tif(path, data, crs=UTM, transform=ORIGIN, nodata=None, block=64, overviews=(), colorinterp=None):
    """data (bands, H, W) -> a tiled, deflate-compressed GeoTIFF."""
    count, h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count, dtype=data.dtype, crs=crs,
                       transform=transform, nodata=nodata, tiled=True, blockxsize=block, blockysize=block,
                       compress="deflate") as ds:
        ds.write(data)
        if colorinterp:
            ds.colorinterp = colorinterp
        if overviews:
            ds.build_overviews(list(overviews))
    return Path(path)


def test_windows_bands_and_bgr_order(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (4, 300, 200), dtype=np.uint8)
    data[3, :, :100] = 255                          # a 4-band uint8 GeoTIFF is RGBA: band 4 is alpha …
    data[3, :, 100:] = 0                            # … and transparent pixels are nodata (padding grey)
    tif = write_tif(tmp_path / "a.tif", data)
    with Raster(tif) as r:
        assert (r.width, r.height, r.bands, r.scale) == (200, 300, (1, 2, 3), None)     # uint8: no stretch
        win = r.read(20, 70, 64, 32)
        assert win.shape == (32, 64, 3) and win.dtype == np.uint8
        expect = data[[2, 1, 0], 70:102, 20:84].transpose(1, 2, 0)                      # bands 1,2,3 = RGB -> BGR
        assert np.array_equal(win, expect)
        assert (r.read(100, 0, 10, 10) == 114).all() and not r.has_data(120, 0, 50, 50)
        assert np.array_equal(r.read_all()[:, :100], data[[2, 1, 0], :, :100].transpose(1, 2, 0))
    with Raster(tif, bands=(4, 3, 2)) as r:                                              # --bands 4,3,2
        assert np.array_equal(r.read(0, 0, 10, 10), data[[1, 2, 3], :10, :10].transpose(1, 2, 0))
    with Raster(tif, bands=(2,)) as r:                                                   # one band: grey
        g = r.read(0, 0, 5, 5)
        assert np.array_equal(g[..., 0], data[1, :5, :5]) and np.array_equal(g[..., 0], g[..., 2])
    with pytest.raises(ValueError, match=r"band\(s\) \[5\].*4 band"):
        Raster(tif, bands=(5, 2, 1))
    # training reads the same pixels as detection
    assert np.array_equal(read_image(tif)[:, :100], data[[2, 1, 0], :, :100].transpose(1, 2, 0))


def test_alpha_band_is_not_a_colour_band(tmp_path):
    from rasterio.enums import ColorInterp

    data = np.zeros((2, 64, 64), np.uint8)
    data[0] = 90
    data[1] = 255
    tif = write_tif(tmp_path / "ga.tif", data, colorinterp=[ColorInterp.gray, ColorInterp.alpha])
    with Raster(tif) as r:
        assert r.bands == (1,) and (r.read(0, 0, 8, 8) == 90).all()


def test_parse_options():
    assert parse_bands("3,2,1") == (3, 2, 1) and parse_bands(None) is None and parse_bands("2") == (2,)
    for bad in ("3,2", "0,1,2", "a,b,c"):
        with pytest.raises(ValueError, match="--bands"):
            parse_bands(bad)
    assert parse_stretch("1,99") == (1.0, 99.0)
    for bad in ("98,2", "5", "-1,50"):
        with pytest.raises(ValueError, match="--stretch"):
            parse_stretch(bad)


def test_16_bit_percentile_stretch_from_a_sample_and_nodata(tmp_path):
    """Values between the 2nd and 98th percentiles of each band map linearly to 0…255; nodata is left out of
    the statistics; a window of nodata only is reported as empty."""
    h = w = 512
    ramp = np.tile(np.linspace(1000, 3000, w), (h, 1)).astype(np.uint16)
    data = np.stack([ramp, ramp // 2 + 10, np.full_like(ramp, 700)])
    data[:, :, 384:] = 0                                              # right quarter: nodata
    tif = write_tif(tmp_path / "u16.tif", data, nodata=0)
    with Raster(tif) as r:
        assert r.scale is not None and r.has_mask
        lo, hi = r.scale[0]
        valid = ramp[:, :384].astype(float)
        assert abs(lo - np.percentile(valid, 2)) < 40 and abs(hi - np.percentile(valid, 98)) < 40   # sampled, ~
        px = r.read(0, 0, 384, 1)[0, :, 2]                           # red channel (BGR), one row
        assert px[0] == 0 and px[-1] == 255 and np.all(np.diff(px.astype(int)) >= 0)
        assert r.read(0, 0, 4, 4)[..., 0].max() == r.read(0, 0, 4, 4)[..., 0].min()       # constant band: flat
        assert r.has_data(0, 0, 64, 64) and not r.has_data(400, 0, 100, 100)
        assert r.describe()["stretch"]["percentiles"] == [2.0, 98.0]
    with Raster(tif, stretch=(0, 100)) as r:
        assert r.scale[0, 0] == pytest.approx(1000, abs=5) and r.scale[0, 1] == pytest.approx(
            ramp[:, :384].max(), abs=5)


def test_stretch_uses_overviews_when_present(tmp_path):
    data = np.tile(np.arange(1024, dtype=np.uint16), (3, 1024, 1))
    tif = write_tif(tmp_path / "ov.tif", data, overviews=(2, 4))
    with Raster(tif) as r:
        assert r._ds.overviews(1) == [2, 4]
        assert r.scale[0, 0] == pytest.approx(np.percentile(np.arange(1024), 2), abs=8)
        thumb, s = r.thumbnail(256)
        assert thumb.shape == (256, 256, 3) and s == 0.25


def test_georef_round_trip_with_rotation():
    g = Georef(tuple(Affine(0.5, 0.1, 1000.0, 0.05, -0.5, 2000.0))[:6], "EPSG:32633", 32633)
    cols, rows = np.array([0.0, 10.5, 300.0]), np.array([0.0, 7.25, 20.0])
    xs, ys = g.to_map(cols, rows)
    assert xs[1] == pytest.approx(1000 + 0.5 * 10.5 + 0.1 * 7.25)
    assert ys[1] == pytest.approx(2000 + 0.05 * 10.5 - 0.5 * 7.25)
    c2, r2 = g.to_pixel(xs, ys)
    assert np.allclose(c2, cols) and np.allclose(r2, rows)


def test_geojson_rings_are_closed_ccw_and_georeferenced():
    g = Georef(tuple(ORIGIN)[:6], rasterio.crs.CRS.from_epsg(32633).to_wkt(), 32633)
    dets = np.array([[10, 20, 30, 60, 0.9, 1]], np.float32)
    ring = box_rings(dets, g)[0]
    assert np.array_equal(ring[0], ring[-1]) and len(ring) == 5
    assert sorted({tuple(p) for p in ring.tolist()}) == sorted({(500005.0, 4999990.0), (500015.0, 4999990.0),
                                                                (500015.0, 4999970.0), (500005.0, 4999970.0)})
    area = np.sum(ring[:-1, 0] * ring[1:, 1] - ring[1:, 0] * ring[:-1, 1])
    assert area > 0                                                  # counter-clockwise (RFC 7946)
    # the central meridian of UTM zone 33N is 15° E: easting 500000 lies on it
    lonlat = box_rings(np.array([[0, 0, 2, 2, 0.5, 0]], np.float32), g, wgs84=True)[0]
    assert lonlat[:, 0].min() == pytest.approx(15.0, abs=1e-9) and 45.0 < lonlat[0, 1] < 45.3
    fc = feature_collection(geojson_features(dets, ["a", "b"], g), g)
    assert fc["crs"]["properties"]["name"].endswith("EPSG::32633")
    assert fc["features"][0]["properties"] == {"score": pytest.approx(0.9), "class": 1, "name": "b"}
    assert "crs" not in feature_collection([], g, wgs84=True)


def _scene(tmp_path, crs=UTM):
    """A 600 × 500 GeoTIFF and four labelled objects (pixel boxes) at known map positions."""
    tif = write_tif(tmp_path / "scene.tif", np.full((3, 500, 600), 80, np.uint8), crs=crs)
    boxes = np.array([[10, 20, 50, 44], [100, 200, 180, 260], [590, 480, 640, 520], [300, 300, 301, 301]], float)
    return tif, boxes


def _poly(box, georef, wgs84=False):
    ring = box_rings(np.array([[*box, 1, 0]], np.float32), georef, wgs84)[0]
    return {"type": "Polygon", "coordinates": [ring.tolist()]}


def test_geojson_labels_in_the_raster_crs_and_in_wgs84(tmp_path):
    tif, boxes = _scene(tmp_path)
    with Raster(tif) as r:
        g = r.georef
    for wgs84 in (False, True):
        fc = {"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": _poly(b, g, wgs84), "properties": {"class": name}}
            for b, name in zip(boxes, ["car", "ship", "car", "car"])]}
        fc["features"].append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]},
                               "properties": {"class": "car"}})
        fc["features"].append({"type": "Feature", "geometry": _poly(boxes[0], g, wgs84), "properties": {"kind": 1}})
        if not wgs84:
            fc["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}
        (tmp_path / "scene.geojson").write_text(json.dumps(fc))
        ds = read_dataset(tif)
        assert ds.classes == ["car", "ship"]
        rec = ds.records[0]
        assert (rec.width, rec.height) == (600, 500)
        # the object past the border is clipped, the 1-px one kept, the point and the unlabelled one reported
        assert np.allclose(rec.boxes[:2], boxes[:2], atol=1e-3 if not wgs84 else 0.02)
        assert np.allclose(rec.boxes[2], [590, 480, 600, 500], atol=0.02) and list(rec.labels) == [0, 1, 0, 0]
        assert rec.polygons is not None and rec.polygons.shape == (4, 8)
        found = {(p.line, p.action) for p in ds.problems}
        assert (5, "skipped") in found and (6, "skipped") in found and (3, "repaired") in found
        assert any("Point" in p.message for p in ds.problems) and any("no class property" in p.message
                                                                       for p in ds.problems)


def test_shapefile_labels_and_split(tmp_path):
    shapefile = pytest.importorskip("shapefile")
    tif, boxes = _scene(tmp_path)
    (tmp_path / "labels").mkdir()
    with Raster(tif) as r:
        g = r.georef
    with shapefile.Writer(str(tmp_path / "labels" / "scene")) as w:
        w.field("label", "C")
        for b in boxes[:2]:
            w.poly(_poly(b, g)["coordinates"])
            w.record("plane")
    (tmp_path / "labels" / "scene.prj").write_text(rasterio.crs.CRS.from_epsg(32633).to_wkt())
    (tmp_path / "classes.txt").write_text("plane\nship\n")
    ds = read_dataset(tmp_path)
    assert ds.classes == ["plane", "ship"] and not ds.problems
    assert np.allclose(ds.records[0].boxes, boxes[:2], atol=1e-3) and list(ds.records[0].labels) == [0, 0]
    tiled, problems = split_dataset(ds, tmp_path / "tiles", tile=256, gap=56, workers=1)
    assert not problems and len(tiled.records) == 9                 # 600 × 500, step 200: x 0,200,344; y 0,200,244
    first = next(r for r in tiled.records if r.path.name == "scene__1__0___0.png")
    assert np.allclose(first.boxes, [boxes[0], [100, 200, 180, 256]], atol=1e-3)      # the second one cut


def test_split_skips_nodata_tiles_without_objects(tmp_path):
    data = np.full((3, 512, 512), 50, np.uint8)
    data[:, :, 256:] = 0
    tif = write_tif(tmp_path / "half.tif", data, nodata=0)
    (tmp_path / "half.geojson").write_text(json.dumps({"type": "FeatureCollection", "crs": {
        "type": "name", "properties": {"name": "EPSG:32633"}}, "features": []}))
    tiled, _ = split_dataset(read_dataset(tif), tmp_path / "t", tile=256, gap=0, workers=1)
    assert sorted(r.path.name for r in tiled.records) == ["half__1__0___0.png", "half__1__0___256.png"]


def test_bad_vector_file_is_named(tmp_path):
    tif, _ = _scene(tmp_path)
    (tmp_path / "scene.geojson").write_text('{"type": "Feature"}')
    ds = read_dataset(tmp_path)
    assert len(ds.records) == 1 and len(ds.records[0].labels) == 0
    assert any("scene.geojson" in p.file and "FeatureCollection" in p.message for p in ds.problems)
    with pytest.raises(ValueError, match="scene.geojson"):
        read_vector_labels(tmp_path / "scene.geojson", None)


def test_without_rasterio_tifs_are_decoded_by_opencv_and_geo_says_what_to_install(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "plain.tif"), np.full((40, 30, 3), 60, np.uint8))
    code = ("import sys; sys.modules['rasterio'] = None\n"
            "from fss_core.imageio import read_image\n"
            f"print(read_image({str(tmp_path / 'plain.tif')!r}).shape)\n"
            "from fss_core.raster import Raster\n"
            f"try:\n    Raster({str(tmp_path / 'plain.tif')!r})\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert "(40, 30, 3)" in out and "pip install 'fss[geo]'" in out

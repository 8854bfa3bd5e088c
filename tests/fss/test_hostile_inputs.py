"""Hostile input files (issue #34), by family: each case is one line of a table — a file made by a small writer, the
verb that reads it, the words its one-line error (or problem) must hold. None may end in a traceback or exit 0
having taken nonsense. Real files through the real CLI: rasterio GeoTIFFs, pyshp shapefiles, YAML and JSON."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fss.cli import app
from fss_deploy.detect import DEFAULT_MODEL

rasterio = pytest.importorskip("rasterio")
shapefile = pytest.importorskip("shapefile")
from rasterio.transform import from_origin  # noqa: E402

runner = CliRunner()
SHARED = Path(__file__).resolve().parents[2].parent / "shared/data"
ORIGIN = (500_000.0, 5_000_000.0)               # UTM 33N metres, 1 m pixels


def invoke(args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    return r


# ------------------------------------------------------------------------------------------ writers
def geotiff(path: Path, size: int = 600, dtype: str = "uint8") -> Path:
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype=dtype, crs="EPSG:32633",
                       transform=from_origin(*ORIGIN, 1, 1), tiled=True, blockxsize=256, blockysize=256) as ds:
        ds.write(rng.integers(0, 255, (3, size, size)).astype(dtype))
    return path


def feature(x: float, y: float, name: str = "ship") -> dict:
    X, Y = ORIGIN[0] + x, ORIGIN[1] - y
    ring = [[X, Y], [X + 40, Y], [X + 40, Y - 30], [X, Y - 30], [X, Y]]
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {"class": name}}


CRS = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}
GOOD = {"type": "FeatureCollection", "crs": CRS, "features": [feature(100, 100), feature(300, 300, "car")]}


def geo_dataset(root: Path, labels=GOOD, truncate: float | None = None, dtype: str = "uint8") -> Path:
    """A folder: scene.tif (+ scene.geojson holding ``labels`` as JSON text or an object); ``truncate``: keep only
    that fraction of the GeoTIFF's bytes."""
    root.mkdir(parents=True, exist_ok=True)
    tif = geotiff(root / "scene.tif", dtype=dtype)
    if truncate:
        os.truncate(tif, int(tif.stat().st_size * truncate))
    (root / "scene.geojson").write_text(labels if isinstance(labels, str) else json.dumps(labels))
    return root


def shp_dataset(root: Path, damage: str) -> Path:
    root.mkdir(parents=True)
    geotiff(root / "scene.tif")
    with shapefile.Writer(str(root / "scene"), shapeType=shapefile.POLYGON) as w:
        w.field("class", "C")
        X, Y = ORIGIN[0] + 100, ORIGIN[1] - 100
        w.poly([[[X, Y], [X + 40, Y], [X + 40, Y - 30], [X, Y - 30], [X, Y]]])
        w.record("ship")
        if damage == "null":
            w.null()
            w.record("car")
    (root / "scene.prj").write_text(rasterio.crs.CRS.from_epsg(32633).to_wkt())
    shp, dbf = root / "scene.shp", root / "scene.dbf"
    if damage == "truncated-shp":
        os.truncate(shp, shp.stat().st_size // 2)
    elif damage == "truncated-dbf":
        os.truncate(dbf, dbf.stat().st_size // 2)
    elif damage == "no-dbf":
        dbf.unlink()
    elif damage == "empty-shp":
        os.truncate(shp, 0)
    return root


def yolo_yaml(root: Path, text: str) -> Path:
    """A data.yaml over coco8's images and labels, with ``text`` (``names``/``train``/``path`` lines) as given."""
    shutil.copytree(SHARED / "coco8", root / "coco8", dirs_exist_ok=True)
    path = root / "data.yaml"
    path.write_text(text.replace("{root}", str(root / "coco8")))
    return path


def coco_with_names(root: Path, names: list) -> Path:
    data = json.loads((SHARED / "coco8/annotations/instances_val.json").read_text())
    for cat, name in zip(data["categories"], names):
        cat["name"] = name
    path = root / "annotations" / "instances_val.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    (root / "images").symlink_to(SHARED / "coco8/images")
    return path


def results(root: Path, **change) -> Path:
    gt = json.loads((SHARED / "coco8/annotations/instances_val.json").read_text())
    ann = gt["annotations"][0]
    path = root / "results.json"
    path.write_text(json.dumps([{"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": ann["bbox"],
                                 "score": 0.9, **change}]))
    return path


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


# ------------------------------------------------------------------------------------------ damaged GeoTIFFs
VERBS = {
    "check": lambda d, t: ["data", "check", d],
    "split": lambda d, t: ["data", "split", d, "--out", t / "tiles", "--tile", "256", "--gap", "56"],
    "eval": lambda d, t: ["eval", DEFAULT_MODEL, "--data", d, "--device", "cpu", "--out", t / "e"],
    "train": lambda d, t: ["train", "--data", d, "--epochs", "1", "--imgsz", "256", "--batch", "2", "--workers", "0",
                           "--out", t / "run", "--device", "cpu"],
    "bench tiled": lambda d, t: ["bench", "tiled", d / "scene.tif", "--model", DEFAULT_MODEL, "--out", t / "b",
                                 "--device", "cpu"],
    "assign": lambda d, t: ["assign", d / "scene.tif", "--model", DEFAULT_MODEL, "--gt", d / "scene.geojson",
                            "--out", t / "a.png"],
    "detect": lambda d, t: ["detect", d / "scene.tif", "--model", DEFAULT_MODEL, "--out", t / "det"],
}


@pytest.mark.parametrize("verb", sorted(VERBS))
@pytest.mark.parametrize("dtype", ["uint8", "uint16"])           # uint16: the stretch samples fail first
def test_a_truncated_geotiff_is_bad_input_in_every_verb(tmp_path, verb, dtype):
    """A truncated GeoTIFF opens (its header is whole) and fails on the first block read: only detect caught it,
    the other verbs ended in rasterio's traceback."""
    data = geo_dataset(tmp_path / "d", truncate=0.5, dtype=dtype)
    r = invoke(VERBS[verb](data, tmp_path))
    # train and eval name the file through the loader's log (stderr, beyond CliRunner) and then say this:
    said = {"train": "no readable image in the dataset", "eval": "unreadable image(s) left out of the evaluation"}
    assert said.get(verb, "unreadable raster data") in r.output and (verb == "train" or "scene.tif" in r.output), \
        r.output
    assert r.exit_code != 0 or verb == "check"                        # check reports it among the problems
    assert "See previous exception" not in r.output, r.output       # rasterio's words; GDAL's reason is shown


# ------------------------------------------------------------------------------------------ vector labels
@pytest.mark.parametrize("labels,message", [
    ([GOOD], "expected a GeoJSON FeatureCollection, got 'a JSON list'"),
    ("null", "expected a GeoJSON FeatureCollection, got 'a JSON NoneType'"),
    ({**GOOD, "features": 5}, "its 'features' must be a list, got a int"),
    ({**GOOD, "features": [5, feature(1, 1)]}, "geometry 'a int, not a Feature object' is not a Polygon"),
    ({**GOOD, "features": [{**feature(1, 1), "geometry": "POLYGON((0 0,1 0,1 1,0 0))"}]}, "is not a Polygon"),
    ({**GOOD, "crs": "EPSG:32633"}, "its 'crs' member is not a named CRS object"),
    ({**GOOD, "crs": {"type": "name", "properties": "EPSG:32633"}}, "its 'crs' member is not a named CRS object"),
    ({**GOOD, "crs": {"type": "name", "properties": {"name": 32633}}}, "its 'crs' member is not a named CRS object"),
    ({**GOOD, "features": [{**feature(1, 1), "geometry": {"type": "Polygon", "coordinates": [[[10 ** 400, 0]] * 4]}}]},
     "its Polygon geometry has no usable ring"),
    ('{"type": "FeatureCollection", "features": ' + nested(100_000) + "}", "not a readable GeoJSON file"),
])
def test_geojson_labels_of_the_wrong_shape_are_reported(tmp_path, labels, message):
    r = invoke(["data", "check", geo_dataset(tmp_path / "d", labels)])
    assert message in r.output and "scene.geojson" in r.output, r.output


@pytest.mark.parametrize("damage,message", [
    ("null", "geometry 'shape type NULL' is not a Polygon"),
    ("truncated-shp", "not a readable shapefile"),
    ("truncated-dbf", "not a readable shapefile"),
    ("no-dbf", "not a readable shapefile"),
    ("empty-shp", "not a readable shapefile"),
])
def test_damaged_shapefiles_are_reported(tmp_path, damage, message):
    r = invoke(["data", "check", shp_dataset(tmp_path / "d", damage)])
    assert message in r.output and "scene.shp" in r.output, r.output


# ------------------------------------------------------------------------------------------ data.yaml
YOLO = "path: {root}\ntrain: images/train\nval: images/val\n"


@pytest.mark.parametrize("text,message", [
    (YOLO + "names: person\n", "class names must be a list of names, got 'person'"),       # read as 6 classes
    (YOLO + "names: null\n", "class names must be a list of names, got None"),
    (YOLO + "names: 5\n", "class names must be a list of names, got 5"),
    (YOLO + "names: [a, a]\n", "classes 0 and 1 are both named 'a'"),
    (YOLO + "names: [a, null]\n", "class 1 has the name None"),
    (YOLO + "names: {0: a, x: b}\n", "'names' as a mapping needs the class indices 0…1 as keys"),
    (YOLO + "names: {0: a, 45: b}\n", "'names' as a mapping needs the class indices 0…1 as keys"),     # renumbered
    ("path: {root}\ntrain: 5\nnames: [a]\n", "split 'train' must be a path or a list of paths, got 5"),
    ("path: [a, b]\ntrain: images/train\nnames: [a]\n", "'path' must be a folder, got ['a', 'b']"),
    (BOMB + YOLO + "names: *i\n", "class 0 has the name [[[[...]"),                             # 387 M strings
    (BOMB + "path: {root}\ntrain: *i\nnames: [a]\n", "split 'train' must be a path or a list of paths"),
    (YOLO + "names: " + nested(100_000) + "\n", "not a readable data.yaml"),
])
def test_data_yaml_fields_of_the_wrong_type_are_refused(tmp_path, text, message):
    r = invoke(["data", "check", yolo_yaml(tmp_path, text)])
    assert r.exit_code != 0 and message in r.output and "data.yaml" in r.output, r.output


# ------------------------------------------------------------------------------------------ COCO json
@pytest.mark.parametrize("names,message", [
    ([0, "b"], "class 0 has the name 0"),
    ([None], "class 0 has the name None"),
    ([["person"]], "class 0 has the name ['person']"),
    (["", "b"], "class 0 has the name ''"),
    (["x", "x"], "classes 0 and 1 are both named 'x'"),          # merged into one class, silently
])
def test_coco_category_names_must_be_distinct_text(tmp_path, names, message):
    for verb in (["data", "check"], ["data", "convert"]):
        extra = ["--to", "yolo", "--out", tmp_path / "o"] if verb[1] == "convert" else []
        r = invoke([*verb, coco_with_names(tmp_path / verb[1], names), *extra])
        assert r.exit_code != 0 and message in r.output and "instances_val.json" in r.output, r.output


def test_coco_json_nested_too_deeply_is_named(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text(nested(100_000))
    r = invoke(["data", "check", path])
    assert r.exit_code != 0 and "deep.json: not a readable COCO json" in r.output, r.output


@pytest.mark.parametrize("change,message", [
    ({"score": "0.9"}, "has the score '0.9', not a finite number"),
    ({"score": None}, "has the score None, not a finite number"),
    ({"score": float("nan")}, "has the score nan, not a finite number"),
    ({"bbox": [0, 0, 10]}, "has a bbox that is not 4 finite numbers"),
    ({"bbox": [10, 10, -20, 20]}, "has a bbox of negative width or height"),
    ({"bbox": ["1", "2", "3", "4"]}, "has a bbox that is not 4 finite numbers"),
    ({"category_id": [1]}, "needs an integer category_id"),
    ({"image_id": [1]}, "needs an integer category_id and an integer (or file name) image_id"),
])
def test_coco_results_with_fields_of_the_wrong_type_are_refused(tmp_path, change, message):
    r = invoke(["eval", "--data", SHARED / "coco8/annotations/instances_val.json", "--predictions",
                results(tmp_path, **change), "--out", tmp_path / "e"])
    assert r.exit_code != 0 and message in r.output and "results.json: result 0" in r.output, r.output


# ------------------------------------------------------------------------------------------ exported models
@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    from conftest import grid_checkpoint

    from fss_deploy.export import export_onnx

    root = tmp_path_factory.mktemp("onnx")
    return export_onnx(grid_checkpoint(root / "grid.pt"), root / "m.onnx", dynamic=True).path


def _edited(onnx_file: Path, out: Path, edit) -> Path:
    import onnx

    proto = onnx.load(str(onnx_file))
    edit(proto)
    onnx.save(proto, str(out))
    return out


def _meta(key, value):
    def edit(proto):
        kept = [(p.key, p.value) for p in proto.metadata_props if p.key != key]
        del proto.metadata_props[:]
        for k, v in kept + ([(key, value)] if value is not None else []):
            proto.metadata_props.add(key=k, value=v)
    return edit


def _custom_domain(proto):
    import onnx

    proto.graph.node[0].domain = "com.evil"
    proto.opset_import.append(onnx.helper.make_opsetid("com.evil", 1))


def _external_3gb(proto):
    import onnx

    init = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", "weights.bin"), ("offset", "0"), ("length", str(3 * 10**9))):
        init.external_data.add(key=k, value=v)


@pytest.mark.parametrize("edit,message", [
    (_meta("class_names", "[not json"), "its metadata 'class_names' is not valid JSON"),
    (_meta("class_names", None), "its fss metadata has no 'class_names'"),
    (_meta("class_names", "5"), "its metadata 'class_names' must be a list of names, got 5"),
    (_meta("input_size", "[100000000, 3]"), "its metadata 'input_size' must be [height, width] in px"),
    (_custom_domain, "onnxruntime cannot load this model"),
    (_external_3gb, "onnxruntime cannot load this model"),          # the 3 GB are never read
])
def test_hostile_onnx_files_are_refused_with_the_reason(tmp_path, onnx_file, edit, message):
    bad = _edited(onnx_file, tmp_path / "bad.onnx", edit)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 1024)           # what the 3 GB claim points at
    image = tmp_path / "i.png"
    __import__("cv2").imwrite(str(image), np.full((256, 256, 3), 90, np.uint8))
    r = invoke(["detect", image, "--model", bad, "--out", tmp_path / "o"])
    assert r.exit_code != 0 and message in r.output and "bad.onnx" in r.output, r.output


def test_info_names_custom_op_domains_and_keeps_its_own_facts(tmp_path, onnx_file):
    bad = _edited(onnx_file, tmp_path / "bad.onnx", lambda p: (_custom_domain(p), _meta("file", "/etc/shadow")(p)))
    r = invoke(["info", bad, "--json"])
    facts = json.loads(r.output)
    assert facts["custom_op_domains"] == ["com.evil"] and facts["file"] == str(bad)


# ------------------------------------------------------------------------------------------ georeference
def _tif(path: Path, crs, transform) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=3, dtype="uint8", crs=crs,
                       transform=transform) as ds:
        ds.write(np.full((3, 256, 256), 90, np.uint8))
    return path


def test_to_wgs84_of_a_raster_without_crs_skips_its_geojson_and_keeps_the_rest(tmp_path, caplog):
    """--to-wgs84 with a raster that has a transform but no CRS failed at the very end ("CRS is invalid: None", no
    file named) and left the valid images' outputs unwritten."""
    from conftest import grid_checkpoint

    model = grid_checkpoint(tmp_path / "grid.pt")
    plain = _tif(tmp_path / "nocrs.tif", None, from_origin(*ORIGIN, 1, 1))
    placed = _tif(tmp_path / "utm.tif", "EPSG:32633", from_origin(*ORIGIN, 1, 1))
    with caplog.at_level("WARNING", logger="fss"):          # the log's line on stderr (pytest holds it here)
        r = invoke(["detect", plain, placed, "--model", model, "--out", tmp_path / "o", "--to-wgs84"])
    assert r.exit_code == 0, r.output
    assert "nocrs.tif: has a transform but no CRS, so --to-wgs84 cannot place it" in caplog.text
    out = tmp_path / "o"
    assert len(json.loads((out / "predictions.json").read_text())) == 2 * (64 + 256)
    assert [p.name for p in (out / "geojson").iterdir()] == ["utm.geojson"]


def test_a_degenerate_transform_is_not_a_georeference(tmp_path, caplog):
    """A transform whose determinant is 0 put every polygon on one point, without a word."""
    from rasterio.transform import Affine

    from fss_core.raster import Raster

    path = _tif(tmp_path / "flat.tif", "EPSG:32633", Affine(0.0, 1.0, 5.0, 0.0, 1.0, 7.0))
    with caplog.at_level("WARNING", logger="fss"), Raster(path) as raster:
        assert raster.georef is None
    assert "maps every pixel to one point" in caplog.text and "flat.tif" in caplog.text


# ------------------------------------------------------------------------------------------ label lines
def dota_with_line(root: Path, line: str) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir()
    shutil.copy(SHARED / "dota_devkit_example/images/P1888.png", root / "images/a.png")
    (root / "labelTxt/a.txt").write_text("10 10 50 10 50 50 10 50 ship 0\n" + line + "\n")
    return root


@pytest.mark.parametrize("line,message", [
    ("10 10 50 10 50 50 10 50 ship 99999999999999999999", "unparsable line"),           # an OverflowError
    ("10 10 50 10 50 50 10 50 ship -7", "unparsable line"),                             # kept and written back
    ("5 5 1e39 5 1e39 60 5 60 ship 0", "non-finite or absurd coordinates"),             # inf after float32
])
def test_dota_label_lines_out_of_range_are_skipped_and_named(tmp_path, line, message):
    r = invoke(["data", "check", dota_with_line(tmp_path / "d", line)])
    assert message in r.output and "a.txt:2" in r.output, r.output


def test_a_yolo_segment_line_is_read_as_its_enclosing_box(tmp_path):
    """Ultralytics' segment/OBB line `cls x1 y1 x2 y2 …` was read as a box from its first four numbers."""
    from fss_train.data import read_dataset

    path = yolo_yaml(tmp_path, YOLO + "names: [a, b]\n")
    label = next((tmp_path / "coco8/labels/train").glob("*.txt"))
    label.write_text("1 0.2 0.2 0.6 0.2 0.6 0.5 0.2 0.5\n")
    image = next(r for r in read_dataset(path, "train").records if r.path.stem == label.stem)
    w, h = image.width, image.height
    assert np.allclose(image.boxes[0], [0.2 * w, 0.2 * h, 0.6 * w, 0.5 * h], atol=0.5) and image.labels[0] == 1


def test_an_image_listed_twice_in_a_coco_json_is_reported(tmp_path):
    """Two image entries of one file (ids 1 and 2): `data convert` wrote one image and lost the other's objects
    with '0 problems'."""
    data = json.loads((SHARED / "coco8/annotations/instances_val.json").read_text())
    twin = {**data["images"][0], "id": 10**6}
    data["images"].append(twin)
    data["annotations"].append({**data["annotations"][0], "id": 10**6, "image_id": twin["id"]})
    path = tmp_path / "annotations" / "twice.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    (tmp_path / "images").symlink_to(SHARED / "coco8/images")
    r = invoke(["data", "check", path])
    assert f"is listed twice (ids {data['images'][0]['id']} and {10**6})" in r.output, r.output

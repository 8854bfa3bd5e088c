import json

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fss_core.imageio import read_image
from fss_train.data import convert_dataset, read_coco, read_dataset, read_dota, read_yolo, write_coco
from fss_train.data.dota import read_dota_lines
from fss_train.data.yolo import read_yolo_lines


def test_dota_devkit_example_counts(shared_data):
    ds = read_dataset(shared_data / "dota_devkit_example")
    by_name = {r.name: r for r in ds.records}
    assert len(by_name["P0706"].labels) == 536 and int((by_name["P0706"].difficult > 0).sum()) == 6
    assert len(by_name["P1888"].labels) == 64
    names = [ds.classes[i] for i in by_name["P0706"].labels]
    assert names.count("ship") == 531 and names.count("harbor") == 5
    # the one polygon past the image edge is clipped, reported, and kept
    clipped = [p for p in ds.problems if p.action == "repaired"]
    assert len(clipped) == 1 and "P0706.txt:3" in str(clipped[0])


def test_dota_yolo_demo_counts_and_degenerate_polygons(shared_data):
    ds = read_dataset(shared_data / "dota_devkit_yolo_demo/DOTA_demo")
    counts = {r.name: len(r.labels) for r in ds.records}
    # README: 55 + 107 + 130 + 295 objects; the tile's 2 zero-width polygons are reported and skipped
    assert counts == {"P0003": 55, "P0004": 107, "P0005": 130, "P1478__1__853___962": 293}
    skipped = [p for p in ds.problems if p.action == "skipped"]
    assert len(skipped) == 2 and all("zero-area" in p.message and "P1478" in p.file for p in skipped)
    tile = next(r for r in ds.records if r.name.startswith("P1478"))
    assert sorted(np.unique(tile.difficult).tolist()) == [0, 1, 2]


def test_dota_folder_and_coco_json_agree(shared_data):
    folder = read_dataset(shared_data / "dota_devkit_example")
    coco = read_coco(shared_data / "dota_devkit_example/coco_hbb.json")
    for rec in folder.records:
        other = next(r for r in coco.records if r.path.name == rec.path.name)
        assert np.allclose(rec.boxes, other.boxes, atol=0.51)
        assert [folder.classes[i] for i in rec.labels] == [coco.classes[i] for i in other.labels]


def test_coco8_yolo_and_coco_agree_box_for_box(shared_data, tmp_path):
    root = shared_data / "coco8"
    coco = read_coco(root / "annotations/instances_val.json", image_root=root / "images")
    names = [c["name"] for c in sorted(json.loads((root / "annotations/instances_val.json").read_text())
                                       ["categories"], key=lambda c: c["id"])]
    cfg = tmp_path / "coco8.yaml"
    cfg.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val", "names": names}))
    yolo = read_yolo(cfg, split="val")
    assert len(yolo.records) == len(coco.records) == 4 and yolo.num_objects == coco.num_objects == 17
    for rec in yolo.records:
        other = next(r for r in coco.records if r.path.name == rec.path.name)
        assert np.allclose(rec.boxes, other.boxes, atol=0.5)
        assert rec.labels.tolist() == other.labels.tolist()
        assert (rec.width, rec.height) == (other.width, other.height)


def test_round_trip_through_every_writer(shared_data, tmp_path):
    ds = read_dataset(shared_data / "dota_devkit_example")
    coco = read_coco(write_coco(ds, tmp_path / "coco/annotations.json", image_root=shared_data / "dota_devkit_example"),
                     image_root=shared_data / "dota_devkit_example")
    yolo = read_yolo(convert_dataset(ds, "yolo", tmp_path / "yolo"), "train")
    dota = read_dota(convert_dataset(ds, "dota", tmp_path / "dota"))
    for other in (coco, yolo, dota):
        assert other.classes == ds.classes and other.num_objects == ds.num_objects
        for a, b in zip(ds.records, other.records):
            assert np.allclose(a.boxes, b.boxes, atol=0.2) and a.labels.tolist() == b.labels.tolist()
    assert [r.difficult.tolist() for r in dota.records] == [r.difficult.tolist() for r in ds.records]


def test_bad_lines_are_reported_with_file_and_line(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labelTxt").mkdir()
    import cv2
    cv2.imwrite(str(tmp_path / "images/a.png"), np.zeros((100, 200, 3), np.uint8))
    (tmp_path / "labelTxt/a.txt").write_text(
        "imagesource:GoogleEarth\r\ngsd:0.1\r\n"
        "10 10 50 10 50 40 10 40 plane 0\r\n"          # 3: fine
        "garbage line\r\n"                              # 4: unparsable
        "nan 10 50 10 50 40 10 40 ship 0\r\n"           # 5: NaN
        "-5 10 50 10 50 40 -5 40 ship 1\r\n"            # 6: negative -> clipped
        "300 10 350 10 350 40 300 40 ship 0\r\n"        # 7: outside -> skipped
        "10 10 10 10 10 40 10 40 ship 0\r\n"            # 8: zero area
        "10 10 50 10 50 40 10 40 spaceship 0\r\n")      # 9: unknown class -> added
    ds = read_dota(tmp_path)
    rec = ds.records[0]
    assert len(rec.labels) == 3
    msgs = {p.line: p for p in ds.problems}
    assert msgs[4].action == "skipped" and "a.txt" in msgs[4].file
    assert msgs[5].action == "skipped" and "non-finite" in msgs[5].message
    assert msgs[6].action == "repaired" and rec.boxes[1, 0] == 0
    assert msgs[7].action == "skipped" and "outside" in msgs[7].message
    assert msgs[8].action == "skipped" and "zero-area" in msgs[8].message
    assert msgs[9].action == "repaired" and ds.classes[-1] == "spaceship"
    (tmp_path / "classes.txt").write_text("plane\nship\n")
    fixed = read_dota(tmp_path)
    assert fixed.classes == ["plane", "ship"]
    assert [p.line for p in fixed.problems if "unknown class" in p.message] == [9]


def test_missing_and_corrupt_images(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labelTxt").mkdir()
    (tmp_path / "images/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = read_dota(tmp_path)
    assert ds.records == [] and ds.problems[0].action == "image skipped"
    with pytest.raises(ValueError, match="broken.png"):
        read_image(tmp_path / "images/broken.png")


def test_image_modes_are_converted(tmp_path):
    import cv2
    cv2.imwrite(str(tmp_path / "g.png"), np.full((8, 8), 200, np.uint8))
    cv2.imwrite(str(tmp_path / "rgba.png"), np.full((8, 8, 4), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((8, 8, 3), 65535, np.uint16))
    for name, value in (("g.png", 200), ("rgba.png", 100), ("deep.png", 255)):
        img = read_image(tmp_path / name)
        assert img.shape == (8, 8, 3) and img.dtype == np.uint8 and int(img[0, 0, 0]) == value
    good = (tmp_path / "g.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="truncated"):
        read_image(tmp_path / "cut.png")


def _turned_image(path, orientation: int, shape=(20, 40)) -> np.ndarray:
    """Save random pixels to ``path`` tagged with this EXIF orientation (lossless where the format allows);
    the pixels as stored, BGR."""
    from PIL import Image

    rgb = np.random.default_rng(orientation).integers(0, 255, (*shape, 3)).astype(np.uint8)
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = orientation
    lossless = {".webp": {"lossless": True}, ".jpg": {"quality": 100}}.get(path.suffix, {})
    im.save(path, exif=exif.tobytes(), **lossless)
    return rgb[..., ::-1]


@pytest.mark.filterwarnings("error")         # a plain TIFF is an image: rasterio's NotGeoreferencedWarning leaked
@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_images_are_read_upright_as_pillow_turns_them(tmp_path, suffix):
    """Every EXIF orientation 1–8 gives the pixels Pillow's exif_transpose gives (the reference viewers follow): a
    phone JPEG with Orientation 6 was detected lying on its side; image_size agrees. A TIFF read through rasterio
    stays as stored, as GDAL (and QGIS) read it."""
    from PIL import Image, ImageOps

    from fss_core.imageio import image_size
    from fss_core.raster import is_geotiff

    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}{suffix}"
        stored = _turned_image(path, orientation)
        with Image.open(path) as im:
            want = stored if is_geotiff(path) else np.asarray(ImageOps.exif_transpose(im).convert("RGB"))[..., ::-1]
        got = read_image(path)
        assert got.shape == want.shape, (orientation, got.shape, want.shape)
        assert np.abs(got.astype(int) - want).max() <= (8 if suffix == ".jpg" else 0), orientation
        assert image_size(path) == (want.shape[1], want.shape[0]), orientation


def test_yolo_labels_are_read_in_the_upright_frame(tmp_path):
    """A YOLO label of a turned JPEG is normalised to the upright image (as Ultralytics reads it): its box is placed
    with the turned width and height, and data check finds no size mismatch."""
    from fss_train.data.check import check_dataset

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    _turned_image(tmp_path / "images/a.jpg", 6, shape=(20, 40))        # stored 40 wide, 20 high; shown 20 × 40
    (tmp_path / "labels/a.txt").write_text("0 0.5 0.25 0.5 0.5\n")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"path": str(tmp_path), "train": "images", "val": "images",
                                                        "names": ["x"]}))
    ds = read_yolo(tmp_path / "data.yaml")
    rec = ds.records[0]
    assert (rec.width, rec.height) == (20, 40)
    np.testing.assert_allclose(rec.boxes[0], [5, 0, 15, 20])
    assert check_dataset(ds)["problems"] == []


def test_a_coco_size_in_the_stored_frame_is_reported_with_its_reason(tmp_path):
    """COCO files written from the unturned pixels carry the stored width/height: data check says the EXIF turn is
    why the sizes differ (the labels are then in the wrong frame)."""
    from fss_train.data.check import check_dataset

    _turned_image(tmp_path / "a.jpg", 6, shape=(20, 40))
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 20}],
            "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "a.json").write_text(json.dumps(coco))
    problems = check_dataset(read_coco(tmp_path / "a.json"))["problems"]
    assert len(problems) == 1 and "EXIF orientation (6)" in problems[0] and "a.jpg" in problems[0], problems


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_random_label_text_never_crashes(tmp_path_factory, text):
    d = tmp_path_factory.mktemp("lab")
    f = d / "x.txt"
    f.write_text(text)
    problems = []
    rows = read_dota_lines(f, (100, 100), ["plane"], True, problems) + read_yolo_lines(f, (100, 100), 3, problems)
    for box, *_ in rows:
        assert 0 <= box[0] < box[2] <= 100 and 0 <= box[1] < box[3] <= 100


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_crash_readers(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("bytes")
    (d / "f.txt").write_bytes(data)
    (d / "f.png").write_bytes(data)
    problems = []
    read_dota_lines(d / "f.txt", (50, 50), ["plane"], False, problems)
    read_yolo_lines(d / "f.txt", (50, 50), 2, problems)
    (d / "f.json").write_bytes(data)
    try:
        read_coco(d / "f.json")             # either a dataset or a ValueError naming the file
    except ValueError as exc:
        assert "f.json" in str(exc)
    try:
        read_image(d / "f.png")
    except ValueError:
        pass


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                               st.sampled_from(["id", "images", "annotations", "categories", "bbox", "image_id",
                                                "category_id", "file_name", "width", "height", "name"]),
                               inner, max_size=6), max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_random_json_structures_never_crash_the_coco_reader(tmp_path_factory, value):
    f = tmp_path_factory.mktemp("coco") / "a.json"
    f.write_text(json.dumps(value))
    try:
        read_coco(f)
    except ValueError as exc:
        assert "a.json" in str(exc)


# ------------------------------------------------------------------------------ nothing lost silently (#15)
def _png(path, w=64, h=48):
    import cv2
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 127, np.uint8))
    return path


def _coco(tmp_path, images, anns):
    js = tmp_path / "ann.json"
    js.write_text(json.dumps({"images": images, "annotations": anns,
                              "categories": [{"id": 1, "name": "car"}]}))
    return js


def test_coco_images_sharing_a_basename_convert_without_loss(tmp_path):
    _png(tmp_path / "a/x.png")
    _png(tmp_path / "b/x.png")
    anns = [{"id": k + 1, "image_id": 1 + k % 2, "category_id": 1, "bbox": [2 + k, 2, 8, 8]} for k in range(40)]
    ds = read_coco(_coco(tmp_path, [{"id": 1, "file_name": "a/x.png", "width": 64, "height": 48},
                                    {"id": 2, "file_name": "b/x.png", "width": 64, "height": 48}], anns), tmp_path)
    assert sum(len(r.boxes) for r in ds.records) == 40
    for fmt, reread in (("yolo", read_yolo), ("dota", read_dota)):
        back = reread(convert_dataset(ds, fmt, tmp_path / fmt))
        assert len(back.records) == 2 and sum(len(r.boxes) for r in back.records) == 40


def test_coco_duplicate_image_id_is_reported_not_moved(tmp_path):
    _png(tmp_path / "p.png")
    _png(tmp_path / "q.png")
    _png(tmp_path / "r.png")
    ds = read_coco(_coco(tmp_path, [{"id": 1, "file_name": "p.png", "width": 64, "height": 48},
                                    {"id": 1, "file_name": "q.png", "width": 64, "height": 48},
                                    {"id": 2, "file_name": "r.png", "width": 64, "height": 48}],
                         [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
                          {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]}]), tmp_path)
    assert [r.path.name for r in ds.records] == ["r.png"] and len(ds.records[0].boxes) == 1
    assert any("image id 1 is used by more than one image" in p.message for p in ds.problems)


def test_bom_and_orphan_label_files(tmp_path):
    _png(tmp_path / "images/train/a.png")
    (tmp_path / "labels/train").mkdir(parents=True)
    (tmp_path / "labels/train/a.txt").write_bytes("\ufeff0 0.5 0.5 0.2 0.2\n0 0.3 0.3 0.1 0.1\n".encode())
    (tmp_path / "labels/train/gone.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nnames: {0: car}\n")
    ds = read_yolo(tmp_path / "data.yaml")
    assert len(ds.records[0].boxes) == 2                                    # the BOM line is read
    assert [p.message for p in ds.problems] == ["label file without an image"]
    assert ds.problems[0].file.endswith("gone.txt")
    dota = tmp_path / "dota"
    _png(dota / "images/a.png")
    (dota / "labelTxt").mkdir()
    (dota / "labelTxt/a.txt").write_bytes("\ufeff1 1 20 1 20 20 1 20 plane 0\n".encode())
    (dota / "labelTxt/b.txt").write_text("1 1 20 1 20 20 1 20 plane 0\n")
    d = read_dota(dota)
    assert len(d.records[0].boxes) == 1
    assert any(p.file.endswith("b.txt") and "without an image" in p.message for p in d.problems)


def test_oriented_objects_survive_dota_yolo_obb_coco_dota(shared_data, tmp_path):
    """DOTA -> YOLO-OBB -> COCO (4-point segmentations) -> DOTA: every object, its class and its polygon
    (to the formats' precision: YOLO's 6 normalised decimals, COCO's 0.01 px, DOTA's 0.1 px)."""
    src = read_dataset(shared_data / "dota_devkit_example")
    assert src.num_objects == 600 and all(r.polygons is not None for r in src.records)
    yolo_yaml = convert_dataset(src, "yolo-obb", tmp_path / "yolo")
    line = (tmp_path / "yolo/labels/train/P1888.txt").read_text().splitlines()[0].split()
    assert len(line) == 9                                   # Ultralytics' OBB line: class and 4 normalised points
    yolo = read_dataset(yolo_yaml)
    coco_json = convert_dataset(yolo, "coco", tmp_path / "coco")
    coco = read_dataset(coco_json)
    back = read_dataset(convert_dataset(coco, "dota", tmp_path / "dota"))
    for ds, tol in ((yolo, 2e-3), (coco, 2e-3), (back, 0.06)):
        assert ds.num_objects == src.num_objects
        for rec in src.records:
            other = next(r for r in ds.records if r.path.stem == rec.path.stem)
            assert [src.classes[i] for i in rec.labels] == [ds.classes[i] for i in other.labels]
            assert np.abs(other.polygons - rec.polygons).max() < tol


def test_difficult_flags_survive_dota_coco_dota(shared_data, tmp_path):
    src = read_dataset(shared_data / "dota_devkit_yolo_demo/DOTA_demo")
    back = read_dataset(convert_dataset(read_dataset(convert_dataset(src, "coco", tmp_path / "coco")), "dota",
                                        tmp_path / "dota"))
    for rec in src.records:
        other = next(r for r in back.records if r.path.stem == rec.path.stem)
        assert other.difficult.tolist() == rec.difficult.tolist()
        assert np.abs(other.polygons - rec.polygons).max() < 0.06


def test_outlines_become_oriented_objects_only_when_asked(tmp_path):
    """A COCO instance outline (a 6-point ring): a box only by default; with oriented=True its minimum-area
    rectangle, which contains the outline. A 4-point ring is the object's polygon either way."""
    import cv2
    from shapely.geometry import Polygon

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((100, 120, 3), np.uint8))
    outline = [10, 10, 50, 30, 60, 50, 40, 70, 20, 60, 5, 30]
    quad = [70, 10, 90, 20, 80, 40, 60, 30]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 10, 55, 60], "segmentation": [outline]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [60, 10, 30, 30], "segmentation": [quad]}]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 120, "height": 100}],
                                "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}))
    assert read_dataset(path).records[0].polygons is None      # one object without a polygon: boxes only
    rec = read_dataset(path, oriented=True).records[0]
    assert rec.polygons.shape == (2, 8) and rec.polygons[1].tolist() == quad
    rect = Polygon(rec.polygons[0].reshape(4, 2)).buffer(1e-3)
    assert rect.contains(Polygon(np.reshape(outline, (-1, 2))))
    assert rect.area < Polygon(np.reshape(outline, (-1, 2))).envelope.area * 1.2


def test_check_names_oriented_problems_with_file_and_line(tmp_path):
    """A bow-tie (corners out of order), a polygon of collinear corners and a 1 px sliver: reported with their
    file and line by `fss data check`, and kept (their boxes are fine)."""
    from typer.testing import CliRunner

    from fss.cli import app

    (tmp_path / "images").mkdir()
    (tmp_path / "labelTxt").mkdir()
    import cv2

    cv2.imwrite(str(tmp_path / "images/a.png"), np.zeros((100, 100, 3), np.uint8))
    (tmp_path / "labelTxt/a.txt").write_text("imagesource:x\n10 10 50 10 50 40 10 40 plane 0\n"
                                             "10 10 50 40 50 10 10 40 plane 0\n10 10 20 20 30 30 40 40 ship 0\n"
                                             "60 60 90 60 90 61 60 61 ship 0\n")
    res = CliRunner().invoke(app, ["data", "check", str(tmp_path), "--no-decode"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "a.txt:3: polygon 10 10 50 40 50 10 10 40 crosses itself" in out
    assert "a.txt:4: polygon 10 10 20 20 30 30 40 40 has no area" in out
    assert "a.txt:5: object 60 60 90 60 90 61 60 61 is 1.00 px thin" in out
    assert "a.txt:2" not in out
    assert read_dataset(tmp_path).num_objects == 4

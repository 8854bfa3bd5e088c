import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fss.cli import app
from fss_core.tiles import tile_grid, tile_origins
from fss_train.data import read_dataset
from fss_train.data.loader import DetectionDataset, collate
from fss_train.data.records import Dataset, ImageRecord
from fss_train.data.split import split_dataset
from fss_train.data.synth import SynthConfig, synthesize
from fss_train.data.transforms import AugmentConfig, mosaic4, random_affine, random_flip

ROOT = Path(__file__).resolve().parents[2]

runner = CliRunner()


def test_tile_origins_dota_semantics():
    assert tile_origins(4000, 1024, 200) == [0, 824, 1648, 2472, 2976]
    assert tile_origins(1024, 1024, 200) == [0]
    assert tile_origins(500, 1024, 200) == [0]
    assert tile_origins(1025, 1024, 200) == [0, 1]
    assert len(tile_grid(4000, 4000, 1024, 200)) == 25
    with pytest.raises(ValueError):
        tile_origins(100, 200, 200)


def test_split_4000_scene_every_object_whole_in_some_tile(tmp_path):
    ds = synthesize(tmp_path / "big", SynthConfig(num_images=1, size=4000, objects=400, min_size=8, max_size=150,
                                                  truncation=0.0, seed=3))
    tiled, problems = split_dataset(ds, tmp_path / "tiles", 1024, 200)
    assert problems == [] and len(tiled.records) == 25
    names = sorted(r.path.name for r in tiled.records)
    assert "synth_00000__1__2976___2976.png" in names and "synth_00000__1__824___0.png" in names
    rec = ds.records[0]
    origins = tile_grid(4000, 4000, 1024, 200)
    for box in rec.boxes:
        assert any(x <= box[0] and box[2] <= x + 1024 and y <= box[1] and box[3] <= y + 1024 for x, y in origins)
    # a tile's pixels really are the image's pixels at its origin
    img = cv2.imread(str(rec.path))
    tile = cv2.imread(str(tmp_path / "tiles/images/synth_00000__1__824___1648.png"))
    assert np.array_equal(tile, img[1648:1648 + 1024, 824:824 + 1024])
    # the json reads back; cut objects are marked difficult = 2
    back = read_dataset(tmp_path / "tiles/annotations.json")
    assert len(back.records) == 25 and back.num_objects == tiled.num_objects
    assert any((r.difficult == 2).any() for r in back.records)


def test_split_small_image_pads_and_rerun_skips(tmp_path, shared_data):
    ds = read_dataset(shared_data / "dota_devkit_example")
    tiled, _ = split_dataset(ds, tmp_path / "t", 1024, 200)
    p1888 = [r for r in tiled.records if r.path.name.startswith("P1888")]
    assert len(p1888) == 1 and cv2.imread(str(p1888[0].path)).shape == (1024, 1024, 3)
    assert len(p1888[0].labels) == 64
    marker = tmp_path / "t/.done/P0706.json"
    mtime = marker.stat().st_mtime_ns
    split_dataset(ds, tmp_path / "t", 1024, 200)
    assert marker.stat().st_mtime_ns == mtime
    # a partially cut object is clipped and, below 70% inside, marked difficult
    p0706 = [r for r in tiled.records if r.path.name.startswith("P0706")]
    assert len(p0706) == 4 and all((r.boxes >= 0).all() and (r.boxes <= 1024).all() for r in p0706)


def test_split_recuts_an_image_whose_file_or_labels_changed(tmp_path, shared_data):
    """A rerun skips an image only when its done-file was made from this very image file and these labels: a
    corrected label file is cut again (it was skipped, its old tiles kept as if current)."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(shared_data / "dota_devkit_example", src)
    split_dataset(read_dataset(src), tmp_path / "t", 1024, 200)
    kept = (tmp_path / "t/.done/P0706.json").stat().st_mtime_ns
    label = src / "labelTxt/P1888.txt"
    lines = label.read_text().splitlines()
    label.write_text("\n".join(lines[:-1]) + "\n")                  # one object fewer
    tiled, _ = split_dataset(read_dataset(src), tmp_path / "t", 1024, 200)
    p1888 = [r for r in tiled.records if r.path.name.startswith("P1888")]
    assert len(p1888) == 1 and len(p1888[0].labels) == 63
    assert (tmp_path / "t/.done/P0706.json").stat().st_mtime_ns == kept               # untouched: skipped
    assert len(read_dataset(tmp_path / "t/annotations.json").records) == len(tiled.records) == 5


def test_synth_is_deterministic(tmp_path):
    cfg = SynthConfig(num_images=2, size=300, objects=30, seed=7)
    synthesize(tmp_path / "a", cfg)
    synthesize(tmp_path / "b", cfg)
    for rel in ("images/synth_00000.png", "images/synth_00001.png", "annotations.json", "labelTxt/synth_00001.txt"):
        assert hashlib.sha256((tmp_path / "a" / rel).read_bytes()).digest() == \
            hashlib.sha256((tmp_path / "b" / rel).read_bytes()).digest(), rel
    other = synthesize(tmp_path / "c", SynthConfig(num_images=1, size=300, objects=30, seed=8))
    assert (tmp_path / "c/images/synth_00000.png").read_bytes() != (tmp_path / "a/images/synth_00000.png").read_bytes()
    coco = json.loads((tmp_path / "a/annotations.json").read_text())
    assert {c["name"] for c in coco["categories"]} == {"small-vehicle", "large-vehicle", "ship", "plane",
                                                       "storage-tank"}
    assert other.num_objects == 30
    dota = read_dataset(tmp_path / "a")      # DOTA folder (labelTxt) reads back the same boxes
    assert dota.num_objects == 60


def test_synth_dense_scene_sizes(tmp_path):
    ds = synthesize(tmp_path, SynthConfig(num_images=1, size=1024, objects=1500, min_size=6, max_size=20,
                                          occlusion=0.5, seed=1))
    rec = ds.records[0]
    assert len(rec.labels) >= 1400
    side = np.maximum(rec.boxes[:, 2] - rec.boxes[:, 0], rec.boxes[:, 3] - rec.boxes[:, 1])
    assert side.min() >= 2 and side.max() <= 20 * 1.5


def _painted(size=320, n=6, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.uint8)
    boxes = []
    for i in range(n):            # one paint patch per cell of a 3×2 grid: no overlaps
        x = 10 + (i % 3) * (size // 3) + int(rng.integers(0, 20))
        y = 10 + (i // 3) * (size // 2) + int(rng.integers(0, 40))
        w, h = (int(v) for v in rng.integers(20, 70, 2))
        colour = (40 * (i + 1), 255 - 30 * i, 100 + 20 * i)
        img[y:y + h, x:x + w] = colour
        boxes.append([x, y, x + w, y + h])
    return img, np.array(boxes, np.float32), np.arange(n)


def _check_alignment(img, boxes, labels, colours):
    for box, lab in zip(boxes, labels):
        x1, y1, x2, y2 = np.round(box).astype(int)
        inner = img[y1 + 2:y2 - 2, x1 + 2:x2 - 2].reshape(-1, 3)
        if len(inner) < 4:
            continue
        match = (np.abs(inner.astype(int) - colours[lab]).sum(1) < 40).mean()
        assert match > 0.9, f"box {box} of label {lab} does not sit on its paint ({match:.2f})"


def test_augmentation_keeps_boxes_on_their_pixels():
    cfg = AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, fliplr=0.5, flipud=0.5)
    samples = [_painted(seed=s) for s in range(4)]
    colours = {i: np.array((40 * (i + 1), 255 - 30 * i, 100 + 20 * i)) for i in range(6)}
    for seed in range(10):
        rng = np.random.default_rng(seed)
        img, boxes, labels, _ = mosaic4(samples, 256, rng)
        _check_alignment(img, boxes, labels, colours)
        img, boxes, labels, _ = random_affine(img, boxes, labels, 256, cfg, rng)
        _check_alignment(img, boxes, labels, colours)
        img, boxes, _ = random_flip(img, boxes, cfg, rng)
        _check_alignment(img, boxes, labels, colours)
        assert img.shape == (256, 256, 3)
        assert ((boxes[:, 2] - boxes[:, 0]) >= 2).all() and (boxes >= 0).all() and (boxes <= 256).all()


def test_loader_pads_and_survives_a_corrupt_image(tmp_path):
    """Training replaces an unreadable image by another; evaluation (no augmentation) keeps its place with a grey
    stand-in marked unreadable and without objects, which prediction leaves out."""
    ds = synthesize(tmp_path / "s", SynthConfig(num_images=4, size=256, objects=10, seed=2))
    ds.records[1].path.write_bytes(b"not a png")
    for augment in (False, True):
        data = DetectionDataset(ds, 128, augment=augment)
        batch = collate([data[i] for i in range(4)])
        images, gt_boxes, gt_labels, gt_mask, metas = batch
        assert images.shape == (4, 3, 128, 128) and images.dtype == torch.float32
        assert gt_boxes.shape[:2] == gt_labels.shape == gt_mask.shape
        assert (gt_labels[~gt_mask] == -1).all() and (gt_labels[gt_mask] >= 0).all()
        assert data.bad == {1} and [i for m in metas for i in m["found_unreadable"]] == [1]
        if augment:
            assert all(m["index"] != 1 for m in metas)
        else:
            assert [m["index"] for m in metas] == [0, 1, 2, 3] and metas[1]["unreadable"]
            assert not gt_mask[1].any() and gt_mask[[0, 2, 3]].any(1).all()


def test_an_unreadable_image_is_reported_once_per_run(tmp_path):
    """Loader workers are forked afresh every epoch: what one found unreadable comes back to this process, so the
    next epochs skip it silently (it was reported by every worker of every epoch)."""
    synthesize(tmp_path / "s", SynthConfig(num_images=4, size=128, objects=4, seed=2))
    victim = tmp_path / "s/images/synth_00001.png"
    victim.write_bytes(victim.read_bytes()[:1000])         # the header says 128 × 128; the pixels are cut off
    code = f"""
from fss_train.data.formats import read_dataset
from fss_train.data.loader import DetectionDataset, make_loader
data = DetectionDataset(read_dataset({str(tmp_path / "s")!r}), 64)
loader = make_loader(data, 4, False, workers=1)
for epoch in range(3):
    metas = [m for b in loader for m in b[-1]]
    assert [m.get("unreadable", False) for m in metas] == [False, True, False, False]
print("bad", sorted(data.bad))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0 and "bad [1]" in r.stdout, r.stderr[-2000:]
    assert r.stderr.count("synth_00001.png") == 1, r.stderr


def test_loader_workers_start_after_opencv_ran_threads_in_this_process(tmp_path):
    """fss demo hung at its first epoch: it draws a 4000² scene (OpenCV's thread pool busy) and then forks loader
    workers, whose cv2.setNumThreads(1) waited for ever. Run in a child with a deadline; three epochs' worth of
    forks, each after OpenCV used its threads again."""
    synthesize(tmp_path / "s", SynthConfig(num_images=4, size=128, objects=4, seed=2))
    code = f"""
import cv2, numpy as np
from fss_train.data.formats import read_dataset
from fss_train.data.loader import DetectionDataset, make_loader
big = np.random.default_rng(0).integers(0, 255, (4000, 4000, 3), dtype=np.uint8)
loader = make_loader(DetectionDataset(read_dataset({str(tmp_path / "s")!r}), 128), 2, True, workers=1)
threads = cv2.getNumThreads()
for epoch in range(3):
    cv2.GaussianBlur(big, (9, 9), 0)
    assert sum(len(b[4]) for b in loader) == 4
    assert cv2.getNumThreads() == threads
print("done")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0 and "done" in r.stdout, r.stderr[-2000:]


def test_data_cli(tmp_path, shared_data):
    r = runner.invoke(app, ["data", "synth", str(tmp_path / "s"), "--num-images", "2", "--size", "256",
                            "--objects", "12"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["data", "check", str(tmp_path / "s"), "--json"])
    report = json.loads(r.stdout)
    assert report["images"] == 2 and report["objects"] == 24 and report["objects_per_image"]["min"] == 12
    assert "detection_cap_note" not in report                          # 12 objects an image fit COCO's 100
    r = runner.invoke(app, ["data", "check", str(shared_data / "dota_devkit_example"), "--no-decode"])
    assert r.exit_code == 0 and ("note: images hold up to 536 objects, more than the 100 detections per image COCO "
                                 "scores and the 300 training keeps: evaluate with `fss eval --max-dets 900` and "
                                 "train with `--set max_det=900`") in " ".join(r.output.split()), r.output
    r = runner.invoke(app, ["data", "convert", str(shared_data / "dota_devkit_example"), "--to", "yolo",
                            "--out", str(tmp_path / "y")])
    assert r.exit_code == 0, r.output
    assert read_dataset(tmp_path / "y/data.yaml").num_objects == 600
    r = runner.invoke(app, ["data", "split", str(tmp_path / "s"), "--out", str(tmp_path / "t"), "--tile", "128",
                            "--gap", "32"])
    assert r.exit_code == 0, r.output
    assert len(read_dataset(tmp_path / "t/annotations.json").records) == 2 * 9
    r = runner.invoke(app, ["data", "check", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "no such dataset" in r.output


def test_synthetic_label_files_agree(tmp_path):
    """labelTxt/ (read as DOTA: each polygon's enclosure), annotations.json and the returned records give one box
    per object (they differed by up to a few px: the json held the drawn parts' tight box)."""
    ds = synthesize(tmp_path, SynthConfig(num_images=2, size=256, objects=30, min_size=8, max_size=60, seed=1))
    boxes = [np.concatenate([r.boxes for r in d.records])
             for d in (ds, read_dataset(tmp_path), read_dataset(tmp_path / "annotations.json"))]
    assert boxes[0].shape == (60, 4)
    assert np.abs(boxes[0] - boxes[1]).max() <= 0.051 and np.abs(boxes[0] - boxes[2]).max() <= 0.051  # 0.1 px text


def test_check_warns_when_images_dwarf_the_input(tmp_path):
    """`fss data check --imgsz`: how far letterboxing shrinks the objects of images much larger than the input."""
    synthesize(tmp_path / "s", SynthConfig(num_images=3, size=256, objects=12, min_size=12, max_size=40, seed=1))
    ds = read_dataset(tmp_path / "s")
    sides = np.concatenate([np.sqrt((r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1]))
                            for r in ds.records])
    r = runner.invoke(app, ["data", "check", str(tmp_path / "s"), "--no-decode", "--imgsz", "64"])
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "3 of 3 images are more than twice the 64 px input (median 256×256)" in text, text
    assert f"median object goes from {np.median(sides):.0f} to {np.median(sides) / 4:.1f} px" in text
    tiny = (sides / 4 < 4).mean()
    assert (f"{tiny:.0%} of their objects end under 4 px" in text) == (tiny >= 0.005)
    assert f"fss data split {tmp_path / 's'} --out tiles --tile 64 --gap 13" in text
    r = runner.invoke(app, ["data", "check", str(tmp_path / "s"), "--no-decode", "--imgsz", "128", "--json"])
    assert json.loads(r.stdout)["input_scale_advice"] is None
    r = runner.invoke(app, ["data", "check", str(tmp_path / "s"), "--no-decode", "--imgsz", "128"])
    assert "every image fits the 128 px input within a factor of 2" in r.output


def test_check_reports_corrupt_images(tmp_path):
    ds = synthesize(tmp_path, SynthConfig(num_images=2, size=128, objects=3, seed=0))
    data = ds.records[0].path.read_bytes()
    ds.records[0].path.write_bytes(data[: len(data) // 2])
    r = runner.invoke(app, ["data", "check", str(tmp_path), "--json"])
    report = json.loads(r.stdout)
    assert any("truncated" in p and "synth_00000" in p for p in report["problems"])


def test_empty_dataset_record_helpers():
    ds = Dataset(["a"], [ImageRecord(path=__import__("pathlib").Path("x.png"), width=10, height=10)])
    assert ds.num_objects == 0


def test_split_rerun_with_other_settings_is_refused(shared_data, tmp_path):
    from fss_train.data import read_dota
    from fss_train.data.split import split_dataset

    ds = read_dota(shared_data / "dota_devkit_example")
    out = tmp_path / "tiles"
    first, _ = split_dataset(ds, out, tile=512, gap=100, workers=1)
    again, _ = split_dataset(ds, out, tile=512, gap=100, workers=1)          # resume: same settings
    assert len(again.records) == len(first.records)
    with pytest.raises(ValueError, match="tile 512 -> 1024"):
        split_dataset(ds, out, tile=1024, gap=100, workers=1)
    assert len(list((out / "images").glob("*.png"))) == len(first.records)   # no tile of another tiling


def test_cache_ram_gives_the_same_samples_and_respects_its_memory_limit(tmp_path, caplog):
    synthesize(tmp_path / "d", SynthConfig(num_images=6, size=96, objects=5, seed=3))
    ds = read_dataset(tmp_path / "d")
    plain = DetectionDataset(ds, 96, augment=True, seed=1)
    cached = DetectionDataset(ds, 96, augment=True, seed=1)
    assert cached.cache_images(10**9)
    for i in range(len(ds.records)):                  # same augmented sample, image and boxes, cached or not
        a, b = plain[i], cached[i]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert all(im.flags.writeable for im in cached.cache)
    again = cached[0][0]                              # transforms never write into the cache
    assert torch.equal(again, plain[0][0])
    shared = DetectionDataset(ds, 96, seed=1)
    assert shared.cache_images(0, shared=cached) and shared.cache is cached.cache
    small = DetectionDataset(ds, 96, seed=1)
    with caplog.at_level("WARNING"):
        assert not small.cache_images(1000) and small.cache is None
    assert "not cached" in caplog.text


def test_cache_config_values():
    from fss_train.config import make_config

    assert make_config(overrides={"cache": "ram"}).cache == "ram"
    assert make_config(overrides={"cache": True}).cache == "ram"
    assert make_config(overrides={"cache": False}).cache == ""
    with pytest.raises(ValueError, match="cache"):
        make_config(overrides={"cache": "disk"})


def _synth_pair(tmp_path):
    """Two synthetic datasets whose images share names but not pixels or labels."""
    a = synthesize(tmp_path / "a", SynthConfig(num_images=3, size=96, objects=4, seed=1))
    b = synthesize(tmp_path / "b", SynthConfig(num_images=2, size=96, objects=6, seed=2))
    assert [r.path.name for r in b.records] == [r.path.name for r in a.records][:2]
    return tmp_path / "a", tmp_path / "b"


@pytest.mark.parametrize("to,reread", [("yolo", "data.yaml"), ("dota", "."), ("coco", "annotations.json")])
def test_convert_never_mixes_two_conversions(tmp_path, to, reread):
    a, b = _synth_pair(tmp_path)
    out = tmp_path / "out"
    assert runner.invoke(app, ["data", "convert", str(a), "--to", to, "--out", str(out)]).exit_code == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    r = runner.invoke(app, ["data", "convert", str(b), "--to", to, "--out", str(out)])
    assert r.exit_code == 1 and "--exist-ok" in r.output and "earlier conversion" in r.output
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == before      # nothing touched
    r = runner.invoke(app, ["data", "convert", str(b), "--to", to, "--out", str(out), "--exist-ok"])
    assert r.exit_code == 0, r.output
    back, src = read_dataset(out / reread), read_dataset(b)
    assert len(back.records) == 2 and back.num_objects == src.num_objects == 12     # the third image of a is gone
    for got, want in zip(sorted(back.records, key=lambda r: r.path.name), src.records):
        assert got.path.read_bytes() == want.path.read_bytes()                      # b's pixels, not a's
        assert np.allclose(got.boxes, want.boxes, atol=0.01)


def test_convert_adds_a_yolo_split_and_keeps_the_others(tmp_path, shared_data):
    a, b = _synth_pair(tmp_path)
    out = tmp_path / "y"
    for src, split in ((a, "train"), (b, "val")):
        r = runner.invoke(app, ["data", "convert", str(src), "--to", "yolo", "--split", split, "--out", str(out)])
        assert r.exit_code == 0, r.output
    assert len(read_dataset(out / "data.yaml", "train").records) == 3
    assert len(read_dataset(out / "data.yaml", "val").records) == 2
    r = runner.invoke(app, ["data", "convert", str(shared_data / "dota_devkit_example"), "--to", "yolo", "--split",
                            "test", "--out", str(out)])
    assert r.exit_code == 1 and "differ from this dataset's" in r.output
    assert not (out / "images/test").exists()


def test_convert_dota_to_coco_in_place_keeps_the_images(tmp_path, shared_data):
    import shutil

    dota = tmp_path / "d"
    shutil.copytree(shared_data / "dota_devkit_example", dota)
    (dota / "images/broken.png").write_bytes(b"not an image")              # skipped by the reader, still the user's
    images = sorted(p.name for p in (dota / "images").iterdir())
    r = runner.invoke(app, ["data", "convert", str(dota), "--to", "coco", "--out", str(dota)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["data", "convert", str(dota), "--to", "coco", "--out", str(dota), "--exist-ok"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (dota / "images").iterdir()) == images
    assert read_dataset(dota / "annotations.json").num_objects == read_dataset(dota).num_objects > 0


def test_synth_never_mixes_two_datasets(tmp_path):
    """A rerun with the same settings (finished or interrupted) writes the same files; other settings into a
    non-empty folder are refused, and with exist_ok the earlier dataset's files go first (4 old images stayed beside
    2 new ones and were read as one dataset)."""
    import fss

    out = tmp_path / "s"
    fss.synth(out, num_images=4, size=96, objects=3, seed=1)
    first = (out / "labelTxt/synth_00000.txt").read_text()
    (out / "annotations.json").unlink()                                # as if interrupted before the end
    fss.synth(out, num_images=4, size=96, objects=3, seed=1)
    assert (out / "labelTxt/synth_00000.txt").read_text() == first and (out / "annotations.json").is_file()
    with pytest.raises(FileExistsError, match="holds a synthetic dataset of other settings"):
        fss.synth(out, num_images=2, size=96, objects=5, seed=2)
    assert len(read_dataset(out).records) == 4
    r = runner.invoke(app, ["data", "synth", str(out), "--num-images", "2", "--size", "96", "--seed", "2"])
    assert r.exit_code == 1 and "--exist-ok" in r.output
    r = runner.invoke(app, ["data", "synth", str(out), "--num-images", "2", "--size", "96", "--seed", "2",
                            "--exist-ok"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (out / "images").iterdir()) == ["synth_00000.png", "synth_00001.png"]
    assert len(read_dataset(out).records) == 2 and len(list((out / "labelTxt").iterdir())) == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="mine holds files"):
        fss.synth(tmp_path / "mine", num_images=1, size=96)


def test_split_cuts_oriented_objects_exactly():
    """Polygons cut by the tile's edge (x = 100): the piece inside, the 0.7 rule on the polygon's own area, difficult
    2 below it; whole polygons (a non-convex one too) unchanged; one outside dropped."""
    import math

    from shapely.geometry import Polygon

    from fss_core.rbox import rbox_to_poly
    from fss_train.data.split import objects_in_tile

    diamond = rbox_to_poly(torch.tensor([100.0, 50, 40, 40, math.pi / 4])).tolist()   # half of it inside
    half = [80, 10, 120, 10, 120, 30, 80, 30]                                          # half inside
    most = [20, 82, 125, 82, 125, 98, 20, 98]                                          # 80 of 105 px inside
    arrow = [10, 60, 60, 60, 30, 70, 60, 80]                                           # non-convex, inside
    outside = [150, 10, 180, 10, 180, 30, 150, 30]
    rec = ImageRecord(Path("a.png"), 200, 200)
    rec.polygons = np.array([diamond, half, most, arrow, outside], np.float32)
    rec.boxes = np.array([[min(p[0::2]), min(p[1::2]), max(p[0::2]), max(p[1::2])] for p in rec.polygons],
                         np.float32)
    rec.labels, rec.difficult = np.arange(5), np.array([0, 0, 0, 1, 0])
    boxes, labels, difficult, polys = objects_in_tile(rec, 0, 0, 100)
    assert labels.tolist() == [0, 1, 2, 3] and difficult.tolist() == [2, 2, 0, 1]
    assert boxes[1].tolist() == pytest.approx([80, 10, 100, 30])                       # the piece, exactly
    assert Polygon(polys[1].reshape(4, 2)).area == pytest.approx(400)
    assert Polygon(polys[2].reshape(4, 2)).area == pytest.approx(80 * 16)
    assert polys[3].tolist() == arrow                                                  # whole: as drawn
    assert (polys[0][0::2] <= 100 + 1e-4).all()                                        # the diamond's piece stays in
    assert Polygon(polys[0].reshape(4, 2)).area >= Polygon(np.reshape(diamond, (4, 2))).area / 2 - 1e-3


def _painted_obb(seed: int, first_label: int):
    """A 256² image with 6 turned rectangles, each painted in its own colour (by label), none overlapping."""
    import math

    from fss_core.rbox import rbox_to_poly

    rng = np.random.default_rng(seed)
    image = np.full((256, 256, 3), 90, np.uint8)
    polys = []
    for k in range(6):
        cx, cy = 45 + 85 * (k % 3), 64 + 128 * (k // 3)
        rb = torch.tensor([cx, cy, rng.uniform(30, 60), rng.uniform(14, 28), rng.uniform(0, math.pi)])
        polys.append(rbox_to_poly(rb).numpy())
    polys = np.array(polys, np.float32)
    labels = np.arange(first_label, first_label + 6)
    for poly, label in zip(polys, labels):
        cv2.fillPoly(image, [np.round(poly.reshape(4, 2) * 16).astype(np.int32)], _obb_colour(label), shift=4)
    boxes = np.stack((polys[:, 0::2].min(1), polys[:, 1::2].min(1), polys[:, 0::2].max(1), polys[:, 1::2].max(1)), 1)
    return image, boxes, labels, polys


def _obb_colour(label: int) -> tuple:
    return (int(30 + 9 * label) % 256, int(250 - 11 * label) % 256, int(60 + 37 * label) % 256)


def _check_polygons_on_their_pixels(image, polys, labels):
    """Each polygon covers the pixels of its colour (≥ 97 % of them, 1 px of edge allowed) and is mostly its colour."""
    for poly, label in zip(polys, labels):
        own = (np.abs(image.astype(int) - _obb_colour(label)).sum(2) <= 6)
        if own.sum() < 30:
            continue                                       # a sliver at an edge: too few pixels to judge
        drawn = np.zeros(image.shape[:2], np.uint8)
        cv2.fillPoly(drawn, [np.round(poly.reshape(4, 2) * 16).astype(np.int32)], 1, shift=4)
        near = cv2.dilate(drawn, np.ones((3, 3), np.uint8)).astype(bool)
        assert (own & near).sum() >= 0.97 * own.sum(), (label, poly)
        if own.sum() >= 200:                               # not loose (a cut piece's rectangle: ≤ 2× the piece)
            assert own[drawn.astype(bool)].mean() >= 0.45, (label, poly)


def test_every_transform_moves_polygons_with_their_pixels():
    cfg = AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, fliplr=0.5, flipud=0.5, degrees=180, rot90=0.5, scale=0.3)
    samples = [_painted_obb(seed=s, first_label=6 * s) for s in range(4)]
    kept = 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        img, boxes, labels, polys = mosaic4(samples, 256, rng)
        _check_polygons_on_their_pixels(img, polys, labels)
        img, boxes, labels, polys = random_affine(img, boxes, labels, 256, cfg, rng, polys)
        _check_polygons_on_their_pixels(img, polys, labels)
        img, boxes, polys = random_flip(img, boxes, cfg, rng, polys)
        _check_polygons_on_their_pixels(img, polys, labels)
        envelopes = np.stack((polys[:, 0::2].min(1), polys[:, 1::2].min(1), polys[:, 0::2].max(1),
                              polys[:, 1::2].max(1)), 1)
        assert np.allclose(boxes, envelopes.clip(0, 256), atol=1e-4)    # boxes: the envelopes cut to the canvas
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        kept += len(labels)
    assert kept > 40                                        # the checks ran on many objects


def test_quarter_turns_are_exact():
    from fss_train.data.transforms import rotate90

    image, boxes, labels, polys = _painted_obb(0, 0)
    image = image[:, :200]                                 # not square: the turn swaps the sides
    for k in (1, 2, 3, 4):
        img, bx, py = rotate90(image, boxes, polys, k)
        assert img.shape[:2] == ((200, 256) if k % 2 else (256, 200))
        _check_polygons_on_their_pixels(np.ascontiguousarray(img), py[:2], labels[:2])


def test_split_recuts_tiles_an_older_cut_rule_made(tmp_path, shared_data, monkeypatch):
    """The cut rule is part of an image's fingerprint: tiles of an older fss (another rule) are cut again, not
    reused as if current."""
    import fss_train.data.split as split

    src = shared_data / "dota_devkit_example"
    monkeypatch.setattr(split, "CUT_RULE", 1)                     # as an older fss would have written them
    split_dataset(read_dataset(src), tmp_path / "t", 1024, 200)
    done = tmp_path / "t/.done/P0706.json"
    assert json.loads(done.read_text())["input"]["cut_rule"] == 1
    monkeypatch.setattr(split, "CUT_RULE", 2)
    split_dataset(read_dataset(src), tmp_path / "t", 1024, 200)
    assert json.loads(done.read_text())["input"]["cut_rule"] == 2

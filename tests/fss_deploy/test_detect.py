import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import GRID_CLASSES, grid_checkpoint
from typer.testing import CliRunner

from fss.cli import app
from fss_deploy.backends import OnnxBackend, TorchBackend, load_backend
from fss_deploy.detect import TiledDetector
from fss_deploy.export import export_onnx
from fss_deploy.folder_run import prepare_output, run_detect, run_identity
from fss_deploy.sources import resolve_sources
from fss_deploy.tiling import Tile, cut_by_interior_edge, merge, plan_tiles, tile_views

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The known-grid checkpoint (conftest.grid_checkpoint: 64 cars + 256 ships per 256 px tile, whatever the image)
    and its ONNX export, beside 4 synthetic 256 px images: what the tests about files, caps and resume run on."""
    from fss_train.data.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("det")
    synthesize(root / "data", SynthConfig(num_images=4, size=256, objects=12, min_size=14, max_size=48, seed=5))
    ckpt = grid_checkpoint(root / "grid.pt")
    onnx_path = export_onnx(ckpt, root / "m.onnx", dynamic=True).path
    return ckpt, onnx_path, root


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    """The bundled model and its ONNX export (at its own 512 px): image-dependent detections for the tests that
    compare two paths over the same model (the comparison is the point, not what it detects)."""
    from fss_deploy.detect import DEFAULT_MODEL

    return DEFAULT_MODEL, export_onnx(DEFAULT_MODEL, tmp_path_factory.mktemp("bundled") / "m.onnx", dynamic=True).path


def test_tile_plan_geometry():
    tiles = plan_tiles(4000, 3000, 1024, 200)
    xs = sorted({t.x for t in tiles})
    ys = sorted({t.y for t in tiles})
    assert xs == [0, 824, 1648, 2472, 2976] and ys == [0, 824, 1648, 1976]
    assert max(t.x + t.width for t in tiles) == 4000 and max(t.y + t.height for t in tiles) == 3000
    covered = np.zeros((3000, 4000), bool)
    for t in tiles:
        assert t.width == t.height == 1024
        covered[t.y:t.y + t.height, t.x:t.x + t.width] = True
    assert covered.all()
    small = plan_tiles(300, 200, 1024, 200)
    assert list(small) == [Tile(0, 0, 300, 200)]
    img = np.full((200, 300, 3), 7, np.uint8)
    view = tile_views(img, small, 1024)[0]
    assert view.shape == (1024, 1024, 3) and (view[:200, :300] == 7).all() and (view[200:] == 114).all()
    big = np.zeros((2048, 2048, 3), np.uint8)
    v = tile_views(big, plan_tiles(2048, 2048, 1024, 0), 1024)[0]
    assert np.shares_memory(v, big)                   # tiles are views, not copies


def test_object_across_a_tile_border_is_kept_once():
    # image 1800 wide, tiles of 1024 with overlap 200: x origins 0 and 776
    tiles = plan_tiles(1800, 1024, 1024, 200)
    assert [t.x for t in tiles] == [0, 776]
    whole = np.array([[900.0, 100, 1000, 160, 0.9, 2]])        # seen whole by the right tile
    cut = np.array([[900.0, 100, 1024, 160, 0.8, 2]])          # the left tile sees it cut at x = 1024
    a = cut_by_interior_edge(cut, tiles[0], 1800, 1024)
    b = cut_by_interior_edge(whole, tiles[1], 1800, 1024)
    assert a.tolist() == [True] and b.tolist() == [False]
    dets = np.concatenate([cut, whole])
    out = merge(dets, np.concatenate([a, b]), np.array([0, 1]), iou=0.9)   # IoU 0.81: NMS alone keeps both
    assert len(out) == 1 and out[0, 4] == pytest.approx(0.9)
    # an object on the image border is not "cut by an interior edge"
    edge = np.array([[0.0, 10, 30, 40, 0.7, 1]])
    assert not cut_by_interior_edge(edge, tiles[0], 1800, 1024).any()
    # different classes never suppress each other
    other = whole.copy()
    other[0, 5] = 3
    out = merge(np.concatenate([cut, other]), np.array([True, False]), np.array([0, 1]))
    assert len(out) == 2


def test_torch_and_onnxruntime_agree_on_a_dota_image(bundled, shared_data):
    ckpt, onnx_path = bundled
    image = cv2.imread(str(shared_data / "dota_devkit_example/images/P0706.png"))
    a = TiledDetector(TorchBackend(ckpt), overlap=64, batch=4, conf=0.05)(image)
    b = TiledDetector(OnnxBackend(onnx_path), overlap=64, batch=4, conf=0.05)(image)
    assert len(a) > 0 and len(a) == len(b)
    import torch

    from fss_deploy.export import match_detections
    assert match_detections(torch.from_numpy(a), torch.from_numpy(b)).all()
    assert np.abs(a[:, 4] - b[:, 4]).max() < 1e-4


def test_detect_cli_outputs_resume_and_bad_images(model, tmp_path):
    _, onnx_path, root = model
    images = tmp_path / "imgs"
    images.mkdir()
    for i, src in enumerate(sorted((root / "data/images").glob("*.png"))[:3]):
        big = cv2.resize(cv2.imread(str(src)), (600, 450))
        cv2.imwrite(str(images / f"a{i}.png"), big)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    r = runner.invoke(app, ["detect", str(images), "--model", str(onnx_path), "--out", str(out), "--conf", "0.05",
                            "--save-images", "--overlap", "64"])
    assert r.exit_code == 1, r.output                                   # some failed…
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processed"] == 3 and len(summary["failed"]) == 1    # …the rest went on
    assert "broken.png" in summary["failed"][0]["error"]
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds) == summary["detections"] > 0
    per_image = [sum(p["image_id"] == i for p in preds) for i in {p["image_id"] for p in preds}]
    assert len(per_image) == 3 and len(set(per_image)) == 1            # the grid: as many in each 600×450 image
    assert {p["image_id"] for p in preds} <= {1, 2, 3, 4}
    assert (out / "yolo/a0.txt").is_file() and (out / "images/a0.jpg").is_file()
    task2 = sum(len((out / "dota" / f).read_text().splitlines()) for f in os.listdir(out / "dota"))
    assert task2 == len(preds)
    # rerun: nothing is redone, nothing duplicated
    (images / "broken.png").unlink()
    r = runner.invoke(app, ["detect", str(images), "--model", str(onnx_path), "--out", str(out), "--conf", "0.05",
                            "--overlap", "64"])
    assert r.exit_code == 0, r.output
    again = json.loads((out / "summary.json").read_text())
    assert again["skipped_done"] == 3 and again["processed"] == 0
    assert json.loads((out / "predictions.json").read_text()) == preds


def test_interrupted_run_resumes_without_duplicates(model, tmp_path):
    _, onnx_path, root = model
    paths = sorted((root / "data/images").glob("*.png"))
    det = TiledDetector(load_backend(onnx_path), conf=0.05)
    seen = []

    def interrupt(path, dets):
        seen.append(path)
        if len(seen) == 2:
            raise KeyboardInterrupt

    prepare_output(tmp_path, run_identity(det, onnx_path))       # what `fss detect` records first
    with pytest.raises(KeyboardInterrupt):
        run_detect(paths, det, tmp_path, on_image=interrupt)
    assert len(list((tmp_path / ".per_image").glob("*.json"))) == 2
    r = runner.invoke(app, ["detect", *map(str, paths), "--model", str(onnx_path), "--out", str(tmp_path),
                            "--conf", "0.05"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["skipped_done"] == 2 and summary["processed"] == 2 and summary["images_with_results"] == 4
    preds = json.loads((tmp_path / "predictions.json").read_text())
    keys = [(p["image_id"], tuple(p["bbox"]), p["category_id"]) for p in preds]
    assert len(keys) == len(set(keys))


def test_sources_and_errors(model, tmp_path):
    _, onnx_path, root = model
    lst = tmp_path / "list.txt"
    imgs = sorted((root / "data/images").glob("*.png"))
    lst.write_text(f"{imgs[0]}\n{imgs[1]}\n")
    found = resolve_sources([str(lst), str(root / "data/images/*.png"), str(imgs[0])])
    assert found[:2] == imgs[:2] and len(found) == 4
    (tmp_path / "afile").write_text("x")
    r = runner.invoke(app, ["detect", str(imgs[0]), "--model", str(onnx_path), "--out", str(tmp_path / "afile/o")])
    assert r.exit_code == 1 and "not writable" in r.output
    import onnx
    proto = onnx.load(str(onnx_path))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    r = runner.invoke(app, ["detect", str(imgs[0]), "--model", str(tmp_path / "bare.onnx"), "--out",
                            str(tmp_path / "o")])
    assert r.exit_code == 1 and "without fss metadata" in r.output
    r = runner.invoke(app, ["detect", str(imgs[0]), "--model", str(onnx_path), "--backend", "torch",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "needs a .pt" in r.output
    r = runner.invoke(app, ["detect", str(imgs[0]), "--model", str(onnx_path), "--tile", "512",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "export the model at 512" in r.output


def test_two_ranks_shard_and_rank0_merges(model, tmp_path):
    """README's `torchrun --nproc_per_node N cli.py detect …` (the repository's cli.py): two ranks shard the images
    and rank 0 merges exactly what one process finds. The images differ in size, so the grid model finds a
    different number in each and a mix-up of image ids would show."""
    _, onnx_path, root = model
    imgs = []
    for i, src in enumerate(sorted((root / "data/images").glob("*.png"))):
        imgs.append(str(tmp_path / f"w{i}.png"))
        cv2.imwrite(imgs[-1], cv2.imread(str(src))[:, :256 - 48 * i])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "fss", "detect", *imgs, "--model", str(onnx_path), "--out",
                             str(tmp_path / "one"), "--conf", "0.05"], env=env, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(ROOT / "cli.py"), "detect", *imgs, "--model", str(onnx_path), "--out",
                          str(tmp_path / "two"), "--conf", "0.05"], env=env, capture_output=True, text=True)
    assert two.returncode == 0, "\n".join(ln for ln in two.stderr.splitlines() if "elastic" not in ln)[-6000:]
    s2 = json.loads((tmp_path / "two/summary.json").read_text())
    assert s2["processed"] == 4
    one = json.loads((tmp_path / "one/predictions.json").read_text())
    both = json.loads((tmp_path / "two/predictions.json").read_text())
    assert sorted(map(json.dumps, one)) == sorted(map(json.dumps, both))
    counts = [sum(p["image_id"] == i for p in one) for i in range(1, 5)]
    assert len(set(counts)) == 4 and min(counts) > 0, counts


def test_prefetch_and_inline_batches_agree(bundled, shared_data):
    _, onnx_path = bundled
    image = cv2.imread(str(shared_data / "dota_devkit_example/images/P1888.png"))
    backend = OnnxBackend(onnx_path)
    a = TiledDetector(backend, overlap=64, batch=3, conf=0.05, prefetch=True)(image)
    b = TiledDetector(backend, overlap=64, batch=3, conf=0.05, prefetch=False)(image)
    assert len(a) > 0 and np.array_equal(a, b)


# ------------------------------------------------------------------------------ results users can trust (#15)
def _images(root, dest, n=2, names=None):
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(sorted((root / "data/images").glob("*.png"))[:n]):
        p = dest / (names[i] if names else f"im{i}.png")
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), cv2.imread(str(src)))
        out.append(p)
    return out


def _detect(*args, conf="0.001"):
    """conf 0.001 (the grid model detects at any conf below 0.62; a low one keeps the default)"""
    r = runner.invoke(app, ["detect", *map(str, args), "--conf", conf, "--overlap", "64"])
    assert "Traceback" not in r.output
    return r


def test_rerun_with_another_model_into_the_same_out_is_refused(model, tmp_path):
    ckpt, onnx_path, root = model
    imgs = _images(root, tmp_path / "imgs")
    out = tmp_path / "out"
    assert _detect(*imgs, "--model", onnx_path, "--out", out).exit_code == 0
    before = (out / "predictions.json").read_bytes()
    r = _detect(*imgs, "--model", ckpt, "--out", out)
    assert r.exit_code != 0 and "holds the results of another run" in r.output and "model_sha256" in r.output
    assert (out / "predictions.json").read_bytes() == before                     # nothing touched
    r = _detect(*imgs, "--model", ckpt, "--out", out, "--exist-ok")                # asked: replaced, all redone
    assert r.exit_code == 0, r.output
    assert json.loads((out / "summary.json").read_text())["skipped_done"] == 0
    assert json.loads((out / "run.json").read_text())["model"] == str(ckpt.resolve())


def test_default_out_increments_for_other_settings(model, tmp_path, monkeypatch):
    _, onnx_path, root = model
    imgs = _images(root, tmp_path / "imgs", n=1)
    monkeypatch.chdir(tmp_path)
    assert _detect(*imgs, "--model", onnx_path).exit_code == 0
    r = runner.invoke(app, ["detect", str(imgs[0]), "--model", str(onnx_path), "--conf", "0.5", "--overlap", "64"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "runs/detect/run.json").read_text())["conf"] == 0.001
    assert json.loads((tmp_path / "runs/detect2/run.json").read_text())["conf"] == 0.5
    assert json.loads((tmp_path / "runs/detect2/summary.json").read_text())["processed"] == 1


def test_changed_image_and_truncated_record_are_redone(model, tmp_path):
    _, onnx_path, root = model
    imgs = _images(root, tmp_path / "imgs")
    out = tmp_path / "out"
    assert _detect(*imgs, "--model", onnx_path, "--out", out).exit_code == 0
    cv2.imwrite(str(imgs[0]), cv2.flip(cv2.imread(str(imgs[0])), 1))            # same path, new content
    records = sorted((out / ".per_image").glob("*.json"))
    other = next(r for r in records if json.loads(r.read_text())["file"] == str(imgs[1]))
    other.write_text(other.read_text()[:20])                                    # e.g. disk full mid-write
    r = _detect(*imgs, "--model", onnx_path, "--out", out)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processed"] == 2 and summary["skipped_done"] == 0


def test_same_stem_inputs_get_distinct_outputs(model, tmp_path):
    _, onnx_path, root = model
    imgs = _images(root, tmp_path, n=3, names=["a/x.png", "b/x.png", "x.jpg"])
    out = tmp_path / "out"
    r = _detect(*imgs, "--model", onnx_path, "--out", out, "--save-images")
    assert r.exit_code == 0, r.output
    assert len(list((out / "yolo").glob("x-*.txt"))) == 3 and len(list((out / "images").glob("x-*.jpg"))) == 3
    names = {im["name"] for im in json.loads((out / "images.json").read_text())["images"]}
    assert len(names) == 3
    ids = {line.split()[0] for f in (out / "dota").iterdir() for line in f.read_text().splitlines()}
    assert ids == names                                              # the grid: every image has detections


def test_max_det_caps_and_warns(model, tmp_path):
    _, onnx_path, root = model
    imgs = _images(root, tmp_path / "imgs", n=1)
    out = tmp_path / "out"
    r = _detect(*imgs, "--model", onnx_path, "--out", out, "--max-det", "1")
    assert r.exit_code == 0, r.output
    assert "--max-det cap" in r.output and imgs[0].name in r.output
    assert len(json.loads((out / "predictions.json").read_text())) == 1
    assert _detect(*imgs, "--model", onnx_path, "--out", tmp_path / "o2", "--max-det", "0").exit_code != 0


def test_default_cap_scales_with_the_image_area(model, tmp_path, monkeypatch):
    """By default a large scene keeps as many detections per pixel as a small one (10,000 per 4000² px, at least
    10,000): a fixed 10,000 silently cut a dense 12,000² scene of 13,500 objects. An explicit --max-det is absolute."""
    from fss_core import defaults

    assert defaults.max_det_for(4000, 4000) == 10_000 and defaults.max_det_for(100, 50) == 10_000
    assert defaults.max_det_for(30_000, 30_000) == 562_500 and defaults.max_det_for(4001, 4000) == 10_003
    assert defaults.max_det_for(30_000, 30_000, 7) == 7
    _, onnx_path, root = model
    small = _images(root, tmp_path / "imgs", n=1)[0]
    big = tmp_path / "imgs/big.png"
    cv2.imwrite(str(big), np.tile(cv2.imread(str(small)), (2, 2, 1)))          # 4 × the area
    monkeypatch.setattr(defaults, "MAX_DET", 5)                                # the same rule, scaled down
    monkeypatch.setattr(defaults, "MAX_DET_AREA", 256 * 256)
    def counts(out):
        ids = {im["id"]: im["name"] for im in json.loads((out / "images.json").read_text())["images"]}
        kept = [ids[p["image_id"]] for p in json.loads((out / "predictions.json").read_text())]
        return {name: kept.count(name) for name in ids.values()}

    r = _detect(small, big, "--model", onnx_path, "--out", tmp_path / "auto")
    assert r.exit_code == 0, r.output
    n = counts(tmp_path / "auto")         # the grid holds 320 per tile: every cap is reached, exactly
    assert n["big"] == 20 and n["im0"] == 5, n
    assert "default per-image cap (5 per 256×256 px of image, at least 5)" in r.output and "big.png" in r.output
    assert json.loads((tmp_path / "auto/summary.json").read_text())["max_det"] == "auto"
    r = _detect(small, big, "--model", onnx_path, "--out", tmp_path / "fixed", "--max-det", "7")
    assert r.exit_code == 0 and counts(tmp_path / "fixed")["big"] == 7 and "the --max-det cap (7)" in r.output


def test_disk_full_mid_run_is_one_line_and_resumes(model, tmp_path, monkeypatch):
    import errno

    import fss_deploy.folder_run as det

    _, onnx_path, root = model
    imgs = _images(root, tmp_path / "imgs", n=3)
    out = tmp_path / "out"
    real, calls = det.atomic_write, []

    def full_after_two(path, data):
        if path.parent.name == ".per_image":
            calls.append(path)
            if len(calls) > 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(det, "atomic_write", full_after_two)
    r = _detect(*imgs, "--model", onnx_path, "--out", out)
    assert r.exit_code != 0 and "No space left on device" in r.output and "rerun the same command" in r.output
    monkeypatch.setattr(det, "atomic_write", real)                       # space freed
    r = _detect(*imgs, "--model", onnx_path, "--out", out)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_done"] == 2 and summary["processed"] == 1


def test_greedy_nms_equals_opencv_nms_and_nmm_merges():
    """The sweep-based greedy merge, in NMS mode with IoU, keeps exactly what class-aware OpenCV NMS keeps on
    random dense boxes; NMM grows the kept box to the union; IOS catches a small box inside a large one;
    class-agnostic lets classes interact."""
    from fss_deploy.tiling import greedy_merge

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 2000, (3000, 2))
    wh = rng.uniform(8, 80, (3000, 2))
    dets = np.concatenate([xy, xy + wh, rng.uniform(0.05, 1, (3000, 1)), rng.integers(0, 3, (3000, 1))], 1)
    none = np.zeros(len(dets), bool)
    ref = merge(dets, none, np.arange(len(dets)), 0.5, max_det=10**6)                  # OpenCV path
    ours = greedy_merge(dets, 0.5, "iou", False, merge=False)
    assert len(ref) > 1000 and np.array_equal(ref, ours)
    pair = np.array([[0, 0, 10, 10, 0.9, 1], [2, 0, 12, 10, 0.6, 1]], float)
    assert greedy_merge(pair, 0.5).tolist() == [[0, 0, 12, 10, 0.9, 1]]               # union, the kept score
    inside = np.array([[0, 0, 100, 100, 0.9, 0], [10, 10, 30, 30, 0.8, 0]], float)   # IoU 0.04, IOS 1
    assert len(greedy_merge(inside, 0.5, "iou", merge=False)) == 2
    assert len(greedy_merge(inside, 0.5, "ios", merge=False)) == 1
    two_classes = np.array([[0, 0, 10, 10, 0.9, 0], [0, 0, 10, 10, 0.8, 1]], float)
    assert len(merge(two_classes, np.zeros(2, bool), np.arange(2))) == 2
    assert len(merge(two_classes, np.zeros(2, bool), np.arange(2), class_agnostic=True)) == 1
    with pytest.raises(ValueError, match="merge must be one of"):
        merge(pair, np.zeros(2, bool), np.arange(2), mode="wbf")


def test_merge_options_through_the_cli_change_the_run_identity(tmp_path):
    img = tmp_path / "s.png"
    from fss_train.data.synth import SynthConfig, make_scene

    cv2.imwrite(str(img), make_scene(SynthConfig(size=700, objects=30, seed=2), 0)[0])
    r = runner.invoke(app, ["detect", str(img), "--out", str(tmp_path / "o"), "--device", "cpu", "--merge", "nmm",
                            "--match", "ios", "--agnostic"])
    assert r.exit_code == 0, r.output
    ident = json.loads((tmp_path / "o/run.json").read_text())
    assert (ident["merge"], ident["match"], ident["class_agnostic"]) == ("nmm", "ios", True)
    r = runner.invoke(app, ["detect", str(img), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert r.exit_code == 1 and "merge 'nmm' -> 'nms'" in r.output
    r = runner.invoke(app, ["detect", str(img), "--out", str(tmp_path / "p"), "--merge", "wbf"])
    assert r.exit_code == 1 and "--merge must be one of nms, nmm" in r.output


def test_detector_api_takes_the_merge_options():
    from fss import Detector
    from fss_train.data.synth import SynthConfig, make_scene

    image = make_scene(SynthConfig(size=700, objects=30, seed=2), 0)[0]
    default = Detector(device="cpu")(image)[0]
    merged = Detector(device="cpu", merge="nmm", match="ios")(image)[0]
    assert len(merged) <= len(default) and len(merged) > 0
    with pytest.raises(ValueError, match="--match must be one of"):
        Detector(device="cpu", match="giou")


def test_classes_filter(model, tmp_path):
    """--classes keeps points whose best class is wanted (Ultralytics' classes=: not re-labelled to the next best
    class), before NMS and the cap; names or indices; run.json records it, so a rerun without it is refused."""
    import torch

    from fss_core.nn.postprocess import postprocess
    from fss_deploy.detect import resolve_classes

    raw = torch.tensor([[[0, 0, 10, 10, 0.9, 0.8, 0.0], [20, 20, 30, 30, 0.1, 0.0, 0.7],
                         [40, 40, 50, 50, 0.0, 0.6, 0.0]]])          # (1, 3, 4 + 3): best classes 0, 2, 1
    assert postprocess(raw, 0.25)[0][:, 5].tolist() == [0, 2, 1]
    assert postprocess(raw, 0.25, classes=[1, 2])[0][:, 5].tolist() == [2, 1]      # point 0 is not kept as a 1
    names = ["small-vehicle", "ship", "plane"]
    assert resolve_classes("Ship, 2", names) == (1, 2) and resolve_classes(["plane"], names) == (2,)
    assert resolve_classes(None, names) is None and resolve_classes("", names) is None
    with pytest.raises(ValueError, match=r"'car' is not a class of this model .*0…2: small-vehicle, ship, plane"):
        resolve_classes("ship,car", names)

    _, onnx_path, root = model
    imgs = _images(root, tmp_path / "imgs")
    r = _detect(*imgs, "--model", onnx_path, "--out", tmp_path / "all")
    assert r.exit_code == 0, r.output
    every = json.loads((tmp_path / "all/predictions.json").read_text())
    cats = {c["id"]: c["name"] for c in json.loads((tmp_path / "all/images.json").read_text())["categories"]}
    assert {cats[p["category_id"]] for p in every} == set(GRID_CLASSES)   # the grid: cars and ships
    wanted = [next(i for i, name in cats.items() if name == "ship")]
    r = _detect(*imgs, "--model", onnx_path, "--out", tmp_path / "one", "--classes", cats[wanted[0]])
    assert r.exit_code == 0, r.output
    kept = json.loads((tmp_path / "one/predictions.json").read_text())
    assert kept and {p["category_id"] for p in kept} == set(wanted)
    assert len(kept) == sum(p["category_id"] == wanted[0] for p in every)
    assert json.loads((tmp_path / "one/run.json").read_text())["classes"] == [cats[wanted[0]]]
    r = _detect(*imgs, "--model", onnx_path, "--out", tmp_path / "one")
    assert r.exit_code != 0 and "classes" in r.output
    r = _detect(*imgs, "--model", onnx_path, "--out", tmp_path / "bad", "--classes", "no-such-class")
    assert r.exit_code != 0 and "'no-such-class' is not a class of this model" in r.output


def test_the_tile_plan_is_lazy_and_equals_the_grid():
    """plan_tiles materialised every tile first: a sparse 200,000² GeoTIFF at tile 256 used 3.0 GB before its first
    tile ran. The plan is now two lists of origins; its tiles, made on demand, are the grid's."""
    import tracemalloc

    from fss_core.tiles import tile_grid

    plan = plan_tiles(1800, 1100, 512, 100)
    assert [(t.x, t.y) for t in plan] == tile_grid(1800, 1100, 512, 100) and len(plan) == len(list(plan))
    assert plan[-1] == plan[len(plan) - 1] == Tile(1288, 588, 512, 512) and plan[1:3] == list(plan)[1:3]
    tracemalloc.start()
    huge = plan_tiles(200_000, 200_000, 256, 51)
    assert len(huge) == 976 ** 2 and huge[-1].x + huge[-1].width == 200_000          # step 205: 976 per side
    assert tracemalloc.get_traced_memory()[1] < 1_000_000                 # bytes, for 952,576 tiles
    tracemalloc.stop()


def test_every_output_format_has_one_writer():
    """One registry: the formats the CLI offers are exactly the writers that exist (a new format is one class in
    writers.py and its name in fss_core.defaults.FORMATS)."""
    from fss_core.defaults import FORMATS
    from fss_deploy.writers import WRITERS

    assert tuple(WRITERS) == FORMATS

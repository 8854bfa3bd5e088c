"""benchmarks/dota_large_objects.py: its matching is COCOeval's, so its AP50 of a size bin is pycocotools'."""

import contextlib
import io
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import dota_large_objects as lo  # noqa: E402


def _gt(i, img, x, y, w, h, crowd=0):
    return {"id": i, "image_id": img, "category_id": 1, "bbox": [x, y, w, h], "area": w * h, "iscrowd": crowd}


def test_each_false_positive_gets_its_kind():
    big, small = _gt(1, 1, 100, 100, 60, 60), _gt(2, 1, 300, 300, 40, 40)
    dets = [{"bbox": [100, 100, 60, 60], "score": 0.9},      # the big object: TP
            {"bbox": [102, 101, 60, 60], "score": 0.8},      # the same object again: duplicate
            {"bbox": [130, 130, 60, 60], "score": 0.7},      # the big object, box off: loose
            {"bbox": [290, 290, 60, 60], "score": 0.6},      # a 60 px box over the 40 px object: smaller
            {"bbox": [600, 600, 60, 60], "score": 0.5},      # nothing there: background
            {"bbox": [300, 300, 40, 40], "score": 0.4}]      # the small object itself: outside the bin, ignored
    out = lo.match_image(dets, [big, small], [small], 48 * 48)
    assert [o[1] for o in out] == ["tp", "duplicate", "loose", "smaller", "background"]
    assert out[3][2] == pytest.approx(1.5)                   # 60 px box over a 40 px object


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bin_ap50_equals_pycocotools(seed):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for img in (1, 2, 3):
        for _ in range(12):
            x, y, w, h = *rng.uniform(0, 400, 2), *rng.uniform(20, 90, 2)
            gts.append(_gt(len(gts) + 1, img, x, y, w, h, crowd=int(rng.random() < 0.15)))
        for g in [g for g in gts if g["image_id"] == img]:
            for _ in range(3):
                x, y, w, h = g["bbox"]
                j = rng.normal(0, 0.15, 4) * [w, h, w, h]
                dets.append({"image_id": img, "category_id": 1, "bbox": [x + j[0], y + j[1], w + j[2], h + j[3]],
                             "score": float(rng.random())})
    outcomes = []
    for img in (1, 2, 3):
        mine = [g for g in gts if g["image_id"] == img]
        outcomes += lo.match_image([d for d in dets if d["image_id"] == img], mine,
                                   [g for g in mine if g["area"] < 48 * 48], 48 * 48)
    num_gt = sum(g["area"] >= 48 * 48 and not g["iscrowd"] for g in gts)
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = {"images": [{"id": i} for i in (1, 2, 3)], "annotations": gts,
                      "categories": [{"id": 1, "name": "x"}]}
        cg.createIndex()
        ev = COCOeval(cg, cg.loadRes(dets), "bbox")
        ev.params.areaRng, ev.params.areaRngLbl = [[48.0 * 48.0, 1e10]], ["big"]
        ev.params.iouThrs = np.array([0.5])
        ev.evaluate()
        ev.accumulate()
    assert lo.ap50(outcomes, num_gt) == pytest.approx(float(ev.eval["precision"][0, :, 0, 0, -1].mean()), abs=1e-9)

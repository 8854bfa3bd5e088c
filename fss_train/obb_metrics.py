"""Oriented-box evaluation: DOTA Task1 exactly as the devkit's ``dota_evaluation_task1.py``, and a COCO-style
rotated mAP@[.5:.95] beside it, both on exact polygon IoU (fss_core.polygon_iou).

    fss eval --data DOTA_FOLDER --predictions TASK1_FOLDER --metric dota        # the CLI (fss_train/scoring.py)

The devkit's rules, reproduced (tests/fixtures/dota_task1: its own APs on a case with difficult objects, duplicates
and non-convex polygons, made by benchmarks/dota_devkit_fixture.py):

* per class, detections by descending score; each takes the ground truth of its image with the highest polygon IoU
  (the first on ties) — if that IoU is > 0.5 (strictly) and the ground truth is difficult (flag 1 or 2), the
  detection is neither a true nor a false positive; if it is free, a true positive; if already taken, a false
  positive (there is no fallback to the second-best ground truth);
* difficult ground truths are not counted among the positives and are never taken;
* precision is tp / max(tp + fp, eps); AP is VOC07's 11-point AP (thresholds ``np.arange(0, 1.1, 0.1)``, so
  "0.3" is 0.30000000000000004, as in the devkit) or, as an option, VOC12's area under the interpolated curve.

Where fss differs on purpose: detections with equal scores keep their file order (the devkit's sort is not stable);
a class without positives is reported as such and left out of the mean (the devkit's voc12 AP is NaN there);
ground-truth lines the reader refuses (unparsable, zero-area) are reported, not counted.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from fss_core.boxes import overlapping_across
from fss_core.fileio import safe_name
from fss_core.polygon_iou import polygon_iou_aligned
from fss_core.rbox import poly_envelope
from fss_train.data.records import Dataset, Problem, record_polygons
from fss_train.metrics import voc07_ap

AP_KINDS = ("voc07", "voc12")
COCO_THRESHOLDS = np.linspace(0.5, 0.95, 10)        # COCO's IoU thresholds .50:.05:.95
COCO_RECALLS = np.linspace(0.0, 1.0, 101)           # COCO's 101 recall points


def voc12_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010+ AP: the area under the precision envelope at every recall change (devkit ``use_07_metric=False``)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def read_dota_task1(folder: str | Path, ds: Dataset) -> tuple[list[dict], list[Problem]]:
    """``Task1_<class>.txt`` files (lines ``image score x1 y1 … x4 y4``, DOTA's submission format) -> detections
    ``{"image_id", "class" (index into ds.classes), "score", "poly" (8 floats)}`` and the problems: a bad line or a
    line of an image the dataset lacks is reported with file and line and skipped. Files of classes the dataset
    lacks are not read (reported once)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder of DOTA Task1 files")
    ids = {rec.path.stem: rec.image_id for rec in ds.records}
    ids |= {safe_name(stem): i for stem, i in list(ids.items())}   # the name detect gives an unsafe or long stem
    known = {f"Task1_{safe_name(name)}.txt": c for c, name in enumerate(ds.classes)}
    dets, problems = [], []
    files = sorted(folder.glob("Task1_*.txt"))
    if not files:
        raise ValueError(f"{folder}: no Task1_<class>.txt files")
    for f in files:
        if f.name not in known:
            problems.append(Problem(str(f), None, "a class the ground truth does not have", "file skipped"))
            continue
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            try:
                values = [float(v) for v in parts[1:]]
                if len(values) != 9 or not all(math.isfinite(v) for v in values):
                    raise ValueError
            except ValueError:
                problems.append(Problem(str(f), n, f"expected 'image score x1 y1 … x4 y4', got {line!r:.80}",
                                        "skipped"))
                continue
            if parts[0] not in ids:
                problems.append(Problem(str(f), n, f"image {parts[0]!r} is not in the ground truth", "skipped"))
                continue
            dets.append({"image_id": ids[parts[0]], "class": known[f.name], "score": values[0], "poly": values[1:]})
    return dets, problems


def _class_matches(ds: Dataset, dets: list[dict], c: int, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                                                 int]:
    """For class ``c``: per IoU threshold, the true- and false-positive flags of its detections by descending score
    (T, D) each, and the number of positives (non-difficult ground truths)."""
    mine = sorted((d for d in dets if d["class"] == c), key=lambda d: -d["score"])     # stable: file order on ties
    gts = {}
    npos = 0
    for rec in ds.records:
        sel = rec.labels == c
        gts[rec.image_id] = (record_polygons(rec)[sel].astype(np.float64), rec.difficult[sel] > 0)
        npos += int((~gts[rec.image_id][1]).sum())
    tp = np.zeros((len(thresholds), len(mine)))
    fp = np.zeros((len(thresholds), len(mine)))
    taken = {image_id: np.zeros((len(thresholds), len(g[0])), bool) for image_id, g in gts.items()}
    best = _best_overlaps(mine, gts)
    for k, d in enumerate(mine):
        ovmax, jmax = best[k]
        difficult = gts[d["image_id"]][1]
        for t, thr in enumerate(thresholds):
            if ovmax > thr:
                if difficult[jmax]:
                    continue
                if not taken[d["image_id"]][t, jmax]:
                    tp[t, k] = 1
                    taken[d["image_id"]][t, jmax] = True
                else:
                    fp[t, k] = 1
            else:
                fp[t, k] = 1
    return tp, fp, npos


def _best_overlaps(dets: list[dict], gts: dict) -> list[tuple[float, int]]:
    """(highest polygon IoU, index of the first ground truth reaching it) of each detection in its image; (-1, -1)
    for an image without ground truths of the class. One batched IoU per image."""
    out: list[tuple[float, int]] = [(-1.0, -1)] * len(dets)
    by_image: dict[int, list[int]] = {}
    for k, d in enumerate(dets):
        by_image.setdefault(d["image_id"], []).append(k)
    for image_id, ks in by_image.items():
        polys = gts[image_id][0]
        if not len(polys):
            continue
        det_polys = torch.tensor([dets[k]["poly"] for k in ks], dtype=torch.float64)      # (D, 8)
        iou = _sparse_ious(det_polys, torch.from_numpy(polys))                                 # (D, G)
        for row, k in zip(iou, ks):
            j = int(row.argmax())
            out[k] = (float(row[j]), j)
    return out


def _sparse_ious(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """(D, 8) × (G, 8) polygons -> (D, G) IoU, exact where the envelopes overlap and 0 elsewhere (a scene's
    10^4 detections against 10^3 objects: a few thousand exact pairs, not 10^7)."""
    i, j = overlapping_across(poly_envelope(a), poly_envelope(b))
    out = np.zeros((len(a), len(b)))
    if len(i):
        out[i.numpy(), j.numpy()] = polygon_iou_aligned(a[i], b[j]).numpy()
    return out


def task1_eval(ds: Dataset, dets: list[dict], iou_threshold: float = 0.5, ap: str = "voc07") -> dict:
    """DOTA Task1 mAP (module doc) of oriented detections (as ``read_dota_task1`` gives them) on an oriented
    dataset: ``{"mAP50", "ap": ap, "per_class": {class: AP}, "positives": {class: count}}``; classes without
    positives are left out of ``per_class`` and of the mean. ``ap`` is voc07 (the devkit's default) or voc12."""
    if ap not in AP_KINDS:
        raise ValueError(f"ap must be one of {AP_KINDS}, got {ap!r}")
    score = voc07_ap if ap == "voc07" else voc12_ap
    per_class, positives = {}, {}
    for c, name in enumerate(ds.classes):
        tp, fp, npos = _class_matches(ds, dets, c, np.array([iou_threshold]))
        positives[name] = npos
        if npos == 0:
            continue
        tp, fp = np.cumsum(tp[0]), np.cumsum(fp[0])
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        per_class[name] = score(tp / npos, precision) if len(tp) else 0.0
    mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return {"mAP50": mean, "ap": ap, "per_class": per_class, "positives": positives}


def rotated_coco_map(ds: Dataset, dets: list[dict]) -> dict:
    """COCO-style rotated mAP on polygon IoU: the devkit's matching (difficult ignored, no fallback) at each IoU
    threshold .50:.05:.95, COCO's 101-point interpolated AP, averaged over thresholds and classes with positives.
    ``{"mAP": …, "mAP50": …, "mAP75": …, "per_class": {class: mAP}}``. Not COCOeval: no area ranges, no
    detection cap, crowd = difficult."""
    per_class, at = {}, []
    for c, name in enumerate(ds.classes):
        tp, fp, npos = _class_matches(ds, dets, c, COCO_THRESHOLDS)
        if npos == 0:
            continue
        aps = []
        for t in range(len(COCO_THRESHOLDS)):
            ctp, cfp = np.cumsum(tp[t]), np.cumsum(fp[t])
            recall = ctp / npos
            precision = np.maximum.accumulate((ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps))[::-1])[::-1]
            idx = np.searchsorted(recall, COCO_RECALLS, side="left")
            aps.append(float(np.mean([precision[i] if i < len(precision) else 0.0 for i in idx])))
        per_class[name] = float(np.mean(aps))
        at.append(aps)
    if not at:
        return {"mAP": 0.0, "mAP50": 0.0, "mAP75": 0.0, "per_class": {}}
    at = np.array(at)                                                   # (classes, thresholds)
    return {"mAP": float(at.mean()), "mAP50": float(at[:, 0].mean()), "mAP75": float(at[:, 5].mean()),
            "per_class": per_class}

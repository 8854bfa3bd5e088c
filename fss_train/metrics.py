"""Evaluation: COCO metrics (pycocotools' COCOeval, run by faster-coco-eval's C++ port of it by default), and
the DOTA devkit's VOC07 metric.

COCO engines: ``faster-coco-eval`` computes pycocotools' COCOeval in C++ — the same precision/recall arrays (equal
to 2e-16 on a 4000 px scene with 10,000 detections, 70 s → 1.3 s; the parity tests compare the two on every
fixture) — and ``pycocotools`` is the reference itself. ``engine="auto"`` uses the first that imports.

Predictions are dicts ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` (COCO
results format) with category ids 1..C in ``Dataset.classes`` order, or the ids of the
original COCO json when scoring against it.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from fss_core.boxes import box_iou
from fss_core.defaults import CONF, IOU
from fss_core.fileio import safe_name
from fss_train.data.records import Dataset

COCO_STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def coco_gt_from_dataset(ds: Dataset) -> dict:
    """An in-memory COCO ground truth: ids 1..C, difficult objects as iscrowd (neither counted nor penalised)."""
    images, anns = [], []
    for rec in ds.records:
        images.append({"id": rec.image_id, "file_name": rec.path.name, "width": rec.width, "height": rec.height})
        for k in range(len(rec.labels)):
            x1, y1, x2, y2 = (float(v) for v in rec.boxes[k])
            anns.append({"id": len(anns) + 1, "image_id": rec.image_id, "category_id": int(rec.labels[k]) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                         "iscrowd": int(rec.difficult[k] > 0)})
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(ds.classes)]
    return {"images": images, "annotations": anns, "categories": cats}


def suggested_cap(most_objects: int) -> int:
    """A per-image detection cap for images of up to ``most_objects`` objects: 1.5× that, rounded up to hundreds."""
    return -(-int(most_objects) * 3 // 200) * 100


def detection_cap_advice(gt: dict, max_dets: int, option: str = "--max-dets {n}") -> str | None:
    """A warning when images hold more scored ground truths (not crowd/difficult) than the per-image detection cap
    COCO scores: their recall, and so AP, cannot reach 1 whatever the model — a dense aerial tile of 1,500 vehicles
    under COCO's default of 100. ``option`` names the setting that raises it (``{n}``: the suggested cap). None when
    every image fits."""
    counts: dict = {}
    for a in gt.get("annotations") or []:
        if not a.get("iscrowd"):
            counts[a["image_id"]] = counts.get(a["image_id"], 0) + 1
    over = [c for c in counts.values() if c > max_dets]
    if not over:
        return None
    suggest = suggested_cap(max(over))
    return (f"{len(over)} of {len(gt.get('images') or [])} images {'holds' if len(over) == 1 else 'hold'} more "
            f"ground-truth objects than the {max_dets} "
            f"detections per image COCO scores (up to {max(over):,}): their recall, and so AP, cannot reach 1 "
            f"whatever the model; raise it ({option.format(n=suggest)})")


COCO_ENGINES = ("auto", "faster-coco-eval", "pycocotools")


def coco_engine(engine: str = "auto") -> tuple[str, type, type]:
    """(name with version, COCO class, COCOeval class) of a COCO evaluation engine."""
    if engine not in COCO_ENGINES:
        raise ValueError(f"COCO engine must be one of {', '.join(COCO_ENGINES)}, got {engine!r}")
    if engine in ("auto", "faster-coco-eval"):
        try:
            import faster_coco_eval
            from faster_coco_eval import COCO, COCOeval_faster
            return f"faster-coco-eval {faster_coco_eval.__version__}", COCO, COCOeval_faster
        except ImportError:
            if engine != "auto":
                raise ValueError("COCO engine faster-coco-eval is not installed (pip install faster-coco-eval)") \
                    from None
    from importlib.metadata import version

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    return f"pycocotools {version('pycocotools')}", COCO, COCOeval


def coco_eval(gt: dict | str | Path, predictions: list[dict] | str | Path, verbose: bool = False,
              max_dets: int = 100, engine: str = "auto") -> dict:
    """COCO bbox metrics; returns {name: value} with the 12 standard stats.

    ``max_dets`` is the per-image detection cap of AP and of "AR100", which is the recall at that cap (the name is
    pycocotools' for its default of 100; ``fss eval`` prints it as AR@N). Dense
    aerial images hold hundreds to thousands of objects: with 100 their recall is capped, so
    evaluate them with the detector's own limit (training uses ``max_det``)."""
    return coco_eval_details(gt, predictions, verbose, max_dets, engine)[0]


def coco_eval_details(gt: dict | str | Path, predictions: list[dict] | str | Path, verbose: bool = False,
                      max_dets: int = 100, engine: str = "auto") -> tuple[dict, dict]:
    """The 12 COCO stats and the details behind them: ``per_class`` {category name: {"AP", "AP50"}} (-1: the
    class has no ground truth), ``pr`` {name: precision at 101 recall points, IoU 0.5} for PR curves and
    ``engine`` (which COCOeval computed them, with its version)."""
    engine_name, COCO, COCOeval = coco_engine(engine)
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        coco_gt = _coco_from_dict(json.loads(Path(gt).read_text()) if isinstance(gt, (str, Path)) else gt, COCO)
        preds = json.loads(Path(predictions).read_text()) if isinstance(predictions, (str, Path)) else predictions
        if not preds:
            names = [c["name"] for c in coco_gt.loadCats(coco_gt.getCatIds())]
            return {k: 0.0 for k in COCO_STAT_NAMES}, {"per_class": {n: {"AP": 0.0, "AP50": 0.0} for n in names},
                                                       "pr": {}, "engine": engine_name}
        unknown = sorted({p.get("image_id") for p in preds if isinstance(p, dict)} - set(coco_gt.getImgIds()),
                         key=str)
        if unknown:
            raise ValueError(f"predictions name {len(unknown)} image id(s) the ground truth does not have "
                             f"(first: {unknown[:5]}); predictions and --data must describe the same images")
        coco_dt = coco_gt.loadRes(preds)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.maxDets = [1, 10, int(max_dets)]
        ev.evaluate()
        ev.accumulate()
        if max_dets == 100:
            ev.summarize()
            stats = list(ev.stats)
        else:       # pycocotools' summarize() hard-codes 100 for the headline AP: read its arrays instead
            stats = _stats_at(ev, int(max_dets))
    if verbose:
        print(sink.getvalue())
    return {k: float(v) for k, v in zip(COCO_STAT_NAMES, stats)}, _per_class(ev, coco_gt) | {"engine": engine_name}


def _per_class(ev, coco_gt) -> dict:
    """Per-category AP (IoU 0.50:0.95) and AP50 and the IoU-0.5 precision/recall curve, from ``ev.eval``
    (precision [T, R, K, A, M]) at area "all" and the largest detection cap."""
    prec = ev.eval["precision"][:, :, :, 0, -1]                                  # (T, R, K)
    t50 = int(np.where(np.isclose(ev.params.iouThrs, 0.5))[0][0])
    per_class, pr = {}, {}
    for k, cat_id in enumerate(ev.params.catIds):
        name = coco_gt.loadCats([cat_id])[0]["name"]
        p = prec[:, :, k]
        valid = p[p > -1]
        per_class[name] = {"AP": float(valid.mean()) if valid.size else -1.0,
                           "AP50": float(p[t50][p[t50] > -1].mean()) if (p[t50] > -1).any() else -1.0}
        if (p[t50] > -1).any():
            pr[name] = np.where(p[t50] > -1, p[t50], 0.0).round(4).tolist()
    return {"per_class": per_class, "pr": pr, "recall": [round(float(r), 2) for r in ev.params.recThrs]}


def confusion_matrix(gt: dict, predictions: list[dict], conf: float = CONF, iou: float = IOU) -> tuple[np.ndarray,
                                                                                                          list[str]]:
    """(C+1, C+1) counts, rows = predicted class, columns = true class, the last row/column "background"
    (as Ultralytics' val): detections scoring at least ``conf`` matched one to one to ground truths at IoU
    ``iou`` or more, whatever their class, highest IoU first; crowd/difficult ground truths left out.
    Returns the matrix and the class names (category order of ``gt``)."""
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)}
    bg = len(cats)
    m = np.zeros((bg + 1, bg + 1), np.int64)
    by_image_gt: dict = {}
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0):
            by_image_gt.setdefault(a["image_id"], []).append(a)
    by_image_dt: dict = {}
    for p in predictions:
        if p["score"] >= conf and p["category_id"] in index:
            by_image_dt.setdefault(p["image_id"], []).append(p)
    for image_id in set(by_image_gt) | set(by_image_dt):
        g, d = by_image_gt.get(image_id, []), by_image_dt.get(image_id, [])
        gb = np.array([a["bbox"] for a in g], np.float64).reshape(-1, 4)
        db = np.array([p["bbox"] for p in d], np.float64).reshape(-1, 4)
        gc = [index[a["category_id"]] for a in g]
        dc = [index[p["category_id"]] for p in d]
        matched_g, matched_d = set(), set()
        if len(g) and len(d):
            ious = box_iou(_xyxy(db), _xyxy(gb)).numpy()                         # (D, G)
            for di, gi in sorted(zip(*np.nonzero(ious >= iou)), key=lambda ij: -ious[ij]):
                if di not in matched_d and gi not in matched_g:
                    matched_d.add(di)
                    matched_g.add(gi)
                    m[dc[di], gc[gi]] += 1
        for di in set(range(len(d))) - matched_d:
            m[dc[di], bg] += 1                                                   # false positive
        for gi in set(range(len(g))) - matched_g:
            m[bg, gc[gi]] += 1                                                   # missed
    return m, [c["name"] for c in cats]


def _xyxy(xywh: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1))


def _stats_at(ev, max_dets: int) -> list[float]:
    """The 12 COCO summary numbers from ``ev.eval`` (precision [T, R, K, A, M], recall [T, K, A, M])
    with ``max_dets`` in place of 100."""
    p = ev.params

    def mean(ap: bool, iou: float | None = None, area: str = "all", mdet: int = max_dets) -> float:
        a = p.areaRngLbl.index(area)
        m = p.maxDets.index(mdet)
        x = ev.eval["precision"][..., a, m] if ap else ev.eval["recall"][..., a, m]
        if iou is not None:
            x = x[np.where(np.isclose(p.iouThrs, iou))[0]]
        x = x[x > -1]
        return float(x.mean()) if x.size else -1.0

    return [mean(True), mean(True, 0.5), mean(True, 0.75), mean(True, area="small"), mean(True, area="medium"),
            mean(True, area="large"), mean(False, mdet=1), mean(False, mdet=10), mean(False),
            mean(False, area="small"), mean(False, area="medium"), mean(False, area="large")]


def _coco_from_dict(gt: dict, COCO):
    coco = COCO()
    # pycocotools 2.0.10's loadRes copies 'info' unconditionally: ground truths without it (ours, and many
    # users' files) would fail there with KeyError
    coco.dataset = {"info": {}, "licenses": [], **gt}
    coco.createIndex()
    return coco


def voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007 11-point interpolated AP (the DOTA devkit's ``use_07_metric=True``)."""
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        p = precision[recall >= t].max() if (recall >= t).any() else 0.0
        ap += p / 11.0
    return float(ap)


def dota_eval(ds: Dataset, predictions: list[dict], iou_threshold: float = 0.5) -> dict:
    """Per-class VOC07 AP at IoU > threshold on axis-aligned boxes, as the DOTA devkit (Task2).

    Greedy matching by descending score; a detection matching a difficult GT is neither a true
    nor a false positive; difficult GTs are not counted in the recall.
    """
    by_image = {rec.image_id: rec for rec in ds.records}
    per_class = {}
    for c, name in enumerate(ds.classes):
        gts, npos = {}, 0
        for rec in ds.records:
            sel = rec.labels == c
            gts[rec.image_id] = {"boxes": rec.boxes[sel], "difficult": rec.difficult[sel] > 0,
                                 "used": np.zeros(int(sel.sum()), bool)}
            npos += int((~gts[rec.image_id]["difficult"]).sum())
        dets = [p for p in predictions if p["category_id"] == c + 1 and p["image_id"] in by_image]
        if npos == 0:
            continue
        dets.sort(key=lambda p: -p["score"])
        tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
        for d, det in enumerate(dets):
            g = gts[det["image_id"]]
            x, y, w, h = det["bbox"]
            bb = np.array([x, y, x + w, y + h])
            ovmax, jmax = -1.0, -1
            if len(g["boxes"]):
                gb = g["boxes"]
                ix = np.clip(np.minimum(gb[:, 2], bb[2]) - np.maximum(gb[:, 0], bb[0]) + 1, 0, None)
                iy = np.clip(np.minimum(gb[:, 3], bb[3]) - np.maximum(gb[:, 1], bb[1]) + 1, 0, None)
                inter = ix * iy
                union = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) +
                         (gb[:, 2] - gb[:, 0] + 1) * (gb[:, 3] - gb[:, 1] + 1) - inter)
                ov = inter / union
                jmax = int(ov.argmax())
                ovmax = float(ov[jmax])
            if ovmax > iou_threshold:
                if g["difficult"][jmax]:
                    continue
                if not g["used"][jmax]:
                    tp[d] = 1
                    g["used"][jmax] = True
                else:
                    fp[d] = 1
            else:
                fp[d] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / npos
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        per_class[name] = voc07_ap(recall, precision) if len(dets) else 0.0
    mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return {"mAP50": mean, "per_class": per_class}


def read_dota_task2(folder: str | Path, ds: Dataset, category_ids: dict[str, int] | None = None) -> list[dict]:
    """``Task2_<class>.txt`` lines ``image score xmin ymin xmax ymax`` -> COCO-style predictions (category id:
    ``category_ids[class]``, default the class index + 1); files of classes ``ds`` lacks are not read."""
    folder = Path(folder)
    ids = {rec.path.stem: rec.image_id for rec in ds.records}
    ids |= {safe_name(stem): i for stem, i in list(ids.items())}   # the name detect gives an unsafe or long stem
    preds = []
    for c, name in enumerate(ds.classes):
        f = folder / f"Task2_{safe_name(name)}.txt"      # the name detect writes it under
        if not f.is_file():
            continue
        for n, line in enumerate(f.read_text().splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            try:
                image, score, x1, y1, x2, y2 = parts[0], *(float(v) for v in parts[1:6])
            except ValueError:
                raise ValueError(f"{f}:{n}: expected 'image score xmin ymin xmax ymax', got {line!r}") from None
            if image not in ids:
                raise ValueError(f"{f}:{n}: image {image!r} is not in the dataset")
            cat = category_ids[name] if category_ids else c + 1
            preds.append({"image_id": ids[image], "category_id": cat, "bbox": [x1, y1, x2 - x1, y2 - y1],
                          "score": score})
    return preds

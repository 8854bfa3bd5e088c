"""Why is FSS behind ATSS on the large DOTA vehicles (≥ 48 px)? The false positives, by kind (issue #35 item 2).

For each finished ablation run folder (``config.yaml`` + ``last.pt``), on its validation tiles, one class at a time,
the detections whose box is in the size bin (sqrt(area) ≥ ``--min-side`` px) are matched as pycocotools' COCOeval
matches them at IoU 0.5 (by descending score, each to the unmatched in-bin non-crowd GT of highest IoU; a detection
matching only a crowd or out-of-bin GT is ignored), and every false positive is put in one kind:

* ``duplicate`` — IoU ≥ 0.5 with an in-bin GT that a higher-scoring detection already matched (NMS left two);
* ``loose`` — 0.1 ≤ IoU < 0.5 with an in-bin GT (the object found, the box off);
* ``smaller`` — neither, but IoU ≥ 0.1 with an object outside the bin, of any class (a box grown over a smaller
  object, or over several);
* ``background`` — none of these.

Reported per run: the in-bin GTs, true positives, false positives of each kind, the same counts among the detections
scoring above the lowest-scoring true positive that COCO's precision at the last reached recall depends on, and
AP50 of the bin (this matching, 101-point interpolation as COCOeval).

    nice -n 19 .venv/bin/python benchmarks/dota_large_objects.py RUNS/dotaprot-{fss,atss}-s{0,1,2} \\
        --md docs/results/dota_large_objects.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fss_core.checkpoint import load_model  # noqa: E402
from fss_core.fileio import atomic_write  # noqa: E402
from fss_train.config import TrainConfig  # noqa: E402
from fss_train.data import read_dataset  # noqa: E402
from fss_train.data.loader import DetectionDataset, make_loader  # noqa: E402
from fss_train.evaluation import predict  # noqa: E402
from fss_train.metrics import coco_gt_from_dataset  # noqa: E402

KINDS = ("duplicate", "loose", "smaller", "background")


def xyxy(bbox) -> list[float]:
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def coco_ious(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """(D, G) IoU as pycocotools' maskUtils.iou computes it for boxes: a crowd GT's is intersection / detection
    area. ``d``, ``g``: (D, 4), (G, 4) xyxy."""
    lt, rb = np.maximum(d[:, None, :2], g[None, :, :2]), np.minimum(d[:, None, 2:], g[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)                                          # (D, G)
    area_d, area_g = np.prod(d[:, 2:] - d[:, :2], 1), np.prod(g[:, 2:] - g[:, :2], 1)
    union = np.where(crowd[None], area_d[:, None], area_d[:, None] + area_g[None] - inter)
    return inter / np.maximum(union, 1e-12)


def match_image(dets: list[dict], gts: list[dict], others: list[dict], min_area: float) -> list[tuple]:
    """(score, outcome, side ratio) of every in-bin detection of one image and class that COCOeval does not ignore;
    outcome ``tp`` or a KINDS entry. The matching is ``COCOeval.evaluateImg``'s at IoU 0.5: by descending score, each
    detection to the GT of highest IoU ≥ 0.5, not-ignored GTs first, a matched non-crowd GT never twice; a detection
    matched to an ignored GT (crowd or outside the bin) is ignored, so is an unmatched one outside the bin.
    ``others``: the image's GTs of every class below the bin, for the kind ``smaller``, whose side ratio is
    sqrt(box area / area of the object it overlaps most); None for the other outcomes."""
    dets = sorted(dets, key=lambda d: -d["score"])
    if not dets:
        return []
    gts = sorted(gts, key=lambda g: not (g["area"] >= min_area and not g["iscrowd"]))     # not-ignored first
    ignored = np.array([not (g["area"] >= min_area and not g["iscrowd"]) for g in gts], dtype=bool)
    crowd = np.array([bool(g["iscrowd"]) for g in gts], dtype=bool)
    iou = coco_ious(np.array([xyxy(d["bbox"]) for d in dets]).reshape(-1, 4),
                    np.array([xyxy(g["bbox"]) for g in gts]).reshape(-1, 4), crowd)            # (D, G)
    iou_any = coco_ious(np.array([xyxy(d["bbox"]) for d in dets]).reshape(-1, 4),
                        np.array([xyxy(g["bbox"]) for g in others]).reshape(-1, 4), np.zeros(len(others), bool))
    taken = np.zeros(len(gts), dtype=bool)
    out = []
    for i, d in enumerate(dets):
        best, m = 0.5, -1
        for j in range(len(gts)):
            if taken[j] and not crowd[j]:
                continue
            if m > -1 and not ignored[m] and ignored[j]:
                break
            if iou[i, j] >= best:
                best, m = iou[i, j], j
        if m > -1:
            taken[m] = True
            if not ignored[m]:
                out.append((d["score"], "tp", None))
            continue
        if d["bbox"][2] * d["bbox"][3] < min_area:
            continue                                               # outside the bin and unmatched: ignored
        best_bin = iou[i][~ignored].max() if (~ignored).any() else 0.0
        near = (iou_any[i] >= 0.1).any() if len(others) else False
        kind = "duplicate" if best_bin >= 0.5 else "loose" if best_bin >= 0.1 else "smaller" if near else "background"
        ratio = (float(np.sqrt(d["bbox"][2] * d["bbox"][3] / others[int(iou_any[i].argmax())]["area"]))
                 if kind == "smaller" else None)           # the box's side against the object it grew over
        out.append((d["score"], kind, ratio))
    return out


def ap50(outcomes: list[tuple], num_gt: int) -> float | None:
    if num_gt == 0:
        return None
    order = sorted(outcomes, key=lambda o: -o[0])
    tp = np.cumsum([o[1] == "tp" for o in order])
    fp = np.cumsum([o[1] != "tp" for o in order])
    rec, prec = tp / num_gt, tp / np.maximum(tp + fp, 1)
    prec = np.maximum.accumulate(prec[::-1])[::-1] if len(prec) else prec
    at = np.searchsorted(rec, np.linspace(0, 1, 101), side="left")
    return float(np.mean([prec[k] if k < len(prec) else 0.0 for k in at]))


def measure(folder: Path, min_side: float) -> dict:
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    model, _ = load_model(folder / "last.pt")
    ds = read_dataset(cfg["val"])
    loader = make_loader(DetectionDataset(ds, cfg["imgsz"]), 8, shuffle=False, workers=0)
    s = TrainConfig()
    preds = predict(model, loader, torch.device("cpu"), conf=s.eval_conf, iou=s.eval_iou, max_det=s.max_det)
    gt = coco_gt_from_dataset(ds)
    min_area = min_side * min_side
    per_class = {}
    for cat in gt["categories"]:
        outcomes, num_gt = [], 0
        for img in gt["images"]:
            everything = [g for g in gt["annotations"] if g["image_id"] == img["id"]]
            gts = [g for g in everything if g["category_id"] == cat["id"]]
            num_gt += sum(g["area"] >= min_area and not g["iscrowd"] for g in gts)
            outcomes += match_image([p for p in preds if p["image_id"] == img["id"]
                                     and p["category_id"] == cat["id"]], gts,
                                    [g for g in everything if g["area"] < min_area], min_area)
        if num_gt:
            per_class[cat["name"]] = summarise(outcomes, num_gt)
    return {"run": folder.name, "assigner": cfg["assigner"], "seed": cfg["seed"], "per_class": per_class}


def summarise(outcomes: list[tuple], num_gt: int) -> dict:
    tp_scores = [sc for sc, o, _ in outcomes if o == "tp"]
    floor = min(tp_scores) if tp_scores else float("inf")
    counts = {k: sum(o == k for _, o, _ in outcomes) for k in ("tp", *KINDS)}
    above = {k: sum(o == k and sc > floor for sc, o, _ in outcomes) for k in KINDS}
    top = sorted(outcomes, key=lambda o: -o[0])[:num_gt]
    ratios = [r for sc, o, r in outcomes if o == "smaller" and sc > floor]
    return {"gts": num_gt, "counts": counts, "fp_above_lowest_tp": above, "ap50": ap50(outcomes, num_gt),
            "top_gts_detections": {k: sum(o == k for _, o, _ in top) for k in ("tp", *KINDS)},
            "smaller_above_lowest_tp_side_ratio_median": float(np.median(ratios)) if ratios else None}


def report(rows: list[dict], min_side: float) -> str:
    lines = [f"# Large objects (sqrt(area) ≥ {min_side:g} px) on the DOTA validation tiles: the false positives",
             "", "Produced by `benchmarks/dota_large_objects.py` (matching as COCOeval at IoU 0.5, detections at "
             "the training-time evaluation settings). `top N` = the N highest-scoring in-bin detections, N = the "
             "number of in-bin GTs.", "",
             "| run | class | GTs | AP50 | TP | FP duplicate | FP loose | FP smaller | FP background | FP above "
             "lowest TP (dup / loose / smaller / bg) | top N: TP / dup / loose / smaller / bg | smaller above "
             "lowest TP: box side / object side (median) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for name, c in r["per_class"].items():
            n, a, t = c["counts"], c["fp_above_lowest_tp"], c["top_gts_detections"]
            lines.append(f"| {r['run']} | {name} | {c['gts']} | {c['ap50']:.4f} | {n['tp']} | "
                         + " | ".join(str(n[k]) for k in KINDS) + " | " + " / ".join(str(a[k]) for k in KINDS)
                         + " | " + " / ".join(str(t[k]) for k in ("tp", *KINDS)) + " | "
                         + (f"{c['smaller_above_lowest_tp_side_ratio_median']:.2f}"
                            if c["smaller_above_lowest_tp_side_ratio_median"] is not None else "–") + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders (config.yaml + last.pt)")
    p.add_argument("--min-side", type=float, default=48.0)
    p.add_argument("--json", default=str(ROOT / "docs/results/dota_large_objects.json"))
    p.add_argument("--md", default=str(ROOT / "docs/results/dota_large_objects.md"))
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = [measure(Path(f), args.min_side) for f in args.runs]
    atomic_write(Path(args.json), json.dumps(rows, indent=1))
    atomic_write(Path(args.md), report(rows, args.min_side))
    print(report(rows, args.min_side))


if __name__ == "__main__":
    main()

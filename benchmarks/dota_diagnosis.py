"""Why does ATSS beat FSS on the DOTA tiles arm? Measurements by object size (issue #35 item 2; no verdicts here).

Given finished ablation run folders (``benchmarks/ablation.py``: ``<out>/<budget>/runs/dotaft-*``, each with
``config.yaml`` and ``last.pt`` / ``best.pt``), this measures on the DOTA validation tiles named in each run's
``config.yaml`` (and, as a supplement, the assignment statistics on its training tiles, un-augmented):

* COCO AP, AP50 and AR of the run's model (EMA weights, as training evaluates) by object size — side
  sqrt(area) < 12 px, 12–24, 24–48, ≥ 48 (pycocotools' COCOeval with custom ``areaRng``, the training-time
  thresholds and detection cap, the ground truth as training builds it: difficult objects are crowd) — and the
  number of ground truths per size bin;
* every assigner of ``fss_train/assigners`` (default parameters, as the study ran them) applied to the same
  model's raw predictions (eval mode, ``torch.no_grad``; called as ``engine.train_one_epoch`` calls it): positives
  per GT, the share of GTs with exactly one / zero positives, the distance of the positives from the GT centre in
  strides, their pyramid level; for FSS also the rescues, the dynamic k and the Gaussian prior's σ against the
  box size and the stride;
* the task alignment of ``fss eval --alignment`` (``fss_train/alignment.py``), overall and by size.

    cd REPO
    nice -n 19 .venv/bin/python benchmarks/ablation.py --budget decide --datasets dota \\
        --runs 'dotaft-fss-s0,dotaft-atss-s0,dotaft-tal-s0' --store SCRATCH/store --report SCRATCH/ablation.md \\
        --out SCRATCH/runs                                         # the re-runs (a store of their own)
    nice -n 19 .venv/bin/python benchmarks/ablation.py --budget decide --datasets dota \\
        --runs 'dotaft-fss-s0,dotaft-atss-s0' --store SCRATCH/repeat-store --report SCRATCH/repeat-ablation.md \\
        --out SCRATCH/repeat                                       # the same runs once more (repeatability)
    cp -a SCRATCH/runs/decide/data SCRATCH/detA/decide/    # the same tiles; so for detB; then, at once:
    nice -n 19 .venv/bin/python benchmarks/ablation.py --budget decide --datasets dota --runs dotaft-fss-s0 \\
        --store SCRATCH/detA-store --report SCRATCH/detA-ablation.md --out SCRATCH/detA   # and detB
    nice -n 19 .venv/bin/python benchmarks/dota_diagnosis.py SCRATCH/runs/decide/runs/dotaft-{fss,atss,tal}-s0 \\
        --rerun-store SCRATCH/store --extra SCRATCH/repeat/decide/runs/dotaft-{fss,atss}-s0 \\
        SCRATCH/det{A,B}/decide/runs/dotaft-fss-s0 --extra-store SCRATCH/repeat-store SCRATCH/repeat-store \\
        SCRATCH/detA-store SCRATCH/detB-store                  # -> docs/results/dota_diagnosis.{json,md}

Options: ``--extra`` (more run folders, e.g. repeats: COCO AP by size only, with ``--extra-store`` their summaries),
``--checkpoint best`` (default ``last``: the study's metric is the last epoch), ``--splits val`` (skip the training
tiles), ``--committed`` (the committed summaries compared against, default docs/results/ablation/decide),
``--json`` / ``--md`` (outputs), ``--threads`` (torch threads, default 1).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fss_core.boxes import box_iou, box_iou_aligned  # noqa: E402
from fss_core.checkpoint import load_model  # noqa: E402
from fss_core.fileio import atomic_write  # noqa: E402
from fss_core.nn import decode  # noqa: E402
from fss_train.alignment import candidates as align_candidates  # noqa: E402
from fss_train.alignment import per_gt as align_per_gt  # noqa: E402
from fss_train.alignment import task_alignment  # noqa: E402
from fss_train.assigners import ASSIGNERS, build_assigner  # noqa: E402
from fss_train.assigners.base import prepare_inputs  # noqa: E402
from fss_train.assigners.decide import resolve_conflicts  # noqa: E402
from fss_train.assigners.segments import seg_argmax, seg_count, seg_max, seg_topk_sum  # noqa: E402
from fss_train.config import TrainConfig  # noqa: E402
from fss_train.data import read_dataset  # noqa: E402
from fss_train.data.loader import DetectionDataset, make_loader  # noqa: E402
from fss_train.evaluation import predict  # noqa: E402
from fss_train.metrics import coco_eval_details, coco_gt_from_dataset  # noqa: E402

# object side sqrt(area) in px: the bins of the report (fit DOTA vehicles), and finer ones for the zero-positive table
BINS = ((0.0, 12.0, "<12"), (12.0, 24.0, "12–24"), (24.0, 48.0, "24–48"), (48.0, float("inf"), "≥48"))
FINE = ((0.0, 8.0, "<8"), (8.0, 12.0, "8–12"), (12.0, 16.0, "12–16"), (16.0, 24.0, "16–24"), (24.0, 32.0, "24–32"),
        (32.0, 48.0, "32–48"), (48.0, float("inf"), "≥48"))
LABELS = [b[2] for b in BINS] + ["all"]
ORDER = ["fss", "atss", "tal", "simota", "maxiou"]


def bin_of(side: np.ndarray, bins=BINS) -> np.ndarray:
    """Index of each side's bin (lower bound inclusive)."""
    edges = np.array([b[1] for b in bins[:-1]])
    return np.searchsorted(edges, side, side="right")


# ---------------------------------------------------------------------------------- COCO AP by size
def mean(x: np.ndarray) -> float | None:
    """Mean over the valid (> -1) entries of a COCOeval array; None when there are none."""
    return float(x[x > -1].mean()) if (x > -1).any() else None


def coco_by_size(gt: dict, preds: list[dict], max_dets: int) -> dict:
    """AP (0.50:0.95), AP50 and AR@max_dets per size bin from one pycocotools COCOeval with custom ``areaRng``
    (areas in px²; a bin's upper edge is exclusive up to float rounding), plus the project's own
    ``coco_eval_details`` for the whole set (the number training reports)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rngs = [[0.0, 1e10]] + [[lo * lo, np.nextafter(hi * hi, 0) if hi != float("inf") else 1e10] for lo, hi, _ in BINS]
    names = ["all"] + [b[2] for b in BINS]
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        cg = COCO()
        cg.dataset = json.loads(json.dumps(gt))
        cg.createIndex()
        ev = COCOeval(cg, cg.loadRes(preds), "bbox")
        ev.params.maxDets = [1, 10, int(max_dets)]
        ev.params.areaRng = rngs
        ev.params.areaRngLbl = names
        ev.evaluate()
        ev.accumulate()
    prec, rec = ev.eval["precision"], ev.eval["recall"]            # (T, R, K, A, M), (T, K, A, M)
    t50 = int(np.where(np.isclose(ev.params.iouThrs, 0.5))[0][0])
    cat_names = {c["id"]: c["name"] for c in gt["categories"]}
    out = {}
    for a, name in enumerate(names):
        p, r = prec[:, :, :, a, -1], rec[:, :, a, -1]
        per_class = {}
        for k, cid in enumerate(ev.params.catIds):
            if (p[:, :, k] > -1).any():
                per_class[cat_names[cid]] = {"AP": mean(p[:, :, k]), "AP50": mean(p[t50, :, k])}
        anns = [g for g in gt["annotations"] if rngs[a][0] <= g["area"] <= rngs[a][1]]
        out[name] = {"AP": mean(p), "AP50": mean(p[t50]), "AR": mean(r), "AR50": mean(r[t50]),
                     "num_gt": len(anns), "num_gt_scored": sum(1 for g in anns if not g["iscrowd"]),
                     "per_class": per_class}
    own, _ = coco_eval_details(gt, preds, max_dets=max_dets)
    out["project_coco_eval_all"] = {k: own[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
    out["area_ranges_px2"] = dict(zip(names, rngs))
    return out


# ---------------------------------------------------------------------------------- raw predictions
@torch.no_grad()
def raw_batches(model, loader, ds) -> list[dict]:
    """Per batch: the decoded predictions of the eval-mode model and the ground truths as the loader gives them
    (letterboxed input pixels), with each GT's original-pixel side and difficult flag."""
    model.eval()
    points = strides = None
    out = []
    for images, gt_boxes, gt_labels, gt_mask, metas in loader:
        if points is None:
            points, strides = model.points(images.shape[-2], images.shape[-1])
        pred_boxes, obj, cls = decode(model(images).float(), points, strides)
        B, M = gt_mask.shape
        side = torch.zeros(B, M)
        difficult = torch.zeros(B, M, dtype=torch.long)
        for b, meta in enumerate(metas):
            m = int(gt_mask[b].sum())
            wh = (gt_boxes[b, :m, 2:] - gt_boxes[b, :m, :2]).clamp(min=0)
            side[b, :m] = (wh[:, 0] * wh[:, 1]).sqrt() / meta["scale"]
            rec = ds.records[meta["index"]]
            if len(rec.difficult) == m:
                difficult[b, :m] = torch.as_tensor(rec.difficult)
        out.append({"pred_boxes": pred_boxes, "obj": obj, "cls": cls, "points": points, "strides": strides,
                    "gt_boxes": gt_boxes, "gt_labels": gt_labels, "gt_mask": gt_mask, "side": side,
                    "difficult": difficult, "scale": [m["scale"] for m in metas]})
    return out


def assigner_args(bt: dict) -> tuple:
    """The arguments ``engine.train_one_epoch`` passes to an assigner."""
    return (bt["cls"], bt["obj"], bt["pred_boxes"], bt["points"], bt["strides"], bt["gt_labels"].clamp(min=0),
            bt["gt_boxes"], bt["gt_mask"])


# ---------------------------------------------------------------------------------- assignment statistics
def per_gt_assignment(name: str, batches: list[dict]) -> dict[str, np.ndarray]:
    """Every real GT: side, its positives (count), and every positive: GT row, distance from the GT centre in
    strides (Euclidean, the positive's own stride), stride, inside the box, IoU(pred, GT); for FSS the extra
    per-GT quantities of its steps (candidates, k, σ, the level of i*, rescues)."""
    assigner = build_assigner(name)
    gts = {k: [] for k in ("side", "difficult", "n_pos")}
    pos = {k: [] for k in ("gt", "dist", "stride", "inside", "iou")}
    fss = {k: [] for k in ("n_cand", "k", "k_sum", "sigma_x", "sigma_y", "w", "h", "stride_star", "floored",
                           "n_pos_before_rescue", "steps_n_pos")}
    offset = 0
    for bt in batches:
        args = assigner_args(bt)
        res = assigner(*args)
        mask = bt["gt_mask"]
        B, M = mask.shape
        seg_all = torch.arange(B * M).view(B, M)
        real = mask.view(-1)
        row_of_seg = torch.full((B * M,), -1, dtype=torch.long)
        row_of_seg[real] = torch.arange(int(real.sum())) + offset
        b, a = torch.nonzero(res.fg_mask, as_tuple=True)
        g = res.gt_index[b, a]
        seg = seg_all[b, g]
        n_pos = torch.bincount(seg, minlength=B * M)
        gt = bt["gt_boxes"][b, g]
        pts, s = bt["points"][a], bt["strides"][a]
        centre = (gt[:, :2] + gt[:, 2:]) / 2
        gts["side"].append(bt["side"].view(-1)[real])
        gts["difficult"].append(bt["difficult"].view(-1)[real])
        gts["n_pos"].append(n_pos[real])
        pos["gt"].append(row_of_seg[seg])
        pos["dist"].append((pts - centre).norm(dim=1) / s)
        pos["stride"].append(s)
        pos["inside"].append(((pts > gt[:, :2]) & (pts < gt[:, 2:])).all(dim=1))
        pos["iou"].append(box_iou_aligned(bt["pred_boxes"][b, a], gt).clamp(0, 1))
        if name == "fss":
            for k, v in fss_extras(assigner, args).items():
                fss[k].append(v[real])
        offset += int(real.sum())
    out = {k: torch.cat(v).numpy() for k, v in gts.items()} | {f"pos_{k}": torch.cat(v).numpy() for k, v in pos.items()}
    if name == "fss":
        out |= {f"fss_{k}": torch.cat(v).numpy() for k, v in fss.items()}
        if not np.array_equal(out["fss_steps_n_pos"], out["n_pos"]):
            raise RuntimeError("FSSAssigner.steps() and the assigner disagree on the positives")
    return out


@torch.no_grad()
def fss_extras(assigner, args) -> dict[str, torch.Tensor]:
    """Per segment (B*M,): what ``FSSAssigner.steps`` decides for each GT, with i*'s stride recomputed exactly as
    step 4 does, and the positives before ``rescue_orphans``."""
    inp = prepare_inputs(*args)
    pairs = assigner.candidates(inp)
    st = assigner.steps(inp, pairs)
    seg, n = pairs.seg, pairs.num_seg
    P = st["P"]
    pts = inp.points[pairs.a]
    gt = inp.gt_boxes[pairs.b, pairs.g]
    centre_d2 = ((pts - (gt[:, :2] + gt[:, 2:]) / 2) ** 2).sum(dim=1)
    at_max = P == seg_max(P, seg, n)[seg]
    best = seg_argmax(torch.where(at_max, -centre_d2, torch.full_like(P, -torch.inf)), seg, n)
    valid = best >= 0
    stride_star = torch.full((n,), float("nan"))
    stride_star[valid] = inp.strides[pairs.a[best[valid]]]
    sigma = torch.full((n, 2), float("nan"))
    sigma[seg] = st["sigma"]
    wh = inp.gt_boxes.view(-1, 4)[:, 2:] - inp.gt_boxes.view(-1, 4)[:, :2]
    floored = ((assigner.sigma_min * stride_star[:, None]) > assigner.rho * wh).any(dim=1)
    quality = st["u"] * st["G"] if assigner.dynamic_k == "prior" else st["u"]
    before = resolve_conflicts(pairs, st["selected"], st["r"] if assigner.conflict == "score" else st["u"])
    return {"n_cand": seg_count(seg, n), "k": st["k"], "k_sum": seg_topk_sum(quality, seg, n, assigner.topq),
            "sigma_x": sigma[:, 0], "sigma_y": sigma[:, 1], "w": wh[:, 0], "h": wh[:, 1], "stride_star": stride_star,
            "floored": floored, "n_pos_before_rescue": seg_count(seg[before], n),
            "steps_n_pos": seg_count(seg[st["pos"]], n)}


def _f(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def summarise_assignment(d: dict[str, np.ndarray], fss: bool) -> dict:
    """Per size bin (and all): the statistics of the report."""
    gbin = bin_of(d["side"])
    pbin = gbin[d["pos_gt"]] if len(d["pos_gt"]) else np.zeros(0, int)
    out = {}
    for i, label in enumerate(LABELS):
        gsel = gbin == i if label != "all" else np.ones_like(gbin, bool)
        psel = pbin == i if label != "all" else np.ones_like(pbin, bool)
        n = d["n_pos"][gsel]
        dist = d["pos_dist"][psel]
        strides = d["pos_stride"][psel]
        row = {"num_gt": int(gsel.sum()), "num_pos": int(psel.sum()),
               "pos_per_gt_mean": _f(n.mean()) if n.size else None,
               "pos_per_gt_median": _f(np.median(n)) if n.size else None,
               "share_one_pos": _f((n == 1).mean()) if n.size else None,
               "share_zero_pos": _f((n == 0).mean()) if n.size else None,
               "dist_strides_mean": _f(dist.mean()) if dist.size else None,
               "dist_strides_p90": _f(np.percentile(dist, 90)) if dist.size else None,
               "share_pos_outside_box": _f(1 - d["pos_inside"][psel].mean()) if dist.size else None,
               "pos_iou_mean": _f(d["pos_iou"][psel].mean()) if dist.size else None,
               "pos_stride_share": {str(int(s)): _f((strides == s).mean()) if strides.size else None
                                    for s in (8, 16, 32)}}
        if fss:
            before = d["fss_n_pos_before_rescue"][gsel]
            k = d["fss_k"][gsel]
            ss = d["fss_stride_star"][gsel]
            sig = np.sqrt(d["fss_sigma_x"][gsel] * d["fss_sigma_y"][gsel])
            side = np.sqrt(d["fss_w"][gsel] * d["fss_h"][gsel])
            one_stride = np.exp(-0.5 * (ss / np.maximum(np.minimum(d["fss_sigma_x"][gsel], d["fss_sigma_y"][gsel]),
                                                        1e-9)) ** 2)
            row |= {"share_rescued": _f(((before == 0) & (n > 0)).mean()) if n.size else None,
                    "share_zero_before_rescue": _f((before == 0).mean()) if n.size else None,
                    "candidates_mean": _f(d["fss_n_cand"][gsel].mean()) if n.size else None,
                    "k_mean": _f(k.mean()) if n.size else None,
                    "share_k1": _f((k == 1).mean()) if n.size else None,
                    "k_sum_mean": _f(d["fss_k_sum"][gsel].mean()) if n.size else None,
                    "side_px_mean": _f(side.mean()) if n.size else None,
                    "sigma_px_mean": _f(sig.mean()) if n.size else None,
                    "sigma_over_side_mean": _f((sig / np.maximum(side, 1e-9)).mean()) if n.size else None,
                    "sigma_strides_mean": _f((sig / ss).mean()) if n.size else None,
                    "sigma_over_stride8_mean": _f((sig / 8.0).mean()) if n.size else None,
                    "share_sigma_floored": _f(d["fss_floored"][gsel].mean()) if n.size else None,
                    "prior_one_stride_mean": _f(one_stride.mean()) if n.size else None,
                    "stride_star_share": {str(s): _f((ss == s).mean()) if n.size else None for s in (8, 16, 32)}}
        out[label] = row
    fine = bin_of(d["side"], FINE)
    out["zero_pos_fine"] = {lab: {"num_gt": int((fine == i).sum()),
                                  "share_zero_pos": _f((d["n_pos"][fine == i] == 0).mean()) if (fine == i).any()
                                  else None}
                            for i, (_, _, lab) in enumerate(FINE)}
    return out


def subset_gts(d: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The per-GT arrays of the GTs ``keep`` selects and their positives (``pos_gt`` renumbered)."""
    new = np.full(keep.size, -1)
    new[keep] = np.arange(int(keep.sum()))
    psel = keep[d["pos_gt"]] if len(d["pos_gt"]) else np.zeros(0, bool)
    out = {k: v[keep] if not k.startswith("pos_") else v[psel] for k, v in d.items()}
    out["pos_gt"] = new[d["pos_gt"][psel]]
    return out


def gt_counts(d: dict[str, np.ndarray]) -> dict:
    """GTs per size bin by DOTA difficult flag (0 plain, 1 difficult, 2 truncated by the tiling)."""
    gbin = bin_of(d["side"])
    return {str(f): {lab: int(((gbin == i) & (d["difficult"] == f)).sum()) for i, lab in enumerate(LABELS[:-1])}
            | {"all": int((d["difficult"] == f).sum())} for f in (0, 1, 2)}


def small_gt_records(d: dict[str, np.ndarray], below: float = 24.0) -> list[dict]:
    """FSS's per-GT prior for every GT with side < ``below`` px (the table of σ against stride)."""
    rows = []
    for i in np.nonzero(d["side"] < below)[0]:
        rows.append({"side_px": round(float(d["side"][i]), 2), "w": round(float(d["fss_w"][i]), 2),
                     "h": round(float(d["fss_h"][i]), 2), "sigma_x": round(float(d["fss_sigma_x"][i]), 3),
                     "sigma_y": round(float(d["fss_sigma_y"][i]), 3), "stride_star": float(d["fss_stride_star"][i]),
                     "floored": bool(d["fss_floored"][i]), "candidates": int(d["fss_n_cand"][i]),
                     "k": int(d["fss_k"][i]), "k_sum": round(float(d["fss_k_sum"][i]), 4),
                     "n_pos": int(d["n_pos"][i]), "n_pos_before_rescue": int(d["fss_n_pos_before_rescue"][i]),
                     "difficult": int(d["difficult"][i])})
    return rows


# ---------------------------------------------------------------------------------- alignment by size
@torch.no_grad()
def alignment_by_size(batches: list[dict], radius: float = 2.5) -> dict:
    """``alignment.per_gt`` GT by GT (the candidate set of ``fss eval --alignment``), grouped by size bin."""
    acc = {k: [] for k in ("side", "spearman", "agree", "top1_iou", "best_iou", "top1_stride")}
    for bt in batches:
        for b in range(bt["gt_mask"].shape[0]):
            m = bt["gt_mask"][b]
            if not m.any():
                continue
            gt, labels = bt["gt_boxes"][b][m], bt["gt_labels"][b][m]
            score = bt["cls"][b][:, labels].T * bt["obj"][b][None]
            iou = box_iou(gt, bt["pred_boxes"][b])
            cand = align_candidates(gt, bt["points"], bt["strides"], radius)
            for j in torch.nonzero(cand.sum(1) >= 3).squeeze(1).tolist():
                r = align_per_gt(score[j:j + 1], iou[j:j + 1], cand[j:j + 1])
                acc["side"].append(float(bt["side"][b][m][j]))
                idx = torch.nonzero(cand[j]).squeeze(1)
                acc["top1_stride"].append(float(bt["strides"][idx[score[j, idx].argmax()]]))
                for k in ("spearman", "agree", "top1_iou", "best_iou"):
                    acc[k].append(float(r[k][0]))
    a = {k: np.array(v) for k, v in acc.items()}
    gbin = bin_of(a["side"]) if a["side"].size else np.zeros(0, int)
    out = {}
    for i, label in enumerate(LABELS):
        sel = gbin == i if label != "all" else np.ones_like(gbin, bool)
        out[label] = {"num_gt": int(sel.sum()),
                      **{name: _f(a[k][sel].mean()) if sel.any() else None for name, k in
                         (("rank_consistency", "spearman"), ("top1_agreement", "agree"), ("top1_iou", "top1_iou"),
                          ("best_iou", "best_iou"))},
                      "top1_stride_share": {str(s): _f((a["top1_stride"][sel] == s).mean()) if sel.any() else None
                                            for s in (8, 16, 32)}}
    return out


# ---------------------------------------------------------------------------------- one run
def committed_summary(folder: Path, store: Path | None) -> dict | None:
    f = store / f"{folder.name}.json" if store else None
    if not f or not f.is_file():
        return None
    s = json.loads(f.read_text())
    last = s["rows"][-1]
    return {"file": str(f), "epoch": last["epoch"], **{k: last.get(k) for k in ("AP", "AP50", "AP75", "APs",
                                                                                  "pos_per_gt")},
            "alignment": s.get("alignment"), "commit": s["meta"]["commit"], "finished": s["meta"]["finished"],
            "wall_s": s["meta"]["wall_s"]}


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def diagnose(folder: Path, which: str, splits: list[str], committed: Path, rerun_store: Path | None,
             extra: bool = False) -> dict:
    """Every measurement of one run folder; ``extra``: COCO by size on the validation tiles only."""
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    ckpt_path = folder / f"{which}.pt"
    if not ckpt_path.is_file():
        other = folder / ("best.pt" if which == "last" else "last.pt")
        if not other.is_file():
            raise FileNotFoundError(f"{folder}: neither last.pt nor best.pt")
        ckpt_path = other
    model, ckpt = load_model(ckpt_path)
    model.eval()
    settings = TrainConfig()
    rows = json.loads((folder / "results.json").read_text()) if (folder / "results.json").is_file() else []
    evals = [r for r in rows if r.get("AP") is not None and r["AP"] == r["AP"]]
    run = {"folder": str(folder), "checkpoint": str(ckpt_path), "checkpoint_epoch": int(ckpt.get("epoch", -1)) + 1,
           "epochs_planned": cfg["epochs"], "assigner": cfg["assigner"], "assigner_params_trained":
           (ckpt.get("assigner") or {}).get("params"), "seed": cfg["seed"], "train": cfg["data"], "val": cfg["val"],
           "imgsz": cfg["imgsz"], "weights_init": f"{cfg.get('weights')} ({cfg.get('weights_parts')})",
           "last_eval_in_results_json": {k: evals[-1].get(k) for k in ("epoch", "AP", "AP50", "AP75", "APs")}
           if evals else None,
           "committed_summary": committed_summary(folder, committed),
           "rerun_summary": committed_summary(folder, rerun_store), "extra": extra, "splits": {},
           "results_sha256_no_timing": hashlib.sha256(json.dumps(
               [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in rows],
               sort_keys=True).encode()).hexdigest(), "train_annotations_sha256": _sha(Path(cfg["data"])),
           "val_annotations_sha256": _sha(Path(cfg["val"]))}
    if extra:
        splits = ["val"]
    for split in splits:
        path = cfg["val"] if split == "val" else cfg["data"]
        ds = read_dataset(path)
        loader = make_loader(DetectionDataset(ds, cfg["imgsz"]), 8, shuffle=False, workers=0)
        t0 = time.perf_counter()
        batches = raw_batches(model, loader, ds)
        part = {"data": str(path), "images": len(ds.records)}
        if split == "val":
            preds = predict(model, loader, torch.device("cpu"), conf=settings.eval_conf, iou=settings.eval_iou,
                            max_det=settings.max_det)
            part["coco"] = coco_by_size(coco_gt_from_dataset(ds), preds, settings.max_det)
            if extra:
                run["splits"][split] = part
                continue
            part["alignment"] = task_alignment(model, loader, torch.device("cpu"))
            part["alignment_by_size"] = alignment_by_size(batches)
        part["assignment"], part["assignment_not_difficult"] = {}, {}
        for name in ORDER:
            d = per_gt_assignment(name, batches)
            part["assignment"][name] = summarise_assignment(d, name == "fss")
            part["assignment_not_difficult"][name] = summarise_assignment(subset_gts(d, d["difficult"] == 0),
                                                                          name == "fss")
            if name == "fss":
                part["fss_small_gts"] = small_gt_records(d)
                part["gt_counts_by_difficult"] = gt_counts(d)
        part["seconds"] = round(time.perf_counter() - t0, 1)
        run["splits"][split] = part
        print(f"  {folder.name} {split}: {part['seconds']} s", flush=True)
    return run


# ---------------------------------------------------------------------------------- report
def _name(r: dict, plain: bool = False) -> str:
    """``<out folder>/<run>`` (the ablation's --out tells re-runs of one name apart), marked when an --extra run."""
    f = Path(r["folder"])
    name = f"{f.parents[2].name}/{f.name}" if len(f.parents) > 2 else f.name
    return name + (" (extra)" if r.get("extra") and not plain else "")


def _x(v, nd: int = 4) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def _table(title: str, head: list[str], rows: list[list[str]], note: str = "") -> list[str]:
    lines = [f"### {title}", ""] + ([note, ""] if note else [])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def report(result: dict) -> str:
    meta, runs = result["meta"], result["runs"]
    every = runs + result.get("extra_runs", [])          # extra runs: AP only (repeats, or more assigners/seeds)
    L = ["# DOTA tiles arm: measurements by object size (issue #35 item 2)", "",
         f"Machine: {meta['machine']}; torch {meta['torch']}, {meta['threads']} thread(s). Commit "
         f"`{meta['commit']}` (working tree at {meta['when']}). Produced by `benchmarks/dota_diagnosis.py` "
         f"({meta['seconds']:.0f} s). Measurements only; no reading is offered here.", "",
         "Settings: the model of each run is its checkpoint's EMA weights (as training evaluates them), eval mode; "
         f"input {runs[0]['imgsz']} px (the tiles' own size, scale 1). COCO: pycocotools COCOeval, bbox, "
         f"detections at conf ≥ {meta['eval_conf']}, NMS IoU {meta['eval_iou']}, at most {meta['max_det']} per "
         "image (the training-time settings of config.py), the ground truth as training builds it "
         "(`coco_gt_from_dataset`: DOTA difficult objects are crowd, neither counted nor penalised). AP / AP50 are "
         "means over the classes with ground truth in the bin. Size = sqrt(box area) in px: "
         + ", ".join(b[2] for b in BINS) + " (lower edge inclusive). Assignment statistics: every assigner with its "
         "default parameters (the study's), applied once to the final model's raw predictions on un-augmented "
         "tiles, called as training calls it (`assigner(cls, obj, boxes, points, strides, labels, gt_boxes, "
         "gt_mask)`), over every ground truth the loader gives (difficult ones included, as in training). "
         "Distances: Euclidean from the point to the GT box centre, divided by the positive's own stride. "
         "Alignment: `fss_train/alignment.py` (candidate set: inside the box or within 2.5 strides of the centre, "
         "every level; GTs with ≥ 3 candidates).", ""]
    L += ["## Runs and checkpoints", ""]
    head = ["run", "assigner", "checkpoint (epoch)", "train / val tiles (sha256 of annotations.json, first 8)",
            "val GTs", "AP (this eval)", "AP50", "APs (COCO <32²)",
            "last eval in results.json (epoch: AP / AP50)", "committed summary (commit: AP / AP50 / APs)",
            "this run's summary (commit at its end: AP / AP50; wall)"]
    rows = []
    for r in every:
        c = r["splits"]["val"]["coco"]["project_coco_eval_all"]
        le = r["last_eval_in_results_json"]
        cs, rs = r["committed_summary"], r["rerun_summary"]
        rows.append([_name(r), r["assigner"], f"{Path(r['checkpoint']).name} ({r['checkpoint_epoch']}"
                     f" of {r['epochs_planned']})",
                     f"{(r['train_annotations_sha256'] or '?')[:8]} / {(r['val_annotations_sha256'] or '?')[:8]}",
                     str(r["splits"]["val"]["coco"]["all"]["num_gt"]), _x(c["AP"]),
                     _x(c["AP50"]), _x(c["APs"]),
                     f"{le['epoch']}: {_x(le['AP'])} / {_x(le['AP50'])}" if le else "–",
                     f"{cs['commit']}: {_x(cs['AP'])} / {_x(cs['AP50'])} / {_x(cs['APs'])}" if cs else "–",
                     f"{rs['commit']}: {_x(rs['AP'])} / {_x(rs['AP50'])}; {rs['wall_s'] / 60:.1f} min" if rs else "–"])
    L += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(x) + " |" for x in rows]
    L += ["", "Checkpoints: " + "; ".join(f"`{r['checkpoint']}`" for r in every), ""]
    same: dict[str, list[str]] = {}
    for r in every:
        same.setdefault(r["results_sha256_no_timing"], []).append(f"`{_name(r, plain=True)}`")
    for group in (g for g in same.values() if len(g) > 1):
        L += [f"Identical results.json apart from the timings (every epoch's losses, positives per GT, rank "
              f"consistency, learning rate and metrics): {', '.join(group)}.", ""]
    if len(every) > len(runs):
        L += ["Runs marked (extra) — repeats of a run in another folder, or further assigners and seeds — have only "
              "their AP measured here, each on the validation tiles of its own `--out` (the sha256 column tells "
              "which tiles; column val GTs), with the working tree as it was when its training started.", ""]

    L += ["## Ground truths per size bin", ""]
    val = runs[0]["splits"]["val"]
    rows = [["val: all GTs"] + [str(val["assignment"]["fss"][b]["num_gt"]) for b in LABELS],
            ["val: scored (not difficult)"] + [str(val["coco"][b]["num_gt_scored"]) for b in LABELS]]
    if "train" in runs[0]["splits"]:
        rows.append(["train: all GTs"] + [str(runs[0]["splits"]["train"]["assignment"]["fss"][b]["num_gt"])
                                          for b in LABELS])
    for split in runs[0]["splits"]:
        c = runs[0]["splits"][split]["gt_counts_by_difficult"]
        rows += [[f"{split}: difficult = {f} ({what})"] + [str(c[f][b]) for b in LABELS]
                 for f, what in (("0", "plain"), ("1", "DOTA difficult"), ("2", "truncated by the tiling"))]
    cls_val = {k for b in LABELS for k in val["coco"][b]["per_class"]}
    L += _table("Counts", ["set"] + LABELS, rows,
                f"Validation classes with ground truth: {', '.join(sorted(cls_val))}; {val['images']} validation "
                "tiles.")

    L += ["## COCO AP by size (validation tiles)", ""]
    for key, title in (("AP", "AP (IoU 0.50:0.95)"), ("AP50", "AP50"), ("AR", f"AR@{meta['max_det']} (0.50:0.95)")):
        rows = [[_name(r)] + [_x(r["splits"]["val"]["coco"][b][key]) for b in LABELS] for r in every]
        L += _table(title, ["run"] + LABELS, rows)
    rows = []
    for r in every:
        for cname in sorted(cls_val):
            rows.append([_name(r), cname] + [
                _x((r["splits"]["val"]["coco"][b]["per_class"].get(cname) or {}).get("AP50")) for b in LABELS])
    L += _table("AP50 by class and size", ["run", "class"] + LABELS, rows)

    L += ["## Alignment of the final model (validation tiles)", ""]
    rows = []
    for r in runs:
        a, cs = r["splits"]["val"]["alignment"], (r["committed_summary"] or {}).get("alignment") or {}
        rows.append([Path(r["folder"]).name] + [_x(a[k]) for k in ("rank_consistency", "top1_agreement", "top1_iou",
                                                                    "best_iou")] + [str(a["num_gt"])]
                    + [_x(cs.get(k)) for k in ("rank_consistency", "top1_agreement", "top1_iou")])
    L += _table("Overall (`task_alignment`)", ["run", "rank consistency", "top-1 agreement", "top-1 IoU", "best IoU",
                                               "GTs", "committed: rank cons.", "committed: top-1 agr.",
                                               "committed: top-1 IoU"], rows)
    for key, title in (("rank_consistency", "Rank consistency by size"), ("top1_agreement", "Top-1 agreement by size"),
                       ("top1_iou", "Top-1 IoU by size"), ("best_iou", "Best candidate IoU by size")):
        rows = [[Path(r["folder"]).name] + [_x(r["splits"]["val"]["alignment_by_size"][b][key]) for b in LABELS]
                for r in runs]
        L += _table(title, ["run"] + LABELS, rows)
    rows = [[Path(r["folder"]).name] + [
        " / ".join(_x(r["splits"]["val"]["alignment_by_size"][b]["top1_stride_share"][s], 2) for s in ("8", "16", "32"))
        for b in LABELS] for r in runs]
    L += _table("Pyramid level of the highest-scoring candidate (score = cls · obj): share at stride 8 / 16 / 32",
                ["run"] + LABELS, rows)
    rows = [[Path(r["folder"]).name] + [str(r["splits"]["val"]["alignment_by_size"][b]["num_gt"]) for b in LABELS]
            for r in runs]
    L += _table("GTs with ≥ 3 alignment candidates", ["run"] + LABELS, rows)

    for split in [s for s in ("val", "train") if s in runs[0]["splits"]]:
        where = "validation tiles" if split == "val" else "training tiles, un-augmented (supplement)"
        L += [f"## Assignment statistics: every assigner on each final model's predictions ({where})", ""]
        measures = [("pos_per_gt_mean", "Positives per GT (mean)", 3), ("pos_per_gt_median", "Positives per GT "
                     "(median)", 1), ("share_one_pos", "Share of GTs with exactly one positive", 3),
                    ("share_zero_pos", "Share of GTs with zero positives", 3),
                    ("dist_strides_mean", "Distance of positives from the GT centre, strides (mean)", 2),
                    ("dist_strides_p90", "Distance of positives from the GT centre, strides (90th percentile)", 2),
                    ("share_pos_outside_box", "Share of positives whose point lies outside the GT box", 3),
                    ("pos_iou_mean", "IoU(predicted box, GT) of the positives (mean)", 3)]
        for key, title, nd in measures:
            rows = [[Path(r["folder"]).name, name] + [_x(r["splits"][split]["assignment"][name][b][key], nd)
                                                      for b in LABELS] for r in runs for name in ORDER]
            L += _table(title, ["model", "assigner"] + LABELS, rows)
        for key, title, nd in measures[:4]:
            rows = [[Path(r["folder"]).name, name] + [_x(r["splits"][split]["assignment_not_difficult"][name][b][key],
                                                         nd) for b in LABELS] for r in runs for name in ORDER]
            L += _table(f"{title}: GTs with difficult = 0 only", ["model", "assigner"] + LABELS, rows)
        rows = [[Path(r["folder"]).name, name] + [
            " / ".join(_x(r["splits"][split]["assignment"][name][b]["pos_stride_share"][s], 2)
                       for s in ("8", "16", "32")) for b in LABELS] for r in runs for name in ORDER]
        L += _table("Pyramid level of the positives: share at stride 8 / 16 / 32", ["model", "assigner"] + LABELS, rows)
        fine = [f[2] for f in FINE]
        rows = [[Path(r["folder"]).name, name]
                + [_x(r["splits"][split]["assignment"][name]["zero_pos_fine"][f]["share_zero_pos"], 3) for f in fine]
                for r in runs for name in ORDER]
        rows.append(["", "GTs"] + [str(runs[0]["splits"][split]["assignment"]["fss"]["zero_pos_fine"][f]["num_gt"])
                                   for f in fine])
        L += _table("Share of GTs with zero positives, finer sizes (px)", ["model", "assigner"] + fine, rows)
        fkeys = [("share_rescued", "rescued (0 positives before `rescue_orphans`, ≥ 1 after)", 3),
                 ("share_zero_before_rescue", "0 positives before rescue", 3), ("candidates_mean", "candidates", 1),
                 ("k_sum_mean", "Σ top-10 u·G (mean)", 2), ("k_mean", "dynamic k (mean)", 2),
                 ("share_k1", "share with k = 1", 3), ("side_px_mean", "box side px (mean)", 1),
                 ("sigma_px_mean", "σ px (mean of sqrt(σx σy))", 2), ("sigma_over_side_mean", "σ / side", 3),
                 ("sigma_strides_mean", "σ / stride of i*", 3), ("sigma_over_stride8_mean", "σ / 8 px", 3),
                 ("share_sigma_floored", "share with σ at the floor 0.5 · stride(i*) (either axis)", 3),
                 ("prior_one_stride_mean", "G one stride of i* from μ (narrower axis)", 3)]
        rows = []
        for r in runs:
            f = r["splits"][split]["assignment"]["fss"]
            for key, label, nd in fkeys:
                rows.append([Path(r["folder"]).name, label] + [_x(f[b][key], nd) for b in LABELS])
            rows.append([Path(r["folder"]).name, "stride of i*: share 8 / 16 / 32"] + [
                " / ".join(_x(f[b]["stride_star_share"][s], 2) for s in ("8", "16", "32")) for b in LABELS])
        L += _table("FSS internals: rescues, dynamic k, Gaussian prior σ against box size and stride",
                    ["model", "measure"] + LABELS, rows)
        rows = []
        for r in runs:
            f = r["splits"][split]["assignment_not_difficult"]["fss"]
            rows += [[Path(r["folder"]).name, label] + [_x(f[b][key], nd) for b in LABELS]
                     for key, label, nd in fkeys if key in ("k_sum_mean", "k_mean", "share_k1", "sigma_strides_mean",
                                                           "share_sigma_floored", "prior_one_stride_mean")]
        L += _table("FSS internals: GTs with difficult = 0 only", ["model", "measure"] + LABELS, rows)
    L += ["## FSS prior of each validation GT below 24 px (first model)", ""]
    small = runs[0]["splits"]["val"]["fss_small_gts"]
    rows = [[_x(g["side_px"], 1), f"{g['w']:.1f} × {g['h']:.1f}", f"{g['sigma_x']:.2f} × {g['sigma_y']:.2f}",
             f"{g['stride_star']:.0f}", "yes" if g["floored"] else "no", str(g["candidates"]), _x(g["k_sum"], 2),
             str(g["k"]), str(g["n_pos_before_rescue"]), str(g["n_pos"]), str(g["difficult"])]
            for g in sorted(small, key=lambda g: g["side_px"])]
    L += _table(f"{Path(runs[0]['folder']).name}: {len(small)} GTs", ["side px", "w × h px", "σx × σy px",
                "stride of i*", "σ floored", "candidates", "Σ top-10 u·G", "k", "pos before rescue", "pos",
                "difficult"], rows)
    return "\n".join(L) + "\n"


def finite(x):
    """``x`` with every NaN or infinity (an open bin edge, an undefined mean) as None: strict JSON."""
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def git_commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return (r.stdout.strip() or "unknown") + ("+dirty" if dirty else "")


def portable(text: str, outs: list[str]) -> str:
    """The report without this machine's paths: each study folder (``--out``, the runs' grandparent) becomes
    ``OUT``, ``OUT2`` …, and a checkout's own files (this one's or another worktree's: summaries, bundled models)
    ``./docs/results/…``, ``./fss_core/models/…``."""
    for k, out in enumerate(outs):
        text = text.replace(out + "/", ("OUT" if k == 0 else f"OUT{k + 1}") + "/")
    return re.sub(r"/[^\s\"`']*?/(docs/results/|fss_core/models/)", r"./\1", text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders (config.yaml + last.pt / best.pt)")
    p.add_argument("--extra", nargs="*", default=[], help="more run folders (repeats, seeds): AP by size only")
    p.add_argument("--extra-store", nargs="*", default=[],
                   help="the summary store of the --extra runs: one for all, or one per --extra folder, in order")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last")
    p.add_argument("--splits", default="val,train", help="val (required), train (assignment statistics only)")
    p.add_argument("--committed", default=str(ROOT / "docs/results/ablation/decide"))
    p.add_argument("--rerun-store", default="", help="the re-runs' own summary store, compared as well")
    p.add_argument("--json", default=str(ROOT / "docs/results/dota_diagnosis.json"))
    p.add_argument("--md", default=str(ROOT / "docs/results/dota_diagnosis.md"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    splits = args.splits.split(",")
    if "val" not in splits:
        raise SystemExit("--splits must include val")
    t0 = time.perf_counter()
    settings = TrainConfig()
    meta = {"machine": f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores",
            "torch": torch.__version__, "threads": torch.get_num_threads(), "commit": git_commit(),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "eval_conf": settings.eval_conf,
            "eval_iou": settings.eval_iou, "max_det": settings.max_det, "bins_px": [list(b) for b in BINS],
            "assigner_params": {n: build_assigner(n).params() for n in ORDER}, "assigners_known": sorted(ASSIGNERS)}
    runs = [diagnose(Path(f), args.checkpoint, splits, Path(args.committed),
                     Path(args.rerun_store) if args.rerun_store else None) for f in args.runs]
    stores = args.extra_store if len(args.extra_store) == len(args.extra) else args.extra_store[:1] * len(args.extra)
    extra = [diagnose(Path(f), args.checkpoint, ["val"], Path(args.committed), Path(st) if st else None, extra=True)
             for f, st in zip(args.extra, stores or [""] * len(args.extra))]
    meta["seconds"] = time.perf_counter() - t0
    result = {"meta": meta, "runs": runs, "extra_runs": extra}
    text_json = json.dumps(finite(result), indent=1, allow_nan=False)
    outs = sorted({str(Path(f).resolve().parents[2]) for f in [*args.runs, *args.extra]}, key=len, reverse=True)
    for path, text in ((Path(args.json), text_json), (Path(args.md), report(result))):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, portable(text, outs))
        print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()

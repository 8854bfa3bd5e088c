"""Evaluation during and after training: predictions of a model over a loader, BatchNorm recalibration,
COCO / DOTA metrics of the EMA model."""

from __future__ import annotations

import numpy as np
import torch

from fss_core.boxes import detections_to_coco
from fss_core.nn import decode_for_inference
from fss_core.nn.postprocess import postprocess, postprocess_obb
from fss_core.rdetections import rdetection_polygons
from fss_train.data.records import Dataset
from fss_train.metrics import coco_eval_details, coco_gt_from_dataset, dota_eval
from fss_train.obb_metrics import rotated_coco_map, task1_eval
from fss_train.valplots import write_val_plots


def model_points(model, height: int, width: int, device):
    net = model.module if hasattr(model, "module") else model
    return tuple(t.to(device) for t in net.points(height, width))


@torch.no_grad()
def predict(model, loader, device, conf: float, iou: float, max_det: int, on_batch=None,
            unreadable: list | None = None) -> list[dict]:
    """COCO-format predictions in original image pixels, category ids 1..C (an oriented model: Task1 records
    ``{"image_id", "class" 0-based, "score", "poly"}``, as ``obb_metrics.read_dota_task1`` gives). Images that could
    not be read get none; their ids are appended to ``unreadable`` (evaluation leaves them out)."""
    model.eval()
    task = (model.module if hasattr(model, "module") else model).card.task
    preds = []
    points = None
    for images, _, _, _, metas in loader:
        images = images.to(device)
        if points is None:
            points, strides = model_points(model, images.shape[-2], images.shape[-1], device)
        out = decode_for_inference(model(images).float(), points, strides, task)
        dets = postprocess_obb(out, conf, iou, max_det) if task == "obb" else postprocess(out, conf, iou, max_det)
        for det, meta in zip(dets, metas):
            if meta.get("unreadable"):
                if unreadable is not None:
                    unreadable.append(meta["image_id"])
                continue
            det = det.cpu().numpy()
            if task == "obb":                      # oriented: Task1-style records, polygons in original pixels
                det[:, :4] /= meta["scale"]
                preds += [{"image_id": meta["image_id"], "class": int(d[6]), "score": float(d[5]), "poly": poly}
                          for d, poly in zip(det, rdetection_polygons(det).tolist())]
                continue
            h, w = meta["orig_size"]
            boxes = det[:, :4] / meta["scale"]
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
            preds += detections_to_coco(np.concatenate([boxes, det[:, 4:6]], axis=1), meta["image_id"])
        if on_batch:
            on_batch()
    return preds


@torch.no_grad()
def recalibrate_bn(model, loader, batches: int, device) -> None:
    """Precise BN: recompute BatchNorm running statistics as the plain average over ``batches``
    batches (train-mode forward, no gradient). With YOLOX's BN momentum (0.03) the running
    statistics lag the weights in short or high-lr runs; this removes the lag before evaluation."""
    if batches <= 0:
        return
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                       # cumulative average
    was_training = model.training
    model.train()
    for i, (images, *_rest, metas) in enumerate(loader):
        if i >= batches:
            break
        readable = [not m.get("unreadable") for m in metas]         # no grey stand-ins in the statistics
        if any(readable):
            model(images[readable].to(device))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.train(was_training)


def evaluate(model, loader, ds: Dataset, device, cfg, plots_to=None, plot_if=None) -> dict:
    """COCO metrics (+ DOTA mAP50 with ``cfg.metric`` dota) and the fitness that picks best.pt; with
    ``plots_to`` (a run folder, after the last epoch) PR_curve.png and confusion_matrix.png there too — only
    when ``plot_if(metrics)`` says so, if given (early stopping decides from this very evaluation)."""
    unreadable: list[int] = []
    preds = predict(model, loader, device, cfg.eval_conf, cfg.eval_iou, cfg.max_det, unreadable=unreadable)
    ds = ds.without(unreadable)                 # reported by the loader; neither scored nor counted as missed
    if (model.module if hasattr(model, "module") else model).card.task == "obb":
        return evaluate_obb(ds, preds)
    gt = coco_gt_from_dataset(ds)
    metrics, details = coco_eval_details(gt, preds, max_dets=cfg.max_det)
    if cfg.metric == "dota":
        metrics["mAP50_dota"] = dota_eval(ds, preds)["mAP50"]
    metrics["fitness"] = metrics["mAP50_dota"] if cfg.metric == "dota" else metrics["AP"]
    if plots_to is not None and (plot_if is None or plot_if(metrics)):
        write_val_plots(plots_to, gt, preds, details)
    return metrics


def evaluate_obb(ds: Dataset, preds: list[dict]) -> dict:
    """An oriented model's metrics: DOTA Task1 mAP50 (VOC07, exactly the devkit's) and the COCO-style rotated
    mAP .50:.95 and AP50/AP75 beside it (``obb_metrics``); best.pt is chosen by the rotated mAP .50:.95 — as COCO AP
    picks it for horizontal models."""
    task1 = task1_eval(ds, preds)
    rotated = rotated_coco_map(ds, preds)
    return {"mAP50_dota": task1["mAP50"], "AP": rotated["mAP"], "AP50": rotated["mAP50"], "AP75": rotated["mAP75"],
            "fitness": rotated["mAP"]}

"""Task alignment of a trained detector: does the sample it scores highest localise best?

The paper's thesis is that FSS makes classification and localisation rank a ground truth's
candidates the same way, so that "the truly optimal sample emerges". Training-time rank
consistency is measured over each assigner's *own* positives, which differ between assigners
(FSS keeps ~1 per small object, SimOTA ~4) and so cannot be compared across them. This module
measures it on a candidate set that does not depend on the assigner:

    candidates(g) = points (every level) inside g's box or within ``radius`` strides of its centre

and, on held-out images, for every ground truth g with at least 3 candidates:

* ``rank_consistency``: Spearman correlation between the score s = p_cls(class of g) · p_obj and
  IoU(predicted box, g) over the candidates, averaged over ground truths;
* ``top1_agreement``: fraction of ground truths whose highest-scoring candidate is also the
  best-localised one;
* ``top1_iou``: IoU with g of the highest-scoring candidate's box (what NMS would keep), against
  ``best_iou``, the best IoU among the candidates.
"""

from __future__ import annotations

import torch

from fss_core.boxes import box_iou
from fss_core.nn import decode


def spearman(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Spearman correlation of two 1-D tensors (ties broken by position; scores and IoUs are
    continuous); None when one of them is constant."""
    a, b = x.argsort().argsort().float(), y.argsort().argsort().float()
    a, b = a - a.mean(), b - b.mean()
    denom = a.norm() * b.norm()
    return float((a * b).sum() / denom) if denom > 0 else None


def candidates(gt: torch.Tensor, points: torch.Tensor, strides: torch.Tensor, radius: float) -> torch.Tensor:
    """(M, A) bool: point inside the box, or within ``radius`` strides of its centre (per axis)."""
    x, y = points[:, 0], points[:, 1]
    inside = (x[None] > gt[:, None, 0]) & (x[None] < gt[:, None, 2]) & (y[None] > gt[:, None, 1]) & \
             (y[None] < gt[:, None, 3])
    cx, cy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
    r = radius * strides[None]
    near = ((x[None] - cx[:, None]).abs() < r) & ((y[None] - cy[:, None]).abs() < r)
    return inside | near


def per_gt(score: torch.Tensor, iou: torch.Tensor, cand: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per ground truth statistics from (M, A) ``score``, ``iou`` and candidate mask; rows with
    fewer than 3 candidates are dropped. Returns tensors of equal length."""
    keep = cand.sum(1) >= 3
    score, iou, cand = score[keep], iou[keep], cand[keep]
    out = {"spearman": [], "agree": [], "top1_iou": [], "best_iou": []}
    for s, u, c in zip(score, iou, cand):
        s, u = s[c], u[c]
        rho = spearman(s, u)
        out["spearman"].append(0.0 if rho is None else rho)
        top = int(s.argmax())
        out["agree"].append(float(top == int(u.argmax())))
        out["top1_iou"].append(float(u[top]))
        out["best_iou"].append(float(u.max()))
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}


@torch.no_grad()
def task_alignment(model, loader, device, radius: float = 2.5) -> dict:
    """Alignment statistics of ``model`` over every ground truth of ``loader`` (see module doc)."""
    model.eval()
    net = model.module if hasattr(model, "module") else model
    if net.card.task == "obb":
        raise ValueError("task alignment is measured for horizontal models only (this one is oriented)")
    points = strides = None
    acc: dict[str, list[torch.Tensor]] = {"spearman": [], "agree": [], "top1_iou": [], "best_iou": []}
    for images, gt_boxes, gt_labels, gt_mask, _ in loader:
        images = images.to(device)
        if points is None:
            points, strides = (t.to(device) for t in net.points(images.shape[-2], images.shape[-1]))
        pred_boxes, obj, cls = decode(model(images).float(), points, strides)
        for b in range(images.shape[0]):
            m = gt_mask[b]
            if not m.any():
                continue
            gt, labels = gt_boxes[b][m].to(device), gt_labels[b][m].to(device)
            score = cls[b][:, labels].T * obj[b][None]                      # (M, A)
            iou = box_iou(gt, pred_boxes[b])                                # (M, A)
            for k, v in per_gt(score, iou, candidates(gt, points, strides, radius)).items():
                acc[k].append(v)
    cat = {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.float64) for k, v in acc.items()}
    n = len(cat["spearman"])
    mean = (lambda t: float(t.mean())) if n else (lambda t: float("nan"))
    return {"rank_consistency": mean(cat["spearman"]), "top1_agreement": mean(cat["agree"]),
            "top1_iou": mean(cat["top1_iou"]), "best_iou": mean(cat["best_iou"]), "num_gt": n,
            "radius": radius}

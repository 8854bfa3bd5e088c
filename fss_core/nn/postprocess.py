"""From the deployed output to detections: confidence filter + class-aware NMS.

Horizontal models give (B, A, 4 + C) and (K, 6) detections ``x1 y1 x2 y2 score class``; oriented ones (B, A, 5 + C)
and (K, 7) ``cx cy w h θ score class`` (``fss_core.rdetections``), boxes regularised to the angle convention, NMS
on exact polygon IoU."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fss_core.boxes import batched_nms
from fss_core.defaults import CONF, IOU
from fss_core.rbox import rbox_to_poly, regularize_rbox
from fss_core.rotated_nms import rotated_nms


def postprocess(out: torch.Tensor, conf: float = CONF, iou: float = IOU, max_det: int = 300,
                pre_nms: int = 30000, classes: Sequence[int] | None = None) -> list[torch.Tensor]:
    """out (B, A, 4 + C): xyxy px then per-class scores. Returns per image (K, 6):
    x1, y1, x2, y2, score, class — sorted by score, at most ``max_det``. ``classes``: keep only points whose
    best class is one of these indices (Ultralytics' ``classes=``), before NMS and the cap."""
    wanted = torch.as_tensor(list(classes), dtype=torch.long, device=out.device) if classes is not None else None
    results = []
    for pred in out:
        boxes, scores = pred[:, :4], pred[:, 4:]
        best, cls = scores.max(dim=1)                                      # (A,)
        keep = best > conf
        if wanted is not None:
            keep &= torch.isin(cls, wanted)
        boxes, best, cls = boxes[keep], best[keep], cls[keep]
        if best.numel() > pre_nms:
            top = best.topk(pre_nms).indices
            boxes, best, cls = boxes[top], best[top], cls[top]
        idx = batched_nms(boxes, best, cls, iou)[:max_det]
        results.append(torch.cat((boxes[idx], best[idx, None], cls[idx, None].float()), dim=1))
    return results


def postprocess_obb(out: torch.Tensor, conf: float = CONF, iou: float = IOU, max_det: int = 300,
                    pre_nms: int = 30000, classes: Sequence[int] | None = None) -> list[torch.Tensor]:
    """out (B, A, 5 + C): cx cy w h θ then per-class scores. Returns per image (K, 7) ``cx cy w h θ score class``
    (regularised boxes), sorted by score, at most ``max_det``; class-aware NMS on polygon IoU (> ``iou`` drops)."""
    wanted = torch.as_tensor(list(classes), dtype=torch.long, device=out.device) if classes is not None else None
    results = []
    for pred in out:
        best, cls = pred[:, 5:].max(dim=1)                                 # (A,)
        keep = best > conf
        if wanted is not None:
            keep &= torch.isin(cls, wanted)
        boxes, best, cls = regularize_rbox(pred[keep, :5]), best[keep], cls[keep]
        if best.numel() > pre_nms:
            top = best.topk(pre_nms).indices
            boxes, best, cls = boxes[top], best[top], cls[top]
        idx = rotated_nms(rbox_to_poly(boxes), best, iou, labels=cls)[:max_det] if best.numel() else cls[:0]
        results.append(torch.cat((boxes[idx], best[idx, None], cls[idx, None].float()), dim=1))
    return results

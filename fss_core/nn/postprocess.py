"""From the deployed output (B, A, 4 + C) to detections: confidence filter + class-aware NMS."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fss_core.boxes import batched_nms
from fss_core.defaults import CONF, IOU


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

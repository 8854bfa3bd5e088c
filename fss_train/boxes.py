"""Box operations on xyxy pixel boxes (float tensors). Shared by training and deployment."""

from __future__ import annotations

import torch

EPS = 1e-7  # guards divisions by a zero union/area


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """boxes (..., 4) -> (...,) area; degenerate boxes have area 0."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU: a (..., N, 4), b (..., K, 4) -> (..., N, K) in [0, 1]."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])        # (..., N, K, 2)
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])        # (..., N, K, 2)
    inter = (rb - lt).clamp(min=0).prod(-1)                              # (..., N, K)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return inter / (union + EPS)


def box_iou_aligned(a: torch.Tensor, b: torch.Tensor, giou: bool = False) -> torch.Tensor:
    """Element-wise IoU (or GIoU) of two (..., 4) tensors -> (...,)."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a) + box_area(b) - inter
    iou = inter / (union + EPS)
    if not giou:
        return iou
    enclose = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).clamp(min=0).prod(-1)
    return iou - (enclose - union) / (enclose + EPS)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression. boxes (N, 4), scores (N,) -> kept indices (K,), by score descending."""
    order = scores.argsort(descending=True)
    boxes = boxes[order]
    if boxes.numel() == 0:
        return order
    iou = box_iou(boxes, boxes)                                          # (N, N)
    n = boxes.shape[0]
    suppressed = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    overlaps = (iou > iou_threshold).triu(diagonal=1)                    # i suppresses later j
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i]
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float,
                chunk: int = 4096) -> torch.Tensor:
    """Class-aware NMS: boxes of different labels never suppress each other.

    Offsets each class into its own coordinate range (the torchvision trick) and processes
    large inputs class by class so the N×N IoU matrix stays bounded.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    if boxes.shape[0] <= chunk:
        offset = labels.to(boxes.dtype)[:, None] * (boxes.max() + 1)
        return nms(boxes + offset, scores, iou_threshold)
    keep = [idx[nms(boxes[idx], scores[idx], iou_threshold)] for c in labels.unique()
            for idx in [torch.nonzero(labels == c).squeeze(1)]]
    keep = torch.cat(keep)
    return keep[scores[keep].argsort(descending=True)]

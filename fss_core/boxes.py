"""Box operations on xyxy pixel boxes (float tensors). Shared by training and deployment."""

from __future__ import annotations

import math

import numpy as np
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
    """Greedy non-maximum suppression (a box is dropped when its IoU with a kept, higher-scoring
    box exceeds ``iou_threshold``). boxes (N, 4) xyxy, scores (N,) -> kept indices (K,), by score
    descending. OpenCV's C++ implementation (``cv2.dnn.NMSBoxes``), checked against a
    pure-Python reference in the tests."""
    import cv2

    device = boxes.device
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    b = boxes.detach().cpu().float().numpy()
    s = scores.detach().cpu().float().numpy()
    xywh = np.concatenate((b[:, :2], b[:, 2:] - b[:, :2]), axis=1)
    # OpenCV keeps only scores above a non-negative threshold: hand it exact ranks (n … 1)
    # instead, which keep the order (ties: the earlier box first) and are all positive
    order = np.argsort(-s, kind="stable")
    rank = np.empty(len(s), np.float32)
    rank[order] = np.arange(len(s), 0, -1, dtype=np.float32)
    keep = np.asarray(cv2.dnn.NMSBoxes(xywh, rank, 0.0, float(iou_threshold)), dtype=np.int64).reshape(-1)
    keep = keep[np.argsort(-rank[keep], kind="stable")]
    return torch.from_numpy(keep).to(device)


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


def box_ciou_aligned(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Element-wise Complete IoU (Zheng et al., AAAI 2020) of (..., 4) xyxy boxes -> (...,).

    CIoU = IoU − ρ²/c² − α·v, ρ the centre distance, c the enclosing box diagonal,
    v = 4/π² (atan(w_b/h_b) − atan(w_a/h_a))², α = v / (1 − IoU + v). ``eps`` enters as in
    Ultralytics' ``bbox_iou`` (added to the heights, the union and c²), so the values — and the
    task-aligned assignment built on them — agree with that implementation bit for bit on the same inputs.
    """
    w1, h1 = a[..., 2] - a[..., 0], a[..., 3] - a[..., 1] + eps
    w2, h2 = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1] + eps
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = iw * ih
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.maximum(a[..., 2], b[..., 2]) - torch.minimum(a[..., 0], b[..., 0])
    ch = torch.maximum(a[..., 3], b[..., 3]) - torch.minimum(a[..., 1], b[..., 1])
    c2 = cw.pow(2) + ch.pow(2) + eps
    rho2 = ((b[..., 0] + b[..., 2] - a[..., 0] - a[..., 2]).pow(2)
            + (b[..., 1] + b[..., 3] - a[..., 1] - a[..., 3]).pow(2)) / 4
    v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
    alpha = v / (1 - iou + v + eps)
    return iou - (rho2 / c2 + v * alpha)


def box_iou_exact(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of broadcastable (..., 4) xyxy boxes without any epsilon, as YOLOX's ``bboxes_iou``
    computes it (the intersection counts only where the boxes overlap strictly on both axes).
    Pairwise: ``box_iou_exact(a[:, None], b[None])`` -> (m, n). Boxes must have positive area."""
    tl = torch.maximum(a[..., :2], b[..., :2])
    br = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (br - tl).prod(dim=-1) * (tl < br).all(dim=-1)
    area_a = (a[..., 2:] - a[..., :2]).prod(dim=-1)
    area_b = (b[..., 2:] - b[..., :2]).prod(dim=-1)
    return inter / (area_a + area_b - inter)


# ------------------------------------------------------------------ detections -> the formats users load
# A detection array is (K, 6) float: x1 y1 x2 y2 (image pixels), score, class index (0-based).
def detections_to_coco(dets, image_id: int) -> list[dict]:
    """COCO results: ``{"image_id", "category_id" (class + 1), "bbox": [x, y, w, h], "score"}``; boxes to
    0.01 px and scores to 1e-5."""
    return [{"image_id": int(image_id), "category_id": int(c) + 1,
             "bbox": [round(float(x1), 2), round(float(y1), 2), round(float(x2 - x1), 2), round(float(y2 - y1), 2)],
             "score": round(float(s), 5)} for x1, y1, x2, y2, s, c in dets]


def detections_to_dota(dets, image_name: str, class_names: list[str]) -> list[tuple[str, str]]:
    """DOTA Task2 lines, one per detection: (class name, ``"image score xmin ymin xmax ymax"``)."""
    return [(class_names[int(c)], f"{image_name} {s:.5f} {x1:.1f} {y1:.1f} {x2:.1f} {y2:.1f}")
            for x1, y1, x2, y2, s, c in dets]


def detections_to_yolo(dets, width: int, height: int) -> list[str]:
    """YOLO lines ``class cx cy w h score``, coordinates normalised by the image size."""
    return [f"{int(c)} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} "
            f"{(y2 - y1) / height:.6f} {s:.5f}" for x1, y1, x2, y2, s, c in dets]

"""Box operations on xyxy pixel boxes (float tensors). Shared by training and deployment."""

from __future__ import annotations

import math

import numpy as np
import torch

EPS = 1e-7  # guards divisions by a zero union/area
SPARSE_FROM = 2000  # boxes above which NMS sweeps (sparse_nms) instead of OpenCV's all-pairs NMSBoxes


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """(K, 4) xyxy boxes -> (K, 8) polygons ``x1 y1 … x4 y4``: the corners clockwise on screen from the top-left,
    as DOTA labels run (float64)."""
    x1, y1, x2, y2 = (np.asarray(boxes, np.float64).reshape(-1, 4)[:, i] for i in range(4))
    return np.stack((x1, y1, x2, y1, x2, y2, x1, y2), 1)


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
    if len(b) > SPARSE_FROM:                  # OpenCV compares every pair: 0.6 s for a dense scene's merge
        return torch.from_numpy(sparse_nms(b, s, iou_threshold)).to(device)
    xywh = np.concatenate((b[:, :2], b[:, 2:] - b[:, :2]), axis=1)
    # OpenCV keeps only scores above a non-negative threshold: hand it exact ranks (n … 1)
    # instead, which keep the order (ties: the earlier box first) and are all positive
    order = np.argsort(-s, kind="stable")
    rank = np.empty(len(s), np.float32)
    rank[order] = np.arange(len(s), 0, -1, dtype=np.float32)
    keep = np.asarray(cv2.dnn.NMSBoxes(xywh, rank, 0.0, float(iou_threshold)), dtype=np.int64).reshape(-1)
    keep = keep[np.argsort(-rank[keep], kind="stable")]
    return torch.from_numpy(keep).to(device)


def overlapping_pairs(env: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i, j), i ≠ j listed once, of ``(N, 4)`` xyxy envelopes that overlap with positive area.

    Boxes sorted by x1; box k meets the boxes after it whose x1 lies before its x2 (a ``searchsorted``), then the y
    extents are compared. Memory is bounded by ``chunk`` boxes at a time times their x-neighbours."""
    order = np.argsort(env[:, 0], kind="stable")
    e = env[order]
    hi = np.searchsorted(e[:, 0], e[:, 2], "left")              # boxes k+1 … hi-1 start before box k ends
    firsts, seconds = [], []
    for start in range(0, len(e), chunk):
        k = np.arange(start, min(start + chunk, len(e)))
        counts = np.maximum(hi[k] - k - 1, 0)
        a = np.repeat(k, counts)
        b = a + 1 + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
        y_ok = (e[a, 1] < e[b, 3]) & (e[b, 1] < e[a, 3]) & (e[a, 0] < e[b, 2])
        firsts.append(order[a[y_ok]])
        seconds.append(order[b[y_ok]])
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)


def overlapping_across(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (i, j) of the pairs of ``(m, 4)`` and ``(n, 4)`` xyxy envelopes that overlap with positive area: the
    pairs whose exact (rotated, polygon) IoU can be above 0; an (m, n) boolean test, for sets of moderate size."""
    near = ((torch.minimum(a[:, None, 2], b[None, :, 2]) > torch.maximum(a[:, None, 0], b[None, :, 0])) &
            (torch.minimum(a[:, None, 3], b[None, :, 3]) > torch.maximum(a[:, None, 1], b[None, :, 1])))
    return torch.nonzero(near, as_tuple=True)


def suppression_lists(scores: np.ndarray, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """For greedy suppression over the pairs (i, j) that overlap too much: the rank of every box (0 = highest score,
    ties: the earlier box) as ``rank_to_box`` (N,), and per rank the ranks it suppresses (those below it)."""
    rank_to_box = np.argsort(-scores, kind="stable")
    box_to_rank = np.empty_like(rank_to_box)
    box_to_rank[rank_to_box] = np.arange(len(rank_to_box))
    ri, rj = box_to_rank[i], box_to_rank[j]
    lo, hi = np.minimum(ri, rj), np.maximum(ri, rj)
    order = np.lexsort((hi, lo))
    lo, hi = lo[order], hi[order]
    bounds = np.searchsorted(lo, np.arange(len(rank_to_box) + 1))
    return rank_to_box, [hi[bounds[r]:bounds[r + 1]] for r in range(len(rank_to_box))]


def sparse_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS (IoU > threshold suppresses, as OpenCV's) comparing only boxes that overlap (an x sweep): the same
    kept set as :func:`nms`, in time that grows with the overlapping pairs, not with N² (a 4000² scene at conf 0.001
    has ~10^4 boxes a class). boxes (N, 4) xyxy, scores (N,) -> kept indices by score, descending."""
    b = boxes.astype(np.float64)
    i, j = overlapping_pairs(b)
    ix = np.minimum(b[i, 2], b[j, 2]) - np.maximum(b[i, 0], b[j, 0])
    iy = np.minimum(b[i, 3], b[j, 3]) - np.maximum(b[i, 1], b[j, 1])
    inter = ix * iy
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    hit = inter / np.maximum(area[i] + area[j] - inter, 1e-12) > iou_threshold
    rank_to_box, nbrs = suppression_lists(scores.astype(np.float64), i[hit], j[hit])
    return rank_to_box[greedy_keep(nbrs)]


def greedy_keep(nbrs: list[np.ndarray]) -> np.ndarray:
    """The ranks greedy suppression keeps: highest first, each kept rank removing its ``nbrs`` (suppression_lists)."""
    alive = np.ones(len(nbrs), bool)
    kept = []
    for r in range(len(nbrs)):
        if alive[r]:
            kept.append(r)
            alive[nbrs[r]] = False
    return np.array(kept, np.int64)


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

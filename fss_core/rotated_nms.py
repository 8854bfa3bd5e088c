"""Whole-scene rotated NMS and NMM: exact polygon IoU, compared only between boxes whose envelopes overlap.

A scene of tens of thousands of oriented detections never builds an N × N matrix: the axis-aligned envelopes are
swept in x order (``overlapping_pairs``), the few pairs that can overlap get the exact IoU of
``fss_core.polygon_iou`` in batches, and the greedy pass walks a sparse neighbour list. Polygons are ``(N, 8)``
``x1 y1 … x4 y4`` image pixels (rotated boxes: ``fss_core.rbox.rbox_to_poly`` first); the angle convention lives in
``fss_core.rbox``.
"""

from __future__ import annotations

import numpy as np
import torch

from fss_core.boxes import greedy_keep, overlapping_pairs, suppression_lists
from fss_core.polygon_iou import CHUNK, polygon_intersection_aligned
from fss_core.rbox import min_area_rect, poly_envelope, polygon_area

METRICS = ("iou", "ios")        # intersection over union, or over the smaller polygon (SAHI's IOS)


def pair_overlaps(polys: torch.Tensor, i: np.ndarray, j: np.ndarray, metric: str = "iou") -> np.ndarray:
    """The exact ``metric`` (IoU or IOS) of polygon pairs ``polys[i]``, ``polys[j]`` -> (P,) float64, in batches."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    p = polys.double().cpu()
    area = polygon_area(p).abs()
    out = np.zeros(len(i), np.float64)
    for s in range(0, len(i), CHUNK):
        a, b = torch.from_numpy(i[s:s + CHUNK]), torch.from_numpy(j[s:s + CHUNK])
        inter = polygon_intersection_aligned(p[a], p[b])
        denom = area[a] + area[b] - inter if metric == "iou" else torch.minimum(area[a], area[b])
        out[s:s + CHUNK] = torch.where(denom > 0, inter / denom.clamp(min=1e-300), torch.zeros_like(inter)).numpy()
    return out


def _neighbours(polys: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor | None, threshold: float,
                metric: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rank of every box (0 = highest score, ties: the earlier box) and, per rank, the ranks of the boxes it
    overlaps by more than ``threshold`` (same label only, unless labels is None)."""
    i, j = overlapping_pairs(poly_envelope(polys.detach().double().cpu()).numpy())
    if labels is not None:
        lab = labels.detach().cpu().numpy()
        same = lab[i] == lab[j]
        i, j = i[same], j[same]
    hit = pair_overlaps(polys.detach(), i, j, metric) > threshold
    return suppression_lists(scores.detach().cpu().double().numpy(), i[hit], j[hit])


def rotated_nms(polys: torch.Tensor, scores: torch.Tensor, threshold: float, labels: torch.Tensor | None = None,
                metric: str = "iou") -> torch.Tensor:
    """Greedy NMS of polygons: highest score first, a box is dropped when its ``metric`` with a kept box exceeds
    ``threshold`` (strictly, as the DOTA devkit's polygon NMS and OpenCV's). Boxes of different ``labels`` never
    interact (all do when labels is None). polys (N, 8), scores (N,), labels (N,) -> kept indices (K,) long, by
    score descending."""
    rank_to_box, nbrs = _neighbours(polys, scores, labels, threshold, metric)
    return torch.from_numpy(rank_to_box[greedy_keep(nbrs)]).to(polys.device)


def rotated_nmm(polys: torch.Tensor, scores: torch.Tensor, threshold: float, labels: torch.Tensor | None = None,
                metric: str = "iou") -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy non-maximum *merging* (SAHI's NMM for polygons): as ``rotated_nms``, but each kept box absorbs the
    boxes it removes and becomes the minimum-area rectangle of all their corners (the hull of the union); it keeps
    its own score and label. Returns the kept indices (K,) and their merged rotated boxes (K, 5) (convention of
    ``fss_core.rbox``)."""
    rank_to_box, nbrs = _neighbours(polys, scores, labels, threshold, metric)
    alive = np.ones(len(rank_to_box), bool)
    groups = []
    for r in range(len(rank_to_box)):
        if alive[r]:
            absorbed = nbrs[r][alive[nbrs[r]]]
            alive[absorbed] = False
            groups.append(rank_to_box[np.concatenate(([r], absorbed))])
    keep = torch.from_numpy(np.array([g[0] for g in groups], np.int64))
    corners = polys.detach().double().cpu().reshape(-1, 4, 2)
    boxes = min_area_rect(corners[keep]) if len(keep) else torch.zeros((0, 5), dtype=torch.float64)
    multi = [k for k, g in enumerate(groups) if len(g) > 1]
    if multi:
        boxes[torch.tensor(multi)] = min_area_rect(_padded_hulls(corners.numpy(), [groups[k] for k in multi]))
    return keep.to(polys.device), boxes.to(polys.device)


def _padded_hulls(corners: np.ndarray, groups: list[np.ndarray]) -> torch.Tensor:
    """The convex hull corners of each group's polygons (G, H, 2), every hull padded to the largest by repeating
    its first corner (a repeated corner changes no enclosing rectangle). One vectorised shapely call for all."""
    import shapely

    points = np.concatenate([corners[g].reshape(-1, 2) for g in groups])
    owner = np.repeat(np.arange(len(groups)), [4 * len(g) for g in groups])
    hulls = shapely.convex_hull(shapely.multipoints(points, indices=owner))
    coords, index = shapely.get_coordinates(hulls, return_index=True)
    counts = np.bincount(index, minlength=len(groups))
    size = int(counts.max())
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    pos = np.minimum(np.arange(size)[None, :], counts[:, None] - 1)                   # past the end: the last
    pos = np.where(np.arange(size)[None, :] < counts[:, None], pos, 0)                # … rather the first corner
    return torch.from_numpy(coords[starts[:, None] + pos])

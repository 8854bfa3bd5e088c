"""Pure tiling: the tile grid, tile batches (views, not copies), mapping back, and the merge.

Boxes are xyxy image pixels; detections are (K, 6) float: x1 y1 x2 y2 score class. Oriented detections are
(K, 7) ``cx cy w h θ score class`` (``fss_core.rdetections``): mapped back by their centre, cut when their polygon
reaches an interior tile edge, seen whole by a neighbour by polygon area, merged by exact rotated NMS / NMM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fss_core.boxes import batched_nms, overlapping_pairs
from fss_core.defaults import IOU, MATCH, MERGE
from fss_core.polygon_iou import CHUNK
from fss_core.preprocess import PAD_VALUE, to_array
from fss_core.rbox_iou import rbox_intersection_aligned
from fss_core.rdetections import rdetection_polygons
from fss_core.rotated_nms import rotated_nmm, rotated_nms
from fss_core.tiles import tile_origins


@dataclass(frozen=True)
class Tile:
    x: int
    y: int
    width: int      # the part of the image inside the tile (≤ tile size at the image edges)
    height: int


class TilePlan(Sequence):
    """The tiles covering a width × height image, row by row, each made when it is asked for: memory is the two
    lists of origins, never one object per tile (12.7 million tiles of a sparse 200,000² GeoTIFF took 3 GB before
    the first one ran)."""

    def __init__(self, width: int, height: int, tile: int, overlap: int):
        self.width, self.height, self.tile = width, height, tile
        self.xs, self.ys = tile_origins(width, tile, overlap), tile_origins(height, tile, overlap)

    def __len__(self) -> int:
        return len(self.xs) * len(self.ys)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"tile {i} of {len(self)}")
        row, col = divmod(i % len(self), len(self.xs))
        x, y = self.xs[col], self.ys[row]
        return Tile(x, y, min(self.tile, self.width - x), min(self.tile, self.height - y))


def plan_tiles(width: int, height: int, tile: int, overlap: int) -> TilePlan:
    """Tiles covering the image; the last row/column flush with the edge; one tile when the
    image is smaller than a tile (it is padded, never upscaled)."""
    return TilePlan(width, height, tile, overlap)


def tile_views(image, tiles: list[Tile], tile: int) -> list[np.ndarray]:
    """(tile, tile, 3) uint8 per tile: a view into ``image`` (an array) when the tile fits, else a padded copy;
    from a window-read source (``image.read(x, y, w, h)``, e.g. a GeoTIFF) the window itself."""
    views = []
    for t in tiles:
        crop = (image[t.y:t.y + t.height, t.x:t.x + t.width] if isinstance(image, np.ndarray)
                else image.read(t.x, t.y, t.width, t.height))
        if crop.shape[0] != tile or crop.shape[1] != tile:
            padded = np.full((tile, tile, 3), PAD_VALUE, np.uint8)
            padded[:crop.shape[0], :crop.shape[1]] = crop
            crop = padded
        views.append(crop)
    return views


def tile_batch(image, tiles: list[Tile], tile: int, pad_to: int | None = None) -> np.ndarray:
    """(B, 3, tile, tile) float32 network input for ``tiles`` (zero-padded to ``pad_to`` tiles)."""
    views = tile_views(image, tiles, tile)
    n = max(len(views), pad_to or 0)
    out = np.zeros((n, 3, tile, tile), np.float32)
    to_array(views, out[:len(views)])
    return out


def oriented(dets: np.ndarray) -> bool:
    return dets.shape[1] == 7


def envelopes(dets: np.ndarray) -> np.ndarray:
    """(K, 4) xyxy: the boxes themselves, or the envelopes of oriented detections' polygons."""
    if not oriented(dets):
        return dets[:, :4]
    poly = rdetection_polygons(dets).reshape(-1, 4, 2)
    return np.concatenate((poly.min(1), poly.max(1)), 1)


def to_image_coords(dets: np.ndarray, t: Tile, img_w: int, img_h: int) -> np.ndarray:
    """Tile pixels -> image pixels, clipped to the image (not to the tile: a box the model extends
    past the tile edge is its guess at the unseen part of a cut object, and the merge needs it). An oriented box
    moves by its centre and is not clipped (a clipped rotated box is no longer the object's rectangle)."""
    out = dets.copy()
    if oriented(dets):
        out[:, 0] += t.x
        out[:, 1] += t.y
        return out
    out[:, [0, 2]] = (out[:, [0, 2]] + t.x).clip(0, img_w)
    out[:, [1, 3]] = (out[:, [1, 3]] + t.y).clip(0, img_h)
    return out


def cut_by_interior_edge(dets: np.ndarray, t: Tile, img_w: int, img_h: int, margin: float = 2.0) -> np.ndarray:
    """(K,) bool: the box (an oriented box's polygon: its envelope's extremes are its corners) touches an edge of
    its tile that is not an image border (it may be cut)."""
    x1, y1, x2, y2 = envelopes(dets).T
    left = (t.x > 0) & (x1 <= t.x + margin)
    top = (t.y > 0) & (y1 <= t.y + margin)
    right = (t.x + t.width < img_w) & (x2 >= t.x + t.width - margin)
    bottom = (t.y + t.height < img_h) & (y2 >= t.y + t.height - margin)
    return left | top | right | bottom


MERGE_CHUNK = 256    # cut boxes compared at a time by the border rule
MERGE_MODES = ("nms", "nmm")       # suppress the lower-scoring box, or merge it into the higher one (SAHI's NMM)
MATCH_METRICS = ("iou", "ios")     # intersection over union, or over the smaller box (SAHI's IOS)


def merge(dets: np.ndarray, cut: np.ndarray, source: np.ndarray, iou: float = IOU, contain: float = 0.6,
          max_det: int = 10000, mode: str = MERGE, metric: str = MATCH, class_agnostic: bool = False) -> np.ndarray:
    """Merge tile detections into image detections.

    Border rule first: a box cut by an interior tile edge is dropped when a box of the same class
    (any class with ``class_agnostic``) from another tile, not cut, covers at least ``contain`` of it
    (the neighbour saw the object whole). Then, highest score first, every box whose ``metric`` with a
    kept box reaches ``iou`` is suppressed (``mode`` "nms") or merged into it (``"nmm"``: the kept box
    grows to the union, keeps its score and class — SAHI's greedy NMM); boxes of different classes
    never interact unless ``class_agnostic``. ``source`` (K,) is each detection's tile index.
    """
    if mode not in MERGE_MODES or metric not in MATCH_METRICS:
        raise ValueError(f"merge must be one of {MERGE_MODES} and match one of {MATCH_METRICS}, got {mode!r}, "
                         f"{metric!r}")
    if len(dets) == 0:
        return dets.reshape(0, dets.shape[1])
    if oriented(dets):
        kept = dets[~seen_whole_elsewhere(dets, cut, source, contain, class_agnostic)]
        return merge_oriented(kept, iou, mode, metric, class_agnostic)[:max_det]
    keep = np.ones(len(dets), bool)
    cut_idx = np.nonzero(cut)[0]
    whole_idx = np.nonzero(~cut)[0]
    if len(cut_idx) and len(whole_idx):
        # chunks of cut boxes sorted by x, each against the whole boxes overlapping the chunk's extent:
        # memory O(chunk × neighbours), not O(cut × whole) (a 12,000 px scene has ~10^4 of each)
        order = cut_idx[np.argsort(dets[cut_idx, 0], kind="stable")]
        whole = dets[whole_idx]
        for start in range(0, len(order), MERGE_CHUNK):
            ci = order[start:start + MERGE_CHUNK]
            a = dets[ci]
            near = ((whole[:, 2] > a[:, 0].min()) & (whole[:, 0] < a[:, 2].max())
                    & (whole[:, 3] > a[:, 1].min()) & (whole[:, 1] < a[:, 3].max()))
            wi, b = whole_idx[near], whole[near]
            if not len(wi):
                continue
            ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
            iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
            area = np.maximum((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), 1e-9)
            covered = (ix * iy) / area[:, None] >= contain
            if not class_agnostic:
                covered &= a[:, None, 5] == b[None, :, 5]
            covered &= source[ci][:, None] != source[wi][None, :]
            keep[ci[covered.any(axis=1)]] = False
    kept = dets[keep]
    if mode == "nms" and metric == "iou":                  # the common case: OpenCV's NMS, class by class
        t = torch.from_numpy(kept)
        labels = torch.zeros(len(t), dtype=torch.long) if class_agnostic else t[:, 5].long()
        idx = batched_nms(t[:, :4], t[:, 4], labels, iou)[:max_det]
        return kept[idx.numpy()]
    return greedy_merge(kept, iou, metric, class_agnostic, merge=mode == "nmm")[:max_det]


def greedy_merge(dets: np.ndarray, threshold: float, metric: str = "iou", class_agnostic: bool = False,
                 merge: bool = True) -> np.ndarray:
    """Greedy NMS (``merge`` False) or NMM (True) of (K, 6) detections, highest score first, with IoU or IOS.

    Candidates come from a sweep over boxes sorted by x1 (only boxes that can overlap are compared), so a
    10^5-box scene costs ~K small numpy operations, not a K × K matrix. Returns the kept (merged) boxes by
    score, descending."""
    if len(dets) == 0:
        return dets.reshape(0, 6)
    d = dets[np.argsort(-dets[:, 4], kind="stable")]                      # (K, 6) by score
    by_x = np.argsort(d[:, 0], kind="stable")
    x1_sorted = d[by_x, 0]
    widest = float((d[:, 2] - d[:, 0]).max())
    area = (d[:, 2] - d[:, 0]) * (d[:, 3] - d[:, 1])
    alive = np.ones(len(d), bool)
    out = []
    for i in range(len(d)):
        if not alive[i]:
            continue
        alive[i] = False
        box = d[i].copy()
        lo, hi = np.searchsorted(x1_sorted, d[i, 0] - widest, "left"), np.searchsorted(x1_sorted, d[i, 2], "right")
        cand = by_x[lo:hi]
        cand = cand[alive[cand]]
        if not class_agnostic:
            cand = cand[d[cand, 5] == d[i, 5]]
        if len(cand):
            c = d[cand]
            iw = np.clip(np.minimum(c[:, 2], d[i, 2]) - np.maximum(c[:, 0], d[i, 0]), 0, None)
            ih = np.clip(np.minimum(c[:, 3], d[i, 3]) - np.maximum(c[:, 1], d[i, 1]), 0, None)
            inter = iw * ih
            denom = (area[cand] + area[i] - inter) if metric == "iou" else np.minimum(area[cand], area[i])
            hit = cand[inter / np.maximum(denom, 1e-9) >= threshold]
            alive[hit] = False
            if merge and len(hit):
                box[:2] = np.minimum(box[:2], d[hit, :2].min(0))
                box[2:4] = np.maximum(box[2:4], d[hit, 2:4].max(0))
        out.append(box)
    return np.stack(out)


def seen_whole_elsewhere(dets: np.ndarray, cut: np.ndarray, source: np.ndarray, contain: float,
                         class_agnostic: bool) -> np.ndarray:
    """(K,) bool, oriented detections: a cut box of which an uncut box of another tile (same class unless
    ``class_agnostic``) covers at least ``contain`` of the polygon area — the border rule by polygon area."""
    drop = np.zeros(len(dets), bool)
    cut_idx, whole_idx = np.nonzero(cut)[0], np.nonzero(~cut)[0]
    if not (len(cut_idx) and len(whole_idx)):
        return drop
    env = envelopes(dets)
    i, j = overlapping_pairs(np.concatenate((env[cut_idx], env[whole_idx])))
    n = len(cut_idx)
    pairs = np.concatenate((np.stack((i, j), 1), np.stack((j, i), 1)))
    pairs = pairs[(pairs[:, 0] < n) & (pairs[:, 1] >= n)]                       # (cut, whole) pairs
    a, b = cut_idx[pairs[:, 0]], whole_idx[pairs[:, 1] - n]
    ok = source[a] != source[b]
    if not class_agnostic:
        ok &= dets[a, 6] == dets[b, 6]
    a, b = a[ok], b[ok]
    boxes = torch.from_numpy(dets[:, :5].astype(np.float64))
    for s in range(0, len(a), CHUNK):                   # bounded temporaries, whatever the scene
        ca, cb = a[s:s + CHUNK], b[s:s + CHUNK]
        inter = rbox_intersection_aligned(boxes[ca], boxes[cb]).numpy()
        drop[ca[inter / np.maximum(dets[ca, 2] * dets[ca, 3], 1e-9) >= contain]] = True
    return drop


def merge_oriented(dets: np.ndarray, threshold: float, mode: str, metric: str, class_agnostic: bool) -> np.ndarray:
    """Exact rotated NMS (or NMM: each kept box becomes the min-area rectangle of what it absorbs) of (K, 7)
    detections across tiles -> kept detections by score, descending."""
    if len(dets) == 0:
        return dets.reshape(0, 7)
    polys = torch.from_numpy(rdetection_polygons(dets))
    scores = torch.from_numpy(dets[:, 5].astype(np.float64))
    labels = None if class_agnostic else torch.from_numpy(dets[:, 6].astype(np.int64))
    if mode == "nms":
        return dets[rotated_nms(polys, scores, threshold, labels, metric).numpy()]
    keep, boxes = rotated_nmm(polys, scores, threshold, labels, metric)
    out = dets[keep.numpy()].copy()
    out[:, :5] = boxes.numpy()
    return out

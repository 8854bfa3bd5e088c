"""Sparse (ground truth, point) pairs: which points each ground truth may take, and per-pair quantities.

Segment reductions over them are in segments.py, the shared decisions in decide.py.
A ground truth only ever competes for points near it, so instead of (B, M, A) matrices the
assigners work on the list of candidate pairs: N pairs, each with an image ``b``, a padded GT
index ``g`` and a point ``a``. A *segment* is one ground truth (``seg = b * M + g``); per-GT
reductions (sum, max, top-k) are scatter operations over segments. Memory is O(N), where N is
a few dozen pairs per GT, so 2,000 GTs on a 1024 px input stay in megabytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fss_train.assigners.base import Inputs
from fss_train.assigners.geometry import aligned_iou, box_frame, centres, envelope_half, sides

# Elements of one boolean (m, A) candidate test; bounds the transient memory of enumeration.
ENUM_CHUNK_ELEMS = 1 << 22


@dataclass
class Pairs:
    """N candidate (GT, point) pairs, ordered by image, then GT, then point."""

    b: torch.Tensor      # (N,) long image index
    g: torch.Tensor      # (N,) long GT index on the padded M axis
    a: torch.Tensor      # (N,) long point index
    num_images: int
    num_gts: int         # M (padded)
    num_points: int      # A

    @property
    def seg(self) -> torch.Tensor:
        """(N,) global GT id b * M + g."""
        return self.b * self.num_gts + self.g

    @property
    def num_seg(self) -> int:
        return self.num_images * self.num_gts

    @property
    def key(self) -> torch.Tensor:
        """(N,) global point id b * A + a."""
        return self.b * self.num_points + self.a

    def __len__(self) -> int:
        return self.a.numel()

    def subset(self, idx: torch.Tensor) -> Pairs:
        return Pairs(self.b[idx], self.g[idx], self.a[idx], self.num_images, self.num_gts, self.num_points)


# ---------------------------------------------------------------------------------- candidates
class Condition:
    """A candidate test between GT boxes and points, written for broadcasting tensors.

    ``test(gt (..., 4|5), pts (..., 2), s (...))`` -> bool (...). ``reach(gt (m, 4|5), s)`` gives the
    (m, 2) half-extent in pixels (x, y) around the GT centre outside which the test is always
    false for points of stride ``s``; it lets grid points be enumerated window by window.
    "Inside the box" is along the box's own axes (``geometry.box_frame``); centre squares and windows are in
    image axes, so a 90° turn of the image turns them into themselves.
    """

    def test(self, gt, pts, s):
        raise NotImplementedError

    def reach(self, gt, s):
        raise NotImplementedError


def _centre_offsets(gt, pts):
    """|offset| of each point from the GT centre in image axes (dx, dy) and along the box's axes (lx, ly), and the
    box's half sides (hw, hh). Horizontal boxes: the local offsets are the image offsets."""
    d = pts - centres(gt)
    half = sides(gt) * 0.5
    local = box_frame(d, gt).abs()
    d = d.abs()
    return d[..., 0], d[..., 1], local[..., 0], local[..., 1], half[..., 0], half[..., 1]


class InBox(Condition):
    """Point centre strictly inside the GT box."""

    def test(self, gt, pts, s):
        _, _, lx, ly, hw, hh = _centre_offsets(gt, pts)
        return (lx < hw) & (ly < hh)

    def reach(self, gt, s):
        return envelope_half(gt)


class InBoxOrCentre(Condition):
    """Inside the box, or within ``radius`` strides of the GT centre (L∞): the FSS/SimOTA region."""

    def __init__(self, radius: float):
        self.radius = radius

    def test(self, gt, pts, s):
        dx, dy, lx, ly, hw, hh = _centre_offsets(gt, pts)
        r = self.radius * s
        return ((lx < hw) & (ly < hh)) | ((dx < r) & (dy < r))

    def reach(self, gt, s):
        return envelope_half(gt).clamp(min=self.radius * s)


class CentreWindow(Condition):
    """Within ``radius`` strides of the GT centre on each axis (superset of the ATSS nearest-k)."""

    def __init__(self, radius: float):
        self.radius = radius

    def test(self, gt, pts, s):
        dx, dy, _, _, _, _ = _centre_offsets(gt, pts)
        r = self.radius * s
        return (dx < r) & (dy < r)

    def reach(self, gt, s):
        return torch.full_like(gt[:, :2], self.radius * s)


class PriorOverlaps(Condition):
    """The square prior of ``scale`` × stride at the point overlaps the GT's envelope (for horizontal GTs: IoU > 0;
    for rotated ones a superset of the priors that overlap the box)."""

    def __init__(self, scale: float):
        self.scale = scale

    def test(self, gt, pts, s):
        dx, dy, _, _, _, _ = _centre_offsets(gt, pts)
        ex, ey = envelope_half(gt).unbind(-1)
        h = 0.5 * self.scale * s
        return (dx < h + ex) & (dy < h + ey)

    def reach(self, gt, s):
        return envelope_half(gt) + 0.5 * self.scale * s


@dataclass(frozen=True)
class GridLevel:
    start: int      # first point index of the level
    rows: int
    cols: int
    x0: float       # centre of cell (0, 0)
    y0: float
    stride: float


def grid_levels(points: torch.Tensor, strides: torch.Tensor) -> list[GridLevel] | None:
    """The levels of a row-major grid of cell centres (as ``make_points`` builds), or None."""
    levels, start, A = [], 0, points.shape[0]
    s_cpu, p_cpu = strides.cpu(), points.cpu()
    while start < A:
        s = float(s_cpu[start])
        end = start + int((s_cpu[start:] == s).int().cumprod(0).sum())
        block = p_cpu[start:end]
        cols = int((block[:, 1] == block[0, 1]).int().cumprod(0).sum())
        n = end - start
        if cols == 0 or n % cols:
            return None
        rows = n // cols
        j = torch.arange(n) % cols
        i = torch.arange(n) // cols
        expect = torch.stack((block[0, 0] + j * s, block[0, 1] + i * s), 1)
        if not torch.allclose(block, expect, atol=1e-3):
            return None
        levels.append(GridLevel(start, rows, cols, float(block[0, 0]), float(block[0, 1]), s))
        start = end
    return levels


def _grid_pairs(boxes: torch.Tensor, condition: Condition, levels: list[GridLevel], points, strides):
    """(gt row, point) pairs of every real GT, enumerated window by window on each grid level."""
    device = boxes.device
    centre = centres(boxes)                                                      # (R, 2)
    rows_out, cols_out = [], []
    for lv in levels:
        reach = condition.reach(boxes, lv.stride)                                # (R, 2)
        lo = torch.ceil((centre - reach - torch.tensor([lv.x0, lv.y0], device=device)) / lv.stride) - 1
        hi = torch.floor((centre + reach - torch.tensor([lv.x0, lv.y0], device=device)) / lv.stride) + 1
        jlo = lo[:, 0].clamp(0, lv.cols - 1).long()
        jhi = hi[:, 0].clamp(-1, lv.cols - 1).long()
        ilo = lo[:, 1].clamp(0, lv.rows - 1).long()
        ihi = hi[:, 1].clamp(-1, lv.rows - 1).long()
        nx = (jhi - jlo + 1).clamp(min=0)
        ny = (ihi - ilo + 1).clamp(min=0)
        count = nx * ny                                                          # (R,)
        total = int(count.sum())
        if total == 0:
            continue
        r = torch.repeat_interleave(torch.arange(boxes.shape[0], device=device), count)    # (P,)
        offset = torch.cumsum(count, 0) - count
        k = torch.arange(total, device=device) - offset[r]
        a = lv.start + (ilo[r] + k // nx[r]) * lv.cols + (jlo[r] + k % nx[r])  # (P,)
        ok = condition.test(boxes[r], points[a], strides[a])
        rows_out.append(r[ok])
        cols_out.append(a[ok])
    if not rows_out:
        z = torch.zeros(0, dtype=torch.long, device=device)
        return z, z
    r, a = torch.cat(rows_out), torch.cat(cols_out)
    order = torch.argsort(r * points.shape[0] + a)                               # by GT, then point
    return r[order], a[order]


def _dense_pairs(boxes: torch.Tensor, condition: Condition, points, strides):
    """The same pairs for arbitrary points, testing (chunk of GTs) × (all points)."""
    A = points.shape[0]
    chunk = max(1, ENUM_CHUNK_ELEMS // max(A, 1))
    rows, cols = [], []
    for start in range(0, boxes.shape[0], chunk):
        ok = condition.test(boxes[start:start + chunk, None, :], points[None], strides[None])   # (m, A)
        r, a = torch.nonzero(ok, as_tuple=True)
        rows.append(r + start)
        cols.append(a)
    if not rows:
        z = torch.zeros(0, dtype=torch.long, device=points.device)
        return z, z
    return torch.cat(rows), torch.cat(cols)


def enumerate_pairs(inp: Inputs, condition: Condition, nearest_fallback: bool = True) -> Pairs:
    """All (GT, point) pairs satisfying ``condition``, for the real (masked) GTs only.

    Grid points (as built by ``make_points``) are enumerated per GT window, O(pairs); other
    point sets fall back to chunked dense tests. With ``nearest_fallback`` a GT with no
    candidate gets the point nearest its centre, so no GT is left without one.
    """
    B, A, M, _ = inp.shape
    real_b, real_g = torch.nonzero(inp.gt_mask, as_tuple=True)          # (R,) real GTs, image-major
    boxes = inp.gt_boxes[real_b, real_g]                                 # (R, 4|5)
    levels = grid_levels(inp.points, inp.strides) if A else None
    if levels is not None:
        r, a = _grid_pairs(boxes, condition, levels, inp.points, inp.strides)
    else:
        r, a = _dense_pairs(boxes, condition, inp.points, inp.strides)
    if nearest_fallback and boxes.shape[0] and A:
        has = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
        has[r] = True
        empty = torch.nonzero(~has).squeeze(1)
        if empty.numel():
            centre = centres(boxes[empty])                               # (e, 2)
            nearest = torch.cdist(centre, inp.points).argmin(dim=1)
            r, a = torch.cat((r, empty)), torch.cat((a, nearest))
            order = torch.argsort(r * A + a)
            r, a = r[order], a[order]
    return Pairs(real_b[r], real_g[r], a, B, M, A)


# ---------------------------------------------------------------------------------- per-pair quantities
def pair_ious(inp: Inputs, pairs: Pairs) -> torch.Tensor:
    """(N,) IoU of each pair's predicted box with its GT box, in [0, 1] (rotated IoU for rotated boxes)."""
    return aligned_iou(inp.pred_boxes[pairs.b, pairs.a], inp.gt_boxes[pairs.b, pairs.g])


def positive_ious(inp: Inputs, pairs: Pairs, pos: torch.Tensor) -> torch.Tensor:
    """(N,) :func:`pair_ious` where ``pos`` (N,) bool holds, 0 elsewhere: the class targets of assigners that
    read the predicted box's IoU for their positives only (ATSS, Max-IoU)."""
    out = torch.zeros(len(pairs), device=inp.points.device)
    idx = torch.nonzero(pos).squeeze(1)
    out[idx] = pair_ious(inp, pairs.subset(idx))
    return out


def pair_class_prob(inp: Inputs, pairs: Pairs) -> torch.Tensor:
    """(N,) predicted probability of the pair's GT class (no (B, M, A, C) tensor is built)."""
    return inp.pred_scores[pairs.b, pairs.a, inp.gt_labels[pairs.b, pairs.g]]


def gt_sizes(inp: Inputs, pairs: Pairs) -> torch.Tensor:
    """(N, 2) width and height of each pair's GT (along its own axes)."""
    return sides(inp.gt_boxes[pairs.b, pairs.g])

"""Sparse (ground truth, point) pairs and the segment operations every assigner is built from.

A ground truth only ever competes for points near it, so instead of (B, M, A) matrices the
assigners work on the list of candidate pairs: N pairs, each with an image ``b``, a padded GT
index ``g`` and a point ``a``. A *segment* is one ground truth (``seg = b * M + g``); per-GT
reductions (sum, max, top-k) are scatter operations over segments. Memory is O(N), where N is
a few dozen pairs per GT, so 2,000 GTs on a 1024 px input stay in megabytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fss_train.assigners.base import AssignResult, Inputs, empty_result
from fss_train.boxes import box_iou_aligned

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

    ``test(gt (..., 4), pts (..., 2), s (...))`` -> bool (...). ``reach(gt (m, 4), s)`` gives the
    (m, 2) half-extent in pixels (x, y) around the GT centre outside which the test is always
    false for points of stride ``s``; it lets grid points be enumerated window by window.
    """

    def test(self, gt, pts, s):
        raise NotImplementedError

    def reach(self, gt, s: float):
        raise NotImplementedError


def _centre_offsets(gt, pts):
    centre = (gt[..., :2] + gt[..., 2:]) * 0.5
    half = (gt[..., 2:] - gt[..., :2]) * 0.5
    d = (pts - centre).abs()
    return d[..., 0], d[..., 1], half[..., 0], half[..., 1]


class InBox(Condition):
    """Point centre strictly inside the GT box."""

    def test(self, gt, pts, s):
        dx, dy, hw, hh = _centre_offsets(gt, pts)
        return (dx < hw) & (dy < hh)

    def reach(self, gt, s):
        return (gt[:, 2:] - gt[:, :2]) * 0.5


class InBoxOrCentre(Condition):
    """Inside the box, or within ``radius`` strides of the GT centre (L∞): the FSS/SimOTA region."""

    def __init__(self, radius: float):
        self.radius = radius

    def test(self, gt, pts, s):
        dx, dy, hw, hh = _centre_offsets(gt, pts)
        r = self.radius * s
        return ((dx < hw) & (dy < hh)) | ((dx < r) & (dy < r))

    def reach(self, gt, s):
        return ((gt[:, 2:] - gt[:, :2]) * 0.5).clamp(min=self.radius * s)


class CentreWindow(Condition):
    """Within ``radius`` strides of the GT centre on each axis (superset of the ATSS nearest-k)."""

    def __init__(self, radius: float):
        self.radius = radius

    def test(self, gt, pts, s):
        dx, dy, _, _ = _centre_offsets(gt, pts)
        r = self.radius * s
        return (dx < r) & (dy < r)

    def reach(self, gt, s):
        return torch.full_like(gt[:, :2], self.radius * s)


class PriorOverlaps(Condition):
    """The square prior of ``scale`` × stride at the point overlaps the GT (IoU > 0)."""

    def __init__(self, scale: float):
        self.scale = scale

    def test(self, gt, pts, s):
        dx, dy, hw, hh = _centre_offsets(gt, pts)
        h = 0.5 * self.scale * s
        return (dx < h + hw) & (dy < h + hh)

    def reach(self, gt, s):
        return (gt[:, 2:] - gt[:, :2]) * 0.5 + 0.5 * self.scale * s


# backwards-readable names used by the assigners
in_box = InBox()
in_box_or_centre = InBoxOrCentre
centre_window = CentreWindow
prior_overlaps = PriorOverlaps


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
    centre = (boxes[:, :2] + boxes[:, 2:]) * 0.5                                 # (R, 2)
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
    boxes = inp.gt_boxes[real_b, real_g]                                 # (R, 4)
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
            centre = (boxes[empty, :2] + boxes[empty, 2:]) * 0.5         # (e, 2)
            nearest = torch.cdist(centre, inp.points).argmin(dim=1)
            r, a = torch.cat((r, empty)), torch.cat((a, nearest))
            order = torch.argsort(r * A + a)
            r, a = r[order], a[order]
    return Pairs(real_b[r], real_g[r], a, B, M, A)


# ---------------------------------------------------------------------------------- per-pair quantities
def pair_ious(inp: Inputs, pairs: Pairs) -> torch.Tensor:
    """(N,) IoU of each pair's predicted box with its GT box, in [0, 1]."""
    return box_iou_aligned(inp.pred_boxes[pairs.b, pairs.a], inp.gt_boxes[pairs.b, pairs.g]).clamp(0, 1)


def pair_class_prob(inp: Inputs, pairs: Pairs) -> torch.Tensor:
    """(N,) predicted probability of the pair's GT class (no (B, M, A, C) tensor is built)."""
    return inp.pred_scores[pairs.b, pairs.a, inp.gt_labels[pairs.b, pairs.g]]


def gt_sizes(inp: Inputs, pairs: Pairs) -> torch.Tensor:
    """(N, 2) width and height of each pair's GT."""
    gt = inp.gt_boxes[pairs.b, pairs.g]
    return gt[:, 2:] - gt[:, :2]


# ---------------------------------------------------------------------------------- segment ops
def seg_sum(x: torch.Tensor, seg: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, seg, x)


def seg_count(seg: torch.Tensor, n: int) -> torch.Tensor:
    return torch.bincount(seg, minlength=n)


def seg_max(x: torch.Tensor, seg: torch.Tensor, n: int) -> torch.Tensor:
    """Per-segment max; -inf for empty segments."""
    out = torch.full((n,), float("-inf"), dtype=x.dtype, device=x.device)
    return out.scatter_reduce_(0, seg, x, "amax", include_self=True)


def seg_min(x: torch.Tensor, seg: torch.Tensor, n: int) -> torch.Tensor:
    return -seg_max(-x, seg, n)


def seg_argmax(x: torch.Tensor, seg: torch.Tensor, n: int) -> torch.Tensor:
    """(n,) index of the first pair holding each segment's max; -1 for empty segments."""
    N = x.numel()
    is_max = x == seg_max(x, seg, n)[seg]
    cand = torch.where(is_max, torch.arange(N, device=x.device), torch.full_like(seg, N))
    first = torch.full((n,), N, dtype=torch.long, device=x.device).scatter_reduce_(0, seg, cand, "amin")
    return torch.where(first == N, torch.full_like(first, -1), first)


def seg_rank(x: torch.Tensor, seg: torch.Tensor, n: int, descending: bool = True) -> torch.Tensor:
    """(N,) 0-based rank of each pair within its segment by ``x``; ties go to the earlier pair."""
    order = torch.argsort(x, descending=descending, stable=True)
    order = order[torch.argsort(seg[order], stable=True)]
    counts = seg_count(seg, n)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(seg)
    rank[order] = torch.arange(seg.numel(), device=seg.device) - starts[seg[order]]
    return rank


def seg_topk_sum(x: torch.Tensor, seg: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """(n,) sum of the ``k`` largest values of each segment."""
    top = seg_rank(x, seg, n) < k
    return seg_sum(torch.where(top, x, torch.zeros_like(x)), seg, n)


# ---------------------------------------------------------------------------------- decisions
def resolve_conflicts(pairs: Pairs, selected: torch.Tensor, priority: torch.Tensor) -> torch.Tensor:
    """A point selected by several GTs keeps only the pair with the highest ``priority``.

    selected (N,) bool, priority (N,) float -> (N,) bool, at most one True per point.
    """
    n_keys = pairs.num_images * pairs.num_points
    idx = torch.nonzero(selected).squeeze(1)
    keep = torch.zeros_like(selected)
    if idx.numel():
        winner = seg_argmax(priority[idx], pairs.key[idx], n_keys)
        keep[idx[winner[winner >= 0]]] = True
    return keep


def rescue_orphans(pairs: Pairs, pos: torch.Tensor, rank_score: torch.Tensor, max_rounds: int = 8) -> torch.Tensor:
    """Give every GT that has candidates but lost all its positives (to conflicts) one point.

    An orphan takes its best candidate (by ``rank_score``) that is either background or owned
    by a GT keeping at least one other positive; each owner loses at most one point per round.
    Returns the updated (N,) bool positive mask; still at most one GT per point.
    """
    pos = pos.clone()
    seg, n_seg = pairs.seg, pairs.num_seg
    key = pairs.key
    n_keys = pairs.num_images * pairs.num_points
    has_cand = seg_count(seg, n_seg) > 0
    for _ in range(max_rounds):
        n_pos = seg_count(seg[pos], n_seg)
        orphan = has_cand & (n_pos == 0)
        if not orphan.any():
            break
        owner_pair = torch.full((n_keys,), -1, dtype=torch.long, device=seg.device)
        owner_pair[key[pos]] = torch.nonzero(pos).squeeze(1)
        current = owner_pair[key]                                        # (N,) pair owning this point, or -1
        owner_seg = torch.where(current >= 0, seg[current.clamp(min=0)], torch.full_like(seg, -1))
        free = (current < 0) | (n_pos[owner_seg.clamp(min=0)] >= 2)
        eligible = orphan[seg] & free
        if not eligible.any():
            break
        cand = torch.nonzero(eligible).squeeze(1)
        score = rank_score[cand]
        best = seg_argmax(score, seg[cand], n_seg)                       # one candidate per orphan
        take = cand[best[best >= 0]]
        # one orphan per point, and each owner gives up at most one point per round
        take = take[_first_by(score_of=rank_score[take], group=key[take], n=n_keys)]
        owners = owner_seg[take]
        stolen = owners >= 0
        keep_take = torch.ones_like(take, dtype=torch.bool)
        if stolen.any():
            st = torch.nonzero(stolen).squeeze(1)
            first = _first_by(score_of=rank_score[take[st]], group=owners[st], n=n_seg)
            keep_take[st] = False
            keep_take[st[first]] = True
        take = take[keep_take]
        if take.numel() == 0:
            break
        prev = current[take]
        pos[prev[prev >= 0]] = False
        pos[take] = True
    return pos


def _first_by(score_of: torch.Tensor, group: torch.Tensor, n: int) -> torch.Tensor:
    """Indices (into the inputs) of the best-scoring element of each group."""
    best = seg_argmax(score_of, group, n)
    return best[best >= 0]


def build_result(inp: Inputs, pairs: Pairs, pos: torch.Tensor, target_iou: torch.Tensor,
                 weights: torch.Tensor | None = None, ignore: torch.Tensor | None = None) -> AssignResult:
    """Scatter the final positive pairs into dense (B, A, ·) targets.

    pos (N,) bool with at most one positive per point; target_iou (N,) the soft class target of a
    positive (one-hot × target_iou); weights (N,) loss weights (default 1); ignore (B, A) bool.
    """
    B, A, _, C = inp.shape
    res = empty_result(B, A, C, inp.points.device)
    idx = torch.nonzero(pos).squeeze(1)
    b, g, a = pairs.b[idx], pairs.g[idx], pairs.a[idx]
    labels = inp.gt_labels[b, g]
    res.fg_mask[b, a] = True
    res.gt_index[b, a] = g
    res.target_labels[b, a] = labels
    res.target_boxes[b, a] = inp.gt_boxes[b, g]
    res.target_scores[b, a, labels] = target_iou[idx]
    res.weights[b, a] = weights[idx] if weights is not None else 1.0
    if ignore is not None:
        res.ignore_mask = ignore & ~res.fg_mask
    res.num_fg = int(idx.numel())
    return res

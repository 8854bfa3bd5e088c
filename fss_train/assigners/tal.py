"""TAL — task-aligned assignment (TOOD), as Ultralytics 8.4's ``TaskAlignedAssigner`` computes it.

Reference: ``ultralytics/utils/tal.py`` of ultralytics 8.4.190 (PyPI), with the arguments its
detection loss passes (topk 10, α 0.5, β 6, strides 8/16/32). The reference is matched pair for
pair: ``tests/fss_train/test_assigners_reference.py`` compares this class with fixtures made by running
that code (``benchmarks/reference_fixtures.py``). Per GT g and point i:

1. candidates: point centres strictly inside the GT box (by more than ``inside_eps``), after
   sides shorter than ``min_side`` are widened to ``min_side`` about the box centre;
2. overlap u = CIoU(gt, pred) clamped at 0 (``overlap="iou"``: plain IoU, TOOD's metric);
   t = s^α · u^β with s the predicted probability of the GT's class (× objectness, 1 without);
3. the ``topk`` candidates with the largest t; candidates with t = 0 are never selected (the
   reference picks them only through the tie order of ``torch.topk`` among the zeros of a whole
   row, which in practice are points of the image's top-left corner and outside the box);
4. a point selected by several GTs goes to the GT with the largest u among *all* GTs whose
   (widened) box contains it, even one that did not select it; ties to the lower GT index;
5. class target one-hot × t · max u / max t, maxima over each GT's final positives.

Rotated boxes (``(…, 5)``) follow Ultralytics 8.4.190's ``RotatedTaskAlignedAssigner``: the overlap is probiou
clamped at 0 (``overlap="iou"``: the exact rotated IoU); the candidates are the points in the *closed* box along its
own axes (its corner-projection test) after each side shorter than ``min_side`` is widened to it; steps 3–5 as
above. Fixtures: ``benchmarks/reference_obb_fixtures.py``. Ultralytics' rotated test differs from its horizontal
one (closed box, probiou), so rotated TAL at θ = 0 is not horizontal TAL.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fss_core.boxes import box_ciou_aligned, box_iou_aligned
from fss_core.gaussian_box import probiou
from fss_train.assigners.base import Assigner, AssignResult
from fss_train.assigners.decide import build_result, rescue_orphans
from fss_train.assigners.geometry import aligned_iou, box_frame, centres, envelope_half, is_rotated, sides
from fss_train.assigners.pairs import Condition, Pairs, enumerate_pairs, pair_class_prob
from fss_train.assigners.segments import seg_argmax, seg_count, seg_max, seg_rank

OVERLAPS = ("ciou", "iou")


class InWidenedBox(Condition):
    """Point centre inside the GT box by more than ``eps`` px, sides < ``min_side`` widened to it."""

    def __init__(self, min_side: float, eps: float):
        self.min_side, self.eps = min_side, eps

    def widen(self, gt):
        centre = (gt[..., :2] + gt[..., 2:]) * 0.5
        side = gt[..., 2:] - gt[..., :2]
        half = torch.where(side < self.min_side, torch.full_like(side, self.min_side), side) * 0.5
        return centre - half, centre + half

    def test(self, gt, pts, s):
        lt, rb = self.widen(gt)
        d = torch.cat((pts - lt, rb - pts), dim=-1)
        return d.amin(dim=-1) > self.eps

    def reach(self, gt, s):
        side = gt[:, 2:] - gt[:, :2]
        return side.clamp(min=self.min_side) * 0.5


class InWidenedRBox(Condition):
    """Point centre in the closed rotated box along its axes, sides < ``min_side`` widened to it (Ultralytics'
    rotated test: 0 ≤ ap·ab ≤ |ab|² and 0 ≤ ap·ad ≤ |ad|² from a corner)."""

    def __init__(self, min_side: float):
        self.min_side = min_side

    def widen(self, gt):
        side = gt[..., 2:4].abs()
        side = torch.where(side < self.min_side, torch.full_like(side, self.min_side), side)
        return torch.cat((gt[..., :2], side, gt[..., 4:]), -1)

    def test(self, gt, pts, s):
        gt = self.widen(gt)
        local = box_frame(pts - centres(gt), gt).abs()
        return (local <= sides(gt) * 0.5).all(-1)

    def reach(self, gt, s):
        return envelope_half(self.widen(gt))


@dataclass(frozen=True)
class TALAssigner(Assigner):
    """Task-aligned assignment; defaults reproduce Ultralytics 8.4.190 (see the module docstring).
    ``overlap="iou", min_side=0`` gives TOOD's plain-IoU metric on the plain box."""

    topk: int = 10              # positives per GT before conflict resolution
    alpha: float = 0.5          # exponent of the classification score
    beta: float = 6.0           # exponent of the overlap
    overlap: str = "ciou"       # ciou (Ultralytics, clamped at 0; probiou for rotated boxes) | iou (TOOD)
    min_side: float = 16.0      # px; shorter GT sides are widened to this for the inside test (0 = off)
    inside_eps: float = 1e-9    # px a point centre must lie inside the (widened) box
    eps: float = 1e-9           # guards the target normalisation max u / max t
    rescue: bool = False        # a GT that lost every positive to conflicts takes one back (not in the reference)

    name = "tal"
    loss_recipe = "tal"

    def __post_init__(self):
        if self.overlap not in OVERLAPS:
            raise ValueError(f"tal overlap must be one of {OVERLAPS}, got {self.overlap!r}")
        if self.topk < 1 or self.min_side < 0:
            raise ValueError(f"tal needs topk >= 1 and min_side >= 0, got {self.topk}, {self.min_side}")

    def assign(self, inp) -> AssignResult:
        pairs = self.candidates(inp)
        seg, n = pairs.seg, pairs.num_seg
        s = pair_class_prob(inp, pairs) * inp.pred_obj[pairs.b, pairs.a]               # (N,)
        u = self.overlaps(inp, pairs)                                                  # (N,)
        t = s.pow(self.alpha) * u.pow(self.beta)                                       # (N,)
        selected = (seg_rank(t, seg, n) < self.topk) & (t > 0)
        pos = self.resolve(pairs, selected, u)
        if self.rescue:
            pos = rescue_orphans(pairs, pos, t)
        zero = torch.zeros_like(t)
        max_t = seg_max(torch.where(pos, t, zero), seg, n)[seg]
        max_u = seg_max(torch.where(pos, u, zero), seg, n)[seg]
        target = t * max_u / (max_t + self.eps)
        return build_result(inp, pairs, pos, target)

    def candidates(self, inp) -> Pairs:
        inside = InWidenedRBox(self.min_side) if is_rotated(inp.gt_boxes) else InWidenedBox(self.min_side,
                                                                                              self.inside_eps)
        return enumerate_pairs(inp, inside, nearest_fallback=False)

    def overlaps(self, inp, pairs: Pairs) -> torch.Tensor:
        gt, pred = inp.gt_boxes[pairs.b, pairs.g], inp.pred_boxes[pairs.b, pairs.a]
        if is_rotated(gt):
            return probiou(gt, pred).clamp(min=0) if self.overlap == "ciou" else aligned_iou(gt, pred)
        if self.overlap == "ciou":
            return box_ciou_aligned(gt, pred).clamp(min=0)
        return box_iou_aligned(gt, pred).clamp(0, 1)

    @staticmethod
    def resolve(pairs: Pairs, selected: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """A point selected by several GTs goes to the candidate GT with the largest overlap."""
        n_keys = pairs.num_images * pairs.num_points
        key = pairs.key
        times = seg_count(key[selected], n_keys)                                       # (B*A,)
        multi = times[key] > 1                                                         # (N,) point picked twice+
        pos = selected & ~multi
        idx = torch.nonzero(multi).squeeze(1)
        if idx.numel():
            best = seg_argmax(u[idx], key[idx], n_keys)                                # pairs ordered by GT index
            pos[idx[best[best >= 0]]] = True
        return pos

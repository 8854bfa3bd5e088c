"""ATSS — adaptive training sample selection (Zhang et al., CVPR 2020)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fss_train.assigners.base import Assigner, AssignResult
from fss_train.assigners.decide import build_result, rescue_orphans, resolve_conflicts
from fss_train.assigners.geometry import box_frame, centres, iou_with_priors, is_rotated, sides, square_priors
from fss_train.assigners.pairs import CentreWindow, enumerate_pairs, positive_ious
from fss_train.assigners.segments import seg_count, seg_rank, seg_sum


@dataclass(frozen=True)
class ATSSAssigner(Assigner):
    """One square prior of ``prior_scale`` · stride per point; per GT and level the ``topk``
    points nearest the GT centre are candidates; positive when IoU(prior, GT) ≥ mean + std of
    the candidates' IoUs and the point lies inside the GT. Conflicts keep the highest IoU.
    Class target one-hot × IoU of the predicted box (the IoU-aware target of the shared head)."""

    topk: int = 9               # nearest points per pyramid level
    prior_scale: float = 8.0    # prior side in strides
    # the nearest 9 grid points always lie within 4 strides of the centre on each axis
    window: float = 4.0
    inside_eps: float = 0.01    # a point must be this many pixels inside the box
    rescue: bool = False        # a GT left without positives takes its best candidate (not in the reference)

    name = "atss"

    def assign(self, inp) -> AssignResult:
        pairs = self.candidates(inp)
        pts = inp.points[pairs.a]
        gt = inp.gt_boxes[pairs.b, pairs.g]                                            # (N, 4|5)
        dist = (pts - centres(gt)).norm(dim=1)                                         # (N,)
        levels = torch.unique(inp.strides, sorted=True)
        level = torch.searchsorted(levels, inp.strides[pairs.a])                       # (N,)
        n_levels = levels.numel()
        seg_level = pairs.seg * n_levels + level
        nearest = seg_rank(dist, seg_level, pairs.num_seg * n_levels, descending=False) < self.topk
        priors = square_priors(inp.points, inp.strides, self.prior_scale, is_rotated(gt))
        # only the nearest candidates' prior IoUs are ever read (all of them for the rescue's ranking)
        need = torch.ones_like(nearest) if self.rescue else nearest
        prior_iou = torch.zeros(len(pairs), device=gt.device)
        prior_iou[need] = iou_with_priors(priors[pairs.a[need]], gt[need])             # (N,)
        seg, n = pairs.seg, pairs.num_seg
        cnt = seg_count(seg[nearest], n).clamp(min=1).float()
        iou_c = torch.where(nearest, prior_iou, torch.zeros_like(prior_iou))
        mean = seg_sum(iou_c, seg, n) / cnt
        var = seg_sum(torch.where(nearest, (prior_iou - mean[seg]) ** 2, torch.zeros_like(prior_iou)), seg, n)
        std = (var / (cnt - 1).clamp(min=1)).sqrt()                                    # unbiased, as torch.std
        inside = self.inside(gt, pts)
        selected = nearest & (prior_iou >= (mean + std)[seg]) & inside
        pos = resolve_conflicts(pairs, selected, prior_iou)
        if self.rescue:
            pos = rescue_orphans(pairs, pos, torch.where(nearest & inside, prior_iou, prior_iou - 2.0))
        return build_result(inp, pairs, pos, positive_ious(inp, pairs, pos))

    def candidates(self, inp):
        return enumerate_pairs(inp, CentreWindow(self.window), nearest_fallback=False)

    def inside(self, gt, pts):
        """(N,) the point lies more than ``inside_eps`` px inside its GT (along the box's axes when rotated)."""
        if is_rotated(gt):
            margin = sides(gt) * 0.5 - box_frame(pts - centres(gt), gt).abs()           # (N, 2)
            return margin.min(dim=1).values > self.inside_eps
        return torch.cat((pts - gt[:, :2], gt[:, 2:] - pts), dim=1).min(dim=1).values > self.inside_eps

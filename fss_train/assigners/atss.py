"""ATSS — adaptive training sample selection (Zhang et al., CVPR 2020)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fss_core.boxes import box_iou_aligned
from fss_train.assigners.base import Assigner, AssignResult
from fss_train.assigners.decide import build_result, rescue_orphans, resolve_conflicts
from fss_train.assigners.pairs import centre_window, enumerate_pairs, pair_ious
from fss_train.assigners.segments import seg_count, seg_rank, seg_sum


def prior_boxes(points: torch.Tensor, strides: torch.Tensor, scale: float) -> torch.Tensor:
    """(A, 4) square priors of side scale · stride centred on each point."""
    half = (0.5 * scale * strides)[:, None]
    return torch.cat((points - half, points + half), dim=1)


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
        gt = inp.gt_boxes[pairs.b, pairs.g]                                            # (N, 4)
        dist = (pts - (gt[:, :2] + gt[:, 2:]) * 0.5).norm(dim=1)                       # (N,)
        levels = torch.unique(inp.strides, sorted=True)
        level = torch.searchsorted(levels, inp.strides[pairs.a])                       # (N,)
        n_levels = levels.numel()
        seg_level = pairs.seg * n_levels + level
        nearest = seg_rank(dist, seg_level, pairs.num_seg * n_levels, descending=False) < self.topk
        prior_iou = box_iou_aligned(prior_boxes(inp.points, inp.strides, self.prior_scale)[pairs.a], gt)
        seg, n = pairs.seg, pairs.num_seg
        cnt = seg_count(seg[nearest], n).clamp(min=1).float()
        iou_c = torch.where(nearest, prior_iou, torch.zeros_like(prior_iou))
        mean = seg_sum(iou_c, seg, n) / cnt
        var = seg_sum(torch.where(nearest, (prior_iou - mean[seg]) ** 2, torch.zeros_like(prior_iou)), seg, n)
        std = (var / (cnt - 1).clamp(min=1)).sqrt()                                    # unbiased, as torch.std
        inside = torch.cat((pts - gt[:, :2], gt[:, 2:] - pts), dim=1).min(dim=1).values > self.inside_eps
        selected = nearest & (prior_iou >= (mean + std)[seg]) & inside
        pos = resolve_conflicts(pairs, selected, prior_iou)
        if self.rescue:
            pos = rescue_orphans(pairs, pos, torch.where(nearest & inside, prior_iou, prior_iou - 2.0))
        return build_result(inp, pairs, pos, pair_ious(inp, pairs))

    def candidates(self, inp):
        return enumerate_pairs(inp, centre_window(self.window), nearest_fallback=False)

"""Max-IoU assignment (RetinaNet-style), the paper's Table 3 baseline."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fss_train.assigners.base import Assigner, AssignResult
from fss_train.assigners.decide import build_result
from fss_train.assigners.geometry import centres, iou_with_priors, is_rotated, square_priors
from fss_train.assigners.pairs import PriorOverlaps, enumerate_pairs, positive_ious
from fss_train.assigners.segments import seg_argmax, seg_max


@dataclass(frozen=True)
class MaxIoUAssigner(Assigner):
    """Square priors of ``prior_scale`` · stride; each point takes the GT of highest prior IoU:
    positive at IoU ≥ ``pos_iou``, negative below ``neg_iou``, ignored in between; each GT's
    best prior is forced positive (ties: the prior nearest the GT centre). Class target one-hot × IoU of the
    predicted box."""

    prior_scale: float = 8.0    # prior side in strides
    pos_iou: float = 0.5
    neg_iou: float = 0.4

    name = "maxiou"

    def assign(self, inp) -> AssignResult:
        B, A, _, _ = inp.shape
        # every pair with IoU > 0 is enumerated, so sparse maxima equal the dense ones
        pairs = self.candidates(inp)
        gt = inp.gt_boxes[pairs.b, pairs.g]
        priors = square_priors(inp.points, inp.strides, self.prior_scale, is_rotated(gt))
        iou = iou_with_priors(priors[pairs.a], gt)                                     # (N,)
        key, n_keys = pairs.key, B * A
        best_pair_of_point = seg_argmax(iou, key, n_keys)                              # (B*A,)
        point_max = seg_max(iou, key, n_keys).clamp(min=0)                             # (B*A,)
        pos = torch.zeros_like(iou, dtype=torch.bool)
        has = best_pair_of_point >= 0
        winners = best_pair_of_point[has]
        pos[winners[iou[winners] >= self.pos_iou]] = True
        # each GT's best prior is forced positive (a later GT wins a shared prior, as in mmdet); among priors of
        # equal IoU (every prior that contains a small object whole) the one nearest the object's centre
        best_of_gt = self.best_prior(inp, pairs, iou)
        forced = best_of_gt[best_of_gt >= 0]
        forced = forced[iou[forced] > 0]
        pos[torch.isin(key, key[forced])] = False
        pos[_last_per_key(forced, key)] = True
        ignore = ((point_max >= self.neg_iou) & (point_max < self.pos_iou)).view(B, A)
        return build_result(inp, pairs, pos, positive_ious(inp, pairs, pos), ignore=ignore)

    def candidates(self, inp):
        return enumerate_pairs(inp, PriorOverlaps(self.prior_scale), nearest_fallback=False)

    @staticmethod
    def best_prior(inp, pairs, iou: torch.Tensor) -> torch.Tensor:
        """(B*M,) the pair of each GT's highest prior IoU, ties to the prior nearest the GT centre (-1: none)."""
        at_max = iou == seg_max(iou, pairs.seg, pairs.num_seg)[pairs.seg]
        d2 = ((inp.points[pairs.a] - centres(inp.gt_boxes[pairs.b, pairs.g])) ** 2).sum(1)
        return seg_argmax(torch.where(at_max, -d2, torch.full_like(d2, -torch.inf)), pairs.seg, pairs.num_seg)


def _last_per_key(idx: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Of pair indices ``idx`` sharing a point, keep the last (highest GT index)."""
    if idx.numel() == 0:
        return idx
    k = key[idx]
    order = torch.argsort(k, stable=True)
    k_sorted = k[order]
    last = torch.ones_like(k_sorted, dtype=torch.bool)
    last[:-1] = k_sorted[1:] != k_sorted[:-1]
    return idx[order[last]]

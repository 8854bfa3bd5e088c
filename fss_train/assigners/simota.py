"""SimOTA (YOLOX): cost-based dynamic-k matching over the centre/box candidate region."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fss_train.assigners.base import Assigner, AssignResult
from fss_train.assigners.sparse import (
    build_result,
    enumerate_pairs,
    in_box_or_centre,
    pair_class_prob,
    pair_ious,
    rescue_orphans,
    resolve_conflicts,
    seg_count,
    seg_rank,
    seg_topk_sum,
)

LOG_CLAMP = -100.0  # torch's BCE clamps log() at -100; so does the cost here


@dataclass(frozen=True)
class SimOTAAssigner(Assigner):
    """cost = BCE(sqrt(cls·obj), one-hot) summed over classes + iou_weight · (−log IoU);
    k = max(1, ⌊Σ top-q IoU⌋); a point claimed twice keeps the lowest cost; target one-hot × IoU.

    Points outside the candidate region carry YOLOX's large constant cost, which is never
    cheaper than a candidate; they are therefore not enumerated at all (k ≤ |candidates|).
    """

    center_radius: float = 2.5   # candidate region half-size around the GT centre, in strides
    topq: int = 10               # IoUs summed for the dynamic k
    iou_weight: float = 3.0      # weight of −log IoU in the cost
    rescue: bool = True          # a GT that lost every positive to conflicts takes one back

    name = "simota"

    def assign(self, inp) -> AssignResult:
        pairs = self.candidates(inp)
        seg, n = pairs.seg, pairs.num_seg
        cost = self.cost(inp, pairs)                                                   # (N,)
        u = pair_ious(inp, pairs)                                                      # (N,)
        k = self.dynamic_k(u, pairs)                                                   # (B*M,)
        selected = seg_rank(cost, seg, n, descending=False) < k[seg]
        pos = resolve_conflicts(pairs, selected, -cost)
        if self.rescue:
            pos = rescue_orphans(pairs, pos, -cost)
        return build_result(inp, pairs, pos, u)

    def candidates(self, inp):
        return enumerate_pairs(inp, in_box_or_centre(self.center_radius))

    def dynamic_k(self, u: torch.Tensor, pairs) -> torch.Tensor:
        """(B*M,) k = max(1, ⌊Σ top-q IoU⌋), never more than the GT's candidates."""
        seg, n = pairs.seg, pairs.num_seg
        k = seg_topk_sum(u, seg, n, self.topq).floor().long().clamp(min=1)
        return torch.minimum(k, seg_count(seg, n))

    def cost(self, inp, pairs) -> torch.Tensor:
        """(N,) YOLOX's matching cost without materialising (N, C): the sum over classes of
        BCE(q, one-hot) = Σ_c −log(1 − q_c) + [−log q_g + log(1 − q_g)], q = sqrt(p · o)."""
        q_all = (inp.pred_scores * inp.pred_obj[..., None]).sqrt()                    # (B, A, C)
        neg_all = -torch.log1p(-q_all).clamp(min=LOG_CLAMP).sum(-1)                   # (B, A)
        q = (pair_class_prob(inp, pairs) * inp.pred_obj[pairs.b, pairs.a]).sqrt()    # (N,)
        log_q = torch.log(q).clamp(min=LOG_CLAMP)
        log_1mq = torch.log1p(-q).clamp(min=LOG_CLAMP)
        cls_cost = neg_all[pairs.b, pairs.a] - log_q + log_1mq
        iou_cost = -torch.log(pair_ious(inp, pairs) + 1e-8)
        return cls_cost + self.iou_weight * iou_cost

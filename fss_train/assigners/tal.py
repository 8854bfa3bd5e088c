"""TAL — task-aligned assignment (TOOD; Ultralytics' TaskAlignedAssigner)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fss_train.assigners.base import Assigner, AssignResult
from fss_train.assigners.sparse import (
    build_result,
    enumerate_pairs,
    in_box,
    pair_class_prob,
    pair_ious,
    rescue_orphans,
    resolve_conflicts,
    seg_max,
    seg_rank,
)

EPS = 1e-9


@dataclass(frozen=True)
class TALAssigner(Assigner):
    """t = s^alpha · IoU^beta on points whose centre is inside the box (s = p[c_g] · obj);
    top-k per GT by t; a point claimed twice keeps the highest IoU; class targets
    one-hot × t · max IoU / max t (maxima over each GT's final positives)."""

    topk: int = 10          # positives per GT before conflict resolution
    alpha: float = 0.5      # exponent of the classification score
    beta: float = 6.0       # exponent of the IoU
    rescue: bool = True     # a GT that lost every positive to conflicts takes one back

    name = "tal"

    def assign(self, inp) -> AssignResult:
        pairs = self.candidates(inp)
        seg, n = pairs.seg, pairs.num_seg
        s = pair_class_prob(inp, pairs) * inp.pred_obj[pairs.b, pairs.a]               # (N,)
        u = pair_ious(inp, pairs)                                                      # (N,)
        t = s.pow(self.alpha) * u.pow(self.beta)                                       # (N,)
        selected = seg_rank(t, seg, n) < self.topk
        pos = resolve_conflicts(pairs, selected, u)
        if self.rescue:
            pos = rescue_orphans(pairs, pos, t)
        zero = torch.zeros_like(t)
        max_t = seg_max(torch.where(pos, t, zero), seg, n)[seg]
        max_u = seg_max(torch.where(pos, u, zero), seg, n)[seg]
        target = t * max_u / (max_t + EPS)
        return build_result(inp, pairs, pos, target)

    def candidates(self, inp):
        return enumerate_pairs(inp, in_box, nearest_fallback=False)

"""FSS — Focusing on Suboptimal Samples — exactly as ../shared/FSS-SPEC.md, steps 1–8.

Per GT g and candidate point i (sparse pairs, see ``pairs.py``):
  1. t = s^alpha · u^beta,  s = sqrt(p[c_g] · o),  u = IoU(pred, gt)
  2. candidates: inside the box or within ``center_radius`` strides of its centre
  3. P = (t + eps) / Σ_candidates (t + eps)                       (option prob)
  4. i* = argmax P (or the P-weighted centroid); Gaussian prior G around it, along the GT's axes
     (rotated boxes: the covariance turned to the object), σ = max(rho · side, sigma_min · stride_i*)
  5. k = clamp(floor(Σ top-q (u · G)), 1, |C_g|)                   (option dynamic_k)
  6. select top-k of r = P · G; a point claimed twice keeps the larger r (option conflict)
  7. w = P^gamma / mean_{positives of g}(P^gamma), clamped to ≤ w_max
  8. class target one-hot(c_g) · u, box target b_g

Not the spec, a study alternative (issue #35 item 3 b): ``prior_level="star"`` keeps steps 4–6 on i*'s own pyramid
level (the prior is 0 elsewhere, k counts that level's candidates only), so one GT's positives never mix levels.

A worked case (the default parameters; every number is ``FSS().steps`` on it, pinned by a test): one 24 × 24 px
car, box (100, 100)–(124, 124), and stride-8 points on the row y = 112 at x = 100, 108, 116, 124, 132. The last
lies 20 px = 2.5 strides from the centre, not within it: four candidates.

    point x              100     108     116     124
    s = sqrt(p · o)      0.548   0.742   0.837   0.775
    u = IoU(pred, gt)    0.391   0.725   1.000   0.532
    t = s · u^6          0.002   0.107   0.837   0.018      (β = 6: localisation dominates)
    P                    0.002   0.111   0.868   0.018
    G                    0.411   0.801   1.000   0.801      step 4: i* = 116, σ = max(0.5 · 24, 0.5 · 8) = 12 px
    r = P · G            0.001   0.089   0.868   0.015
    positive                     yes     yes                step 5: k = floor(0.161 + 0.581 + 1.000 + 0.426) = 2
    w                            0.228   1.772              step 7: P / mean P of the positives (0.4895)

Step 6 takes the two largest r: x = 116, the optimal sample, and its suboptimal neighbour 108, whose loss counts
a quarter as much; 124 (P 0.018) and 100 stay background.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fss_train.assigners.base import Assigner, AssignResult
from fss_train.assigners.decide import build_result, rescue_orphans, resolve_conflicts
from fss_train.assigners.geometry import box_frame, centres
from fss_train.assigners.pairs import InBoxOrCentre, Pairs, enumerate_pairs, gt_sizes, pair_class_prob, pair_ious
from fss_train.assigners.segments import seg_argmax, seg_count, seg_max, seg_min, seg_rank, seg_sum, seg_topk_sum

PROB_MODES = ("sum", "softmax", "minmax")
PRIOR_CENTRES = ("argmax", "centroid")
DYNAMIC_K_MODES = ("prior", "iou")
CONFLICT_MODES = ("score", "iou")
PRIOR_LEVELS = ("all", "star")


@dataclass(frozen=True)
class FSSAssigner(Assigner):
    """FSS label assignment. Every option of FSS-SPEC.md is a field; defaults are the spec's."""

    alpha: float = 1.0          # exponent of the joint classification score s in t
    beta: float = 6.0           # exponent of the IoU u in t
    center_radius: float = 2.5  # candidate region half-size around the GT centre, in strides
    eps: float = 1e-4           # additive smoothing of the probability matrix (units of t)
    rho: float = 0.5            # Gaussian σ as a fraction of the GT side (spec revision 2026-11-26; was 0.25)
    sigma_min: float = 0.5      # floor of σ, in strides of the potentially optimal point
    topq: int = 10              # number of (prior-weighted) IoUs summed for the dynamic k
    gamma: float = 1.0          # power of P in the weights (0 = uniform: SubOptSel only)
    w_max: float = 4.0          # upper clamp of a weight
    prob: str = "sum"           # sum | softmax | minmax (step 3)
    tau: float = 0.1            # temperature of prob="softmax"
    prior_centre: str = "argmax"  # argmax | centroid (step 4)
    dynamic_k: str = "prior"    # prior | iou (step 5; iou = SimOTA's k, the "without prior" ablation)
    conflict: str = "score"     # score (largest r) | iou (largest u, as TAL) (step 6)
    rescue: bool = True         # a GT that lost every positive to conflicts takes one back
    prior_level: str = "all"    # all | star: prior, k and selection on i*'s pyramid level only (#35 item 3 b; a
                                # study alternative, not the spec's)

    name = "fss"

    def __post_init__(self):
        for field, allowed in (("prob", PROB_MODES), ("prior_centre", PRIOR_CENTRES),
                               ("dynamic_k", DYNAMIC_K_MODES), ("conflict", CONFLICT_MODES),
                               ("prior_level", PRIOR_LEVELS)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"fss: {field} must be one of {allowed}, got {getattr(self, field)!r}")
        if self.topq < 1 or self.eps < 0 or self.rho <= 0 or self.sigma_min <= 0 or self.w_max <= 0:
            raise ValueError(f"fss: invalid parameters {self.params()}")

    def assign(self, inp) -> AssignResult:
        pairs = self.candidates(inp)                                                      # step 2
        steps = self.steps(inp, pairs)
        return build_result(inp, pairs, steps["pos"], steps["u"], steps["w"])

    def candidates(self, inp) -> Pairs:
        return enumerate_pairs(inp, InBoxOrCentre(self.center_radius))

    def steps(self, inp, pairs: Pairs) -> dict:
        """Every intermediate quantity of the spec, per pair (N,) or per GT segment (B*M,)."""
        seg, n = pairs.seg, pairs.num_seg
        # step 1: label metric
        s = (pair_class_prob(inp, pairs) * inp.pred_obj[pairs.b, pairs.a]).clamp(min=0).sqrt()   # (N,)
        u = pair_ious(inp, pairs)                                                                 # (N,)
        t = s.pow(self.alpha) * u.pow(self.beta)                                                  # (N,)
        # step 3: probability of being the optimal sample
        P = self._probability(t, seg, n)                                                          # (N,)
        # step 4: the potentially optimal sample and its Gaussian prior
        pts = inp.points[pairs.a]                                                                 # (N, 2)
        gt = inp.gt_boxes[pairs.b, pairs.g]                                                       # (N, 4|5)
        centre_d2 = ((pts - centres(gt)) ** 2).sum(dim=1)                                         # (N,)
        # argmax of P; a tie (a flat P early in training: every IoU 0) goes to the point nearest the box centre
        at_max = P == seg_max(P, seg, n)[seg]
        best = seg_argmax(torch.where(at_max, -centre_d2, torch.full_like(P, -torch.inf)), seg, n)   # (B*M,)
        valid = best >= 0
        if self.prior_centre == "argmax":
            mu = torch.zeros(n, 2, device=pts.device)
            mu[valid] = pts[best[valid]]
        else:
            mass = seg_sum(P, seg, n).clamp(min=1e-12)[:, None]
            mu = torch.zeros(n, 2, device=pts.device).index_add_(0, seg, P[:, None] * pts) / mass
        stride_star = torch.ones(n, device=pts.device)
        stride_star[valid] = inp.strides[pairs.a[best[valid]]]
        side = gt_sizes(inp, pairs)                                                               # (N, 2)
        sigma = torch.maximum(self.rho * side, self.sigma_min * stride_star[seg][:, None])       # (N, 2)
        G = torch.exp(-0.5 * ((box_frame(pts - mu[seg], gt) / sigma) ** 2).sum(dim=1))           # (N,)
        on_level = (inp.strides[pairs.a] == stride_star[seg] if self.prior_level == "star"
                    else torch.ones_like(G, dtype=torch.bool))                                    # (N,)
        G = torch.where(on_level, G, torch.zeros_like(G))
        # step 5: Gaussian-prior dynamic k
        n_cand = seg_count(seg[on_level], n)
        quality = u * G if self.dynamic_k == "prior" else torch.where(on_level, u, torch.zeros_like(u))
        k = seg_topk_sum(quality, seg, n, self.topq).floor().long()
        k = torch.minimum(k.clamp(min=1), n_cand)                                                 # (B*M,)
        # step 6: select top-k of r = P·G, then resolve points claimed by several GTs
        r = P * G
        selected = (seg_rank(r, seg, n) < k[seg]) & on_level
        pos = resolve_conflicts(pairs, selected, r if self.conflict == "score" else u)
        if self.rescue:
            pos = rescue_orphans(pairs, pos, r)
        # step 7: mean-normalised power transform over each GT's final positives
        w = self._weights(P, pos, seg, n)
        return {"s": s, "u": u, "t": t, "P": P, "mu": mu, "sigma": sigma, "G": G, "k": k, "r": r,
                "selected": selected, "pos": pos, "w": w}

    def _probability(self, t, seg, n):
        if self.prob == "sum":
            te = t + self.eps
            return te / seg_sum(te, seg, n)[seg]
        if self.prob == "softmax":
            z = torch.exp((t - seg_max(t, seg, n)[seg]) / self.tau)
            return z / seg_sum(z, seg, n)[seg]
        lo, hi = seg_min(t, seg, n)[seg], seg_max(t, seg, n)[seg]
        span = hi - lo
        return torch.where(span > 0, (t - lo) / span.clamp(min=1e-12), torch.ones_like(t))

    def _weights(self, P, pos, seg, n):
        powered = torch.where(pos, P.pow(self.gamma), torch.zeros_like(P))          # 0^0 = 1 handled by pos
        mean = seg_sum(powered, seg, n) / seg_count(seg[pos], n).clamp(min=1)
        w = powered / mean[seg].clamp(min=1e-12)
        return torch.where(pos, w.clamp(max=self.w_max), torch.zeros_like(w))

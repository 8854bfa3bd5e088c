"""SimOTA (YOLOX), as ``YOLOXHead.get_assignments`` of YOLOX 0.3.0 (PyPI) computes it.

Reference: ``yolox/models/yolo_head.py`` of yolox 0.3.0; ``region="centre"`` follows the code on
YOLOX's main branch since January 2023 (``get_geometry_constraint``: centre region only, radius
1.5, penalty 1e6). ``tests/fss_train/test_assigners_reference.py`` compares both with fixtures made by
running that code (``benchmarks/reference_fixtures.py``). Per image:

1. the candidate points F are the union over its GTs of the points inside a GT box or inside
   the centre square of ±``center_radius`` strides (``region="centre"``: the centre squares only);
2. for every GT and every point of F — not only the GT's own region —
   cost = Σ_c BCE(sqrt(p_c · o), one-hot(c_g)) + 3 · (−log(IoU + 1e-8)) + penalty · [point outside
   the GT's box ∩ centre square (``centre``: outside its centre square)];
3. k_g = max(1, ⌊Σ of the 10 largest IoUs of g over F⌋); g takes its k_g cheapest points of F;
4. a point taken by several GTs goes to the GT of lowest cost among *all* GTs (even one that did
   not take it); target one-hot × IoU.

Memory: (GT chunk × |F|) at a time, bounded by ``chunk_elems``; nothing (B, M, A, C) is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fss_core.boxes import box_iou_exact
from fss_train.assigners.base import Assigner, AssignResult
from fss_train.assigners.decide import build_result
from fss_train.assigners.geometry import aligned_iou, box_frame, centres, is_rotated, pairwise_iou, sides
from fss_train.assigners.pairs import Pairs

LOG_CLAMP = -100.0  # torch's BCE clamps log() at -100; so does the cost here
REGIONS = ("box_or_centre", "centre")


@dataclass(frozen=True)
class SimOTAAssigner(Assigner):
    """SimOTA; defaults reproduce YOLOX 0.3.0. ``region="centre", center_radius=1.5, penalty=1e6``
    is YOLOX's 2023 variant."""

    center_radius: float = 2.5   # centre square half-size, in strides
    region: str = "box_or_centre"  # box_or_centre (YOLOX 0.3.0) | centre (YOLOX main since 2023-01)
    topq: int = 10               # IoUs summed for the dynamic k
    iou_weight: float = 3.0      # weight of −log IoU in the cost
    penalty: float = 1e5         # cost added outside the GT's geometric region (YOLOX 0.3.0: 1e5; 2023: 1e6)
    chunk_elems: int = 1 << 22   # (GTs × points) elements per cost chunk

    name = "simota"

    def __post_init__(self):
        if self.region not in REGIONS:
            raise ValueError(f"simota region must be one of {REGIONS}, got {self.region!r}")

    def assign(self, inp) -> AssignResult:
        B, A, M, _ = inp.shape
        q_all = (inp.pred_scores * inp.pred_obj[..., None]).sqrt()                    # (B, A, C)
        neg_all = -torch.log(1 - q_all).clamp(min=LOG_CLAMP).sum(-1)                   # (B, A)
        bs, gs, as_, ious = [], [], [], []
        for b in range(B):
            g_real = torch.nonzero(inp.gt_mask[b]).squeeze(1)                          # (R,)
            if g_real.numel() == 0:
                continue
            g, a, iou = self.match_image(inp, b, g_real, q_all[b], neg_all[b])
            bs.append(torch.full_like(a, b))
            gs.append(g)
            as_.append(a)
            ious.append(iou)
        if not bs:
            pairs = Pairs(*(torch.zeros(0, dtype=torch.long, device=inp.points.device),) * 3, B, M, A)
            return build_result(inp, pairs, torch.zeros(0, dtype=torch.bool), torch.zeros(0))
        pairs = Pairs(torch.cat(bs), torch.cat(gs), torch.cat(as_), B, M, A)
        return build_result(inp, pairs, torch.ones(len(pairs), dtype=torch.bool, device=inp.points.device),
                            torch.cat(ious))

    # ------------------------------------------------------------------------------ one image
    def geometry(self, boxes: torch.Tensor, pts: torch.Tensor, strides: torch.Tensor):
        """(m, 4|5) GTs × (n, 2) points -> (in_region (m, n), in_geometry (m, n)): the union test and
        the test whose failure costs ``penalty``. Strict inequalities as the reference's ``delta > 0``
        (for floats a − b > 0 exactly when a > b); a rotated box is tested along its own axes."""
        px, py = pts[None, :, 0], pts[None, :, 1]                                       # (1, n)
        cx, cy = centres(boxes)[:, 0:1], centres(boxes)[:, 1:2]                         # (m, 1)
        r = (self.center_radius * strides)[None]                                        # (1, n)
        in_centre = (px > cx - r) & (px < cx + r) & (py > cy - r) & (py < cy + r)
        if self.region == "centre":
            return in_centre, in_centre
        if is_rotated(boxes):
            local = box_frame(pts[None] - centres(boxes)[:, None], boxes[:, None]).abs()   # (m, n, 2)
            half = sides(boxes)[:, None] * 0.5                                           # (m, 1, 2)
            in_box = (local < half).all(-1)
        else:
            in_box = ((px > boxes[:, 0:1]) & (px < boxes[:, 2:3]) & (py > boxes[:, 1:2]) & (py < boxes[:, 3:4]))
        return in_box | in_centre, in_box & in_centre

    def match_image(self, inp, b: int, g_real: torch.Tensor, q: torch.Tensor, neg: torch.Tensor):
        """Matched (gt index, point index, IoU) of image ``b``; q (A, C), neg (A,)."""
        boxes = inp.gt_boxes[b, g_real]                                                 # (R, 4|5)
        labels = inp.gt_labels[b, g_real]                                               # (R,)
        A = inp.points.shape[0]
        R = boxes.shape[0]
        # 1. candidate points: the union of every GT's region
        union = torch.zeros(A, dtype=torch.bool, device=boxes.device)
        step = max(1, self.chunk_elems // max(A, 1))
        for s in range(0, R, step):
            union |= self.geometry(boxes[s:s + step], inp.points, inp.strides)[0].any(0)
        f = torch.nonzero(union).squeeze(1)                                             # (F,)
        n_f = f.numel()
        empty = torch.zeros(0, dtype=torch.long, device=boxes.device)
        if n_f == 0:
            return empty, empty, torch.zeros(0, device=boxes.device)
        pts, strides, pred = inp.points[f], inp.strides[f], inp.pred_boxes[b, f]
        # Σ_c BCE(q_c, one-hot(c_g)) = Σ_c −log(1 − q_c) + [log(1 − q_g) − log(q_g)]: per point and class once
        q_f = q[f]                                                                      # (F, C)
        delta = torch.log(1 - q_f).clamp(min=LOG_CLAMP) - torch.log(q_f).clamp(min=LOG_CLAMP)  # (F, C)
        neg_f = neg[f]                                                                  # (F,)
        # 2.-3. per GT chunk: cost, dynamic k, the k cheapest points; running min cost per point
        best_cost = torch.full((n_f,), float("inf"), device=boxes.device)
        best_gt = torch.zeros(n_f, dtype=torch.long, device=boxes.device)
        sel_g, sel_f = [], []
        step = max(1, self.chunk_elems // n_f)
        for s in range(0, R, step):
            m_box, m_lab = boxes[s:s + step], labels[s:s + step]
            iou = pairwise_iou(m_box, pred)                                             # (m, F)
            cls = neg_f[None] + delta[:, m_lab].T                                       # (m, F)
            geo = self.geometry(m_box, pts, strides)[1]                                 # (m, F)
            cost = cls + self.iou_weight * -torch.log(iou + 1e-8) + self.penalty * (~geo)
            k = torch.topk(iou, min(self.topq, n_f), dim=1).values.sum(1).int().clamp(min=1)     # (m,)
            order = torch.topk(cost, int(k.max()), dim=1, largest=False).indices      # (m, kmax)
            take = torch.arange(order.shape[1], device=boxes.device)[None] < k[:, None]
            rows = torch.arange(m_box.shape[0], device=boxes.device)[:, None].expand_as(order)
            sel_g.append(rows[take] + s)
            sel_f.append(order[take])
            c_min, c_arg = cost.min(dim=0)                                              # (F,)
            better = c_min < best_cost                                                  # ties keep the lower GT
            best_cost = torch.where(better, c_min, best_cost)
            best_gt = torch.where(better, c_arg + s, best_gt)
        g_sel, f_sel = torch.cat(sel_g), torch.cat(sel_f)
        # 4. a point taken more than once goes to the cheapest GT over all GTs
        times = torch.bincount(f_sel, minlength=n_f)                                   # (F,)
        owner = torch.full((n_f,), -1, dtype=torch.long, device=boxes.device)
        owner[f_sel] = g_sel                                                            # exact where taken once
        owner = torch.where(times > 1, best_gt, owner)
        fg = torch.nonzero(owner >= 0).squeeze(1)
        g_loc = owner[fg]
        final = aligned_iou(boxes[g_loc], pred[fg]) if is_rotated(boxes) else box_iou_exact(boxes[g_loc], pred[fg])
        return g_real[g_loc], f[fg], final

"""Decisions every assigner shares: conflicts between ground truths, rescuing GTs left without a positive,
and turning selected pairs into an AssignResult."""

from __future__ import annotations

import torch

from fss_train.assigners.base import AssignResult, Inputs, empty_result
from fss_train.assigners.pairs import Pairs
from fss_train.assigners.segments import seg_argmax, seg_count


def resolve_conflicts(pairs: Pairs, selected: torch.Tensor, priority: torch.Tensor) -> torch.Tensor:
    """A point selected by several GTs keeps only the pair with the highest ``priority``.

    selected (N,) bool, priority (N,) float -> (N,) bool, at most one True per point.

    A worked case (one image, two neighbouring cars, points 0…3; the numbers are this function's output): GT 0
    has candidate points 0, 1, 2 and GT 1 has points 2, 3, so the five pairs are

        pair      0     1     2     3     4
        (GT, pt)  (0,0) (0,1) (0,2) (1,2) (1,3)
        selected  yes   yes   yes   yes   no
        priority  0.50  0.62  0.71  0.64  0.20

    Point 2 is selected by both GTs; GT 0's pair has the higher priority (0.71 > 0.64), so the result is
    [True, True, True, False, False]: GT 0 keeps 0, 1, 2 and GT 1 is left with no positive — an orphan for
    :func:`rescue_orphans`. Ties go to the earlier pair.
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

    The worked case of :func:`resolve_conflicts` continued: GT 1 lost point 2 and holds nothing. Its candidates
    are point 2 (owned by GT 0, which keeps two other positives, so it may give it up) with ``rank_score`` 0.64
    and point 3 (background) with 0.30. The orphan takes its best eligible candidate, point 2, from GT 0:
    positives [True, True, False, True, False] — GT 0 keeps points 0 and 1, GT 1 has point 2. Had GT 0 owned
    point 2 alone, point 2 would not be free and GT 1 would take point 3 instead; a GT with no candidate at all
    stays without a positive.
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
    res = empty_result(B, A, C, inp.points.device, inp.gt_boxes.shape[-1])
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

"""Segment operations: per-ground-truth reductions over sparse pairs (``seg = b * M + g``), as scatters.

Each takes values ``x`` (N,), the segment of every element ``seg`` (N,) and the number of segments ``n``,
and returns (n,) — or (N,) for ranks."""

from __future__ import annotations

import torch


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
    """(N,) 0-based rank of each pair within its segment by ``x``; ties go to the earlier pair.

    Two sorts do it without a loop over segments: by value, then (stably) by segment, so each segment's pairs
    sit together in value order; a pair's rank is its position minus its segment's start. A worked case, two GTs
    and an empty third segment (pinned by a test):

        pair   0    1    2    3    4    5
        seg    0    0    0    0    1    1          n = 3 (segment 2 has no pair)
        x      0.9  0.2  0.9  0.5  0.7  0.1
        rank   0    3    1    2    0    1          pairs 0 and 2 tie at 0.9: the earlier one ranks first

    ``seg_topk_sum(x, seg, 3, k=2)`` then sums the ranks below 2: [1.8, 0.8, 0.0]. This is how FSS's step 6 takes
    each GT's top-k of r = P·G (``seg_rank(r, seg, n) < k[seg]``) and step 5 its top-q sum.
    """
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

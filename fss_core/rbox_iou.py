"""Exact IoU of rotated rectangles, fast and differentiable: the path training takes (assigners, a rotated IoU loss).

``polygon_iou`` handles any quadrilateral (DOTA's non-convex labels included) and matches the devkit to 1e-9; it
sorts up to 24 candidate corners per pair by angle, about 19 µs a pair on this machine. Two *rectangles* need less:
in the frame of box B (centred, axes along its sides) B is the axis-aligned box ``|x| ≤ w/2, |y| ≤ h/2``, so the
overlap is box A's 4 corners clipped by 4 axis-aligned half-planes (Sutherland–Hodgman). Each clip adds at most
one corner, so the overlap has at most 8; every stage keeps 8 slots (valid corners first, in order) and the
shoelace formula sums the valid ones. No sorting by angle, no special cases; gradients flow through the clipped
corners to both boxes' centres, sides and angles. A cut corner is put on its clip line exactly, so a box lying
wholly inside another yields its own corners and every such pair gets the same IoU to the last bit (Max-IoU's ties
among the priors that contain a small object stay ties).

Worked example: A = (0, 0, 4, 2, 0) and B = (1, 0, 4, 2, π/2). In B's frame A's corners are (−1, 3), (−1, −1),
(1, −1), (1, 3) (y runs along B's long side); clipping by |x| ≤ 2 keeps them, by |y| ≤ 1 cuts the top at y = 1:
the overlap is the 2 × 2 square, area 4, union 8 + 8 − 4 = 12, IoU 1/3 (``rbox_iou_aligned`` gives 0.33333).

Boxes follow ``fss_core.rbox``: ``(cx, cy, w, h, θ)``; sides need not be regularised (w < h is the same
rectangle), θ any real. Zero-area boxes give IoU 0, never NaN.
"""

from __future__ import annotations

import torch

from fss_core.boxes import overlapping_across
from fss_core.rbox import rbox_to_poly

SLOTS = 8                 # corners an overlap of two rectangles can have


def _next_index(valid: torch.Tensor) -> torch.Tensor:
    """(N, S) valid-first masks -> (N, S) index of each slot's successor around the polygon of valid slots."""
    n = valid.sum(-1, keepdim=True).clamp(min=1)                                  # (N, 1)
    return (torch.arange(valid.shape[-1], device=valid.device) + 1) % n           # (N, S)


def _clip(poly: torch.Tensor, valid: torch.Tensor, axis: int, bound: torch.Tensor, sign: float):
    """Keep the part of each polygon (N, S, 2) where ``bound − sign · coordinate ≥ 0``; returns (N, SLOTS, 2) and
    its valid-first mask (N, SLOTS)."""
    nxt = _next_index(valid)
    q = poly.gather(1, nxt[..., None].expand_as(poly))                            # (N, S, 2) edge ends
    fp = bound[:, None] - sign * poly[..., axis]                                  # (N, S) ≥ 0 inside
    fq = bound[:, None] - sign * q[..., axis]
    in_p, in_q = fp >= 0, fq >= 0
    crosses = valid & (in_p != in_q)
    t = fp / torch.where(crosses, fp - fq, torch.ones_like(fp))                   # in [0, 1] where it crosses
    cut = poly + t[..., None] * (q - poly)                                        # (N, S, 2)
    cut[..., axis] = (sign * bound)[:, None].expand_as(t)      # on the clip line exactly: no rounding in that axis
    out = torch.stack((poly, cut), 2).flatten(1, 2)                               # (N, 2S, 2): p_i, then its cut
    ok = torch.stack((valid & in_p, crosses), 2).flatten(1, 2)                    # (N, 2S)
    order = torch.argsort((~ok).to(torch.uint8), dim=1, stable=True)[:, :SLOTS]   # valid first, order kept
    return out.gather(1, order[..., None].expand(-1, -1, 2)), ok.gather(1, order)


def _area(poly: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Shoelace area of the valid-first polygons (N, S, 2) -> (N,) (absolute value)."""
    q = poly.gather(1, _next_index(valid)[..., None].expand_as(poly))
    cross = poly[..., 0] * q[..., 1] - poly[..., 1] * q[..., 0]
    return (cross * valid).sum(-1).abs() / 2


def rbox_intersection_aligned(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Overlap area of broadcastable ``(..., 5)`` rotated boxes, element by element -> ``(...)``, in a's dtype."""
    a, b = torch.broadcast_tensors(a, b)
    lead = a.shape[:-1]
    a, b = a.reshape(-1, 5), b.reshape(-1, 5)
    cos, sin = torch.cos(b[:, 4]), torch.sin(b[:, 4])
    d = rbox_to_poly(torch.cat((a[:, :2] - b[:, :2], a[:, 2:]), 1)).view(-1, 4, 2)   # (N, 4, 2) A around B's centre
    local = torch.stack((d[..., 0] * cos[:, None] + d[..., 1] * sin[:, None],
                         -d[..., 0] * sin[:, None] + d[..., 1] * cos[:, None]), -1)   # (N, 4, 2) in B's frame
    poly = torch.cat((local, local.new_zeros(local.shape[0], SLOTS - 4, 2)), 1)
    valid = torch.arange(SLOTS, device=a.device).expand(poly.shape[0], SLOTS) < 4
    hw, hh = b[:, 2].abs() / 2, b[:, 3].abs() / 2
    for axis, bound in ((0, hw), (1, hh)):
        for sign in (1.0, -1.0):
            poly, valid = _clip(poly, valid, axis, bound, sign)
    return _area(poly, valid).reshape(lead)


def rbox_iou_aligned(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """IoU of broadcastable ``(..., 5)`` rotated boxes -> ``(...)`` in [0, 1], 0 where the union is empty."""
    inter = rbox_intersection_aligned(a, b)
    area_a = (a[..., 2] * a[..., 3]).abs()
    area_b = (b[..., 2] * b[..., 3]).abs()
    union = area_a + area_b - inter
    return torch.where(union > eps, inter / union.clamp(min=eps), torch.zeros_like(union)).clamp(0, 1)


def rbox_envelopes(rbox: torch.Tensor) -> torch.Tensor:
    """``(..., 5)`` -> ``(..., 4)`` axis-aligned envelopes x1 y1 x2 y2."""
    cos, sin = torch.cos(rbox[..., 4]).abs(), torch.sin(rbox[..., 4]).abs()
    hx = (rbox[..., 2].abs() * cos + rbox[..., 3].abs() * sin) / 2
    hy = (rbox[..., 2].abs() * sin + rbox[..., 3].abs() * cos) / 2
    return torch.stack((rbox[..., 0] - hx, rbox[..., 1] - hy, rbox[..., 0] + hx, rbox[..., 1] + hy), -1)


def rbox_iou_pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(m, 5) × (n, 5) -> (m, n) IoU, computed only for pairs whose envelopes overlap (0 elsewhere)."""
    i, j = overlapping_across(rbox_envelopes(a), rbox_envelopes(b))
    out = torch.zeros(a.shape[0], b.shape[0], dtype=a.dtype, device=a.device)
    out[i, j] = rbox_iou_aligned(a[i], b[j])
    return out

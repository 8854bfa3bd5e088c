"""Rotated boxes: the one angle convention of fss, and conversions between polygons and rotated boxes.

**The convention** (stated here once; every other module imports it):

* Image pixels, x to the right, y *down*. A rotated box is ``(cx, cy, w, h, θ)``: centre, the **long** side
  ``w ≥ h``, and θ the angle in radians from the +x axis to the long side, measured towards +y — on screen,
  positive θ turns *clockwise*. θ lies in ``[ANGLE_MIN, ANGLE_MAX) = [−π/4, 3π/4)``: 0 (a box lying flat) and
  π/2 (a box standing up) are inside the range, far from its ends, so the boxes users meet most never jump
  between the two ends of the range when they turn by a degree (OpenCV's ``minAreaRect`` range moved between
  releases; Ultralytics' [0, π/2) puts 0 at an end and swaps w and h to get there).
* A square (``w == h``) is two rotated boxes that differ by π/2; it is given the one with θ in ``[−π/4, π/4)``.
* The polygon of a rotated box has the corners ``(−w/2, −h/2), (w/2, −h/2), (w/2, h/2), (−w/2, h/2)`` of its
  own frame, in that order — clockwise on screen, starting top-left at θ = 0, as DOTA labels run.

A polygon is 4 points ``x1 y1 … x4 y4`` (the ``(..., 8)`` layout of every dataset record): it stays the source of
truth; ``poly_to_rbox`` derives the rotated box as its minimum-area enclosing rectangle (exact for rectangles).

Worked example: the DOTA label ``10 0 30 20 20 30 0 10`` is a rectangle with sides √800 ≈ 28.28 (10,0)→(30,20)
and √200 ≈ 14.14 (30,20)→(20,30); its long side points along +x+y, so θ = π/4 (45°, clockwise on screen):
``poly_to_rbox`` gives ``(15, 15, 28.28, 14.14, 0.7854)``; ``rbox_to_poly`` of that gives the label back, corner for
corner (another vertex order of the same rectangle gives the same rotated box).
"""

from __future__ import annotations

import math

import torch

ANGLE_MIN = -math.pi / 4            # the range of θ: [ANGLE_MIN, ANGLE_MAX)
ANGLE_MAX = 3 * math.pi / 4
SQUARE_TOLERANCE = 1e-9             # sides within this fraction of each other make a square (θ in [−π/4, π/4))


def regularize_rbox(rbox: torch.Tensor) -> torch.Tensor:
    """Any ``(..., 5)`` rotated box (either side longer, any θ) -> the same rectangle in the convention: ``w ≥ h``,
    θ in ``[−π/4, 3π/4)``, squares with θ in ``[−π/4, π/4)``. Sides are taken as magnitudes."""
    cx, cy, w, h, t = rbox.unbind(-1)
    w, h = w.abs(), h.abs()
    swap = h > w
    w, h, t = torch.where(swap, h, w), torch.where(swap, w, h), torch.where(swap, t + math.pi / 2, t)
    t = torch.remainder(t - ANGLE_MIN, math.pi) + ANGLE_MIN                     # a side's direction is mod π
    square = (w - h) <= SQUARE_TOLERANCE * w
    t = torch.where(square, torch.remainder(t + math.pi / 4, math.pi / 2) - math.pi / 4, t)
    return torch.stack((cx, cy, w, h, t), -1)


def rbox_to_poly(rbox: torch.Tensor) -> torch.Tensor:
    """``(..., 5)`` rotated boxes -> ``(..., 8)`` polygons ``x1 y1 … x4 y4``, corners in the convention's order."""
    cx, cy, w, h, t = rbox.unbind(-1)
    cos, sin = torch.cos(t), torch.sin(t)
    dx = torch.stack((-w, w, w, -w), -1) / 2                                   # (..., 4) in the box's frame
    dy = torch.stack((-h, -h, h, h), -1) / 2
    x = cx[..., None] + dx * cos[..., None] - dy * sin[..., None]
    y = cy[..., None] + dx * sin[..., None] + dy * cos[..., None]
    return torch.stack((x, y), -1).flatten(-2)                                  # (..., 8)


def min_area_rect(points: torch.Tensor) -> torch.Tensor:
    """The minimum-area rectangle enclosing each point set, as a rotated box in the convention.

    points ``(..., P, 2)`` -> ``(..., 5)``. The best rectangle has a side along an edge of the convex hull, and every
    hull edge joins two of the points: so each of the P·(P−1)/2 directions between two points is tried (6 for a
    quadrilateral) and the smallest enclosing rectangle wins — no hull, no OpenCV. A degenerate set (all points on
    one line, or one point) gives a zero-height (or zero-size) box along it."""
    p = points.shape[-2]
    i, j = torch.triu_indices(p, p, 1, device=points.device)
    d = points[..., j, :] - points[..., i, :]                                   # (..., D, 2) candidate directions
    angle = torch.atan2(d[..., 1], d[..., 0])                                  # (..., D)
    cos, sin = torch.cos(angle), torch.sin(angle)
    u = points[..., None, :, 0] * cos[..., None] + points[..., None, :, 1] * sin[..., None]     # (..., D, P)
    v = -points[..., None, :, 0] * sin[..., None] + points[..., None, :, 1] * cos[..., None]
    u_lo, u_hi, v_lo, v_hi = u.amin(-1), u.amax(-1), v.amin(-1), v.amax(-1)                     # (..., D)
    area = (u_hi - u_lo) * (v_hi - v_lo)
    best = area.argmin(-1, keepdim=True)                                        # (..., 1)

    def pick(x):
        return x.gather(-1, best).squeeze(-1)

    a, cu, cv = pick(angle), (pick(u_lo) + pick(u_hi)) / 2, (pick(v_lo) + pick(v_hi)) / 2
    c, s = torch.cos(a), torch.sin(a)
    rbox = torch.stack((cu * c - cv * s, cu * s + cv * c, pick(u_hi) - pick(u_lo), pick(v_hi) - pick(v_lo), a), -1)
    return regularize_rbox(rbox)


def poly_to_rbox(poly: torch.Tensor) -> torch.Tensor:
    """``(..., 8)`` polygons -> ``(..., 5)`` rotated boxes: each polygon's minimum-area enclosing rectangle (the
    polygon itself when it is a rectangle, whatever its vertex order or orientation)."""
    return min_area_rect(poly.reshape(*poly.shape[:-1], 4, 2))


def polygon_area(poly: torch.Tensor) -> torch.Tensor:
    """Signed shoelace area of ``(..., 2V)`` polygons -> ``(...,)``: positive when the vertices run clockwise on
    screen (y down), negative counter-clockwise; a self-intersecting polygon gives its winding-weighted area."""
    x, y = poly[..., 0::2], poly[..., 1::2]
    x, y = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)           # centred: no cancellation far out
    return (x * y.roll(-1, -1) - x.roll(-1, -1) * y).sum(-1) / 2


def poly_envelope(poly: torch.Tensor) -> torch.Tensor:
    """``(..., 2V)`` polygons -> ``(..., 4)`` axis-aligned envelopes ``x1 y1 x2 y2``."""
    x, y = poly[..., 0::2], poly[..., 1::2]
    return torch.stack((x.amin(-1), y.amin(-1), x.amax(-1), y.amax(-1)), -1)

"""The box geometry an assigner sees, for horizontal and rotated boxes alike.

A horizontal box is ``x1 y1 x2 y2`` (``(..., 4)``), a rotated box ``cx cy w h θ`` (``(..., 5)``, the convention of
``fss_core.rbox``; sides need not be regularised). Every assigner asks the same questions of either — where is the
centre, how far is a point from it along the box's own axes, how large is the box, what is the IoU of two boxes —
and the last axis's length picks the answer. The horizontal answers are the arithmetic the assigners always used,
unchanged, so horizontal training selects bit for bit what it selected before; a rotated box with θ = 0 gives the
same numbers up to the rounding of its IoU (``fss_core.rbox_iou`` clips, ``box_iou_aligned`` multiplies).

Worked example: the rotated box (100, 50, 40, 10, π/2) stands up: a point at (100, 65) lies 15 px from the centre
along +y, which is the box's long axis, so ``box_frame`` gives (15, 0) and the point is inside (|15| < 20, |0| < 5);
``envelope_half`` is (5, 20), the half-extent of its axis-aligned envelope.
"""

from __future__ import annotations

import torch

from fss_core.boxes import box_iou_aligned
from fss_core.rbox_iou import rbox_iou_aligned, rbox_iou_pairwise


def is_rotated(boxes: torch.Tensor) -> bool:
    return boxes.shape[-1] == 5


def centres(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4|5) -> (..., 2) box centres."""
    return boxes[..., :2] if is_rotated(boxes) else (boxes[..., :2] + boxes[..., 2:]) * 0.5


def sides(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4|5) -> (..., 2): width and height (a rotated box's sides along its own axes)."""
    return boxes[..., 2:4].abs() if is_rotated(boxes) else boxes[..., 2:] - boxes[..., :2]


def box_frame(d: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Offsets ``d`` (..., 2) in image axes -> the same offsets along the box's axes (w first); unchanged for
    horizontal boxes."""
    if not is_rotated(boxes):
        return d
    cos, sin = torch.cos(boxes[..., 4]), torch.sin(boxes[..., 4])
    return torch.stack((d[..., 0] * cos + d[..., 1] * sin, -d[..., 0] * sin + d[..., 1] * cos), -1)


def envelope_half(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4|5) -> (..., 2): half-extent of the axis-aligned envelope in x and y."""
    if not is_rotated(boxes):
        return (boxes[..., 2:] - boxes[..., :2]) * 0.5
    cos, sin = torch.cos(boxes[..., 4]).abs(), torch.sin(boxes[..., 4]).abs()
    w, h = boxes[..., 2].abs(), boxes[..., 3].abs()
    return torch.stack((w * cos + h * sin, w * sin + h * cos), -1) * 0.5


def aligned_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of broadcastable box tensors, element by element -> (...) float32 in [0, 1]."""
    if is_rotated(a):
        return rbox_iou_aligned(a, b).to(a.dtype)
    return box_iou_aligned(a, b).clamp(0, 1)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(m, 4|5) × (n, 4|5) -> (m, n) IoU. Horizontal: exactly ``box_iou_exact(a[:, None], b[None])``."""
    if is_rotated(a):
        return rbox_iou_pairwise(a, b)
    iw = torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])
    ih = torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])
    inter = (iw * ih) * ((iw > 0) & (ih > 0))
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None] - inter)


def square_priors(points: torch.Tensor, strides: torch.Tensor, scale: float, rotated: bool) -> torch.Tensor:
    """(A, 4|5) square priors of side ``scale`` · stride centred on each point (θ = 0 when rotated)."""
    half = (0.5 * scale * strides)[:, None]
    if rotated:
        return torch.cat((points, 2 * half, 2 * half, torch.zeros_like(half)), dim=1)
    return torch.cat((points - half, points + half), dim=1)


def iou_with_priors(priors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """IoU of square priors (``square_priors``) with boxes, element by element. A rotated box wholly inside its
    prior — most pairs of the coarse levels — overlaps it by its own area: ``w·h / (s² + w·h − w·h)`` without
    clipping (Max-IoU compares ~400 priors a GT)."""
    if not is_rotated(boxes):
        return aligned_iou(priors, boxes)
    reach = (centres(boxes) - priors[:, :2]).abs() + envelope_half(boxes)                   # (N, 2)
    inside = (reach <= priors[:, 2:3] / 2).all(1)
    out = torch.zeros(len(boxes), dtype=boxes.dtype, device=boxes.device)
    area = boxes[inside, 2].abs() * boxes[inside, 3].abs()
    out[inside] = area / (priors[inside, 2] * priors[inside, 3] + area - area)
    out[~inside] = aligned_iou(priors[~inside], boxes[~inside])
    return out

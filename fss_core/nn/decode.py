"""The one decode step shared by training, export and every inference backend.

B images, A points over all levels, C classes, K box channels (4, or 5 for ``task: obb``). Points are cell
centres in input pixels. The raw head output is ``[box (K), obj_logit, cls_logits (C)]`` per point.

Oriented boxes add the angle channel t: θ = (σ(t) − 0.25) · π spans (−π/4, 3π/4), the range of the angle
convention (``fss_core.rbox``), with no atan2 (which ONNX lacks) and no jump inside the range; the head's bias
starts t at logit(0.25), so every box starts flat (θ = 0). Predicted sides are not ordered (w < h is the same
rectangle as h × w turned by π/2); losses and IoUs do not care, and outputs are regularised after NMS.
"""

from __future__ import annotations

import math

import torch

from fss_core.nn.card import TASKS

# exp(12) * 32 px ≈ 5.2 million px: far beyond any image, but finite, so a diverging early
# prediction cannot turn IoUs into NaN.
MAX_LOG_WH = 12.0


def feature_sizes(height: int, width: int, strides: tuple[int, ...]) -> list[tuple[int, int]]:
    """(rows, cols) of each level's grid. The input side must be a multiple of the largest stride."""
    top = max(strides)
    if height % top or width % top or height <= 0 or width <= 0:
        raise ValueError(f"input size {height}x{width} must be positive multiples of the largest stride {top}")
    return [(height // s, width // s) for s in strides]


def make_points(height: int, width: int, strides: tuple[int, ...],
                device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres and their strides for an input of ``height`` × ``width`` pixels.

    Returns ``points`` (A, 2) float32 (x, y) pixels and ``point_strides`` (A,) float32 pixels.
    """
    pts, strd = [], []
    for (rows, cols), s in zip(feature_sizes(height, width, strides), strides):
        ys, xs = torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij")
        xy = torch.stack((xs.reshape(-1), ys.reshape(-1)), dim=1).float()
        pts.append((xy + 0.5) * s)                                       # (H*W, 2)
        strd.append(torch.full((rows * cols,), float(s), device=device))
    return torch.cat(pts), torch.cat(strd)


def decode_boxes(raw: torch.Tensor, points: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Box regression -> xyxy pixel boxes.

    raw (B, A, ≥4) with ``[tx, ty, tw, th]`` first; centre = point + t_xy · stride,
    size = exp(t_wh) · stride. Returns (B, A, 4) float xyxy pixels. Differentiable.
    """
    s = strides[None, :, None]                                           # (1, A, 1)
    centre = points[None] + raw[..., 0:2] * s                            # (B, A, 2)
    half = torch.exp(raw[..., 2:4].clamp(max=MAX_LOG_WH)) * s * 0.5      # (B, A, 2)
    return torch.cat((centre - half, centre + half), dim=-1)             # (B, A, 4)


ANGLE_BIAS = math.log(0.25 / 0.75)       # logit(0.25): θ = 0 at initialisation


def box_channels(task: str) -> int:
    """Regression channels of a head (and box numbers of a decoded box): 4, or 5 with the angle."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return 5 if task == "obb" else 4


def decode_rboxes(raw: torch.Tensor, points: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """raw (B, A, ≥5) ``[tx, ty, tw, th, tθ]`` -> (B, A, 5) rotated boxes ``cx cy w h θ`` px / rad. Differentiable."""
    s = strides[None, :, None]                                           # (1, A, 1)
    centre = points[None] + raw[..., 0:2] * s                            # (B, A, 2)
    size = torch.exp(raw[..., 2:4].clamp(max=MAX_LOG_WH)) * s            # (B, A, 2)
    angle = (raw[..., 4:5].sigmoid() - 0.25) * math.pi                   # (B, A, 1) in (−π/4, 3π/4)
    return torch.cat((centre, size, angle), dim=-1)


def decode(raw: torch.Tensor, points: torch.Tensor, strides: torch.Tensor, task: str = "detect"
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """raw (B, A, K+1+C) -> boxes (B, A, K) (xyxy px, or cx cy w h θ for ``obb``), objectness (B, A) and class
    probabilities (B, A, C)."""
    k = box_channels(task)
    boxes = decode_rboxes(raw, points, strides) if k == 5 else decode_boxes(raw, points, strides)
    return boxes, raw[..., k].sigmoid(), raw[..., k + 1:].sigmoid()


def split_logits(raw: torch.Tensor, task: str = "detect") -> tuple[torch.Tensor, torch.Tensor]:
    """raw (B, A, K+1+C) -> objectness logits (B, A) and class logits (B, A, C)."""
    k = box_channels(task)
    return raw[..., k], raw[..., k + 1:]


def decode_for_inference(raw: torch.Tensor, points: torch.Tensor, strides: torch.Tensor, task: str = "detect"
                         ) -> torch.Tensor:
    """The deployed output: (B, A, K + C) — boxes (xyxy px, or cx cy w h θ) then per-class scores cls · obj."""
    boxes, obj, cls = decode(raw, points, strides, task)
    return torch.cat((boxes, cls * obj[..., None]), dim=-1)

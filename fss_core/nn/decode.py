"""The one decode step shared by training, export and every inference backend.

B images, A points over all levels, C classes. Points are cell centres in input pixels.
"""

from __future__ import annotations

import torch

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


def decode(raw: torch.Tensor, points: torch.Tensor, strides: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """raw (B, A, 5+C) -> boxes (B, A, 4) xyxy px, objectness (B, A) and class probabilities (B, A, C)."""
    return decode_boxes(raw, points, strides), raw[..., 4].sigmoid(), raw[..., 5:].sigmoid()


def decode_for_inference(raw: torch.Tensor, points: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """The deployed output: (B, A, 4 + C) — xyxy pixel boxes then per-class scores cls · obj."""
    boxes, obj, cls = decode(raw, points, strides)
    return torch.cat((boxes, cls * obj[..., None]), dim=-1)

"""Rotated boxes as 2-D Gaussians, and the distances between them that rotated box losses are made of.

A rotated box ``(cx, cy, w, h, θ)`` (convention of ``fss_core.rbox``) becomes the Gaussian of a uniform rectangle:
mean ``(cx, cy)`` and covariance ``R(θ) diag(w²/12, h²/12) R(θ)ᵀ``. The functions here are smooth and periodic in θ
(a box turned by π is the same Gaussian) — what a loss needs — but they are **not** IoUs: a square against itself
turned 45° has polygon IoU 0.71 and probiou 1.0 (both are the same Gaussian). Evaluation and NMS use
``fss_core.polygon_iou``; these are for training.

* ``probiou`` — 1 − Hellinger distance from the Bhattacharyya distance (Llerena et al., "Gaussian Bounding Boxes
  and Probabilistic Intersection-over-Union for Object Detection", 2021).
* ``kld`` — Kullback–Leibler divergence KL(a ‖ b) (Yang et al., "Learning High-Precision Bounding Box for Rotated
  Object Detection via Kullback-Leibler Divergence", NeurIPS 2021).
* ``gwd`` — squared 2-Wasserstein distance (Yang et al., "Rethinking Rotated Object Detection with Gaussian
  Wasserstein Distance Loss", ICML 2021).

All take broadcastable ``(..., 5)`` tensors and return ``(...)``; ``eps`` keeps degenerate (zero-side) boxes finite.
"""

from __future__ import annotations

import torch

EPS = 1e-7


def rbox_to_gaussian(rbox: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(..., 5)`` -> mean ``(..., 2)`` and covariance ``(..., 2, 2)`` (pixels, pixels²)."""
    cos, sin = torch.cos(rbox[..., 4]), torch.sin(rbox[..., 4])
    a, b = rbox[..., 2].pow(2) / 12, rbox[..., 3].pow(2) / 12                  # variances along w and h
    sxx = a * cos * cos + b * sin * sin
    syy = a * sin * sin + b * cos * cos
    sxy = (a - b) * cos * sin
    cov = torch.stack((torch.stack((sxx, sxy), -1), torch.stack((sxy, syy), -1)), -2)
    return rbox[..., :2], cov


def _det(c: torch.Tensor) -> torch.Tensor:
    return c[..., 0, 0] * c[..., 1, 1] - c[..., 0, 1] * c[..., 1, 0]


def _mahalanobis(d: torch.Tensor, c: torch.Tensor, eps: float) -> torch.Tensor:
    """dᵀ c⁻¹ d for d (..., 2), c (..., 2, 2), by the 2 × 2 adjugate."""
    num = c[..., 1, 1] * d[..., 0] ** 2 - 2 * c[..., 0, 1] * d[..., 0] * d[..., 1] + c[..., 0, 0] * d[..., 1] ** 2
    return num / (_det(c) + eps)


def probiou(a: torch.Tensor, b: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Probabilistic IoU in [0, 1]: 1 − sqrt(1 − exp(−B)), B the Bhattacharyya distance of the two Gaussians."""
    (ma, ca), (mb, cb) = rbox_to_gaussian(a), rbox_to_gaussian(b)
    c = (ca + cb) / 2
    bd = _mahalanobis(mb - ma, c, eps) / 8 + 0.5 * torch.log(
        (_det(c) + eps) / torch.sqrt(_det(ca).clamp(min=0) * _det(cb).clamp(min=0) + eps))
    hellinger = torch.sqrt((1 - torch.exp(-bd.clamp(min=0))).clamp(min=0) + eps)
    return 1 - hellinger


def kld(a: torch.Tensor, b: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """KL(N_a ‖ N_b) ≥ 0 (nats): ½ (tr(Σb⁻¹Σa) + Δμᵀ Σb⁻¹ Δμ − 2 + ln(det Σb / det Σa))."""
    (ma, ca), (mb, cb) = rbox_to_gaussian(a), rbox_to_gaussian(b)
    db = _det(cb) + eps
    trace = (cb[..., 1, 1] * ca[..., 0, 0] - 2 * cb[..., 0, 1] * ca[..., 0, 1] + cb[..., 0, 0] * ca[..., 1, 1]) / db
    return 0.5 * (trace + _mahalanobis(mb - ma, cb, eps) - 2 + torch.log(db / (_det(ca) + eps)))


def gwd(a: torch.Tensor, b: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """W₂² ≥ 0 (pixels²): ‖Δμ‖² + tr Σa + tr Σb − 2·sqrt(tr(ΣaΣb) + 2·sqrt(det(ΣaΣb))) (the 2 × 2 closed form of
    tr((Σa^½ Σb Σa^½)^½))."""
    (ma, ca), (mb, cb) = rbox_to_gaussian(a), rbox_to_gaussian(b)
    tr_ab = (ca @ cb).diagonal(dim1=-2, dim2=-1).sum(-1)
    root = torch.sqrt((tr_ab + 2 * torch.sqrt((_det(ca) * _det(cb)).clamp(min=0) + eps)).clamp(min=0) + eps)
    trace = ca.diagonal(dim1=-2, dim2=-1).sum(-1) + cb.diagonal(dim1=-2, dim2=-1).sum(-1)
    return ((mb - ma) ** 2).sum(-1) + (trace - 2 * root).clamp(min=0)

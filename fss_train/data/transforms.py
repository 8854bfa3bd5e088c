"""Training augmentation. Images are BGR uint8; boxes (K, 4) float32 xyxy pixels; labels (K,); oriented
objects also polygons (K, 8) float32 ``x1 y1 … x4 y4`` pixels, or None for a horizontal-box dataset.

Every geometric step moves pixels, boxes and polygons with the same matrix; objects that degenerate
(under ``min_wh`` px, or keeping less than ``min_area_ratio`` of their area) are dropped. A polygon cut by the
canvas is cut exactly (fss_train/data/polyclip.py) and its box becomes the envelope of what is left. Rotation by
any angle (``degrees``) and by quarter turns (``rot90``) are off by default: horizontal boxes of a turned object
are loose; oriented training turns them on.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fss_core.boxes import box_corners
from fss_core.preprocess import PAD_VALUE, letterbox


@dataclass(frozen=True)
class AugmentConfig:
    mosaic: float = 1.0          # probability of a 4-image mosaic
    scale: float = 0.5           # random scale in [1 - scale, 1 + scale]
    translate: float = 0.1       # random shift, fraction of the output side
    hsv_h: float = 0.015         # hue gain
    hsv_s: float = 0.7           # saturation gain
    hsv_v: float = 0.4           # value gain
    fliplr: float = 0.5
    flipud: float = 0.5          # top-down imagery has no "up"
    min_wh: float = 2.0          # px
    min_area_ratio: float = 0.1
    degrees: float = 0.0         # random rotation in [-degrees, degrees] (any angle; oriented objects)
    rot90: float = 0.0           # probability of a random quarter turn (1, 2 or 3 × 90°)


MOSAIC_FILTER = AugmentConfig(min_wh=1.0, min_area_ratio=0.0)


def resize_fit(image: np.ndarray, boxes: np.ndarray, size: int, polys: np.ndarray | None = None):
    """Scale so the longest side is ``size`` (no padding) -> image, boxes, polygons (None stays None)."""
    h, w = image.shape[:2]
    r = size / max(h, w)
    if r != 1:
        image = cv2.resize(image, (max(1, round(w * r)), max(1, round(h * r))), interpolation=cv2.INTER_LINEAR)
    return image, boxes * r, None if polys is None else polys * r


def _move_polygons(polys: np.ndarray | None, M: np.ndarray) -> np.ndarray | None:
    """(K, 8) polygons through the 2 × 3 affine matrix M (the one the pixels went through)."""
    if polys is None:
        return None
    pts = polys.reshape(-1, 4, 2).astype(np.float64)
    return (pts @ M[:, :2].T + M[:, 2]).reshape(-1, 8).astype(np.float32)


def _envelopes(polys: np.ndarray) -> np.ndarray:
    return np.stack((polys[:, 0::2].min(1), polys[:, 1::2].min(1), polys[:, 0::2].max(1), polys[:, 1::2].max(1)),
                    1).astype(np.float32).reshape(-1, 4)


def _cut_envelopes(polys: np.ndarray, window: tuple) -> np.ndarray:
    from fss_train.data.polyclip import window_envelopes

    return window_envelopes(polys, *window)


def mosaic4(samples: list[tuple], size: int, rng: np.random.Generator):
    """Four images (image, boxes, labels[, polygons]) around a random centre on a 2·size canvas, each object cut
    to the part of its image that is pasted -> canvas, boxes, labels, polygons (None unless every sample has
    them)."""
    s = size
    xc, yc = (int(rng.uniform(s * 0.5, s * 1.5)) for _ in range(2))
    canvas = np.full((2 * s, 2 * s, 3), PAD_VALUE, np.uint8)
    oriented = all(len(sample) > 3 and sample[3] is not None for sample in samples)
    all_boxes, all_labels, all_polys = [], [], []
    for i, (img, boxes, labels, *rest) in enumerate(samples):
        img, boxes, polys = resize_fit(img, boxes, s, rest[0] if oriented else None)
        h, w = img.shape[:2]
        if i == 0:      # top-left
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
        elif i == 1:    # top-right
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
            x1b, y1b = 0, h - (y2a - y1a)
        elif i == 2:    # bottom-left
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
            x1b, y1b = w - (x2a - x1a), 0
        else:           # bottom-right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
            x1b, y1b = 0, 0
        canvas[y1a:y2a, x1a:x2a] = img[y1b:y1b + (y2a - y1a), x1b:x1b + (x2a - x1a)]
        dx, dy = x1a - x1b, y1a - y1b
        if oriented:       # only the pasted part of each image is visible: cut its polygons to that region
            kept_polys, kept_labels = filter_polygons(polys + np.tile([dx, dy], 4).astype(np.float32), labels,
                                                      (x1a, y1a, x2a, y2a), MOSAIC_FILTER)
            all_polys.append(kept_polys)
            all_boxes.append(_cut_envelopes(kept_polys, (x1a, y1a, x2a, y2a)))
            all_labels.append(kept_labels)
            continue
        shifted = boxes + np.array([dx, dy, dx, dy], np.float32)
        clipped = np.stack((shifted[:, 0].clip(x1a, x2a), shifted[:, 1].clip(y1a, y2a),
                            shifted[:, 2].clip(x1a, x2a), shifted[:, 3].clip(y1a, y2a)), 1)
        kept, kept_labels = filter_boxes(clipped, labels, shifted, 2 * s, 2 * s, MOSAIC_FILTER)
        all_boxes.append(kept)
        all_labels.append(kept_labels)
    boxes = np.concatenate(all_boxes).reshape(-1, 4)
    labels = np.concatenate(all_labels)
    return canvas, boxes, labels, np.concatenate(all_polys).reshape(-1, 8) if oriented else None


def random_affine(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, out_size: int, cfg: AugmentConfig,
                  rng: np.random.Generator, polys: np.ndarray | None = None):
    """Scale (and with ``cfg.degrees`` turn) about the image centre, translate, and crop to ``out_size`` ×
    ``out_size`` -> image, boxes, labels, polygons (None stays None). Without polygons a turned box becomes the
    envelope of its turned corners."""
    h, w = image.shape[:2]
    s = rng.uniform(1 - cfg.scale, 1 + cfg.scale)
    tx = rng.uniform(0.5 - cfg.translate, 0.5 + cfg.translate) * out_size
    ty = rng.uniform(0.5 - cfg.translate, 0.5 + cfg.translate) * out_size
    angle = rng.uniform(-cfg.degrees, cfg.degrees) if cfg.degrees else 0.0          # no draw: same stream as before
    M = np.array([[s, 0, tx - s * w / 2], [0, s, ty - s * h / 2]], np.float64)      # centre -> (tx, ty)
    if angle:                                          # turned about the centre (OpenCV's sense: + is CCW on screen)
        M = cv2.getRotationMatrix2D((w / 2, h / 2), angle, s)
        M[:, 2] += (tx - w / 2, ty - h / 2)
    out = cv2.warpAffine(image, M, (out_size, out_size), flags=cv2.INTER_LINEAR, borderValue=(PAD_VALUE,) * 3)
    if polys is not None:
        polys, labels = filter_polygons(_move_polygons(polys, M), labels, (0, 0, out_size, out_size), cfg)
        return out, _cut_envelopes(polys, (0, 0, out_size, out_size)), labels, polys
    if angle:
        moved = _envelopes(_move_polygons(box_corners(boxes), M))
    else:
        moved = boxes * s + np.array([M[0, 2], M[1, 2], M[0, 2], M[1, 2]], np.float32)
    boxes, labels = filter_boxes(moved, labels, boxes * s, out_size, out_size, cfg)
    return out, boxes, labels, None


def filter_boxes(boxes: np.ndarray, labels: np.ndarray, before: np.ndarray, width: int, height: int,
                 cfg: AugmentConfig):
    """Clip to the image and drop boxes that became degenerate."""
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area0 = (before[:, 2] - before[:, 0]) * (before[:, 3] - before[:, 1])
    keep = (w >= cfg.min_wh) & (h >= cfg.min_wh) & (w * h >= cfg.min_area_ratio * np.maximum(area0, 1e-9))
    return clipped[keep].astype(np.float32), labels[keep]


def filter_polygons(polys: np.ndarray, labels: np.ndarray, window: tuple, cfg: AugmentConfig):
    """Cut polygons to ``window`` (x0, y0, x1, y1) and drop those keeping less than ``min_area_ratio`` of their area
    or thinner than ``min_wh`` px -> polygons (K', 8) float32, labels (K',)."""
    import torch

    from fss_core.rbox import poly_to_rbox
    from fss_train.data.polyclip import clip_polygons

    clipped, ratio = clip_polygons(polys, *window)
    thin = poly_to_rbox(torch.from_numpy(clipped))[:, 3].numpy() if len(clipped) else np.zeros(0)
    keep = (ratio > 0) & (ratio >= cfg.min_area_ratio) & (thin >= cfg.min_wh)
    return clipped[keep].astype(np.float32).reshape(-1, 8), labels[keep]


def hsv_jitter(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    if not (cfg.hsv_h or cfg.hsv_s or cfg.hsv_v):
        return image
    gains = rng.uniform(-1, 1, 3) * [cfg.hsv_h, cfg.hsv_s, cfg.hsv_v] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x * gains[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    merged = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(merged, cv2.COLOR_HSV2BGR)


def random_flip(image: np.ndarray, boxes: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator,
                polys: np.ndarray | None = None):
    """Left-right and up-down flips (and with ``cfg.rot90`` a quarter turn) -> image, boxes, polygons."""
    h, w = image.shape[:2]
    if rng.random() < cfg.fliplr:
        image = image[:, ::-1]
        boxes = np.stack((w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]), 1)
        polys = None if polys is None else np.where(np.arange(8) % 2 == 0, w - polys, polys)
    if rng.random() < cfg.flipud:
        image = image[::-1]
        boxes = np.stack((boxes[:, 0], h - boxes[:, 3], boxes[:, 2], h - boxes[:, 1]), 1)
        polys = None if polys is None else np.where(np.arange(8) % 2 == 1, h - polys, polys)
    if cfg.rot90 and rng.random() < cfg.rot90:
        image, boxes, polys = rotate90(image, boxes, polys, int(rng.integers(1, 4)))
    polys = None if polys is None else polys.astype(np.float32).reshape(-1, 8)
    return np.ascontiguousarray(image), boxes.astype(np.float32).reshape(-1, 4), polys


def rotate90(image: np.ndarray, boxes: np.ndarray, polys: np.ndarray | None, k: int):
    """``k`` quarter turns clockwise on screen (y down) -> image, boxes, polygons; exact, no resampling."""
    for _ in range(k % 4):
        h = image.shape[0]
        image = np.rot90(image, -1)                            # clockwise: (x, y) -> (h − y, x)
        boxes = np.stack((h - boxes[:, 3], boxes[:, 0], h - boxes[:, 1], boxes[:, 2]), 1)
        if polys is not None:
            polys = np.stack((h - polys[:, 1::2], polys[:, 0::2]), 2).reshape(-1, 8)
    return image, boxes, polys


def letterbox_sample(image: np.ndarray, boxes: np.ndarray, size: int):
    """Evaluation / no-augmentation path: the shared letterbox; returns (canvas, boxes, scale)."""
    canvas, scale, _ = letterbox(image, (size, size))
    return canvas, boxes * scale, scale

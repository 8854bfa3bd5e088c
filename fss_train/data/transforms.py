"""Training augmentation. Images are BGR uint8; boxes (K, 4) float32 xyxy pixels; labels (K,).

Every geometric step moves pixels and boxes with the same matrix; boxes that degenerate
(under ``min_wh`` px, or keeping less than ``min_area_ratio`` of their area) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

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


MOSAIC_FILTER = AugmentConfig(min_wh=1.0, min_area_ratio=0.0)


def resize_fit(image: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale so the longest side is ``size`` (no padding)."""
    h, w = image.shape[:2]
    r = size / max(h, w)
    if r != 1:
        image = cv2.resize(image, (max(1, round(w * r)), max(1, round(h * r))), interpolation=cv2.INTER_LINEAR)
    return image, boxes * r


def mosaic4(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], size: int, rng: np.random.Generator):
    """Four images around a random centre on a 2·size canvas (boxes clipped to the canvas)."""
    s = size
    xc, yc = (int(rng.uniform(s * 0.5, s * 1.5)) for _ in range(2))
    canvas = np.full((2 * s, 2 * s, 3), PAD_VALUE, np.uint8)
    all_boxes, all_labels = [], []
    for i, (img, boxes, labels) in enumerate(samples):
        img, boxes = resize_fit(img, boxes, s)
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
        shifted = boxes + np.array([x1a - x1b, y1a - y1b, x1a - x1b, y1a - y1b], np.float32)
        # only the pasted part of each image is visible: clip its boxes to that region
        clipped = np.stack((shifted[:, 0].clip(x1a, x2a), shifted[:, 1].clip(y1a, y2a),
                            shifted[:, 2].clip(x1a, x2a), shifted[:, 3].clip(y1a, y2a)), 1)
        kept, kept_labels = filter_boxes(clipped, labels, shifted, 2 * s, 2 * s, MOSAIC_FILTER)
        all_boxes.append(kept)
        all_labels.append(kept_labels)
    boxes = np.concatenate(all_boxes).reshape(-1, 4)
    labels = np.concatenate(all_labels)
    return canvas, boxes, labels


def random_affine(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, out_size: int, cfg: AugmentConfig,
                  rng: np.random.Generator):
    """Scale about the image centre, translate, and crop to ``out_size`` × ``out_size``."""
    h, w = image.shape[:2]
    s = rng.uniform(1 - cfg.scale, 1 + cfg.scale)
    tx = rng.uniform(0.5 - cfg.translate, 0.5 + cfg.translate) * out_size
    ty = rng.uniform(0.5 - cfg.translate, 0.5 + cfg.translate) * out_size
    M = np.array([[s, 0, tx - s * w / 2], [0, s, ty - s * h / 2]], np.float64)      # centre -> (tx, ty)
    out = cv2.warpAffine(image, M, (out_size, out_size), flags=cv2.INTER_LINEAR, borderValue=(PAD_VALUE,) * 3)
    moved = boxes * s + np.array([M[0, 2], M[1, 2], M[0, 2], M[1, 2]], np.float32)
    boxes, labels = filter_boxes(moved, labels, boxes * s, out_size, out_size, cfg)
    return out, boxes, labels


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


def random_flip(image: np.ndarray, boxes: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator):
    h, w = image.shape[:2]
    if rng.random() < cfg.fliplr:
        image = image[:, ::-1]
        boxes = np.stack((w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]), 1)
    if rng.random() < cfg.flipud:
        image = image[::-1]
        boxes = np.stack((boxes[:, 0], h - boxes[:, 3], boxes[:, 2], h - boxes[:, 1]), 1)
    return np.ascontiguousarray(image), boxes.astype(np.float32).reshape(-1, 4)


def letterbox_sample(image: np.ndarray, boxes: np.ndarray, size: int):
    """Evaluation / no-augmentation path: the shared letterbox; returns (canvas, boxes, scale)."""
    canvas, scale, _ = letterbox(image, (size, size))
    return canvas, boxes * scale, scale

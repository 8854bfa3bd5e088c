"""The one preprocessing function shared by training, export, every backend and the figures (no file I/O:
decoding is :mod:`fss_core.imageio`).

Images are BGR uint8 (as OpenCV reads them). The network takes RGB float in [0, 1]
(mean 0, std 1: no further normalisation), letterboxed to a multiple of 32.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

PAD_VALUE = 114          # grey padding, as YOLOX/Ultralytics
MEAN = (0.0, 0.0, 0.0)
STD = (1.0, 1.0, 1.0)


def letterbox(image: np.ndarray, size: tuple[int, int], allow_upscale: bool = True,
              pad_value: int = PAD_VALUE) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping the aspect ratio and pad to ``size`` = (height, width), top-left aligned.

    Returns (canvas (h, w, 3) uint8, scale, (pad_x, pad_y)); an input pixel (x, y) lands at
    (x · scale, y · scale). With ``allow_upscale=False`` small images are only padded.
    """
    h, w = image.shape[:2]
    th, tw = size
    scale = min(th / h, tw / w)
    if not allow_upscale:
        scale = min(scale, 1.0)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    canvas = np.full((th, tw, 3), pad_value, dtype=np.uint8)
    resized = image if (nh, nw) == (h, w) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas[:nh, :nw] = resized[..., :3]
    return canvas, scale, (0, 0)


def to_array(images: list[np.ndarray] | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """BGR uint8 (B, H, W, 3) or a list of (H, W, 3) views -> RGB float32 (B, 3, H, W) in [0, 1]."""
    n = len(images)
    h, w = images[0].shape[:2]
    out = out if out is not None else np.empty((n, 3, h, w), np.float32)
    for i, img in enumerate(images):
        out[i] = img[..., ::-1].transpose(2, 0, 1)
    out *= 1.0 / 255.0
    return out


def to_tensor(images: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """The same as :func:`to_array`, as a torch tensor."""
    return torch.from_numpy(to_array(list(images) if not isinstance(images, list) else images))


def to_bgr3(image: np.ndarray) -> np.ndarray:
    """Any decoded image -> BGR uint8 with 3 channels (grey, RGBA and 16-bit are converted)."""
    if image.dtype == np.uint16:
        image = (image / 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2BGR)
    return image

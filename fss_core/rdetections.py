"""Oriented detections -> the formats users load: DOTA Task1 lines, Ultralytics' YOLO-OBB lines, COCO results with a
polygon. An oriented detection array is (K, 7) float ``cx cy w h θ score class`` in image pixels (angle convention
of fss_core.rbox; class 0-based); GeoJSON of the same arrays is fss_core.geojson's."""

from __future__ import annotations

import numpy as np
import torch

from fss_core.rbox import rbox_to_poly


def rdetection_polygons(dets: np.ndarray) -> np.ndarray:
    """(K, 8) polygons (float64 pixels) of (K, 7) oriented detections."""
    return rbox_to_poly(torch.from_numpy(np.asarray(dets, np.float64)[:, :5]).reshape(-1, 5)).numpy()


def rdetections_to_dota(dets: np.ndarray, image_name: str, class_names: list[str]) -> list[tuple[str, str]]:
    """DOTA Task1 lines, one per detection: (class name, ``"image score x1 y1 x2 y2 x3 y3 x4 y4"``), 0.1 px."""
    return [(class_names[int(d[6])], f"{image_name} {d[5]:.5f} " + " ".join(f"{v:.1f}" for v in poly))
            for d, poly in zip(dets, rdetection_polygons(dets))]


def rdetections_to_yolo(dets: np.ndarray, width: int, height: int) -> list[str]:
    """Ultralytics YOLO-OBB lines ``class x1 y1 x2 y2 x3 y3 x4 y4 score``, coordinates normalised by the image."""
    scale = np.tile([width, height], 4)
    return [f"{int(d[6])} " + " ".join(f"{v:.6f}" for v in poly / scale) + f" {d[5]:.5f}"
            for d, poly in zip(dets, rdetection_polygons(dets))]


def rdetections_to_coco(dets: np.ndarray, image_id: int) -> list[dict]:
    """COCO results of oriented detections: ``bbox`` the polygon's envelope ``[x, y, w, h]`` (what COCOeval and
    horizontal tools read), ``segmentation`` the polygon, ``rbox`` ``[cx, cy, w, h, θ]``; 0.01 px, scores 1e-5."""
    out = []
    for d, poly in zip(dets, rdetection_polygons(dets)):
        x1, y1, x2, y2 = poly[0::2].min(), poly[1::2].min(), poly[0::2].max(), poly[1::2].max()
        out.append({"image_id": int(image_id), "category_id": int(d[6]) + 1,
                    "bbox": [round(float(v), 2) for v in (x1, y1, x2 - x1, y2 - y1)],
                    "segmentation": [[round(float(v), 2) for v in poly]],
                    "rbox": [round(float(v), 2) for v in d[:4]] + [round(float(d[4]), 5)],
                    "score": round(float(d[5]), 5)})
    return out

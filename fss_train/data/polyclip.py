"""Oriented labels cut by a window (a training tile, a mosaic cell, an augmented canvas): the piece inside, exact.

One rule for ``fss data split`` and the augmentations: a polygon wholly inside stays as drawn; a cut one becomes
the piece inside the window (shapely), kept as a quadrilateral when it is one, else as the minimum-area rectangle
of the piece — which covers the piece and so may reach past the window by a little (a corner cut off a rectangle
leaves a triangle; its rectangle is twice its area); moving corners onto the window's edge instead would cut the
piece itself, as the devkit's splitter does. Boxes are the envelopes cut to the window. The fraction of the
polygon's own area inside decides the rest (the split's 0.7 rule, the augmentations' minimum area).
"""

from __future__ import annotations

import numpy as np
import shapely

from fss_train.data.records import quad_polygon


def clip_polygons(polys: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> tuple[np.ndarray, np.ndarray]:
    """(K, 8) polygons against the window ``[x0, x1] × [y0, y1]`` -> the polygons inside (K, 8) float64 (rows of a
    polygon with nothing inside are left as they were) and the fraction of each polygon's area inside (K,) in
    [0, 1]: 1 for a polygon wholly inside (whatever its shape: a bow-tie the reader reported is kept), 0 for one
    wholly outside or, when cut, without area."""
    polys = np.asarray(polys, np.float64).reshape(-1, 8)
    out = polys.copy()
    if not len(polys):
        return out, np.zeros(0)
    xs, ys = polys[:, 0::2], polys[:, 1::2]
    inside = (xs.min(1) >= x0) & (xs.max(1) <= x1) & (ys.min(1) >= y0) & (ys.max(1) <= y1)
    ratio = np.where(inside, 1.0, 0.0)
    cut = np.nonzero(~inside)[0]
    if len(cut):
        shapes = shapely.make_valid(shapely.polygons(polys[cut].reshape(-1, 4, 2)))
        pieces = shapely.intersection(shapes, shapely.box(x0, y0, x1, y1))
        area, piece_area = shapely.area(shapes), shapely.area(pieces)
        ratio[cut] = np.where(area > 0, piece_area / np.maximum(area, 1e-300), 0.0)
        for k, piece, a in zip(cut, pieces, piece_area):
            if a > 0:
                out[k] = quad_polygon(shapely.get_coordinates(piece.convex_hull)[:-1])
    return out, ratio


def window_envelopes(polys: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """(K, 4) xyxy envelopes of (K, 8) polygons, cut to the window."""
    polys = np.asarray(polys).reshape(-1, 8)
    return np.stack((polys[:, 0::2].min(1).clip(x0, x1), polys[:, 1::2].min(1).clip(y0, y1),
                     polys[:, 0::2].max(1).clip(x0, x1), polys[:, 1::2].max(1).clip(y0, y1)), 1).astype(np.float32)

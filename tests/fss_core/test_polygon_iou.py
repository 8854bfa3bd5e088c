"""Exact polygon IoU (fss_core.polygon_iou) against shapely, to 1e-9, on the cases that break rotated IoUs."""

import math

import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from fss_core.polygon_iou import polygon_intersection_aligned, polygon_iou_aligned
from fss_core.rbox import rbox_to_poly


def _shapely_iou(a: np.ndarray, b: np.ndarray) -> float:
    p, q = Polygon(a.reshape(4, 2)), Polygon(b.reshape(4, 2))
    union = p.union(q).area
    return p.intersection(q).area / union if union > 0 else 0.0


def _rboxes(g, n, centre=0.0):
    return torch.cat([torch.rand(n, 2, generator=g, dtype=torch.float64) * 60 + centre,
                      torch.rand(n, 2, generator=g, dtype=torch.float64) * 40 + 0.5,
                      torch.rand(n, 1, generator=g, dtype=torch.float64) * math.pi], 1)


@pytest.mark.parametrize("centre", [0.0, 1e5])
def test_rotated_rectangles_match_shapely(centre):
    g = torch.Generator().manual_seed(1)
    a = _rboxes(g, 3000, centre)
    b = a.clone()
    b[:, :2] += torch.randn(3000, 2, generator=g, dtype=torch.float64) * 15
    b[:, 2:4] *= torch.rand(3000, 2, generator=g, dtype=torch.float64) + 0.5
    b[:, 4] += torch.randn(3000, generator=g, dtype=torch.float64)
    pa, pb = rbox_to_poly(a), rbox_to_poly(b)
    ours = polygon_iou_aligned(pa, pb).numpy()
    ref = np.array([_shapely_iou(x, y) for x, y in zip(pa.numpy(), pb.numpy())])
    assert (ref > 0).mean() > 0.5                           # most pairs overlap: the test is not about zeros
    assert np.abs(ours - ref).max() < 1e-9


def test_convex_and_non_convex_quadrilaterals_match_shapely():
    rng = np.random.default_rng(2)
    cases = []
    while len(cases) < 1500:
        quad = rng.uniform(0, 50, (2, 4, 2))
        polys = [Polygon(q) for q in quad]
        if all(p.is_valid and p.area > 1 for p in polys):              # simple (not self-intersecting), either turn
            cases.append(quad.reshape(2, 8))
    cases = np.stack(cases)
    ours = polygon_iou_aligned(torch.from_numpy(cases[:, 0]), torch.from_numpy(cases[:, 1])).numpy()
    ref = np.array([_shapely_iou(a, b) for a, b in cases])
    non_convex = np.array([not Polygon(c[0].reshape(4, 2)).equals(Polygon(c[0].reshape(4, 2)).convex_hull)
                           for c in cases])
    assert non_convex.sum() > 100                           # the signed-fan path is exercised
    assert np.abs(ours - ref).max() < 1e-9


def test_the_turned_square():
    square = torch.tensor([0, 0, 1, 0, 1, 1, 0, 1], dtype=torch.float64)
    turned = rbox_to_poly(torch.tensor([0.5, 0.5, 1, 1, math.pi / 4], dtype=torch.float64))
    octagon = 2 * (math.sqrt(2) - 1)
    assert polygon_iou_aligned(square, turned).item() == pytest.approx(octagon / (2 - octagon), abs=1e-12)


def test_degenerate_and_touching_cases_are_exact_and_never_nan():
    sq = [0, 0, 10, 0, 10, 10, 0, 10]
    a = torch.tensor([sq, sq, sq, sq, sq, [0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 10, 10, 10, 10, 0, 0]],
                     dtype=torch.float64)
    b = torch.tensor([sq,                                   # identical
                      [10, 0, 10, 10, 0, 10, 0, 0],         # identical, other start and turn
                      [10, 0, 20, 0, 20, 10, 10, 10],       # sharing an edge
                      [10, 10, 20, 10, 20, 20, 10, 20],     # touching at a corner
                      [5, 0, 15, 0, 15, 10, 5, 10],         # parallel edges, half overlap
                      [0, 0, 0, 0, 0, 0, 0, 0],             # a point against a point
                      [0, 0, 10, 10, 10, 10, 0, 0]],        # a segment against itself
                     dtype=torch.float64)
    iou = polygon_iou_aligned(a, b)
    assert not torch.isnan(iou).any()
    assert torch.allclose(iou, torch.tensor([1, 1, 0, 0, 1 / 3, 0, 0], dtype=torch.float64), atol=1e-12)


def test_broadcast_pairwise_and_float32_inputs():
    g = torch.Generator().manual_seed(5)
    a, b = rbox_to_poly(_rboxes(g, 7)), rbox_to_poly(_rboxes(g, 5))
    full = polygon_iou_aligned(a[:, None].float(), b[None])                 # (7, 5)
    assert full.shape == (7, 5) and full.dtype == torch.float64
    for i in range(7):
        for j in range(5):
            assert full[i, j].item() == pytest.approx(_shapely_iou(a[i].float().double().numpy(), b[j].numpy()),
                                                      abs=1e-6)


def test_intersection_is_symmetric():
    g = torch.Generator().manual_seed(6)
    a, b = rbox_to_poly(_rboxes(g, 200)), rbox_to_poly(_rboxes(g, 200))
    assert torch.allclose(polygon_intersection_aligned(a, b), polygon_intersection_aligned(b, a), atol=1e-9)

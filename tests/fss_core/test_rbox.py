"""The angle convention of fss_core.rbox: polygon <-> rotated box, on the cases where conventions break."""

import math

import numpy as np
import pytest
import torch

from fss_core.rbox import (
    ANGLE_MAX,
    ANGLE_MIN,
    min_area_rect,
    poly_envelope,
    poly_to_rbox,
    polygon_area,
    rbox_to_poly,
    regularize_rbox,
)


def _same_points(p: torch.Tensor, q: torch.Tensor, tol: float) -> bool:
    """The 4 corners of p and q are the same set (any order)."""
    a, b = p.reshape(4, 2), q.reshape(4, 2)
    return bool((torch.cdist(a, b).min(1).values < tol).all() and (torch.cdist(b, a).min(1).values < tol).all())


def test_docstring_example():
    poly = torch.tensor([10, 0, 30, 20, 20, 30, 0, 10], dtype=torch.float64)
    rbox = poly_to_rbox(poly)
    assert torch.allclose(rbox, torch.tensor([15, 15, math.sqrt(800), math.sqrt(200), math.pi / 4],
                                             dtype=torch.float64), atol=1e-12)
    assert torch.allclose(rbox_to_poly(rbox), poly, atol=1e-12)          # the same corners, the same order here


@pytest.mark.parametrize("turn", [0, 1, 2, 3])
@pytest.mark.parametrize("reverse", [False, True])
def test_round_trip_any_vertex_order(turn, reverse):
    g = torch.Generator().manual_seed(turn + 10 * reverse)
    n = 500
    rb = torch.cat([torch.rand(n, 2, generator=g, dtype=torch.float64) * 1000,
                    torch.rand(n, 2, generator=g, dtype=torch.float64) * 200 + 1,
                    (torch.rand(n, 1, generator=g, dtype=torch.float64) - 0.5) * 20], 1)
    rb = regularize_rbox(rb)
    poly = rbox_to_poly(rb).reshape(n, 4, 2).roll(turn, 1)
    if reverse:
        poly = poly.flip(1)
    back = poly_to_rbox(poly.reshape(n, 8))
    assert torch.allclose(back[:, :4], rb[:, :4], atol=1e-9)
    assert torch.allclose(back[:, 4], rb[:, 4], atol=1e-9)


def test_regularize_range_long_side_and_squares():
    rb = torch.tensor([[0, 0, 10, 20, 0.0],                 # standing up: sides swap, θ = π/2
                       [0, 0, 20, 10, ANGLE_MAX],           # the open end of the range -> its start
                       [0, 0, 20, 10, ANGLE_MIN],           # the closed start stays
                       [0, 0, 20, 10, -math.pi / 2],        # the same direction as π/2
                       [0, 0, 10, 10, math.pi / 3],         # a square: θ and θ − π/2 are one box
                       [0, 0, -20, 10, 0.2]], dtype=torch.float64)
    out = regularize_rbox(rb)
    expect = torch.tensor([[0, 0, 20, 10, math.pi / 2], [0, 0, 20, 10, ANGLE_MIN], [0, 0, 20, 10, ANGLE_MIN],
                           [0, 0, 20, 10, math.pi / 2], [0, 0, 10, 10, math.pi / 3 - math.pi / 2],
                           [0, 0, 20, 10, 0.2]], dtype=torch.float64)
    assert torch.allclose(out, expect, atol=1e-12)
    for row_in, row_out in zip(rb, out):                    # the rectangle itself never moves
        assert _same_points(rbox_to_poly(row_in), rbox_to_poly(row_out), 1e-9)


def test_squares_any_turn_get_one_angle():
    for deg in range(-180, 181, 15):
        rb = poly_to_rbox(rbox_to_poly(torch.tensor([5, 5, 8, 8, math.radians(deg)], dtype=torch.float64)))
        assert -math.pi / 4 <= rb[4] < math.pi / 4 and rb[2] == pytest.approx(8) and rb[3] == pytest.approx(8)


def test_degenerate_polygons():
    point = poly_to_rbox(torch.tensor([3, 4] * 4, dtype=torch.float64))
    assert torch.allclose(point, torch.tensor([3, 4, 0, 0, 0], dtype=torch.float64))
    line = poly_to_rbox(torch.tensor([0, 0, 10, 10, 10, 10, 0, 0], dtype=torch.float64))
    assert torch.allclose(line, torch.tensor([5, 5, math.sqrt(200), 0, math.pi / 4], dtype=torch.float64))
    assert polygon_area(torch.tensor([0, 0, 10, 10, 10, 10, 0, 0.])) == 0


def test_area_sign_is_the_screen_turn():
    clockwise_on_screen = torch.tensor([0, 0, 2, 0, 2, 1, 0, 1], dtype=torch.float64)     # y points down
    assert polygon_area(clockwise_on_screen) == 2
    assert polygon_area(clockwise_on_screen.reshape(4, 2).flip(0).reshape(8)) == -2
    far = clockwise_on_screen + 1e6
    assert polygon_area(far) == 2                            # centred before summing: no cancellation


def test_min_area_rect_beats_every_direction():
    rng = np.random.default_rng(3)
    pts = torch.from_numpy(rng.normal(0, 10, (50, 7, 2)))
    rb = min_area_rect(pts)
    best = rb[:, 2] * rb[:, 3]
    for a in np.linspace(0, math.pi, 720, endpoint=False):        # no rotated frame encloses them in less
        u = pts[..., 0] * math.cos(a) + pts[..., 1] * math.sin(a)
        v = -pts[..., 0] * math.sin(a) + pts[..., 1] * math.cos(a)
        assert bool(((u.amax(1) - u.amin(1)) * (v.amax(1) - v.amin(1)) >= best - 1e-9).all())
    # and it encloses them: every point inside the rectangle (in its own frame)
    c, s = torch.cos(rb[:, 4:5]), torch.sin(rb[:, 4:5])
    du, dv = pts[..., 0] - rb[:, :1], pts[..., 1] - rb[:, 1:2]
    assert bool(((du * c + dv * s).abs() <= rb[:, 2:3] / 2 + 1e-9).all())
    assert bool(((-du * s + dv * c).abs() <= rb[:, 3:4] / 2 + 1e-9).all())


def test_envelope():
    assert poly_envelope(torch.tensor([10, 0, 30, 20, 20, 30, 0, 10.])).tolist() == [0, 0, 30, 30]

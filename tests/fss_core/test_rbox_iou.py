"""The fast rectangle IoU (training's) against the exact polygon IoU (evaluation's, = DOTA devkit)."""

import math

import pytest
import torch

from fss_core.polygon_iou import polygon_iou_aligned
from fss_core.rbox import rbox_to_poly
from fss_core.rbox_iou import rbox_envelopes, rbox_iou_aligned, rbox_iou_pairwise


def random_pairs(n: int, seed: int, centre: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, 5, generator=g, dtype=torch.float64) * torch.tensor([60, 60, 50, 20, 7.0]) + torch.tensor(
        [centre, centre, 1, 1, -3.5])
    b = a + torch.randn(n, 5, generator=g, dtype=torch.float64) * torch.tensor([6, 6, 6, 6, 0.4])
    b[:, 2:4] = b[:, 2:4].abs() + 0.5
    return a, b


@pytest.mark.parametrize("centre", [0.0, 1e5])
def test_equals_the_polygon_iou(centre):
    a, b = random_pairs(5000, 0, centre)
    ref = polygon_iou_aligned(rbox_to_poly(a), rbox_to_poly(b))
    assert (ref > 0).float().mean() > 0.5                     # most pairs overlap: the test is not about zeros
    assert torch.allclose(rbox_iou_aligned(a, b), ref, atol=1e-9)
    # float32 boxes (rounded to 0.008 px at 100,000 px) get their own exact IoU to 1e-5: A is placed relative to
    # B before anything else is rounded
    a32, b32 = a.float(), b.float()
    ref32 = polygon_iou_aligned(rbox_to_poly(a32.double()), rbox_to_poly(b32.double()))
    assert torch.allclose(rbox_iou_aligned(a32, b32).double(), ref32, atol=1e-5)


def test_worked_example_and_special_cases():
    a = torch.tensor([0.0, 0, 4, 2, 0])
    assert rbox_iou_aligned(a, torch.tensor([1.0, 0, 4, 2, math.pi / 2])).item() == pytest.approx(1 / 3, abs=1e-6)
    assert rbox_iou_aligned(a, a).item() == pytest.approx(1.0, abs=1e-6)
    assert rbox_iou_aligned(a, torch.tensor([0.0, 0, 2, 4, math.pi / 2])).item() == pytest.approx(1.0, abs=1e-6)
    assert rbox_iou_aligned(a, torch.tensor([4.0, 0, 4, 2, 0])).item() == 0.0           # touching
    assert rbox_iou_aligned(a, torch.tensor([50.0, 0, 4, 2, 0.3])).item() == 0.0        # apart
    zero = rbox_iou_aligned(torch.zeros(5), torch.zeros(5))
    assert zero.item() == 0.0 and not torch.isnan(zero)
    # the square against itself turned 45°: the octagon (polygon_iou's worked example)
    sq = torch.tensor([0.5, 0.5, 1, 1, 0])
    turned = torch.tensor([0.5, 0.5, 1, 1, math.pi / 4])
    assert rbox_iou_aligned(sq, turned).item() == pytest.approx(0.7071, abs=1e-4)


def test_gradients_are_finite_and_right():
    a, b = random_pairs(64, 1)
    a.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: rbox_iou_aligned(x, b), (a,), eps=1e-6, atol=1e-5)
    same = torch.tensor([[3.0, 4, 5, 2, 0.2]], dtype=torch.float64, requires_grad=True)
    rbox_iou_aligned(same, same.detach()).sum().backward()
    assert torch.isfinite(same.grad).all()


def test_pairwise_equals_aligned_and_envelopes_contain_corners():
    a, b = random_pairs(40, 2)
    full = rbox_iou_aligned(a[:, None], b[None])                               # (40, 40)
    assert torch.allclose(rbox_iou_pairwise(a, b), full, atol=1e-12)
    env = rbox_envelopes(a)
    corners = rbox_to_poly(a).view(-1, 4, 2)
    assert (corners[..., 0] >= env[:, None, 0] - 1e-9).all() and (corners[..., 0] <= env[:, None, 2] + 1e-9).all()
    assert (corners[..., 1] >= env[:, None, 1] - 1e-9).all() and (corners[..., 1] <= env[:, None, 3] + 1e-9).all()

"""Gaussian distances of rotated boxes (fss_core.gaussian_box): their defining properties and closed forms."""

import math

import numpy as np
import pytest
import torch

from fss_core.gaussian_box import gwd, kld, probiou, rbox_to_gaussian


def _boxes(seed, n):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.rand(n, 2, generator=g, dtype=torch.float64) * 50,
                      torch.rand(n, 2, generator=g, dtype=torch.float64) * 30 + 2,
                      torch.rand(n, 1, generator=g, dtype=torch.float64) * math.pi], 1)


def test_covariance_of_a_turned_rectangle():
    mean, cov = rbox_to_gaussian(torch.tensor([3, 4, 12, 6, math.pi / 2], dtype=torch.float64))
    assert mean.tolist() == [3, 4]
    assert torch.allclose(cov, torch.tensor([[3, 0], [0, 12]], dtype=torch.float64), atol=1e-12)   # w²/12 on y


def test_identity_and_periodicity():
    a = _boxes(0, 100)
    turned = a.clone()
    turned[:, 4] += math.pi                                 # the same box
    assert torch.allclose(probiou(a, a), torch.ones(100, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(probiou(a, turned), probiou(a, a), atol=1e-9)
    assert torch.allclose(kld(a, turned), torch.zeros(100, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(gwd(a, turned), torch.zeros(100, dtype=torch.float64), atol=1e-3)


def test_probiou_is_not_an_iou():
    square = torch.tensor([0, 0, 10, 10, 0.0], dtype=torch.float64)
    turned = torch.tensor([0, 0, 10, 10, math.pi / 4], dtype=torch.float64)   # polygon IoU 0.71
    assert probiou(square, turned).item() == pytest.approx(1, abs=1e-3)
    far = torch.tensor([1000, 0, 10, 10, 0.0], dtype=torch.float64)
    assert probiou(square, far).item() < 1e-3


def _sqrtm(m):
    w, v = np.linalg.eigh(m)
    return v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T


def test_kld_and_gwd_equal_their_matrix_definitions():
    a, b = _boxes(1, 50), _boxes(2, 50)
    ours_kld, ours_gwd = kld(a, b, eps=0).numpy(), gwd(a, b, eps=0).numpy()
    (ma, ca), (mb, cb) = rbox_to_gaussian(a), rbox_to_gaussian(b)
    for k in range(50):
        sa, sb, d = ca[k].numpy(), cb[k].numpy(), (mb[k] - ma[k]).numpy()
        inv_b = np.linalg.inv(sb)
        ref_kld = 0.5 * (np.trace(inv_b @ sa) + d @ inv_b @ d - 2 + np.log(np.linalg.det(sb) / np.linalg.det(sa)))
        root = _sqrtm(sa)
        ref_gwd = d @ d + np.trace(sa + sb - 2 * _sqrtm(root @ sb @ root))
        assert ours_kld[k] == pytest.approx(ref_kld, rel=1e-9, abs=1e-9)
        assert ours_gwd[k] == pytest.approx(ref_gwd, rel=1e-7, abs=1e-7)


def test_gradients_are_finite_for_identical_and_degenerate_boxes():
    a = torch.tensor([[0, 0, 10, 4, 0.3], [5, 5, 0, 0, 0.0]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[0, 0, 10, 4, 0.3], [5, 5, 3, 1, 0.0]], dtype=torch.float64)
    for f in (probiou, kld, gwd):
        a.grad = None
        f(a, b).sum().backward()
        assert torch.isfinite(a.grad).all(), f.__name__

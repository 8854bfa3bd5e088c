"""Whole-scene rotated NMS/NMM (fss_core.rotated_nms) against a brute-force shapely NMS."""

import math

import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from fss_core.boxes import overlapping_pairs
from fss_core.rbox import poly_envelope, rbox_to_poly
from fss_core.rotated_nms import pair_overlaps, rotated_nmm, rotated_nms


def _scene(seed, objects, copies, size):
    """Clusters of jittered rotated boxes (as a detector's raw output) with random scores and 3 labels."""
    rng = np.random.default_rng(seed)
    base = np.concatenate([rng.uniform(0, size, (objects, 2)), rng.uniform(8, 60, (objects, 2)),
                           rng.uniform(0, math.pi, (objects, 1))], 1)
    boxes = np.repeat(base, copies, 0)
    boxes[:, :2] += rng.normal(0, 3, (len(boxes), 2))
    boxes[:, 2:4] *= rng.uniform(0.85, 1.15, (len(boxes), 2))
    boxes[:, 4] += rng.normal(0, 0.1, len(boxes))
    polys = rbox_to_poly(torch.from_numpy(boxes))
    return polys, torch.from_numpy(rng.uniform(0, 1, len(boxes))), torch.from_numpy(rng.integers(0, 3, len(boxes)))


def _brute_nms(polys, scores, labels, threshold, metric="iou"):
    shapes = [Polygon(p.reshape(4, 2)) for p in polys.numpy()]
    order = np.argsort(-scores.numpy(), kind="stable")
    alive, kept = np.ones(len(order), bool), []
    for a in order:
        if not alive[a]:
            continue
        kept.append(a)
        alive[a] = False
        for b in order:
            if alive[b] and (labels is None or labels[a] == labels[b]):
                inter = shapes[a].intersection(shapes[b]).area
                denom = (shapes[a].area + shapes[b].area - inter) if metric == "iou" else min(shapes[a].area,
                                                                                              shapes[b].area)
                if inter / denom > threshold:
                    alive[b] = False
    return np.array(kept)


@pytest.mark.parametrize("threshold", [0.1, 0.5])
@pytest.mark.parametrize("by_label", [False, True])
def test_nms_matches_brute_force_shapely(threshold, by_label):
    polys, scores, labels = _scene(0, 150, 4, 700)
    lab = labels if by_label else None
    keep = rotated_nms(polys, scores, threshold, lab)
    assert 50 < len(keep) < len(polys)
    assert np.array_equal(keep.numpy(), _brute_nms(polys, scores, lab, threshold))


def test_ios_metric_matches_brute_force():
    polys, scores, _ = _scene(1, 100, 3, 500)
    assert np.array_equal(rotated_nms(polys, scores, 0.6, metric="ios").numpy(),
                          _brute_nms(polys, scores, None, 0.6, "ios"))


def test_overlapping_pairs_are_exactly_the_overlapping_envelopes():
    polys, _, _ = _scene(2, 300, 2, 900)
    env = poly_envelope(polys).numpy()
    i, j = overlapping_pairs(env, chunk=37)                 # several chunks
    got = {(min(a, b), max(a, b)) for a, b in zip(i.tolist(), j.tolist())}
    assert len(got) == len(i)                               # each pair once
    ix = np.minimum(env[:, None, 2], env[None, :, 2]) - np.maximum(env[:, None, 0], env[None, :, 0])
    iy = np.minimum(env[:, None, 3], env[None, :, 3]) - np.maximum(env[:, None, 1], env[None, :, 1])
    a, b = np.nonzero(np.triu((ix > 0) & (iy > 0), 1))
    assert got == set(zip(a.tolist(), b.tolist()))


def test_pair_overlaps_match_shapely():
    polys, _, _ = _scene(3, 60, 3, 300)
    i, j = overlapping_pairs(poly_envelope(polys).numpy())
    ours = pair_overlaps(polys, i, j)
    shapes = [Polygon(p.reshape(4, 2)) for p in polys.numpy()]
    ref = [shapes[a].intersection(shapes[b]).area / shapes[a].union(shapes[b]).area for a, b in zip(i, j)]
    assert np.abs(ours - np.array(ref)).max() < 1e-9


def test_nmm_keeps_what_nms_keeps_and_covers_what_it_absorbed():
    polys, scores, labels = _scene(4, 80, 4, 400)
    keep_nms = rotated_nms(polys, scores, 0.3, labels)
    keep, merged = rotated_nmm(polys, scores, 0.3, labels)
    assert torch.equal(keep, keep_nms) and merged.shape == (len(keep), 5)
    absorbed_any = False
    for k, box in zip(keep.tolist(), merged):
        rect = Polygon(rbox_to_poly(box).reshape(4, 2).numpy()).buffer(1e-6)
        keeper = Polygon(polys[k].reshape(4, 2).numpy())
        assert rect.contains(keeper)                        # the merged box covers its keeper …
        absorbed_any |= rect.area > keeper.area * 1.01      # … and grew where it absorbed others
    assert absorbed_any
    assert (merged[:, 2] >= merged[:, 3]).all()             # the convention: long side first


def test_empty_and_single():
    empty = torch.zeros((0, 8), dtype=torch.float64)
    assert rotated_nms(empty, torch.zeros(0), 0.5).numel() == 0
    keep, boxes = rotated_nmm(empty, torch.zeros(0), 0.5)
    assert keep.numel() == 0 and boxes.shape == (0, 5)
    one = torch.tensor([[0, 0, 10, 0, 10, 5, 0, 5]], dtype=torch.float64)
    keep, boxes = rotated_nmm(one, torch.ones(1), 0.5)
    assert keep.tolist() == [0] and torch.allclose(boxes[0], torch.tensor([5, 2.5, 10, 5, 0], dtype=torch.float64))

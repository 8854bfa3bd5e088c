"""Hand-built cases (3–6 points, 1–2 GTs) with selections and numbers worked out by hand."""

import math

import pytest
import torch

from fss_train.assigners import ATSSAssigner, FSSAssigner, MaxIoUAssigner, SimOTAAssigner, TALAssigner
from fss_train.assigners.base import prepare_inputs


def case(points, stride, pred_boxes, probs, gts, obj=None):
    """One image; probs (A, C); gts [(box, label)] -> assigner argument tuple."""
    pts = torch.tensor(points, dtype=torch.float32)
    A = len(points)
    scores = torch.tensor(probs, dtype=torch.float32)[None]
    o = torch.tensor(obj, dtype=torch.float32)[None] if obj is not None else torch.ones(1, A)
    return (scores, o, torch.tensor(pred_boxes, dtype=torch.float32)[None], pts, torch.full((A,), float(stride)),
            torch.tensor([[lab for _, lab in gts]]), torch.tensor([[box for box, _ in gts]], dtype=torch.float32),
            torch.ones(1, len(gts), dtype=torch.bool))


# four stride-8 points on a row; GT [0, 0, 24, 8]; predicted IoUs 0.9, 1.0, 0.9, 0.5
ROW = [(4.0, 4.0), (12.0, 4.0), (20.0, 4.0), (28.0, 4.0)]
ROW_PRED = [[0, 0, 21.6, 8], [0, 0, 24, 8], [2.4, 0, 24, 8], [12, 0, 24, 8]]
ROW_U = [0.9, 1.0, 0.9, 0.5]
ROW_P = [0.25, 0.64, 0.81, 0.5]          # class-0 probabilities; objectness 1
GT = ([0.0, 0.0, 24.0, 8.0], 0)


def test_fss_every_step_by_hand():
    args = case(ROW, 8, ROW_PRED, [[p] for p in ROW_P], [GT])
    fss = FSSAssigner(alpha=1.0, beta=1.0, rho=1.0)
    inp = prepare_inputs(*args)
    pairs = fss.candidates(inp)
    assert pairs.a.tolist() == [0, 1, 2, 3]      # 3 inside the box, the 4th within 2.5 strides of its centre
    st = fss.steps(inp, pairs)
    # step 1: s = sqrt(p), t = s * u
    s = [math.sqrt(p) for p in ROW_P]
    t = [si * ui for si, ui in zip(s, ROW_U)]
    assert st["u"].tolist() == pytest.approx(ROW_U, abs=1e-6)
    assert st["t"].tolist() == pytest.approx(t, abs=1e-6)
    # step 3: P = (t + eps) / sum(t + eps)
    total = sum(ti + 1e-4 for ti in t)
    P = [(ti + 1e-4) / total for ti in t]
    assert st["P"].tolist() == pytest.approx(P, abs=1e-6)
    # step 4: i* = point 2 (0.9 · 0.9 beats 0.8 · 1.0); sigma_x = max(1.0 · 24, 0.5 · 8) = 24
    assert st["mu"][0].tolist() == [20.0, 4.0]
    G = [math.exp(-0.5 * ((x - 20.0) / 24.0) ** 2) for x, _ in ROW]
    assert st["G"].tolist() == pytest.approx(G, abs=1e-6)
    # step 5: k = floor(sum of u·G) = floor(3.0396) = 3
    assert sum(u * g for u, g in zip(ROW_U, G)) == pytest.approx(3.0396, abs=1e-4)
    assert st["k"][0].item() == 3
    # step 6: top-3 of r = P·G -> points 2, 1, 0
    r = [p * g for p, g in zip(P, G)]
    assert st["r"].tolist() == pytest.approx(r, abs=1e-6)
    assert st["pos"].tolist() == [True, True, True, False]
    # step 7: w = P / mean(P over positives)
    mean = sum(P[:3]) / 3
    w = [p / mean for p in P[:3]]
    assert w == pytest.approx([0.65538, 1.16503, 1.17958], abs=1e-4)
    res = fss(*args)
    assert res.weights[0].tolist() == pytest.approx(w + [0.0], abs=1e-5)
    # step 8: class target one-hot × IoU, box target = GT
    assert res.target_scores[0, :, 0].tolist() == pytest.approx([0.9, 1.0, 0.9, 0.0], abs=1e-6)
    assert res.target_boxes[0, 1].tolist() == GT[0]
    assert res.gt_index[0].tolist() == [0, 0, 0, -1] and res.num_fg == 3


def test_fss_flat_probability_centres_the_prior_on_the_point_nearest_the_box_centre():
    """Spec step 4: a tie in argmax P (every IoU 0 early in training: P uniform) goes to the candidate nearest the
    box centre — not to the first candidate in point order, the top-left corner of the region."""
    far = [[100, 100, 101, 101]] * 4                                          # predictions that miss the GT: u = 0
    args = case(ROW, 8, far, [[0.5]] * 4, [([4.0, 0.0, 20.0, 8.0], 0)])      # centre x = 12: point 1
    fss = FSSAssigner()
    inp = prepare_inputs(*args)
    st = fss.steps(inp, fss.candidates(inp))
    assert st["P"].tolist() == pytest.approx([0.25] * 4) and (st["u"] == 0).all()
    assert st["mu"][0].tolist() == [12.0, 4.0]
    assert st["pos"].tolist() == [False, True, False, False]                  # k = 1 (no IoU): the centre point


def test_fss_prior_dynamic_k_is_smaller_for_a_scattered_iou_landscape():
    # a narrow prior (rho 0.25, the spec before 2026-11-26) around the best point: k shrinks from 3 to 1
    args = case(ROW, 8, ROW_PRED, [[p] for p in ROW_P], [GT])
    inp = prepare_inputs(*args)
    narrow = FSSAssigner(alpha=1.0, beta=1.0, rho=0.25)
    st = narrow.steps(inp, narrow.candidates(inp))
    # sigma_x = max(0.25 · 24, 4) = 6; G at dx = -16, -8, 0, 8
    G = [math.exp(-0.5 * (dx / 6.0) ** 2) for dx in (-16, -8, 0, 8)]
    assert math.floor(sum(u * g for u, g in zip(ROW_U, G))) == 1
    assert st["k"][0].item() == 1 and st["pos"].tolist() == [False, False, True, False]
    plain = FSSAssigner(alpha=1.0, beta=1.0, dynamic_k="iou")
    assert plain.steps(inp, plain.candidates(inp))["k"][0].item() == 3   # floor(0.9 + 1 + 0.9 + 0.5)


def test_fss_default_prior_is_the_revised_spec():
    # rho 0.5 (FSS-SPEC revision 2026-11-26): sigma_x = max(0.5 · 24, 4) = 12, so k = floor(2.471) = 2
    assert FSSAssigner().rho == 0.5
    args = case(ROW, 8, ROW_PRED, [[p] for p in ROW_P], [GT])
    inp = prepare_inputs(*args)
    fss = FSSAssigner(alpha=1.0, beta=1.0)
    st = fss.steps(inp, fss.candidates(inp))
    G = [math.exp(-0.5 * (dx / 12.0) ** 2) for dx in (-16, -8, 0, 8)]
    assert sum(u * g for u, g in zip(ROW_U, G)) == pytest.approx(2.4711, abs=1e-4)
    assert st["k"][0].item() == 2
    # r = P · G: point 2 (P ∝ 0.81) and point 1 (P ∝ 0.8 · G 0.80) beat point 3 (0.354 · 0.80) and point 0
    assert st["pos"].tolist() == [False, True, True, False]
    t = [math.sqrt(p) * u for p, u in zip(ROW_P, ROW_U)]
    w1, w2 = t[1] / ((t[1] + t[2]) / 2), t[2] / ((t[1] + t[2]) / 2)
    assert fss(*args).weights[0].tolist() == pytest.approx([0.0, w1, w2, 0.0], abs=1e-3)


def test_simota_by_hand():
    probs = [[p, 0.1] for p in ROW_P]
    args = case(ROW, 8, ROW_PRED, probs, [GT])
    # candidates: centre square ±20 px around (12, 4) holds all four points; the box only points 0-2,
    # so point 3 pays YOLOX's 1e5 penalty. k = floor(0.9 + 1 + 0.9 + 0.5) = 3 -> points 0, 1, 2
    res = SimOTAAssigner()(*args)
    assert res.fg_mask[0].tolist() == [True, True, True, False]
    assert res.target_scores[0, :, 0].tolist() == pytest.approx([0.9, 1.0, 0.9, 0.0], abs=1e-6)
    assert res.target_scores[0, :, 1].abs().sum() == 0
    assert res.weights[0].tolist() == [1.0, 1.0, 1.0, 0.0]


def test_simota_penalty_is_a_cost_not_an_exclusion():
    # every prediction equals the GT: k = floor(4 × IoU 1) = 4 > the 3 points in box ∩ centre, so the
    # reference also takes point 3 despite its 1e5 penalty
    args = case(ROW, 8, [GT[0]] * 4, [[p] for p in ROW_P], [GT])
    assert SimOTAAssigner()(*args).fg_mask[0].tolist() == [True, True, True, True]
    # the 2023 variant (centre square of ±1.5 strides = ±12 px only): point 3 (16 px away) is no candidate
    # of the union at all; points 0 and 2 lie exactly 8 px away, inside
    res = SimOTAAssigner(region="centre", center_radius=1.5, penalty=1e6)(*args)
    assert res.fg_mask[0].tolist() == [True, True, True, False]


def test_tal_by_hand():
    args = case(ROW, 8, ROW_PRED, [[p] for p in ROW_P], [GT])
    res = TALAssigner(topk=2)(*args)

    def ciou(p, g=GT[0], eps=1e-7):     # Complete IoU written out (Zheng et al. 2020), Ultralytics' eps placement
        iw = max(0.0, min(p[2], g[2]) - max(p[0], g[0]))
        ih = max(0.0, min(p[3], g[3]) - max(p[1], g[1]))
        w1, h1, w2, h2 = g[2] - g[0], g[3] - g[1] + eps, p[2] - p[0], p[3] - p[1] + eps
        iou = iw * ih / (w1 * h1 + w2 * h2 - iw * ih + eps)
        c2 = (max(p[2], g[2]) - min(p[0], g[0])) ** 2 + (max(p[3], g[3]) - min(p[1], g[1])) ** 2 + eps
        rho2 = ((p[0] + p[2] - g[0] - g[2]) ** 2 + (p[1] + p[3] - g[1] - g[3]) ** 2) / 4
        v = 4 / math.pi ** 2 * (math.atan(w2 / h2) - math.atan(w1 / h1)) ** 2
        return iou - (rho2 / c2 + v * v / (1 - iou + v + eps))

    # points 0-2 lie inside the box (its 8 px height is widened to 16, which adds no point here);
    # t = sqrt(p) · CIoU^6 = 0.26, 0.8, 0.47 -> top-2 = points 1, 2
    u = [ciou(p) for p in ROW_PRED[:3]]
    t = [math.sqrt(p) * ui**6 for p, ui in zip(ROW_P[:3], u)]
    assert u[0] == pytest.approx(0.8977, abs=1e-4) and u[1] == pytest.approx(1.0, abs=1e-6)
    assert res.fg_mask[0].tolist() == [False, True, True, False]
    # normalised targets t · max u / max t over the positives (max u = u[1], max t = t[1])
    expected = [0.0, 1.0 * u[1], t[2] * u[1] / t[1], 0.0]
    assert res.target_scores[0, :, 0].tolist() == pytest.approx(expected, abs=1e-5)
    # TOOD's plain IoU: the same selection here, targets from IoU
    tood = TALAssigner(topk=2, overlap="iou", min_side=0)(*args)
    assert tood.fg_mask[0].tolist() == [False, True, True, False]


def test_tal_widens_small_boxes_to_min_side():
    # a 6 × 6 px GT centred at (16, 16) on a stride-8 grid: no point centre lies inside it, but widened
    # to 16 × 16 ([8, 24]²) it holds the four points (12|20, 12|20)
    pts = [(4.0 + 8 * i, 4.0 + 8 * j) for j in range(4) for i in range(4)]
    gt = ([13.0, 13.0, 19.0, 19.0], 0)
    args = case(pts, 8, [gt[0]] * 16, [[0.5]] * 16, [gt])
    assert TALAssigner()(*args).num_fg == 4
    assert TALAssigner(min_side=0)(*args).num_fg == 0


SIX = [(4.0 + 8 * i, 4.0) for i in range(6)]


def test_atss_by_hand():
    # GT [0, 0, 60, 8], centre (30, 4): nearest 3 points are 3 (2 px), 4 (6 px), 2 (10 px)
    gt = ([0.0, 0.0, 60.0, 8.0], 0)
    args = case(SIX, 8, [[0, 0, 1, 1]] * 6, [[0.5]] * 6, [gt])
    # priors of 64 px: IoU with the 480 px² GT
    ious = {2: 416 / (4096 + 480 - 416), 3: 480 / 4096, 4: 448 / (4096 + 480 - 448)}
    mean = sum(ious.values()) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in ious.values()) / 2)
    passing = [i for i, v in ious.items() if v >= mean + std]
    assert passing == [3]
    res = ATSSAssigner(topk=3)(*args)
    assert torch.nonzero(res.fg_mask[0]).flatten().tolist() == [3]


def test_atss_requires_the_point_inside_the_box():
    gt = ([8.0, 0.0, 24.0, 8.0], 0)     # nearest 3: points 1, 2 (4 px) and 0 (12 px); equal IoUs
    args = case(SIX, 8, [[0, 0, 1, 1]] * 6, [[0.5]] * 6, [gt])
    res = ATSSAssigner(topk=3)(*args)
    assert torch.nonzero(res.fg_mask[0]).flatten().tolist() == [1, 2]   # point 0 (x = 4) lies outside


def test_maxiou_by_hand():
    # stride 4 -> 32 px priors [0,32], [32,64], [64,96] (full height 32)
    pts = [(16.0, 16.0), (48.0, 16.0), (80.0, 16.0)]
    gts = [([0.0, 0.0, 32.0, 32.0], 0),      # IoU 1 with prior 0
           ([40.0, 0.0, 72.0, 32.0], 1),     # IoU 0.6 with prior 1, 0.143 with prior 2
           ([68.0, 4.0, 90.0, 26.0], 0)]     # IoU 0.473 with prior 2: grey zone, but its best -> forced
    args = case(pts, 4, [[0, 0, 1, 1]] * 3, [[0.5, 0.5]] * 3, gts)
    res = MaxIoUAssigner()(*args)
    assert res.gt_index[0].tolist() == [0, 1, 2]
    # without the third GT, point 2's best IoU is 0.143 < 0.4: plain background
    res2 = MaxIoUAssigner()(*case(pts, 4, [[0, 0, 1, 1]] * 3, [[0.5, 0.5]] * 3, gts[:2]))
    assert res2.gt_index[0].tolist() == [0, 1, -1] and not res2.ignore_mask.any()


def test_maxiou_grey_zone_is_ignored():
    pts = [(16.0, 16.0), (28.0, 16.0)]   # priors [0,32] (IoU 1) and [12,44] (IoU 640/1408 = 0.4545)
    res = MaxIoUAssigner()(*case(pts, 4, [[0, 0, 1, 1]] * 2, [[0.5]] * 2, [([0.0, 0.0, 32.0, 32.0], 0)]))
    assert res.fg_mask[0].tolist() == [True, False]
    assert res.ignore_mask[0].tolist() == [False, True]

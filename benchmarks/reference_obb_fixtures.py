"""Golden fixtures for a rotated (oriented-box) task-aligned assigner, made by running the reference code.

    python benchmarks/reference_obb_fixtures.py --setup   # makes (or reuses) the side venv runs/refenv, runs there
    python benchmarks/reference_obb_fixtures.py           # inside an environment that has the reference

Reference (run here, never copied into this repository): ``ultralytics.utils.tal.RotatedTaskAlignedAssigner``
of ultralytics 8.4.190 (PyPI, installed without dependencies), with the arguments its OBB loss
(``v8OBBLoss.__init__`` in ``ultralytics/utils/loss.py``) passes: topk 10, topk2 None (= topk, so no second
filter), num_classes = the model's (16 here), alpha 0.5, beta 6.0, stride = the model strides [8, 16, 32]
(so ``stride_val`` = stride[1] = 16, the minimum GT side of the in-box test), eps 1e-9 (default). It is fed
exactly what ``v8OBBLoss.loss`` feeds it: sigmoid scores (B, A, C); predicted boxes xywhr (B, A, 5) in pixels
(the loss multiplies x, y, w, h of its grid-unit decode by the stride, not the angle); anchor points in pixels
(A, 2); gt_labels (B, M, 1) float; gt_bboxes xywhr (B, M, 5) in pixels, padded rows all zero; mask_gt
(B, M, 1) float. The side environment and the import-only torchvision stand-in are those of
``benchmarks/reference_fixtures.py`` (imported from there); see benchmarks/reference_obb_fixtures.md for what
the reference does step by step.

Inputs are seeded random rotated scenes (16 classes): points are cell centres ((j+0.5)s, (i+0.5)s) of strides
8/16/32, row-major, level by level. GTs are (cx, cy, w, h, θ) with w the long side, θ in [-π/4, 3π/4) radians
from +x towards +y (Ultralytics' own canonical form, ``ops.xyxyxyxy2xywhr``): long side log-uniform 6–120 px,
aspect ratio log-uniform 1–6 (short side at least 2 px, the size Ultralytics' loss drops below), 10 % exact
squares, 10 % with θ exactly 0 and 10 % exactly π/2 (as float32), cx, cy, w, h on a 1/64 px grid; half of
the θ = 0 boxes are placed so that their 16 px-widened left and top edges pass exactly through a stride-8
point column and row (the reference's in-box test is non-strict, and exact at θ = 0). The
2-image cases have ragged GT counts (image 1 holds fewer; its padded rows are zero, ``gt_mask`` False).
Predictions: class logits N(-4, 1.5²) stored float16 (use ``sigmoid(logits.float())``), raised by U(0, 5) at
the owner's class; for 80 % of the points inside a (16 px-widened) GT — the owner is one of the GTs
containing the point, at random — the predicted box is the owner jittered (centre ±15 % of its sides, sides
×exp(N(0, 0.2²)), angle +N(0, 0.15²)), and every other point predicts a random box near itself (centre
+N(0, s²), sides s·exp(N(1, 0.7²)), θ uniform). A third of all predicted boxes are then written the other way
round (w, h swapped, θ + π/2, wrapped back into [-π/4, 3π/4)), as the OBB head's free w/h decode allows.

Each fixture (``tests/fixtures/assigners_obb/<case>.pt``, plain tensors, ``torch.load(weights_only=True)``):
``inputs`` (points, strides, cls_logits f16, pred_boxes, gt_boxes, gt_labels, gt_mask), ``expected.tal_obb``
(fg_mask (B, A) bool, gt_index (B, A) long, -1 off the foreground, and target_scores_fg (P, C) float32: the
reference's normalised target scores at the foreground points only, in ``fg_mask`` order, i.e.
``dense[fg_mask]`` — the dense (B, A, C) tensor is zero elsewhere, checked here; stored sparsely so that
the 1024 px file stays near 2 MB), two diagnostic masks (B, A) bool — ``tie_points``: in-box candidates with
an alignment metric of exactly 0 of a GT with fewer than topk positive metrics, which ``torch.topk`` picks or
not in its unspecified tie order; ``edge_points``: points within 1e-4 px of the edge of a widened GT with
θ ≠ 0, where the reference's verdict rests on float32 rounding — and ``meta`` (versions, size, seed, the
assigner's arguments, counts of the above, conflicts, and the assignment of the same scene with every GT
written (h, w, θ + π/2)).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from reference_fixtures import STRIDES, grid, q64  # this folder: the horizontal fixtures' script

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests/fixtures/assigners_obb"
NUM_CLASSES = 16
# the arguments v8OBBLoss.__init__ (ultralytics 8.4.190) passes to RotatedTaskAlignedAssigner
ARGS = {"topk": 10, "topk2": None, "num_classes": NUM_CLASSES, "alpha": 0.5, "beta": 6.0, "stride": list(STRIDES)}
# name: (image size, images, GTs per image (image 0), seed)
CASES = {"s640_m10": (640, 2, 10, 0), "s640_m200": (640, 2, 200, 1), "s1024_m1000": (1024, 1, 1000, 2)}
LO, HI = -math.pi / 4, 3 * math.pi / 4


# ---------------------------------------------------------------------------------- inputs
# the grid of cell centres and the 1/64 px rounding: the horizontal fixtures' own (benchmarks/reference_fixtures.py)


def wrap(theta: torch.Tensor) -> torch.Tensor:
    """θ into [-π/4, 3π/4)."""
    return torch.remainder(theta - LO, math.pi) + LO


def local(pts: torch.Tensor, boxes: torch.Tensor, min_side: float) -> torch.Tensor:
    """(M, A) signed distance-like margin of each point outside each box (sides floored at min_side), float64:
    max(|u| - W/2, |v| - H/2), ≤ 0 inside. Our own geometry, for making predictions and diagnostics only."""
    p, b = pts.double(), boxes.double()
    d = p[None] - b[:, None, :2]
    c, s = torch.cos(b[:, 4:5]), torch.sin(b[:, 4:5])
    u = d[..., 0] * c + d[..., 1] * s
    v = -d[..., 0] * s + d[..., 1] * c
    wh = b[:, 2:4].clamp(min=min_side)
    return torch.maximum(u.abs() - wh[:, None, 0] / 2, v.abs() - wh[:, None, 1] / 2)


def make_gts(g: torch.Generator, n: int, size: int) -> torch.Tensor:
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    long = torch.exp(math.log(6) + u(n) * (math.log(120) - math.log(6)))
    ar = torch.exp(u(n) * math.log(6))
    kind = u(n)
    ar = torch.where(kind < 0.1, torch.ones(n), ar)                             # exact squares
    short = torch.maximum(long / ar, torch.full((n,), 2.0))
    w, h = q64(long), q64(short)
    h = torch.where(kind < 0.1, w, torch.minimum(h, w))
    theta = LO + u(n) * math.pi
    r = u(n)
    theta = torch.where(r < 0.1, torch.zeros(n), torch.where(r < 0.2, torch.full((n,), math.pi / 2), theta))
    half = (w.abs() + h.abs()) / 2 * 0.75                                       # mostly inside the image
    cx = half + u(n) * (size - 2 * half)
    cy = half + u(n) * (size - 2 * half)
    # half of the θ = 0 boxes get their (16 px-widened) left and top edges exactly on a stride-8 point row and
    # column (x, y = 8k + 4): the reference's in-box test is non-strict, and exact at θ = 0
    snap = (r < 0.05) & (w < size / 2)
    w, h = torch.where(snap, torch.round(w * 32) / 32, w), torch.where(snap, torch.round(h * 32) / 32, h)
    W, H = w.clamp(min=STRIDES[1]), h.clamp(min=STRIDES[1])
    cx = torch.where(snap, torch.round((cx - W / 2 - 4) / 8) * 8 + 4 + W / 2, cx)
    cy = torch.where(snap, torch.round((cy - H / 2 - 4) / 8) * 8 + 4 + H / 2, cy)
    return torch.stack((q64(cx), q64(cy), w, h, theta), 1).float()


def make_case(size: int, images: int, num_gt: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    pts, strides = grid(size)
    A = pts.shape[0]
    counts = [num_gt] + [max(1, num_gt - (3 + num_gt // 5) * i) for i in range(1, images)]   # ragged
    gt_boxes = torch.zeros(images, num_gt, 5)
    gt_labels = torch.zeros(images, num_gt, dtype=torch.long)
    gt_mask = torch.zeros(images, num_gt, dtype=torch.bool)
    logits = torch.randn(images, A, NUM_CLASSES, generator=g) * 1.5 - 4
    pred = torch.zeros(images, A, 5)
    s = strides[:, None]
    for b, m in enumerate(counts):
        gts = make_gts(g, m, size)
        gt_boxes[b, :m], gt_mask[b, :m] = gts, True
        gt_labels[b, :m] = torch.randint(0, NUM_CLASSES, (m,), generator=g)
        inside = local(pts, gts, float(STRIDES[1])) <= 0                      # (m, A), widened as the reference
        pick = torch.rand(m, A, generator=g).masked_fill(~inside, -1)        # a random containing GT
        owner = torch.where(inside.any(0), pick.argmax(0), torch.full((A,), -1))
        # random boxes near every point
        wh = s * torch.exp(torch.randn(A, 2, generator=g) * 0.7 + 1.0)
        c = pts + torch.randn(A, 2, generator=g) * s
        th = LO + torch.rand(A, 1, generator=g) * math.pi
        box = torch.cat((c, wh, th), 1)
        hit = (owner >= 0) & (torch.rand(A, generator=g) < 0.8)
        gb = gts[owner[hit]]
        k = int(hit.sum())
        jit = torch.cat((gb[:, :2] + torch.randn(k, 2, generator=g) * 0.15 * gb[:, 2:4],
                         gb[:, 2:4] * torch.exp(torch.randn(k, 2, generator=g) * 0.2),
                         gb[:, 4:] + torch.randn(k, 1, generator=g) * 0.15), 1)
        box[hit] = jit
        flip = torch.rand(A, generator=g) < 1 / 3                            # the same box, written w<h
        box[flip] = torch.cat((box[flip, :2], box[flip, 2:4].flip(-1), box[flip, 4:] + math.pi / 2), 1)
        box[:, 4] = wrap(box[:, 4])
        box[:, 2:4] = box[:, 2:4].clamp(min=0.5)
        box[:, :4] = q64(box[:, :4])
        pred[b] = box
        logits[b, hit, gt_labels[b, owner[hit]]] += torch.rand(k, generator=g) * 5
    return {"points": pts, "strides": strides, "cls_logits": logits.half(), "pred_boxes": pred,
            "gt_boxes": gt_boxes, "gt_labels": gt_labels, "gt_mask": gt_mask}


# ---------------------------------------------------------------------------------- reference
def assigner():
    from ultralytics.utils.tal import RotatedTaskAlignedAssigner

    return RotatedTaskAlignedAssigner(**ARGS)


def run_ultralytics(case: dict) -> tuple[dict, dict]:
    tal = assigner()
    scores = case["cls_logits"].float().sigmoid()
    gt_labels = case["gt_labels"][..., None].float()           # the loss's labels are float, (B, M, 1)
    mask_gt = case["gt_mask"][..., None].float()
    gt_boxes = case["gt_boxes"] * case["gt_mask"][..., None]   # padded rows zero, as v8OBBLoss.preprocess
    _, _, target_scores, fg, gt_idx = tal(scores, case["pred_boxes"], case["points"], gt_labels, gt_boxes, mask_gt)
    fg = fg.bool()
    assert not target_scores[~fg].any(), "target scores off the foreground"
    expected = {"fg_mask": fg, "gt_index": torch.where(fg, gt_idx, torch.full_like(gt_idx, -1)),
                "target_scores_fg": target_scores[fg].float().contiguous()}

    # diagnostics, from the reference's own intermediate steps
    tal.bs, tal.n_max_boxes = gt_boxes.shape[:2]
    in_box = tal.select_candidates_in_gts(case["points"], gt_boxes, mask_gt) & case["gt_mask"][..., None]
    mask_pos, metric, overlaps = tal.get_pos_mask(scores, case["pred_boxes"], gt_labels, gt_boxes, case["points"],
                                                  mask_gt)
    short = ((metric > 0).sum(-1) < tal.topk) & case["gt_mask"]                     # (B, M)
    zero_cands = int(((metric == 0) & in_box & short[..., None]).sum())
    multi = mask_pos.sum(-2) > 1                                                      # (B, A)
    sel = mask_pos.gather(1, gt_idx[:, None]).squeeze(1).bool()                       # chosen GT selected it?
    top2 = overlaps.topk(2, dim=1).values                                             # (B, 2, A)
    edge = {"theta_0": 0, "theta_0_in_box": 0, "other": 0, "other_in_box": 0}
    edge_points = torch.zeros_like(fg)
    for b in range(gt_boxes.shape[0]):
        m = int(case["gt_mask"][b].sum())
        near = local(case["points"], gt_boxes[b, :m], float(tal.stride_val)).abs() < 1e-4      # (m, A)
        exact0 = gt_boxes[b, :m, 4] == 0
        edge["theta_0"] += int(near[exact0].sum())
        edge["theta_0_in_box"] += int((near & in_box[b, :m])[exact0].sum())
        edge["other"] += int(near[~exact0].sum())
        edge["other_in_box"] += int((near & in_box[b, :m])[~exact0].sum())
        edge_points[b] = near[~exact0].any(0)             # θ ≠ 0: the reference's verdict rests on float rounding
    expected["tie_points"] = ((metric == 0) & in_box & short[..., None]).any(1)
    expected["edge_points"] = edge_points
    diag = {"candidate_pairs": int(in_box.sum()),
            "gts_with_fewer_than_topk_positive_metric": int(short.sum()),
            "zero_metric_candidates_of_those": zero_cands,          # picked or not by topk's tie order
            "points_selected_by_several_gts": int(multi.sum()),
            "of_those_given_to_a_gt_that_did_not_select_them": int((multi & ~sel).sum()),
            "of_those_with_tied_max_overlap": int((multi & (top2[:, 0] == top2[:, 1])).sum()),
            "edge_pairs": edge}                                     # in-box test on the widened box's edge
    # the same scene with every GT written the other way round: (h, w, θ + π/2), the same rectangles
    _, _, ts2, fg2, gt2 = assigner()(scores, case["pred_boxes"], case["points"], gt_labels, swap(gt_boxes) * mask_gt,
                                     mask_gt)
    both = fg & fg2.bool()
    diag["gts_swapped"] = {"fg_mismatches": int((fg2.bool() != fg).sum()),
                           "gt_index_mismatches": int((gt2[both] != gt_idx[both]).sum()),
                           "target_scores_max_abs_diff": float((ts2[both] - target_scores[both]).abs().max())}
    return expected, diag


def swap(x: torch.Tensor) -> torch.Tensor:
    """(w, h, θ) -> (h, w, θ + π/2): the same rectangle."""
    return torch.cat((x[..., :2], x[..., 2:4].flip(-1), x[..., 4:] + math.pi / 2), -1)


def swap_invariance(seed: int = 7, n: int = 2000) -> dict:
    """probiou and the in-box test on (w, h, θ) against (h, w, θ + π/2): the same rectangle."""
    from ultralytics.utils.metrics import probiou

    g = torch.Generator().manual_seed(seed)
    a = make_gts(g, n, 640)
    b = a.clone()
    b[:, :2] += torch.randn(n, 2, generator=g) * 10
    b[:, 2:4] *= torch.exp(torch.randn(n, 2, generator=g) * 0.3)
    b[:, 4] += torch.randn(n, generator=g) * 0.3
    sw = swap
    p = probiou(a, b).squeeze(-1)
    d_pb = float((probiou(sw(a), b).squeeze(-1) - p).abs().max())
    d_pab = float((probiou(sw(a), sw(b)).squeeze(-1) - p).abs().max())
    d_rel = float(((probiou(sw(a), b).squeeze(-1) - p).abs() / p.clamp(min=1e-6)).max())
    tal = assigner()
    pts, _ = grid(640)
    ones = torch.ones(1, n, 1)
    m1 = tal.select_candidates_in_gts(pts, a[None], ones)
    m2 = tal.select_candidates_in_gts(pts, sw(a)[None], ones)
    near = (local(pts, a, float(tal.stride_val)).abs() < 1e-4)[None]
    return {"boxes": n, "probiou_max_abs_diff_swap_gt": d_pb, "probiou_max_abs_diff_swap_both": d_pab,
            "probiou_max_rel_diff_swap_gt": d_rel, "in_box_pairs": int(m1.sum()),
            "in_box_mismatches": int((m1 != m2).sum()), "in_box_mismatches_off_edge": int(((m1 != m2) & ~near).sum()),
            "on_edge_pairs": int(near.sum())}


def generate() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from reference_fixtures import torchvision_standin

        torchvision_standin(Path(tmp))
        import ultralytics

        inv = swap_invariance()
        print(f"swap invariance (w,h,θ) vs (h,w,θ+π/2): {inv}")
        OUT.mkdir(parents=True, exist_ok=True)
        for name, (size, images, num_gt, seed) in CASES.items():
            case = make_case(size, images, num_gt, seed)
            expected, diag = run_ultralytics(case)
            tal = assigner()
            meta = {"ultralytics": str(ultralytics.__version__), "torch": str(torch.__version__),
                    "reference": "ultralytics.utils.tal.RotatedTaskAlignedAssigner (v8OBBLoss arguments)",
                    "size": size, "seed": seed,
                    "args": {**ARGS, "stride_val": float(tal.stride_val), "eps": float(tal.eps),
                             "topk2_effective": int(tal.topk2), "probiou_eps": 1e-7},
                    "target_scores": "target_scores_fg = dense (B, A, C)[fg_mask]; dense is zero elsewhere",
                    "diagnostics": diag,
                    "swap_invariance": inv}
            torch.save({"inputs": case, "expected": {"tal_obb": expected}, "meta": meta}, OUT / f"{name}.pt")
            print(f"{name}: GTs {case['gt_mask'].sum(1).tolist()}, positives {int(expected['fg_mask'].sum())} "
                  f"(per image {expected['fg_mask'].sum(1).tolist()}), diagnostics {meta['diagnostics']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setup", action="store_true", help="make (or reuse) the side venv runs/refenv and run there")
    p.add_argument("--env", default=str(ROOT / "runs/refenv"))
    args = p.parse_args()
    if args.setup:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from reference_fixtures import setup

        py = setup(Path(args.env))
        sys.exit(subprocess.run([str(py), __file__]).returncode)
    generate()


if __name__ == "__main__":
    main()

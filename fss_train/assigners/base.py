"""The assignment interface shared by every assigner.

B images, A points over all levels, M padded ground truths, C classes, D box numbers: 4 for horizontal boxes
(xyxy input pixels), 5 for rotated ones (cx cy w h θ, ``fss_core.rbox``); predictions and ground truths share D.
Everything runs in float32 under ``torch.no_grad()``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass
class AssignResult:
    """What an assigner decides for every point of every image.

    fg_mask        (B, A) bool   point is a positive
    gt_index       (B, A) long   matched ground truth (index into the padded M axis), -1 = background
    target_labels  (B, A) long   class of the matched ground truth, -1 = background
    target_boxes   (B, A, D)     matched ground-truth box, 0 for background
    target_scores  (B, A, C)     soft class target (e.g. one-hot × IoU), 0 for background
    weights        (B, A)        per-point loss weight of positives (1 for baselines), 0 for background
    ignore_mask    (B, A) bool   points excluded from the negative (objectness) loss (Max-IoU's grey zone)
    num_fg         int           number of positives in the batch
    """

    fg_mask: torch.Tensor
    gt_index: torch.Tensor
    target_labels: torch.Tensor
    target_boxes: torch.Tensor
    target_scores: torch.Tensor
    weights: torch.Tensor
    ignore_mask: torch.Tensor
    num_fg: int

    def image(self, b: int) -> AssignResult:
        """The result of image ``b`` alone, with a batch axis of 1."""
        return AssignResult(*(getattr(self, f)[b:b + 1] for f in
                              ("fg_mask", "gt_index", "target_labels", "target_boxes", "target_scores",
                               "weights", "ignore_mask")), num_fg=int(self.fg_mask[b].sum()))


@dataclass(frozen=True)
class Inputs:
    """Validated assigner inputs (float32, on one device)."""

    pred_scores: torch.Tensor        # (B, A, C) class probabilities
    pred_obj: torch.Tensor           # (B, A) objectness probability (ones for heads without it)
    pred_boxes: torch.Tensor         # (B, A, D)
    points: torch.Tensor             # (A, 2)
    strides: torch.Tensor            # (A,)
    gt_labels: torch.Tensor          # (B, M) long
    gt_boxes: torch.Tensor           # (B, M, D)
    gt_mask: torch.Tensor            # (B, M) bool

    @property
    def shape(self) -> tuple[int, int, int, int]:
        b, a, c = self.pred_scores.shape
        return b, a, self.gt_boxes.shape[1], c


def prepare_inputs(pred_scores, pred_obj, pred_boxes, points, strides, gt_labels, gt_boxes, gt_mask) -> Inputs:
    """Check shapes, detach and cast to float32. Raises ValueError naming the offending argument."""
    if pred_scores.dim() != 3:
        raise ValueError(f"pred_scores must be (B, A, C), got {tuple(pred_scores.shape)}")
    b, a, _ = pred_scores.shape
    m = gt_boxes.shape[1] if gt_boxes.dim() == 3 else -1
    d = pred_boxes.shape[-1]
    if d not in (4, 5):
        raise ValueError(f"pred_boxes must be (B, A, 4) xyxy or (B, A, 5) cx cy w h θ, got {tuple(pred_boxes.shape)}")
    expected = {"pred_boxes": (pred_boxes, (b, a, d)), "points": (points, (a, 2)), "strides": (strides, (a,)),
                "gt_labels": (gt_labels, (b, m)), "gt_boxes": (gt_boxes, (b, m, d)), "gt_mask": (gt_mask, (b, m))}
    if pred_obj is not None:
        expected["pred_obj"] = (pred_obj, (b, a))
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
    f32 = torch.float32
    obj = pred_obj.detach().to(f32) if pred_obj is not None else torch.ones(b, a, device=pred_scores.device)
    return Inputs(pred_scores.detach().to(f32), obj, pred_boxes.detach().to(f32), points.to(f32), strides.to(f32),
                  gt_labels.long(), gt_boxes.detach().to(f32), gt_mask.bool())


class Assigner:
    """Base of every assigner (subclasses are frozen dataclasses whose fields are the parameters).

    ``assigner(pred_scores (B,A,C), pred_obj (B,A) | None, pred_boxes (B,A,D), points (A,2),
    strides (A,), gt_labels (B,M), gt_boxes (B,M,D), gt_mask (B,M)) -> AssignResult``
    """

    name = "?"
    # how losses.criterion weighs what this assigner selects: "yolox" (per-positive weights over the positive
    # count: FSS, SimOTA, ATSS, Max-IoU) or "tal" (normalised targets over their sum: TOOD / Ultralytics)
    loss_recipe = "yolox"

    def params(self) -> dict:
        return dataclasses.asdict(self)

    @torch.no_grad()
    def __call__(self, pred_scores, pred_obj, pred_boxes, points, strides, gt_labels, gt_boxes, gt_mask
                 ) -> AssignResult:
        return self.assign(prepare_inputs(pred_scores, pred_obj, pred_boxes, points, strides, gt_labels, gt_boxes,
                                          gt_mask))

    def assign(self, inp: Inputs) -> AssignResult:
        raise NotImplementedError


def empty_result(b: int, a: int, c: int, device, box_dim: int = 4) -> AssignResult:
    return AssignResult(
        fg_mask=torch.zeros(b, a, dtype=torch.bool, device=device),
        gt_index=torch.full((b, a), -1, dtype=torch.long, device=device),
        target_labels=torch.full((b, a), -1, dtype=torch.long, device=device),
        target_boxes=torch.zeros(b, a, box_dim, device=device),
        target_scores=torch.zeros(b, a, c, device=device),
        weights=torch.zeros(b, a, device=device),
        ignore_mask=torch.zeros(b, a, dtype=torch.bool, device=device),
        num_fg=0)

"""criterion(outputs, assign_result) -> dict of named losses.

B images, A points, C classes. ``pred_boxes`` (B, A, 4) decoded xyxy px with gradients (or (B, A, 5) rotated boxes,
with a rotated box loss: ``iou_loss``);
``cls_logits`` (B, A, C) and ``obj_logits`` (B, A) raw. Two recipes:

* ``yolox`` (FSS-SPEC step 8; SimOTA, ATSS, Max-IoU with unit weights):
  L = 1/N · [Σ_pos w · (Σ_c BCE(cls, one-hot·IoU) + λ_box · L_IoU) + Σ_all BCE(obj, 1[pos])]
* ``tal`` (TOOD / Ultralytics): class BCE over all points against the normalised targets,
  divided by the target sum; box loss weighted by each positive's target score, divided by
  the target sum; objectness as in ``yolox`` (our head keeps its objectness branch).

N (positives, or the target sum) is summed over DDP ranks and the loss multiplied by the
world size, so the averaged DDP gradient equals one process on the combined batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from fss_core.boxes import box_iou_aligned
from fss_core.gaussian_box import kld, probiou
from fss_core.rbox_iou import rbox_iou_aligned
from fss_train.assigners.base import AssignResult

BOX_LOSSES = ("iou2", "giou")              # horizontal boxes (K, 4)
RBOX_LOSSES = ("probiou", "kld", "riou")   # rotated boxes (K, 5)


def iou_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "iou2") -> torch.Tensor:
    """(K, 4), (K, 4) -> (K,): 1 − IoU² (YOLOX) or 1 − GIoU. Rotated (K, 5), (K, 5): 1 − probiou (Ultralytics'
    OBB loss), 1 − 1 / (1 + ln(1 + KLD)) (Yang et al. 2021's normalised KLD loss) or 1 − the exact rotated IoU
    (``fss_core.rbox_iou``). All three are periodic in θ (a box turned by π is the same box)."""
    if pred.shape[-1] == 5:
        if kind == "probiou":
            return 1 - probiou(pred, target)
        if kind == "kld":
            return 1 - 1 / (1 + torch.log1p(kld(pred, target).clamp(min=0)))
        if kind == "riou":
            return 1 - rbox_iou_aligned(pred, target)
        raise ValueError(f"rbox_loss must be one of {RBOX_LOSSES}, got {kind!r}")
    if kind == "iou2":
        return 1 - box_iou_aligned(pred, target) ** 2
    if kind == "giou":
        return 1 - box_iou_aligned(pred, target, giou=True)
    raise ValueError(f"iou_loss must be one of {BOX_LOSSES}, got {kind!r}")


def global_sum(value: float, device) -> tuple[float, int]:
    """(sum over DDP ranks, world size); (value, 1) without DDP."""
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([float(value)], device=device)
        dist.all_reduce(t)
        return float(t.item()), dist.get_world_size()
    return float(value), 1


def criterion(pred_boxes: torch.Tensor, obj_logits: torch.Tensor, cls_logits: torch.Tensor, res: AssignResult,
              recipe: str = "yolox", box_weight: float = 5.0, cls_weight: float = 1.0, obj_weight: float = 1.0,
              iou_kind: str = "iou2") -> dict[str, torch.Tensor]:
    fg = res.fg_mask                                                           # (B, A)
    obj_target = fg.to(obj_logits.dtype)
    obj_bce = F.binary_cross_entropy_with_logits(obj_logits, obj_target, reduction="none")    # (B, A)
    obj_bce = obj_bce * (~res.ignore_mask).to(obj_bce.dtype)
    box_l = iou_loss(pred_boxes[fg], res.target_boxes[fg], iou_kind)          # (P,)
    n_pos, world = global_sum(res.num_fg, obj_logits.device)
    n_pos = max(n_pos, 1.0)
    if recipe == "yolox":
        w = res.weights[fg]                                                    # (P,) no gradient
        cls_bce = F.binary_cross_entropy_with_logits(cls_logits[fg], res.target_scores[fg],
                                                     reduction="none").sum(-1)   # (P,)
        loss_cls = (w * cls_bce).sum() * world / n_pos
        loss_box = (w * box_l).sum() * world / n_pos
    elif recipe == "tal":
        t_sum, _ = global_sum(float(res.target_scores.sum()), obj_logits.device)
        t_sum = max(t_sum, 1.0)
        cls_bce = F.binary_cross_entropy_with_logits(cls_logits, res.target_scores, reduction="none")
        cls_bce = (cls_bce * (~res.ignore_mask)[..., None].to(cls_bce.dtype)).sum()   # ignored points: no negatives
        loss_cls = cls_bce * world / t_sum
        loss_box = (box_l * res.target_scores[fg].sum(-1)).sum() * world / t_sum
    else:
        raise ValueError(f"unknown loss recipe {recipe!r}")
    loss_obj = obj_bce.sum() * world / n_pos
    total = cls_weight * loss_cls + box_weight * loss_box + obj_weight * loss_obj
    return {"loss": total, "cls": loss_cls.detach(), "box": loss_box.detach(), "obj": loss_obj.detach()}


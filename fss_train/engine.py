"""The training loop: one epoch of assignment + loss + step, with the diagnostics it records.

Evaluation lives in evaluation.py, the schedule / EMA / parameter groups in optim.py."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from fss_core.nn import decode, split_logits
from fss_train.alignment import spearman
from fss_train.assigners.base import AssignResult
from fss_train.assigners.geometry import aligned_iou, box_frame, centres, sides
from fss_train.data.loader import IGNORE_LABEL
from fss_train.evaluation import model_points
from fss_train.losses import criterion


class NonFiniteLoss(RuntimeError):
    pass


@dataclass
class StepStats:
    loss: float = 0.0
    cls: float = 0.0
    box: float = 0.0
    obj: float = 0.0
    images: int = 0
    steps: int = 0
    num_gt: int = 0
    num_fg: int = 0
    spearman_sum: float = 0.0
    spearman_n: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        s = max(self.steps, 1)
        return {"loss": self.loss / s, "cls": self.cls / s, "box": self.box / s, "obj": self.obj / s,
                "pos_per_gt": self.num_fg / max(self.num_gt, 1),
                "rank_consistency": self.spearman_sum / max(self.spearman_n, 1) if self.spearman_n else float("nan"),
                "images_per_s": self.images / max(self.seconds, 1e-9), "seconds": self.seconds}


def rank_consistency(scores: torch.Tensor, ious: torch.Tensor, seg: torch.Tensor) -> tuple[float, int]:
    """Sum and count of per-GT Spearman correlations between classification score and IoU
    over each GT's positives (GTs with ≥ 3 positives). The paper's thesis, measured."""
    total, count = 0.0, 0
    for s in seg.unique():
        sel = seg == s
        if int(sel.sum()) < 3:
            continue
        rho = spearman(scores[sel], ious[sel])
        if rho is not None:
            total += rho
            count += 1
    return total, count


def diagnostics(res: AssignResult, pred_boxes, cls_prob, obj_prob, gt_mask, stats: StepStats) -> None:
    fg = res.fg_mask
    stats.num_gt += int(gt_mask.sum())
    stats.num_fg += int(fg.sum())
    if fg.any():
        b, a = torch.nonzero(fg, as_tuple=True)
        score = cls_prob[b, a, res.target_labels[b, a]] * obj_prob[b, a]
        iou = aligned_iou(pred_boxes[b, a], res.target_boxes[b, a])
        seg = b * (res.gt_index.max() + 1) + res.gt_index[b, a]
        t, n = rank_consistency(score, iou, seg)
        stats.spearman_sum += t
        stats.spearman_n += n


def ignore_regions(gt_boxes: torch.Tensor, gt_labels: torch.Tensor, points: torch.Tensor) -> torch.Tensor | None:
    """(B, A) bool: points whose centre lies inside an ignore region (label ``IGNORE_LABEL``: a tiling sliver, a
    difficult object, as ``ignore_from`` says) of their image, along the region's own axes; None without any.
    gt_boxes (B, M, 4|5), gt_labels (B, M), points (A, 2)."""
    b, m = torch.nonzero(gt_labels == IGNORE_LABEL, as_tuple=True)
    if b.numel() == 0:
        return None
    boxes = gt_boxes[b, m]                                                           # (R, 4|5)
    local = box_frame(points[None] - centres(boxes)[:, None], boxes[:, None]).abs()  # (R, A, 2)
    inside = (local < sides(boxes)[:, None] * 0.5).all(-1)                           # (R, A)
    counts = torch.zeros(gt_labels.shape[0], points.shape[0], dtype=torch.int32, device=points.device)
    return counts.index_add_(0, b, inside.to(torch.int32)) > 0                       # (B, A) any region of image


def frozen_parts(net: torch.nn.Module, freeze: str) -> list[torch.nn.Module]:
    """The parts ``freeze`` names ("backbone" or "backbone+neck"; "" none): not trained (the run) and their BatchNorms
    kept in eval mode (every epoch)."""
    return [getattr(net, p) for p in freeze.split("+")] if freeze else []


def _keep_frozen_bn(model, cfg) -> None:
    """Frozen parts (or the whole net with ``freeze_bn``) keep their BatchNorm statistics: eval mode in training."""
    net = model.module if hasattr(model, "module") else model
    for part in [net] if cfg.freeze_bn else frozen_parts(net, cfg.freeze):
        for m in part.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def _set_rates(optimizer, lr_at, step: int) -> None:
    """The learning rates of this global step, and the warm-up momentum while it lasts."""
    for group, lr in zip(optimizer.param_groups, lr_at(step)):
        group["lr"] = lr
        if "momentum" in group and step < lr_at.warmup_steps:
            group["momentum"] = lr_at.momentum_at(step)


def _optimiser_step(model, optimizer, loss, scaler, grad_clip: float) -> None:
    """Backward (scaled under AMP), optional gradient clipping, and the step."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def train_one_epoch(model, loader, assigner, optimizer, lr_at, ema, epoch: int, cfg, device, recipe: str,
                    scaler=None, on_step=None, start_step: int = 0) -> dict:
    """One pass over ``loader``. ``lr_at(step)`` gives the learning rates of the global step."""
    model.train()
    _keep_frozen_bn(model, cfg)
    task = (model.module if hasattr(model, "module") else model).card.task
    stats = StepStats()
    points = strides = None
    t0 = time.perf_counter()
    for i, (images, gt_boxes, gt_labels, gt_mask, _) in enumerate(loader):
        step = start_step + i
        _set_rates(optimizer, lr_at, step)
        images, gt_boxes, gt_labels, gt_mask = (x.to(device, non_blocking=True) for x in
                                                (images, gt_boxes, gt_labels, gt_mask))
        images = images.contiguous(memory_format=torch.channels_last)      # the model's layout (Run)
        if points is None or points.shape[0] == 0:
            points, strides = model_points(model, images.shape[-2], images.shape[-1], device)
        with torch.autocast(device_type=device.type, enabled=scaler is not None):
            raw = model(images)                                                   # (B, A, K + 1 + C)
        raw = raw.float()
        pred_boxes, obj_prob, cls_prob = decode(raw, points, strides, task)
        obj_logits, cls_logits = split_logits(raw, task)
        res = assigner(cls_prob.detach(), obj_prob.detach(), pred_boxes.detach(), points, strides,
                       gt_labels.clamp(min=0), gt_boxes, gt_mask)
        inside = ignore_regions(gt_boxes, gt_labels, points)
        if inside is not None:                      # neither positive nor negative: out of every background loss
            res.ignore_mask = res.ignore_mask | (inside & ~res.fg_mask)
        losses = criterion(pred_boxes, obj_logits, cls_logits, res, recipe, cfg.box_weight,
                           iou_kind=cfg.rbox_loss if task == "obb" else cfg.iou_loss)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, step {i + 1}; "
                                "the last good checkpoint is kept")
        _optimiser_step(model, optimizer, loss, scaler, cfg.grad_clip)
        ema.update(model)
        stats.loss += float(loss.detach())
        stats.cls += float(losses["cls"])
        stats.box += float(losses["box"])
        stats.obj += float(losses["obj"])
        stats.images += images.shape[0]
        stats.steps += 1
        with torch.no_grad():
            diagnostics(res, pred_boxes.detach(), cls_prob.detach(), obj_prob.detach(), gt_mask, stats)
        stats.seconds = time.perf_counter() - t0
        if on_step:
            on_step(i, stats.as_dict())
    return stats.as_dict()


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

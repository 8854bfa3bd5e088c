"""train_one_epoch and evaluate, readable top to bottom."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from fss_train.alignment import spearman
from fss_train.assigners.base import AssignResult
from fss_train.boxes import detections_to_coco
from fss_train.data.records import Dataset
from fss_train.losses import criterion
from fss_train.metrics import coco_eval, coco_gt_from_dataset, dota_eval
from fss_train.nn import decode, decode_for_inference
from fss_train.nn.postprocess import postprocess


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
    from fss_train.boxes import box_iou_aligned

    fg = res.fg_mask
    stats.num_gt += int(gt_mask.sum())
    stats.num_fg += int(fg.sum())
    if fg.any():
        b, a = torch.nonzero(fg, as_tuple=True)
        score = cls_prob[b, a, res.target_labels[b, a]] * obj_prob[b, a]
        iou = box_iou_aligned(pred_boxes[b, a], res.target_boxes[b, a])
        seg = b * (res.gt_index.max() + 1) + res.gt_index[b, a]
        t, n = rank_consistency(score, iou, seg)
        stats.spearman_sum += t
        stats.spearman_n += n


def train_one_epoch(model, loader, assigner, optimizer, lr_at, ema, epoch: int, cfg, device, recipe: str,
                    scaler=None, on_step=None, start_step: int = 0) -> dict:
    """One pass over ``loader``. ``lr_at(step)`` gives the learning rates of the global step."""
    model.train()
    if cfg.freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    stats = StepStats()
    points = strides = None
    t0 = time.perf_counter()
    for i, (images, gt_boxes, gt_labels, gt_mask, _) in enumerate(loader):
        step = start_step + i
        for group, lr in zip(optimizer.param_groups, lr_at(step)):
            group["lr"] = lr
            if "momentum" in group and step < lr_at.warmup_steps:
                group["momentum"] = lr_at.momentum_at(step)
        images, gt_boxes, gt_labels, gt_mask = (x.to(device, non_blocking=True) for x in
                                                (images, gt_boxes, gt_labels, gt_mask))
        if points is None or points.shape[0] == 0:
            points, strides = model_points(model, images.shape[-2], images.shape[-1], device)
        with torch.autocast(device_type=device.type, enabled=scaler is not None):
            raw = model(images)                                                   # (B, A, 5 + C)
        raw = raw.float()
        pred_boxes, obj_prob, cls_prob = decode(raw, points, strides)
        res = assigner(cls_prob.detach(), obj_prob.detach(), pred_boxes.detach(), points, strides,
                       gt_labels.clamp(min=0), gt_boxes, gt_mask)
        losses = criterion(pred_boxes, raw[..., 4], raw[..., 5:], res, recipe, cfg.box_weight,
                           iou_kind=cfg.iou_loss)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, step {i + 1}; "
                                "the last good checkpoint is kept")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
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


def model_points(model, height: int, width: int, device):
    net = model.module if hasattr(model, "module") else model
    return tuple(t.to(device) for t in net.points(height, width))


@torch.no_grad()
def predict(model, loader, device, conf: float, iou: float, max_det: int, on_batch=None) -> list[dict]:
    """COCO-format predictions in original image pixels, category ids 1..C."""
    model.eval()
    preds = []
    points = None
    for images, _, _, _, metas in loader:
        images = images.to(device)
        if points is None:
            points, strides = model_points(model, images.shape[-2], images.shape[-1], device)
        out = decode_for_inference(model(images).float(), points, strides)
        for det, meta in zip(postprocess(out, conf, iou, max_det), metas):
            det = det.cpu().numpy()
            h, w = meta["orig_size"]
            boxes = det[:, :4] / meta["scale"]
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
            preds += detections_to_coco(np.concatenate([boxes, det[:, 4:6]], axis=1), meta["image_id"])
        if on_batch:
            on_batch()
    return preds


@torch.no_grad()
def recalibrate_bn(model, loader, batches: int, device) -> None:
    """Precise BN: recompute BatchNorm running statistics as the plain average over ``batches``
    batches (train-mode forward, no gradient). With YOLOX's BN momentum (0.03) the running
    statistics lag the weights in short or high-lr runs; this removes the lag before evaluation."""
    if batches <= 0:
        return
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                       # cumulative average
    was_training = model.training
    model.train()
    for i, (images, *_rest) in enumerate(loader):
        if i >= batches:
            break
        model(images.to(device))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.train(was_training)


def evaluate(model, loader, ds: Dataset, device, cfg) -> dict:
    preds = predict(model, loader, device, cfg.eval_conf, cfg.eval_iou, cfg.max_det)
    metrics = coco_eval(coco_gt_from_dataset(ds), preds, max_dets=cfg.max_det)
    if cfg.metric == "dota":
        metrics["mAP50_dota"] = dota_eval(ds, preds)["mAP50"]
    metrics["fitness"] = metrics["mAP50_dota"] if cfg.metric == "dota" else metrics["AP"]
    return metrics


class ModelEMA:
    """Exponential moving average of weights; decay ramps up as d · (1 − exp(−updates / tau))."""

    def __init__(self, model, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        import copy

        net = model.module if hasattr(model, "module") else model
        self.ema = copy.deepcopy(net).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    @torch.no_grad()
    def update(self, model) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        net = model.module if hasattr(model, "module") else model
        msd = net.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])


class LRSchedule:
    """Linear warm-up (bias lr from warmup_bias_lr down, others from 0) then cosine decay, per step."""

    def __init__(self, base_lr: float, steps_per_epoch: int, epochs: int, cfg):
        self.base = base_lr
        self.total = max(1, steps_per_epoch * epochs)
        self.warmup_steps = int(max(cfg.warmup_epochs * steps_per_epoch, min(100, self.total // 10))) \
            if cfg.warmup_epochs > 0 else 0
        self.warmup_steps = min(self.warmup_steps, self.total // 2)
        self.min_ratio = cfg.min_lr_ratio
        self.warmup_bias_lr = cfg.warmup_bias_lr
        self.momentum = cfg.momentum

    def cosine(self, step: int) -> float:
        t = min(step, self.total) / self.total
        return self.base * (self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))

    def __call__(self, step: int) -> list[float]:
        """[weights with decay, norms (no decay), biases (no decay)]."""
        lr = self.cosine(step)
        if step < self.warmup_steps:
            f = step / self.warmup_steps
            return [lr * f, lr * f, self.warmup_bias_lr + (lr - self.warmup_bias_lr) * f]
        return [lr, lr, lr]

    def momentum_at(self, step: int) -> float:
        f = step / max(self.warmup_steps, 1)
        return 0.8 + (self.momentum - 0.8) * f


def param_groups(model, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only, not on norms and biases."""
    decay, norms, biases = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if name == "bias":
                biases.append(p)
            elif isinstance(module, (torch.nn.BatchNorm2d, torch.nn.GroupNorm, torch.nn.LayerNorm)):
                norms.append(p)
            else:
                decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": norms, "weight_decay": 0.0},
            {"params": biases, "weight_decay": 0.0}]


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

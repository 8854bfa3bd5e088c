"""Optimisation pieces of the training loop: parameter groups, the learning-rate / momentum schedule, the
EMA of the weights."""

from __future__ import annotations

import math

import torch


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

"""Training configuration: one frozen dataclass, from CLI options + ``--set key=value`` overrides.

Unknown keys are errors that list the known ones; values are parsed as YAML scalars.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import yaml

from fss_core.nn.card import TASKS
from fss_train.losses import BOX_LOSSES, RBOX_LOSSES


@dataclass(frozen=True)
class TrainConfig:
    data: str = ""                       # COCO json, YOLO data.yaml or DOTA folder (training split)
    val: str = ""                        # validation dataset (default: the data.yaml 'val' split, else `data`)
    model: str = "fss-n"                 # card name or YAML path
    task: str = "detect"                 # detect (horizontal boxes) | obb (oriented boxes: the card gains the angle)
    weights: str = ""                    # fss checkpoint (or YOLOX / torchvision ResNet file) to start from
    weights_parts: str = "all"           # what --weights copies: all | backbone | backbone+neck (a new head)
    freeze: str = ""                     # "backbone" or "backbone+neck": not trained (BN statistics frozen too)
    assigner: str = "fss"
    assigner_params: dict = field(default_factory=dict)
    epochs: int = 100
    batch: int = 16                      # images per optimisation step, over all DDP ranks
    imgsz: int = 640
    device: str = "cpu"
    workers: int = 2
    cache: str = ""                      # "ram": decode every image once before the loaders start (cache=ram)
    seed: int = 0
    # optimisation (the paper's recipe: SGD, lr 0.01 per 64 images, momentum 0.937, wd 5e-4)
    lr_per_64: float = 0.01
    momentum: float = 0.937
    weight_decay: float = 5e-4
    warmup_epochs: float = 3.0
    warmup_bias_lr: float = 0.1
    min_lr_ratio: float = 0.05           # cosine decays to lr · min_lr_ratio
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0              # EMA warm-up in optimiser steps
    no_mosaic_epochs: int = 15           # mosaic off for the last N epochs (capped at a quarter of the run)
    amp: bool = True                     # CUDA only
    grad_clip: float = 0.0               # max gradient norm, 0 = off
    freeze_bn: bool = False              # BN uses and keeps its running statistics (MMDetection's norm_eval)
    sync_bn: bool = True                 # SyncBatchNorm under multi-GPU DDP (CUDA only; gloo/CPU keeps per-rank BN)
    # loss
    box_weight: float = 5.0
    iou_loss: str = "iou2"               # iou2 (1 − IoU²) | giou
    rbox_loss: str = "probiou"           # obb: probiou (1 − probiou, Ultralytics) | kld | riou (exact rotated IoU)
    # augmentation
    mosaic: float = 1.0
    scale: float = 0.5
    translate: float = 0.1
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    fliplr: float = 0.5
    flipud: float = 0.5
    degrees: float = 0.0                 # random rotation in ±degrees (obb: any angle; horizontal boxes grow)
    ignore_from: int = 0                 # objects with a difficult flag ≥ this are ignore regions (2: the splitter's
                                         # slivers; 1: DOTA's difficult ones too; 0: every object trains)
    rot90: float = 0.0                   # probability of a random quarter turn
    # evaluation
    eval_interval: int = 1
    precise_bn: int = 10                 # batches used to recompute the EMA model's BN statistics before eval
    eval_conf: float = 0.001
    eval_iou: float = 0.65
    max_det: int = 300
    metric: str = "coco"                 # coco | dota (best.pt is chosen by COCO AP or DOTA mAP50)
    patience: int = 0                    # stop when the fitness has not improved for this many epochs (0: never;
                                         # Ultralytics' patience); the cosine schedule is not shortened

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def lr(self) -> float:
        return self.lr_per_64 * self.batch / 64


def parse_overrides(pairs: list[str]) -> dict:
    """["lr_per_64=0.02", "assigner_params.gamma=0"] -> nested dict."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        parsed = yaml.safe_load(value) if value else ""
        if "." in key:
            head, sub = key.split(".", 1)
            out.setdefault(head, {})[sub] = parsed
        else:
            out[key] = parsed
    return out


# the values each number may take (inclusive; None: unbounded); anything else is refused by name (--set mosaic=-5
# trained a whole run with a probability of −5). lr_per_64 must also be above 0.
# (epochs, batch and imgsz: checked by fss.api.train, which names the option)
RANGES = {"workers": (0, 256), "seed": (0, None),
          "lr_per_64": (0, None), "momentum": (0, 1), "weight_decay": (0, None), "warmup_epochs": (0, None),
          "warmup_bias_lr": (0, None), "min_lr_ratio": (0, 1), "ema_decay": (0, 1), "ema_tau": (0, None),
          "no_mosaic_epochs": (0, None), "grad_clip": (0, None), "box_weight": (0, None), "mosaic": (0, 1),
          "scale": (0, 0.99), "translate": (0, 0.5), "hsv_h": (0, 1), "hsv_s": (0, 1), "hsv_v": (0, 1),
          "fliplr": (0, 1), "flipud": (0, 1), "degrees": (0, 180), "rot90": (0, 1), "ignore_from": (0, 2),
          "eval_interval": (1, None), "precise_bn": (0, None), "eval_conf": (0, 1), "eval_iou": (0, 1),
          "max_det": (1, None), "patience": (0, None)}


def _check_range(key: str, value) -> None:
    lo, hi = RANGES.get(key, (None, None))
    if isinstance(value, float) and not math.isfinite(value) or (lo is not None and value < lo) \
            or (hi is not None and value > hi) or (key == "lr_per_64" and value <= 0):
        span = f"{lo}…{hi}" if hi is not None else f"{'above' if key == 'lr_per_64' else 'at least'} {lo}"
        raise ValueError(f"config {key} must be {span}, got {value!r}")


def make_config(base: dict | None = None, overrides: dict | None = None) -> TrainConfig:
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    values = dict(base or {})
    for key, value in (overrides or {}).items():
        if key not in known:
            raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(sorted(known))}")
        if isinstance(value, dict) and key == "assigner_params":
            values[key] = {**values.get(key, {}), **value}
        else:
            values[key] = value
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; known keys: {', '.join(sorted(known))}")
    if values.get("cache") is True or values.get("cache") is False:     # cache=true / false, Ultralytics' habit
        values["cache"] = "ram" if values["cache"] else ""
    if values.get("weights_parts", "all") not in ("all", "backbone", "backbone+neck"):
        raise ValueError("config weights_parts must be all, backbone or backbone+neck, got "
                         f"{values['weights_parts']!r}")
    if values.get("freeze", "") not in ("", "backbone", "backbone+neck"):
        raise ValueError(f"config freeze must be 'backbone', 'backbone+neck' or empty, got {values['freeze']!r}")
    for key, allowed in (("task", TASKS), ("iou_loss", BOX_LOSSES), ("rbox_loss", RBOX_LOSSES)):
        if key in values and values[key] not in allowed:
            raise ValueError(f"config {key} must be one of {', '.join(allowed)}, got {values[key]!r}")
    if values.get("cache", "") not in ("", "ram"):
        raise ValueError(f"config cache must be 'ram' or empty (off), got {values['cache']!r}")
    for key, value in values.items():
        default = known[key].default
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"config {key} must be true/false, got {value!r}")
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
        elif isinstance(default, (int, float, str)) and not isinstance(default, bool) and \
                not isinstance(values[key], type(default)):
            raise ValueError(f"config {key} must be {type(default).__name__}, got {value!r}")
        if isinstance(values[key], (int, float)) and not isinstance(values[key], bool):
            _check_range(key, values[key])
    return TrainConfig(**values)

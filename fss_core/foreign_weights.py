"""The weights people already have, as fss checkpoints: YOLOX checkpoints and torchvision-layout ResNets.

    fss convert yolox_s.pth --model fss-s --out yolox_s-fss.pt          # the CLI; fss.convert(...) from Python
    fss convert resnet50.pth --model fss-r50 --out r50-imagenet.pt
    fss train --data DATA --model fss-s --weights yolox_s.pth          # converted on the fly

**YOLOX** (Megvii's ``yolox_nano.pth`` … ``yolox_x.pth``, ``{"model": state_dict, …}`` or a bare state dict): the
CSPDarkNet cards are YOLOX's networks parameter for parameter, so every tensor maps by renaming its prefix
(``backbone.backbone.`` -> ``backbone.``, ``backbone.`` -> ``neck.``, ``head.`` -> ``head.``). Two conventions are
folded in exactly: YOLOX 0.3.0 takes BGR 0–255 where fss takes RGB 0–1 — the stem's (Focus) convolution gets its
input channels reversed within each of its four pixel groups and is multiplied by 255 (zero padding stays zero);
YOLOX decodes a centre from the cell's corner (``(grid + t) · stride``), fss from its centre (``(grid + 0.5 + t) ·
stride``) — the x/y regression biases are lowered by 0.5. The card is found from the tensor shapes (width from the
stem, depth from the first CSP layer, depthwise from its convolutions) and must be the one asked for.

**ResNet-50/101** in torchvision's layout (``conv1``, ``bn1``, ``layer1.0.conv1`` …, ``fc``): the backbone of
``fss-r50`` / ``fss-r101``; the FPN and head stay freshly initialised (recorded as such) and ``fc`` is dropped.
ImageNet's input normalisation becomes part of the card and so of the graph (``input_mean``/``input_std``, exact,
no folding error at the borders), as does torchvision's batch-norm epsilon (1e-5).

Loading never executes code: ``torch.load(weights_only=True)``, with an allow-list of the harmless numpy scalar
types released checkpoints carry; anything else is refused with the name of what was found.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import torch

from fss_core.nn.card import ModelCard, available_cards, load_card
from fss_core.nn.detector import build_model
from fss_core.torch_file import read_torch_file

# the 80 COCO category names, in YOLOX's class order (the COCO ids 1…90 without the gaps)
COCO_CLASSES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)        # torchvision's ImageNet normalisation, RGB on the 0–1 scale
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_BN_EPS = 1e-5
YOLOX_PREFIXES = (("backbone.backbone.", "backbone."), ("backbone.", "neck."), ("head.", "head."))
STEM = "backbone.stem.conv.conv.weight"


class WeightsError(ValueError):
    """A weights file that cannot become an fss checkpoint; the message names the file and why."""


def safe_globals() -> list:
    """The non-tensor objects released checkpoints pickle that are harmless to rebuild: numpy scalars and dtypes
    (YOLOX's trainer stores e.g. ``best_ap`` as a numpy float)."""
    core = getattr(np, "_core", None) or np.core
    # numpy 1 pickled the scalar under numpy.core, numpy 2 under numpy._core: both names, one function
    allowed = [core.multiarray.scalar, (core.multiarray.scalar, "numpy.core.multiarray.scalar"), np.dtype]
    allowed += [getattr(np.dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType", "Int32DType",
                                                "BoolDType") if hasattr(np, "dtypes") and hasattr(np.dtypes, n)]
    return allowed


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors of a weights file (a bare state dict, or one under ``model``/``state_dict``/``ema``) and the
    file's other top-level entries (for the record). Raises WeightsError naming the file."""
    data = read_torch_file(path, WeightsError, "weights", safe_globals())
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: holds a {type(data).__name__}, not a state dict")
    state = next((data[k] for k in ("model", "state_dict", "ema") if isinstance(data.get(k), dict)), data)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{path}: no tensors found (expected a state dict, or one under 'model')")
    return tensors, {str(k): v.item() if isinstance(v, np.generic) else v for k, v in data.items()
                     if k not in ("model", "state_dict", "ema", "optimizer") and isinstance(v, (int, float, str))}


def weights_kind(state: dict[str, torch.Tensor]) -> str:
    """'yolox' | 'torchvision-resnet' | 'unknown', from the names of the tensors."""
    if any(k.startswith("backbone.backbone.stem.") for k in state):
        return "yolox"
    if "conv1.weight" in state and any(k.startswith("layer1.0.") for k in state):
        return "torchvision-resnet"
    return "unknown"


def _renamed_yolox(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for old, new in YOLOX_PREFIXES:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
    return out


def _matching_cards(state: dict[str, torch.Tensor], backbone: str, wanted: str) -> list[ModelCard]:
    """The cards (with the state's number of classes) whose network has exactly these tensor names and shapes:
    ``wanted`` alone when it fits (the common case), else every card of the backbone that does (for the error).
    Networks are built on the meta device: shapes without memory (fss-x is 99 M parameters)."""
    classes = state["head.cls_preds.0.weight"].shape[0] if "head.cls_preds.0.weight" in state else 80
    shapes = {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}

    def fits(card: ModelCard) -> bool:
        with torch.device("meta"):
            own = {k: tuple(v.shape) for k, v in build_model(card).state_dict().items()
                   if not k.endswith("num_batches_tracked")}
        if backbone == "resnet":
            own = {k: s for k, s in own.items() if k.startswith("backbone.")}
        return own == shapes

    first = load_card(wanted).with_classes(classes)
    if first.backbone == backbone and fits(first):
        return [first]
    cards = [load_card(name).with_classes(classes) for name in available_cards() if name != wanted]
    return [c for c in cards if c.backbone == backbone and fits(c)]


def _fold_yolox_conventions(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BGR 0–255 -> RGB 0–1 in the stem; cell-corner -> cell-centre decode in the x/y regression biases."""
    state = dict(state)
    w = state[STEM]                                                      # (C, 12, k, k): 4 pixel groups × BGR
    order = [3 * g + c for g in range(4) for c in (2, 1, 0)]
    state[STEM] = w[:, order] * 255.0
    for key in [k for k in state if re.fullmatch(r"head\.reg_preds\.\d+\.bias", k)]:
        bias = state[key].clone()
        bias[:2] -= 0.5
        state[key] = bias
    return state


def yolox_weights(state: dict[str, torch.Tensor], card_name: str, where: str) -> tuple[ModelCard, dict]:
    """A YOLOX state dict -> (the card, with YOLOX's number of classes) and the fss state dict (module doc)."""
    renamed = _renamed_yolox(state)
    if STEM not in renamed or "head.cls_preds.0.weight" not in renamed:
        raise WeightsError(f"{where}: not a YOLOX detector (no {STEM.replace('backbone.', 'backbone.backbone.', 1)} "
                           "or head.cls_preds.0.weight)")
    cards = _matching_cards(renamed, "cspdarknet", card_name)
    wanted = load_card(card_name)
    if not any(c.name == wanted.name for c in cards):
        fits = ", ".join(c.name for c in cards) or "no CSPDarkNet card of fss"
        raise WeightsError(f"{where}: its tensors are those of {fits}, not of {wanted.name} (width "
                           f"{renamed[STEM].shape[0] / 64:g}); convert it with --model "
                           f"{cards[0].name if cards else '<a matching card>'}")
    card = next(c for c in cards if c.name == wanted.name)
    return card, _fold_yolox_conventions(renamed)


def resnet_weights(state: dict[str, torch.Tensor], card_name: str, where: str) -> tuple[ModelCard, dict]:
    """A torchvision-layout ResNet state dict -> (the card with ImageNet's input normalisation and batch-norm
    epsilon) and the backbone's fss state dict (``fc`` dropped)."""
    renamed = {}
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        new = re.sub(r"^conv1\.", "stem.0.conv.", key)
        new = re.sub(r"^bn1\.", "stem.0.bn.", new)
        new = re.sub(r"^(layer\d+\.\d+)\.conv(\d)\.", r"\1.conv\2.conv.", new)
        new = re.sub(r"^(layer\d+\.\d+)\.bn(\d)\.", r"\1.conv\2.bn.", new)
        new = re.sub(r"^(layer\d+\.\d+)\.downsample\.0\.", r"\1.downsample.conv.", new)
        new = re.sub(r"^(layer\d+\.\d+)\.downsample\.1\.", r"\1.downsample.bn.", new)
        renamed["backbone." + new] = value
    cards = _matching_cards(renamed, "resnet", card_name)
    wanted = load_card(card_name)
    if not any(c.name == wanted.name for c in cards):
        fits = ", ".join(c.name for c in cards) or "no ResNet card of fss"
        raise WeightsError(f"{where}: its tensors are those of {fits}, not of {wanted.name}")
    card = dataclasses.replace(wanted, input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD, bn_eps=TORCHVISION_BN_EPS)
    return card, renamed


def convert_weights(path: str | Path, card_name: str, class_names: list[str] | None = None) -> dict:
    """A YOLOX or torchvision-ResNet weights file -> an fss checkpoint dict (``fss_core.checkpoint``'s schema), its
    ``train_config["converted_from"]`` recording the file, its kind and what was left freshly initialised."""
    from fss_core.checkpoint import make_checkpoint, sha256_file

    state, extra = read_state_dict(path)
    kind = weights_kind(state)
    if kind == "yolox":
        card, weights = yolox_weights(state, card_name, str(path))
        names = class_names or (COCO_CLASSES if card.num_classes == 80 else None)
        fresh: list[str] = []
    elif kind == "torchvision-resnet":
        card, weights = resnet_weights(state, card_name, str(path))
        card = card.with_classes(len(class_names) if class_names else 80)
        names = class_names or COCO_CLASSES
        fresh = ["neck", "head"]
    else:
        raise WeightsError(f"{path}: neither a YOLOX checkpoint nor a torchvision-layout ResNet (first tensors: "
                           f"{', '.join(list(state)[:3])})")
    if names is None or len(names) != card.num_classes:
        raise WeightsError(f"{path}: its head has {card.num_classes} classes; name them with --classes FILE (one name "
                           "a line)" + (f", not {len(names)}" if names else ""))
    model = build_model(card)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or (kind == "yolox" and missing):
        raise WeightsError(f"{path}: {len(unexpected)} tensors without a place and {len(missing)} places without a "
                           f"tensor in {card.name} (e.g. {(unexpected or missing)[:2]})")
    record = {"file": str(Path(path).resolve()), "sha256": sha256_file(path), "kind": kind, "fresh": fresh,
              "tensors": len(weights), **{f"source_{k}": v for k, v in extra.items()}}
    return make_checkpoint(model, list(names), train_config={"converted_from": record})


def start_checkpoint(path: str | Path, card_name: str) -> dict:
    """The fss checkpoint a training starts from (``--weights``): an fss checkpoint as it is; a YOLOX or torchvision
    ResNet file converted on the fly for ``card_name``."""
    from fss_core.checkpoint import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(path)
    except CheckpointError as exc:
        try:
            state, _ = read_state_dict(path)
        except WeightsError:
            raise exc from None
        if weights_kind(state) == "unknown":
            raise exc from None
        return convert_weights(path, card_name)


def input_conventions(ckpt: dict) -> dict:
    """The card fields a network must share with the weights it starts from: its input normalisation and batch-norm
    epsilon (an ImageNet backbone on un-normalised input is a different function)."""
    card = ckpt["card"]
    return {k: card.get(k, default) for k, default in (("input_mean", None), ("input_std", None), ("bn_eps", 1e-3))}

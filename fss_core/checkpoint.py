"""The one owner of the checkpoint schema.

A checkpoint is a plain dict of tensors and primitive types, loadable with
``torch.load(weights_only=True)``: loading a file never executes code. Schema (version 1)::

    format_version  int            FORMAT_VERSION
    kind            str            "fss-checkpoint"
    card            dict           ModelCard.to_dict() (num_classes = len(class_names))
    class_names     list[str]
    input_size      [h, w]         training input size in pixels
    assigner        {"name": str, "params": dict}  or None
    train_config    dict           resolved training configuration, or {}
    weights_raw     state dict     the trained weights
    weights_ema     state dict     EMA weights, or None
    optimizer       state dict     or None (for resume)
    scheduler       dict           or None (plain numbers)
    epoch           int            last finished epoch (-1: none)
    metrics         dict           e.g. {"AP": 0.31}
    versions        dict           fss, torch, numpy, python
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import torch

from fss_core.fileio import atomic_write, default_file_mode, sha256_file  # noqa: F401 (re-exported)
from fss_core.nn.card import ModelCard
from fss_core.nn.detector import Detector
from fss_core.torch_file import read_torch_file

FORMAT_VERSION = 1
KIND = "fss-checkpoint"
REQUIRED_KEYS = ("format_version", "kind", "card", "class_names", "input_size", "weights_raw")


class CheckpointError(ValueError):
    """The file is not a usable fss checkpoint; the message says why and names the file."""


def library_versions() -> dict:
    from fss_core import __version__
    return {"fss": str(__version__), "torch": str(torch.__version__), "numpy": str(np.__version__),
            "python": platform.python_version()}


def make_checkpoint(model: Detector, class_names: list[str], *, ema_state: dict | None = None,
                    assigner: dict | None = None, train_config: dict | None = None,
                    optimizer: dict | None = None, scheduler: dict | None = None, epoch: int = -1,
                    metrics: dict | None = None, input_size: tuple[int, int] | None = None) -> dict:
    """Assemble the checkpoint dict for ``model`` (weights are copied to CPU)."""
    if len(class_names) != model.card.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {model.card.num_classes} classes")
    return {
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "card": model.card.to_dict(),
        "class_names": [str(c) for c in class_names],
        "input_size": list(input_size or model.card.input_size),
        "assigner": assigner,
        "train_config": train_config or {},
        "weights_raw": _cpu_state(model.state_dict()),
        "weights_ema": _cpu_state(ema_state) if ema_state is not None else None,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "epoch": int(epoch),
        "metrics": metrics or {},
        "versions": library_versions(),
    }


def _cpu_state(state: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def save_checkpoint(ckpt: dict, path: str | Path) -> Path:
    """Write atomically: a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    check_plain(ckpt)
    return atomic_write(path, lambda f: torch.save(ckpt, f))


PLAIN_SCALARS = (str, int, float, bool, type(None))


def check_plain(value, where: str = "checkpoint") -> None:
    """Raise TypeError naming the first value that ``torch.load(weights_only=True)`` would refuse."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is {type(k).__name__}, not str/int")
            check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_plain(v, f"{where}[{i}]")
    elif not (isinstance(value, torch.Tensor) or type(value) in PLAIN_SCALARS):
        raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__name__}; "
                        "checkpoints hold only tensors and plain types")


def load_checkpoint(path: str | Path) -> dict:
    """Read and validate a checkpoint; raises :class:`CheckpointError` with the reason."""
    ckpt = read_torch_file(path, CheckpointError, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("kind") != KIND:
        raise CheckpointError(f"{path}: a torch file, but not an fss checkpoint (no kind={KIND!r})")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt.get('format_version')!r}; "
                              f"this fss reads version {FORMAT_VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    names, size = ckpt.get("class_names"), ckpt.get("input_size")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):    # ints named Task2_1.txt …
        raise CheckpointError(f"{path}: its class_names must be a list of names, got {str(names)[:80]}")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(type(v) is int for v in size)):
        raise CheckpointError(f"{path}: its input_size must be [height, width] in px, got {str(size)[:80]}")
    return ckpt


def card_of(ckpt: dict) -> ModelCard:
    return ModelCard.from_dict(dict(ckpt["card"]), source="checkpoint card")


def model_from_checkpoint(ckpt: dict, weights: str = "ema") -> Detector:
    """Rebuild the network from the checkpoint alone. ``weights``: "ema" (falls back to raw) or "raw"."""
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    state = ckpt.get("weights_ema") if weights == "ema" else None
    state = state if state is not None else ckpt["weights_raw"]
    card = card_of(ckpt)
    names = ckpt.get("class_names") or []
    if len(names) != card.num_classes:
        raise CheckpointError(f"checkpoint names {len(names)} classes but its model card has {card.num_classes}")
    model = Detector(card)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    wrong = [k for k in expected if k in found and found[k] != expected[k]]
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if wrong or missing or extra:            # weights of another architecture than the card describes
        example = (f"{wrong[0]} is {found[wrong[0]]}, the card needs {expected[wrong[0]]}" if wrong
                   else f"{(missing or extra)[0]} is {'missing' if missing else 'unexpected'}")
        raise CheckpointError(f"checkpoint weights do not fit its model card {card.name!r}: {len(wrong)} tensors "
                              f"of another shape, {len(missing)} missing, {len(extra)} unexpected (e.g. {example})")
    check_finite(state, "checkpoint")
    model.load_state_dict(state)
    return model.eval()


def check_finite(state: dict, where: str | Path) -> None:
    """Refuse weights holding NaN or infinity: they ran, found nothing and said nothing (or, as --weights, made the
    first training step's loss NaN)."""
    bad = next((k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
                and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(f"{where}: its weights hold NaN or infinite values (first: {bad}): the training that "
                              "wrote them diverged; use an earlier checkpoint")


def load_model(path: str | Path, weights: str = "ema") -> tuple[Detector, dict]:
    ckpt = load_checkpoint(path)
    return model_from_checkpoint(ckpt, weights), ckpt


CLASS_HEAD = "head.cls_preds."          # the per-class prediction layers: re-initialised when classes differ
BOX_HEAD = "head.reg_preds."            # the box prediction layers (4 outputs, or 5 with the angle)


INIT_PARTS = {"all": ("",), "backbone": ("backbone.",), "backbone+neck": ("backbone.", "neck.")}


def init_from_checkpoint(model: Detector, path: str | Path, class_names: list[str], parts: str = "all",
                         ckpt: dict | None = None) -> dict:
    """Fine-tuning's start: copy every tensor of the fss checkpoint at ``path`` (its EMA weights when it has
    them) whose name and shape match ``model``'s; the class head is left as initialised when the checkpoint's
    classes differ from ``class_names`` (names and order). ``parts`` "backbone" or "backbone+neck" copies only
    those (the rest keeps its fresh initialisation: a pretrained body under a new head). Returns what happened,
    for the log and for the new checkpoint's record: ``{"from", "sha256", "parts", "loaded", "skipped",
    "class_head"}``. ``ckpt``: the checkpoint of ``path`` when the caller has it already (converted weights)."""
    if parts not in INIT_PARTS:
        raise ValueError(f"weights_parts must be one of {', '.join(INIT_PARTS)}, got {parts!r}")
    ckpt = ckpt if ckpt is not None else load_checkpoint(path)
    state = ckpt.get("weights_ema") or ckpt["weights_raw"]
    check_finite(state, path)
    same_classes = list(ckpt["class_names"]) == list(class_names)
    own = model.state_dict()
    take = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape
            and (same_classes or not k.startswith(CLASS_HEAD)) and k.startswith(INIT_PARTS[parts])}
    widened = _box_rows(own, state) if parts == "all" else {}
    take.update(widened)
    body = [k for k, v in own.items() if k.startswith(("backbone.", "neck.")) and k.startswith(INIT_PARTS[parts])
            and v.dim() > 0]
    matched = sum(k in take for k in body)
    if matched < len(body) / 2:
        raise CheckpointError(f"{path}: only {matched} of the {len(body)} backbone/neck tensors of {model.card.name} "
                              f"match it by name and shape (it holds a {card_of(ckpt).name}); start from a "
                              "checkpoint of the same model card")
    model.load_state_dict(take, strict=False)
    return {"from": str(Path(path).resolve()), "sha256": sha256_file(path), "parts": parts, "loaded": len(take),
            "skipped": len(own) - len(take),
            "class_head": "kept" if same_classes else f"re-initialised ({len(ckpt['class_names'])} -> "
                                                      f"{len(class_names)} classes)",
            **({"box_head": "x, y, w, h from the horizontal model; the angle channel fresh"} if widened else {})}


def _box_rows(own: dict, state: dict) -> dict:
    """An oriented model started from a horizontal one: its box convolutions (5 outputs) take the horizontal
    model's 4 (x, y, w, h) and keep their own angle row (initialised flat)."""
    out = {}
    for k, v in state.items():
        if k.startswith(BOX_HEAD) and k in own and own[k].shape[0] == 5 and v.shape[0] == 4 and \
                own[k].shape[1:] == v.shape[1:]:
            out[k] = torch.cat((v.to(own[k].dtype), own[k][4:]), 0)
    return out


def slim_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """A copy of a training checkpoint with only what inference needs (no optimiser state, no per-epoch
    rows), for shipping: ``python -m fss_core.checkpoint slim SRC.pt DST.pt``."""
    ckpt = load_checkpoint(src)
    ckpt["optimizer"] = None
    sched = dict(ckpt.get("scheduler") or {})
    sched.pop("rows", None)
    ckpt["scheduler"] = sched
    init = (ckpt.get("train_config") or {}).get("init")
    if init and init.get("from"):           # a shipped file names its start by file name, not by this path
        ckpt["train_config"] = {**ckpt["train_config"], "init": {**init, "from": Path(init["from"]).name}}
    return save_checkpoint(ckpt, dst)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 4 or sys.argv[1] != "slim":
        sys.exit("usage: python -m fss_core.checkpoint slim SRC.pt DST.pt")
    slim_checkpoint(sys.argv[2], sys.argv[3])

"""Model cards: the YAML files in ``fss_core/models/`` (package data) that describe one architecture each."""

from __future__ import annotations

import dataclasses
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import yaml

# package data: found through the installed package, so a wheel works from any folder (not only a checkout)
MODELS_DIR = Path(str(importlib.resources.files("fss_core") / "models"))
BACKBONES = ("cspdarknet", "resnet")
TASKS = ("detect", "obb")           # horizontal boxes | oriented boxes (one more regression channel: the angle)


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to rebuild the network. Unknown keys in a card file are errors."""

    name: str
    backbone: str                       # "cspdarknet" | "resnet"
    num_classes: int = 80
    task: str = "detect"                # one of TASKS; every architecture works for both
    strides: tuple[int, ...] = (8, 16, 32)
    input_size: tuple[int, int] = (640, 640)   # (height, width) pixels
    act: str = "silu"
    # cspdarknet / pafpn
    depth: float = 1.0                  # multiplier on the number of CSP bottlenecks
    width: float = 1.0                  # multiplier on channels
    depthwise: bool = False
    # resnet / fpn
    resnet_depth: int = 50
    neck_channels: int = 256
    head_channels: int | None = None    # default: int(256 * width) for cspdarknet, neck_channels for resnet
    # the input normalisation inside the graph (RGB, on the 0–1 scale; None: none) and every batch norm's epsilon:
    # ImageNet backbones were trained on (x − mean) / std with eps 1e-5 (torchvision), YOLOX on 0–255 with 1e-3
    input_mean: tuple[float, float, float] | None = None
    input_std: tuple[float, float, float] | None = None
    bn_eps: float = 1e-3
    description: str = ""

    def __post_init__(self):
        for f in dataclasses.fields(self):      # "0.25" as a width was a TypeError, "false" built a depthwise card
            kind = {"int": int, "float": (int, float), "bool": bool, "str": str}.get(str(f.type).split(" |")[0])
            value = getattr(self, f.name)
            if kind and value is not None and (not isinstance(value, kind) or (kind is not bool and
                                                                             isinstance(value, bool))):
                raise ValueError(f"card {self.name!r}: {f.name} must be of type {str(f.type).split(' |')[0]}, got "
                                 f"{value!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"card {self.name!r}: backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.task not in TASKS:
            raise ValueError(f"card {self.name!r}: task must be one of {TASKS}, got {self.task!r}")
        if self.num_classes < 1:
            raise ValueError(f"card {self.name!r}: num_classes must be >= 1, got {self.num_classes}")
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        _check_normalisation(self)
        object.__setattr__(self, "input_size", _pair(self.input_size, self.name))
        if tuple(self.strides) != (8, 16, 32):
            raise ValueError(f"card {self.name!r}: strides must be (8, 16, 32), got {self.strides}")
        # bounds that keep a card (80 bytes of YAML, or a card inside a .pt) from building a network that
        # exhausts memory: fss-x is depth 1.33 / width 1.25, so 3 / 3 leaves room for larger custom cards
        for key, value, ok, allowed in (
                ("depth", self.depth, 0 < self.depth <= 3, "(0, 3]"),
                ("width", self.width, 0 < self.width <= 3, "(0, 3]"),
                ("num_classes", self.num_classes, self.num_classes <= 100_000, "1–100,000"),
                ("neck_channels", self.neck_channels, 8 <= self.neck_channels <= 2048, "8–2048"),
                ("head_channels", self.head_channels, self.head_channels is None or 8 <= self.head_channels <= 2048,
                 "8–2048")):
            if not ok:
                raise ValueError(f"card {self.name!r}: {key} {value} is outside the supported range {allowed}")
        if min(self.input_size) < 32 or max(self.input_size) > 8192:
            raise ValueError(f"card {self.name!r}: input_size {self.input_size} must lie within 32–8192 px")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["strides"] = list(self.strides)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> ModelCard:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown model card keys {unknown}; known keys: {sorted(known)}")
        if "name" not in data or "backbone" not in data:
            raise ValueError(f"{source}: a model card needs 'name' and 'backbone'")
        return cls(**data)

    def with_classes(self, num_classes: int) -> ModelCard:
        return dataclasses.replace(self, num_classes=num_classes)

    def with_task(self, task: str) -> ModelCard:
        return dataclasses.replace(self, task=task)


def _check_normalisation(card: ModelCard) -> None:
    """input_mean and input_std: both or neither, 3 finite numbers each, std positive; bn_eps in (0, 0.1]."""
    if (card.input_mean is None) != (card.input_std is None):
        raise ValueError(f"card {card.name!r}: input_mean and input_std come together (got {card.input_mean!r}, "
                         f"{card.input_std!r})")
    for key in ("input_mean", "input_std"):
        value = getattr(card, key)
        if value is None:
            continue
        try:
            value = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            value = ()
        if len(value) != 3 or not all(abs(v) < 1e3 for v in value) or (key == "input_std" and min(value) <= 0):
            raise ValueError(f"card {card.name!r}: {key} must be 3 numbers (RGB, 0–1 scale; std > 0), got "
                             f"{getattr(card, key)!r}")
        object.__setattr__(card, key, value)
    if not 0 < card.bn_eps <= 0.1:
        raise ValueError(f"card {card.name!r}: bn_eps {card.bn_eps} must lie in (0, 0.1]")


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    h, w = (int(v) for v in value)
    return (h, w)


def resolve_model_file(name_or_path: str | Path) -> Path:
    """A model file as given when it exists; else the bundled file of that name in :data:`MODELS_DIR`
    (``fss-n-aerial.pt``, or ``fss-n-aerial`` for the checkpoint), so a bundled model is found from any folder, as
    Ultralytics finds ``yolov8n.pt``; else the path as given, for the caller to report missing."""
    path = Path(name_or_path)
    if path.exists() or path.parent != Path("."):
        return path
    for candidate in (MODELS_DIR / path.name, MODELS_DIR / f"{path.name}.pt"):
        if candidate.is_file() and candidate.suffix in (".pt", ".onnx"):
            return candidate
    return path


def available_cards() -> list[str]:
    return sorted(p.stem for p in MODELS_DIR.glob("*.yaml"))


def load_card(name_or_path: str | Path) -> ModelCard:
    """A card by name (``fss-s``) from :data:`MODELS_DIR`, or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = MODELS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"no model card {str(name_or_path)!r}; available: {', '.join(available_cards())}")
    if not path.is_file():
        raise FileNotFoundError(f"model card file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a model card must be a YAML mapping")
    return ModelCard.from_dict(data, source=str(path))

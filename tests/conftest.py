import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test starts with 2 torch threads, whatever the one before it set (`--threads`): a 4-image overfit
    test trained at 1 thread lands elsewhere (TAL AP50 0.40 at 1 thread, 0.92 at 2: float summation order in a
    chaotic 80-epoch run). The API itself restores the caller's threads (test_api)."""
    yield
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip("../shared/data is not beside the checkout")
    return path


PICO_CARD = {"name": "pico", "backbone": "cspdarknet", "depth": 0.33, "width": 0.125}
GRID_CLASSES = ["car", "ship"]


def grid_checkpoint(path: Path, size: int = 256, classes: tuple[str, str] = tuple(GRID_CLASSES),
                    task: str = "detect") -> Path:
    """A real fss checkpoint (real file, real backends) whose head ignores the image and detects a known grid, so a
    test about files, caps, resume or collisions does not hang on how well a model detects on this machine today.

    The three prediction convolutions of every level get zero weights, so each point outputs its biases exactly:
    at stride 32 a 12×12 px ``car`` (the first of ``classes``; score σ(8)·σ(2) = 0.8806) centred on the cell, at
    stride 16 a 6×6 px ``ship`` (the second; σ(8)·σ(0.5) = 0.6220), at stride 8 nothing (objectness σ(−30)). A
    256×256 px input gives 8·8 = 64 cars and 16·16 = 256 ships, none overlapping another of its class: 320
    detections above any conf below 0.62. With ``task="obb"`` the cars are 16 × 8 px turned by θ = π/6 and the
    ships 6 × 6 px squares (θ = 0): the same 320 oriented detections.
    """
    import math

    from fss_core.checkpoint import make_checkpoint, save_checkpoint
    from fss_core.nn.card import ModelCard
    from fss_core.nn.detector import build_model

    torch.manual_seed(0)
    model = build_model(ModelCard.from_dict({**PICO_CARD, "num_classes": len(classes), "task": task,
                                             "input_size": [size, size]}))
    head = model.head
    plan = {8: (-30.0, (-30.0, -30.0), 1.0), 16: (8.0, (-30.0, 0.5), 6.0), 32: (8.0, (2.0, -30.0), 12.0)}
    oriented = {8: (1.0, 1.0, 0.0), 16: (6.0, 6.0, 0.0), 32: (16.0, 8.0, math.pi / 6)}     # w, h, θ
    with torch.no_grad():
        for level, stride in enumerate(model.strides):
            obj, cls, side = plan[stride]
            for conv in (head.reg_preds[level], head.obj_preds[level], head.cls_preds[level]):
                conv.weight.zero_()
            box = [0.0, 0.0, math.log(side / stride), math.log(side / stride)]
            if task == "obb":
                w, h, theta = oriented[stride]
                p = theta / math.pi + 0.25                       # θ = (σ(t) − 0.25) π
                box = [0.0, 0.0, math.log(w / stride), math.log(h / stride), math.log(p / (1 - p))]
            head.reg_preds[level].bias.copy_(torch.tensor(box))
            head.obj_preds[level].bias.fill_(obj)
            head.cls_preds[level].bias.copy_(torch.tensor(cls))
    return save_checkpoint(make_checkpoint(model, list(classes), input_size=(size, size)), path)


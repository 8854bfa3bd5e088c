"""Golden fixtures for the baseline assigners, made by running the reference code (issue #14).

    python benchmarks/reference_fixtures.py --setup       # makes a side venv under runs/refenv, then runs there
    python benchmarks/reference_fixtures.py               # inside an environment that has the references

References (run here, never copied into this repository):
* TAL    — ``ultralytics.utils.tal.TaskAlignedAssigner`` of ultralytics 8.4.190 (PyPI), with the
           arguments of its detection loss: topk 10, α 0.5, β 6, strides 8/16/32.
* SimOTA — ``YOLOXHead.get_assignments`` of yolox 0.3.0 (the PyPI sdist, unpacked, not installed) and,
           with ``--yolox-main DIR``, of a checkout of YOLOX's main branch (centre-only region, 2023).
* ATSS   — ``mmdet.models.task_modules.assigners.ATSSAssigner`` of mmdet 3.3.0 (PyPI wheel, installed
           without dependencies; mmengine beside it), topk 9, on square priors of 8 strides at our points
           (one anchor per location, octave base scale 8, as MMDetection's ATSS configs).

None of the references imports cleanly without torchvision, which cannot be installed beside this CPU
torch: this script gives each a *stand-in for import only* — an empty ``torchvision`` package with
a version in its metadata (Ultralytics reads ``importlib.metadata.version("torchvision")`` at
import; YOLOX's ``boxes.py`` imports torchvision for NMS, which the assignment never calls).
YOLOX's package ``__init__`` files (which import training utilities, cv2, loguru, …) are bypassed:
only ``yolo_head.py``, ``network_blocks.py``, ``losses.py`` and ``utils/boxes.py`` are loaded.
MMDetection's package ``__init__`` needs the compiled mmcv: only ``atss_assigner.py``,
``assign_result.py``, ``base_assigner.py`` and ``structures/bbox/bbox_overlaps.py`` are loaded, with
stand-ins for its registry decorator and typing aliases (the IoU calculator it would build from the
registry is ``bbox_overlaps`` itself).

Inputs are seeded random scenes (16 classes, objects 6–120 px, 10–2,000 GTs per image) with box
coordinates on a 1/64 px grid, so xyxy <-> cx,cy,w,h conversions are exact on both sides. Each
fixture file (``tests/fixtures/assigners/*.pt``, plain tensors, ``torch.load(weights_only=True)``)
holds the inputs (logits in float16) and, per reference, the positive points and matched GT.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import subprocess
import sys
import tarfile
import tempfile
import types
import urllib.request
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests/fixtures/assigners"
ULTRALYTICS = "ultralytics==8.4.190"
MMDET = "mmdet==3.3.0"
YOLOX_SDIST = ("https://files.pythonhosted.org/packages/f8/a1/08f57037146540133673aecca2c371064d567928beaebc69611e4c"
               "7745b0/yolox-0.3.0.tar.gz")
STRIDES = (8, 16, 32)
NUM_CLASSES = 16
# name: (image size, images, GTs per image, seed)
CASES = {"s640_m10": (640, 2, 10, 0), "s640_m200": (640, 2, 200, 1), "s1024_m2000": (1024, 1, 2000, 2)}


# ---------------------------------------------------------------------------------- side environment
def setup(env: Path) -> Path:
    """A venv with torch (the local CPU build), ultralytics without its dependencies and the few
    modules its import needs, and the unpacked YOLOX 0.3.0 sdist. Returns its python."""
    py = env / "bin/python"
    if not py.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run(pip + ["torch==2.13.0", "numpy"], check=True)
        subprocess.run(pip + ["--no-deps", ULTRALYTICS, MMDET], check=True)
        subprocess.run(pip + ["opencv-python-headless", "pyyaml", "requests", "psutil", "matplotlib", "pillow",
                              "scipy", "polars", "mmengine"], check=True)
    src = env / "yolox-0.3.0"
    if not src.is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            tar = Path(tmp) / "yolox.tar.gz"
            urllib.request.urlretrieve(YOLOX_SDIST, tar)
            with tarfile.open(tar) as t:
                t.extractall(env, filter="data")
    return py


def torchvision_standin(folder: Path) -> None:
    """An empty importable ``torchvision`` with dist-info metadata (import only; nothing is called)."""
    pkg = folder / "torchvision"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("__version__ = '0.0.0+standin'\nops = None\n")
    info = folder / "torchvision-0.0.0+standin.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torchvision\nVersion: 0.0.0+standin\n")
    sys.path.insert(0, str(folder))


def load_yolox_head(src: Path):
    """``YOLOXHead`` from a YOLOX source tree, without running its package ``__init__`` files."""
    for name in ("yolox", "yolox.models", "yolox.utils"):
        sys.modules.pop(name, None)
    pkg = types.ModuleType("yolox")
    pkg.__path__ = [str(src / "yolox")]
    models = types.ModuleType("yolox.models")
    models.__path__ = [str(src / "yolox/models")]
    utils = types.ModuleType("yolox.utils")
    utils.__path__ = [str(src / "yolox/utils")]
    sys.modules.update({"yolox": pkg, "yolox.models": models, "yolox.utils": utils})
    if "loguru" not in sys.modules:
        loguru = types.ModuleType("loguru")
        loguru.logger = types.SimpleNamespace(info=print, error=print, warning=print)
        sys.modules["loguru"] = loguru
    boxes = importlib.import_module("yolox.utils.boxes")
    utils.bboxes_iou = boxes.bboxes_iou
    utils.cxcywh2xyxy = getattr(boxes, "cxcywh2xyxy", None)
    utils.visualize_assign = None                   # imported by the 2023 head, never called here
    utils.meshgrid = lambda *t, **kw: torch.meshgrid(*t, indexing="ij")
    for mod in ("yolox.models.yolo_head",):
        sys.modules.pop(mod, None)
    return importlib.import_module("yolox.models.yolo_head").YOLOXHead


def load_mmdet_atss():
    """MMDetection's ``ATSSAssigner`` (topk 9) without mmdet's package ``__init__`` (which needs mmcv)."""
    import mmengine  # noqa: F401  (the real dependency of base_assigner.py)

    site = Path(importlib.util.find_spec("mmengine").origin).parents[1] / "mmdet"
    registry = types.ModuleType("mmdet.registry")
    registry.TASK_UTILS = types.SimpleNamespace(register_module=lambda *a, **k: (lambda cls: cls))
    utils = types.ModuleType("mmdet.utils")
    utils.ConfigType = dict
    utils.util_mixins = types.SimpleNamespace(NiceRepr=object)
    pkgs = {"mmdet": site, "mmdet.models": site / "models", "mmdet.models.task_modules": site / "models/task_modules",
            "mmdet.models.task_modules.assigners": site / "models/task_modules/assigners",
            "mmdet.structures": site / "structures", "mmdet.structures.bbox": site / "structures/bbox"}
    for name, path in pkgs.items():
        mod = types.ModuleType(name)
        mod.__path__ = [str(path)]
        sys.modules[name] = mod
    sys.modules.update({"mmdet.registry": registry, "mmdet.utils": utils})
    overlaps = importlib.import_module("mmdet.structures.bbox.bbox_overlaps").bbox_overlaps
    cls = importlib.import_module("mmdet.models.task_modules.assigners.atss_assigner").ATSSAssigner
    atss = cls.__new__(cls)
    atss.topk, atss.alpha, atss.ignore_iof_thr = 9, None, -1
    atss.iou_calculator = lambda priors, gts: overlaps(priors, gts)
    return atss


# ---------------------------------------------------------------------------------- inputs
def grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    pts, strides = [], []
    for s in STRIDES:
        n = size // s
        ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        pts.append((torch.stack((xs.reshape(-1), ys.reshape(-1)), 1).float() + 0.5) * s)
        strides.append(torch.full((n * n,), float(s)))
    return torch.cat(pts), torch.cat(strides)


def q64(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 64) / 64


def make_case(size: int, images: int, num_gt: int, seed: int) -> dict:
    """Random but plausible mid-training predictions: points inside a GT predict a jittered copy of
    it and score its class higher; every other point predicts a random box near itself."""
    g = torch.Generator().manual_seed(seed)
    pts, strides = grid(size)
    A = pts.shape[0]
    gt_boxes = torch.zeros(images, num_gt, 4)
    gt_labels = torch.randint(0, NUM_CLASSES, (images, num_gt), generator=g)
    logits = torch.randn(images, A, NUM_CLASSES, generator=g) * 1.5 - 4
    obj = torch.randn(images, A, generator=g) * 1.5 - 2
    pred = torch.zeros(images, A, 4)
    for b in range(images):
        side = torch.exp(torch.empty(num_gt, 2).uniform_(torch.log(torch.tensor(6.0)).item(),
                                                         torch.log(torch.tensor(120.0)).item(), generator=g))
        centre = torch.rand(num_gt, 2, generator=g) * (size - side) + side / 2
        gt_boxes[b] = q64(torch.cat((centre - side / 2, centre + side / 2), 1)).clamp(0, size)
        # the first GT containing each point (by index), -1 if none
        inside = ((pts[None] > gt_boxes[b, :, None, :2]) & (pts[None] < gt_boxes[b, :, None, 2:])).all(-1)  # (M, A)
        owner = torch.where(inside.any(0), inside.float().argmax(0), torch.full((A,), -1))
        wh = strides[:, None] * torch.exp(torch.randn(A, 2, generator=g) * 0.7 + 1.0)
        c = pts + torch.randn(A, 2, generator=g) * strides[:, None]
        box = torch.cat((c - wh / 2, c + wh / 2), 1)
        hit = owner >= 0
        gb = gt_boxes[b, owner[hit]]
        jitter = (torch.rand(int(hit.sum()), 4, generator=g) - 0.5) * 0.6 * (gb[:, 2:] - gb[:, :2]).repeat(1, 2)
        box[hit] = gb + jitter
        box = torch.cat((box[:, :2], torch.maximum(box[:, 2:], box[:, :2] + 0.5)), 1)
        pred[b] = q64(box)
        logits[b, hit, gt_labels[b, owner[hit]]] += torch.rand(int(hit.sum()), generator=g) * 5
        obj[b, hit] += 3
    return {"points": pts, "strides": strides, "cls_logits": logits.half(), "obj_logits": obj.half(),
            "pred_boxes": pred, "gt_boxes": gt_boxes, "gt_labels": gt_labels,
            "gt_mask": torch.ones(images, num_gt, dtype=torch.bool)}


# ---------------------------------------------------------------------------------- references
def run_ultralytics(case: dict) -> dict:
    from ultralytics.utils.tal import TaskAlignedAssigner

    tal = TaskAlignedAssigner(topk=10, num_classes=NUM_CLASSES, alpha=0.5, beta=6.0, stride=list(STRIDES))
    scores = case["cls_logits"].float().sigmoid()
    _, _, _, fg, gt_idx = tal(scores, case["pred_boxes"], case["points"], case["gt_labels"][..., None],
                              case["gt_boxes"], case["gt_mask"][..., None].float())
    return {"fg_mask": fg.bool(), "gt_index": torch.where(fg.bool(), gt_idx, torch.full_like(gt_idx, -1))}


def run_yolox(head_cls, case: dict) -> dict:
    head = head_cls(num_classes=NUM_CLASSES, width=0.25, strides=list(STRIDES))
    B, A, _ = case["cls_logits"].shape
    pts, strides = case["points"], case["strides"]
    x_shifts = (pts[:, 0] / strides - 0.5)[None]
    y_shifts = (pts[:, 1] / strides - 0.5)[None]
    fg_all = torch.zeros(B, A, dtype=torch.bool)
    gt_all = torch.full((B, A), -1)
    cls = case["cls_logits"].float()
    obj = case["obj_logits"].float()[..., None]
    for b in range(B):
        gt = case["gt_boxes"][b]
        gt_cxcywh = torch.cat(((gt[:, :2] + gt[:, 2:]) / 2, gt[:, 2:] - gt[:, :2]), 1)
        pr = case["pred_boxes"][b]
        pr_cxcywh = torch.cat(((pr[:, :2] + pr[:, 2:]) / 2, pr[:, 2:] - pr[:, :2]), 1)
        args = (b, gt.shape[0], gt_cxcywh, case["gt_labels"][b].float(), pr_cxcywh, strides[None], x_shifts,
                y_shifts, cls)
        if "total_num_anchors" in inspect.signature(head.get_assignments).parameters:     # 0.3.0
            out = head.get_assignments(*args[:2], A, *args[2:], None, obj, None, None)
        else:                                                                             # main since 2023
            out = head.get_assignments(*args, obj)
        _, fg, _, matched, _ = out
        fg_all[b] = fg
        gt_all[b, fg] = matched
    return {"fg_mask": fg_all, "gt_index": gt_all}


def run_mmdet_atss(atss, case: dict) -> dict:
    from mmengine.structures import InstanceData

    pts, strides = case["points"], case["strides"]
    half = (4.0 * strides)[:, None]                                         # 8-stride square priors
    priors = torch.cat((pts - half, pts + half), 1)
    levels = [int((strides == s).sum()) for s in STRIDES]
    B, A = case["pred_boxes"].shape[:2]
    fg_all = torch.zeros(B, A, dtype=torch.bool)
    gt_all = torch.full((B, A), -1)
    for b in range(B):
        res = atss.assign(InstanceData(priors=priors), levels,
                          InstanceData(bboxes=case["gt_boxes"][b], labels=case["gt_labels"][b]))
        fg = res.gt_inds > 0
        fg_all[b] = fg
        gt_all[b, fg] = res.gt_inds[fg] - 1
    return {"fg_mask": fg_all, "gt_index": gt_all}


def generate(yolox_main: Path | None, yolox_main_rev: str = "") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        torchvision_standin(Path(tmp))
        import ultralytics
        env = Path(sys.prefix)
        yolox_030 = load_yolox_head(env / "yolox-0.3.0")
        yolox_new = load_yolox_head(yolox_main) if yolox_main else None
        atss = load_mmdet_atss()
        OUT.mkdir(parents=True, exist_ok=True)
        for name, (size, images, num_gt, seed) in CASES.items():
            case = make_case(size, images, num_gt, seed)
            expected = {"tal": run_ultralytics(case), "simota": run_yolox(yolox_030, case),
                        "atss": run_mmdet_atss(atss, case)}
            if yolox_new is not None:
                expected["simota_centre"] = run_yolox(yolox_new, case)
            meta = {"ultralytics": str(ultralytics.__version__), "yolox": "0.3.0", "mmdet": "3.3.0",
                    # the revision, never the local path of the checkout (fixtures are committed)
                    "yolox_main": (yolox_main_rev or "unknown revision") if yolox_main else "",
                    "torch": str(torch.__version__),
                    "size": size, "seed": seed}
            torch.save({"inputs": case, "expected": expected, "meta": meta}, OUT / f"{name}.pt")
            fg = {k: int(v["fg_mask"].sum()) for k, v in expected.items()}
            print(f"{name}: positives {fg}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setup", action="store_true", help="make the side venv (runs/refenv) and run there")
    p.add_argument("--env", default=str(ROOT / "runs/refenv"))
    p.add_argument("--yolox-main", default="", help="a checkout of YOLOX's main branch (2023 centre-only SimOTA)")
    p.add_argument("--yolox-main-rev", default="", help="its commit, recorded in the fixtures (e.g. 6ddff48)")
    args = p.parse_args()
    if args.setup:
        py = setup(Path(args.env))
        cmd = [str(py), __file__] + (["--yolox-main", args.yolox_main, "--yolox-main-rev", args.yolox_main_rev]
                                     if args.yolox_main else [])
        sys.exit(subprocess.run(cmd).returncode)
    generate(Path(args.yolox_main) if args.yolox_main else None, args.yolox_main_rev)


if __name__ == "__main__":
    main()

"""Parity fixtures for the weight converter ``fss convert`` (issue #32), made by running the reference code.

    python benchmarks/weights_fixtures.py --setup   # makes a side venv under runs/weightsenv, then runs there
    python benchmarks/weights_fixtures.py           # inside an environment that has the references

Writes ``tests/fixtures/weights/``:

* ``yolox_nano.pth`` — a YOLOX-nano built by YOLOX 0.3.0's own code and saved in its trainer's layout.
* ``yolox_nano_outputs.pt`` — a test image, YOLOX's preprocessing of it and the model's eval-mode outputs.
* ``resnet_layout.json`` — every state-dict key (shape, dtype, in order) of torchvision's ResNet-50 and -101.
* ``resnet50_features.pt`` — C3/C4/C5 of torchvision's ResNet-50 with seeded weights (:func:`seeded_resnet_state`).

References (run here, never copied into this repository):

* YOLOX 0.3.0 — the PyPI sdist, unpacked (not installed) under the side venv, its root put on ``sys.path``. Its
  real package code is imported: ``yolox.exp.get_exp(exps/default/yolox_nano.py)`` — the experiment file's
  ``get_model()`` (YOLOPAFPN + YOLOXHead, depth 0.33, width 0.25, depthwise, act "silu", 80 classes; BatchNorm
  eps 1e-3 / momentum 0.03, prior-probability biases 0.01) and ``get_optimizer(64)`` — and
  ``yolox/data/data_augment.py`` (``ValTransform(legacy=False)``), loaded without the ``yolox.data`` package
  ``__init__`` (which imports the COCO/VOC datasets and pycocotools). Its dependencies in the side venv:
  numpy 2.4.6, opencv-python-headless 5.1.0.95 (the main venv's versions), loguru, tabulate and thop (the
  last three only imported). ``torchvision`` is the stand-in below (YOLOX's ``boxes.py`` imports it for NMS,
  which is never called here).
* torchvision 0.28.0 (the release paired with torch 2.13; its wheel cannot import beside this CPU torch) — the
  wheel is fetched with ``pip download --no-deps`` and unzipped, and only its pure-Python files
  ``models/resnet.py``, ``models/_api.py``, ``models/_utils.py``, ``models/_meta.py``, ``_utils.py`` and
  ``_internally_replaced_utils.py`` are run. Stand-ins replace what would load the compiled extension or the
  rest of the library: the ``torchvision``, ``torchvision.models`` and ``torchvision.transforms`` package
  ``__init__`` files (empty packages over the unzipped folders; YOLOX uses the same ``torchvision``),
  ``torchvision.utils`` (``_log_api_usage_once``, a no-op; the real one only logs API usage) and
  ``torchvision.transforms._presets`` (``ImageClassification``, only named in the pretrained weight enums,
  which are never used).
* torch 2.13.0+cpu in the side venv: the same wheel as the main venv (``pip install torch==2.13.0`` with the
  machine's pip configuration, whose find-links hold that CPU wheel), so :func:`seeded_resnet_state` draws the
  same numbers in both environments.

``yolox_nano.pth``: ``torch.manual_seed(0)`` then ``get_model()`` (PyTorch's default initialisation, seeded);
then, from a ``torch.Generator`` seeded 0, in ``named_parameters`` order, every BatchNorm weight ~ U(0.5, 1.5),
every BatchNorm bias ~ N(0, 0.2²), the 1×1 prediction-conv weights (reg, obj, cls) ~ N(0, 0.03²) (so that
w, h stay in a trained model's range), their biases: reg ~ N(0, 0.5²), obj and cls = their prior bias
−4.595 + N(0, 1.5²). BatchNorm running statistics are then real: with the head in eval mode and
every BatchNorm in train mode with momentum None (cumulative average), 4 batches of 2 random 416×416 crops
of ``fss_core/models/sample-scene.jpg`` (BGR 0–255, YOLOX's convention) are run through; momentum is put back
to 0.03 (``num_batches_tracked`` = 4). Saved as YOLOX 0.3.0's ``Trainer.save_ckpt`` does (``torch.save`` of
``{"start_epoch", "model", "optimizer", "best_ap"}``): ``start_epoch`` 300, ``model`` the state dict (642
tensors), ``optimizer`` ``exp.get_optimizer(64).state_dict()`` before any step (SGD, nesterov, three parameter
groups; a trained checkpoint also holds a ``momentum_buffer`` per parameter in ``state``, left out for size),
``best_ap`` ``numpy.float64(0.2575)`` (an arbitrary value of the type the COCO evaluator returns,
``cocoEval.stats[0]``). Because of that scalar,
``torch.load(weights_only=True)`` needs the numpy scalar globals allow-listed (see ``NUMPY_SCALAR_GLOBALS``).

``yolox_nano_outputs.pt`` (plain tensors, ``weights_only=True``): ``image`` — the 416×416 crop rows 1600:2016,
columns 2200:2616 of the sample scene read with ``cv2.imread`` (BGR uint8, H×W×3); ``input`` — ``ValTransform(
legacy=False)(image, None, (416, 416))`` with a batch axis, (1, 3, 416, 416): its values are whole numbers
0–255 (BGR, no scaling), so it is stored as uint8 — ``.float()`` is exactly YOLOX's float32 tensor (checked);
``outputs`` — ``model.eval()`` forward (``decode_in_inference`` True) on that input, float32 (1, 3549, 85):
cx, cy, w, h in input pixels, objectness and 80 class probabilities (after sigmoid), points level by level
(strides 8, 16, 32), row-major. ``letterbox`` — two small crops (120×180, shrunk, and 90×60, enlarged) through
``ValTransform(legacy=False)`` to (160, 160), inputs stored as uint8 the same way, to test the resize and
padding.

``resnet50_features.pt``: ``torch.manual_seed(0)``, torchvision's ``resnet50()``, then ``load_state_dict``
(strict) of ``seeded_resnet_state(layout, 0)`` with the layout read back from ``resnet_layout.json``; eval mode;
input ``torch.randn((1, 3, 64, 64), generator=torch.Generator().manual_seed(1))``; the outputs of ``layer2``,
``layer3`` and ``layer4`` (C3, C4, C5, by forward hooks on the model's own forward) and the fc logits.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import subprocess
import sys
import tarfile
import tempfile
import types
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests/fixtures/weights"
SCENE = ROOT / "fss_core/models/sample-scene.jpg"
TORCHVISION = "torchvision==0.28.0"
SIDE_PACKAGES = ["torch==2.13.0", "numpy==2.4.6", "opencv-python-headless==5.1.0.95", "loguru", "tabulate"]
YOLOX_SEED = 0
RESNET_SEED = 0
RESNET_INPUT_SEED = 1
IMAGE_CROP = (1600, 2200, 416)                  # row, column, side in the sample scene
LETTERBOX_CROPS = ((2400, 1050, 120, 180), (1150, 800, 90, 60))   # row, column, height, width
LETTERBOX_SIZE = (160, 160)
# What ``torch.load(weights_only=True)`` must allow for the numpy.float64 ``best_ap``: the GLOBALs ``scalar`` and
# ``dtype`` plus the class of the dtype it BUILDs. numpy 2 pickles ``numpy._core.multiarray.scalar``; a file
# pickled by numpy 1 (as YOLOX 0.3.0-era checkpoints) names ``numpy.core.multiarray.scalar``, which needs the
# tuple form ``(numpy._core.multiarray.scalar, "numpy.core.multiarray.scalar")`` in ``safe_globals``.
NUMPY_SCALAR_GLOBALS = ("numpy._core.multiarray.scalar", "numpy.dtype", "numpy.dtypes.Float64DType")


# ---------------------------------------------------------------------------------- seeded ResNet weights
def seeded_resnet_state(layout: Iterable[Sequence], seed: int) -> dict[str, torch.Tensor]:
    """A state dict with every tensor drawn from ``torch.Generator().manual_seed(seed)``, in layout order.

    ``layout``: ``(key, shape[, dtype])`` items (as in ``resnet_layout.json``). One CPU generator, float32, and
    for each key in turn (each draw consumes the generator, so the order is part of the procedure):

    * ``*.num_batches_tracked`` -> int64 ``1000`` of its shape (no draw);
    * ``*.running_mean``        -> ``torch.randn(shape, generator=g) * 0.2``;
    * ``*.running_var``         -> ``torch.rand(shape, generator=g) * 0.75 + 0.25``     (in [0.25, 1));
    * ``*.weight`` with one dim -> ``torch.rand(shape, generator=g) * 0.5 + 0.5``       (BatchNorm γ in [0.5, 1));
    * ``*.weight`` with more    -> ``torch.randn(shape, generator=g) * sqrt(1 / fan_in)`` (fan_in = prod(shape[1:]));
    * ``*.bias``                -> ``torch.randn(shape, generator=g) * 0.1``.
    """
    g = torch.Generator().manual_seed(seed)
    state = {}
    for item in layout:
        key, shape = item[0], tuple(int(s) for s in item[1])
        name = key.rsplit(".", 1)[-1]
        if name == "num_batches_tracked":
            t = torch.full(shape, 1000, dtype=torch.int64)
        elif name == "running_mean":
            t = torch.randn(shape, generator=g) * 0.2
        elif name == "running_var":
            t = torch.rand(shape, generator=g) * 0.75 + 0.25
        elif name == "weight" and len(shape) == 1:
            t = torch.rand(shape, generator=g) * 0.5 + 0.5
        elif name == "weight":
            t = torch.randn(shape, generator=g) * math.sqrt(1.0 / math.prod(shape[1:]))
        elif name == "bias":
            t = torch.randn(shape, generator=g) * 0.1
        else:
            raise ValueError(f"no rule for state-dict key {key!r}")
        state[key] = t
    return state


# ---------------------------------------------------------------------------------- side environment
def setup(env: Path) -> Path:
    """A venv with the local CPU torch, YOLOX's few import-time dependencies, the unpacked YOLOX 0.3.0 sdist and
    the unzipped torchvision 0.28.0 wheel. Returns its python."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from reference_fixtures import YOLOX_SDIST  # the sdist the assigner fixtures were made with

    py = env / "bin/python"
    if not py.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run(pip + SIDE_PACKAGES, check=True)
        subprocess.run(pip + ["--no-deps", "thop"], check=True)
    if not (env / "yolox-0.3.0").is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            tar = Path(tmp) / "yolox.tar.gz"
            urllib.request.urlretrieve(YOLOX_SDIST, tar)
            with tarfile.open(tar) as t:
                t.extractall(env, filter="data")
    tv = env / "torchvision-0.28.0"
    if not tv.is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([str(py), "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                            TORCHVISION, "-d", tmp], check=True)
            wheel = next(Path(tmp).glob("torchvision-*.whl"))
            with zipfile.ZipFile(wheel) as z:
                for name in z.namelist():
                    if name.startswith("torchvision/") and name.endswith(".py"):
                        z.extract(name, tv)
    return py


def install_standins(tv_root: Path) -> None:
    """``torchvision`` as empty packages over the unzipped wheel, plus stand-ins for the two modules that would
    pull in the compiled extension or the transforms (see the module docstring)."""
    pkgs = {"torchvision": tv_root / "torchvision", "torchvision.models": tv_root / "torchvision/models",
            "torchvision.transforms": tv_root / "torchvision/transforms"}
    for name, path in pkgs.items():
        mod = types.ModuleType(name)
        mod.__path__ = [str(path)]
        sys.modules[name] = mod
    sys.modules["torchvision"].__version__ = "0.28.0"
    utils = types.ModuleType("torchvision.utils")
    utils._log_api_usage_once = lambda obj: None
    presets = types.ModuleType("torchvision.transforms._presets")
    presets.ImageClassification = type("ImageClassification", (), {})
    sys.modules.update({"torchvision.utils": utils, "torchvision.transforms._presets": presets})


def load_yolox(src: Path):
    """(exp, ValTransform) of YOLOX 0.3.0's nano experiment, from the unpacked sdist."""
    sys.path.insert(0, str(src))
    from yolox.exp import get_exp

    data = types.ModuleType("yolox.data")             # skip yolox/data/__init__.py (datasets, pycocotools)
    data.__path__ = [str(src / "yolox/data")]
    sys.modules["yolox.data"] = data
    augment = importlib.import_module("yolox.data.data_augment")
    return get_exp(exp_file=str(src / "exps/default/yolox_nano.py")), augment.ValTransform


# ---------------------------------------------------------------------------------- YOLOX-nano
def randomise_yolox(model: torch.nn.Module, scene, seed: int) -> None:
    """Seeded affine BatchNorm parameters and prediction biases, then running statistics from real crops."""
    import numpy as np

    g = torch.Generator().manual_seed(seed)
    bn_names = {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    prior = -math.log((1 - 0.01) / 0.01)
    with torch.no_grad():
        for name, p in model.named_parameters():
            module, kind = name.rsplit(".", 1)
            if module in bn_names:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5 if kind == "weight" else
                        torch.randn(p.shape, generator=g) * 0.2)
            elif kind == "weight" and "_preds." in name:  # reg/obj/cls: outputs in a trained model's range
                p.copy_(torch.randn(p.shape, generator=g) * 0.03)
            elif kind == "bias" and ".reg_preds." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif kind == "bias":                          # obj_preds, cls_preds: the only other biases
                p.copy_(prior + torch.randn(p.shape, generator=g) * 1.5)
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.train()
        m.momentum = None
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for _ in range(4):
            crops = []
            for _ in range(2):
                r, c = rng.integers(0, scene.shape[0] - 416), rng.integers(0, scene.shape[1] - 416)
                crops.append(np.ascontiguousarray(scene[r:r + 416, c:c + 416].transpose(2, 0, 1), dtype=np.float32))
            model(torch.from_numpy(np.stack(crops)))
    for m in bns:
        m.momentum = 0.03
    model.eval()


def make_yolox(src: Path) -> None:
    import cv2
    import numpy as np

    exp, ValTransform = load_yolox(src)
    assert (exp.depth, exp.width, exp.num_classes, exp.act) == (0.33, 0.25, 80, "silu")
    torch.manual_seed(YOLOX_SEED)
    model = exp.get_model()
    scene = cv2.imread(str(SCENE))
    randomise_yolox(model, scene, YOLOX_SEED)
    optimizer = exp.get_optimizer(64)
    state = model.state_dict()
    ckpt = {"start_epoch": 300, "model": state, "optimizer": optimizer.state_dict(),
            "best_ap": max(0, np.float64(0.2575))}
    torch.save(ckpt, OUT / "yolox_nano.pth")

    preproc = ValTransform(legacy=False)
    r, c, side = IMAGE_CROP
    image = np.ascontiguousarray(scene[r:r + side, c:c + side])
    x, _ = preproc(image, None, (side, side))
    assert x.dtype == np.float32 and np.array_equal(x, np.round(x)) and x.min() >= 0 and x.max() <= 255
    inp = torch.from_numpy(x)[None]
    with torch.no_grad():
        out = model(inp)
    assert model.head.decode_in_inference and out.shape == (1, 3549, 85) and out.dtype == torch.float32
    letterbox = []
    for lr, lc, h, w in LETTERBOX_CROPS:
        img = np.ascontiguousarray(scene[lr:lr + h, lc:lc + w])
        y, _ = preproc(img, None, LETTERBOX_SIZE)
        assert np.array_equal(y, np.round(y))
        letterbox.append({"image": torch.from_numpy(img), "input": torch.from_numpy(y.astype(np.uint8))[None],
                          "input_size": torch.tensor(LETTERBOX_SIZE)})
    u8 = torch.from_numpy(x.astype(np.uint8))[None]
    assert torch.equal(u8.float(), inp)
    torch.save({"image": torch.from_numpy(image), "input": u8, "outputs": out.contiguous(),
                "strides": torch.tensor([8, 16, 32]), "letterbox": letterbox,
                "meta": {"yolox": "0.3.0", "torch": str(torch.__version__), "numpy": np.__version__,
                         "cv2": cv2.__version__, "seed": YOLOX_SEED, "crop": list(IMAGE_CROP),
                         "input_stored_as": "uint8; .float() is the exact float32 ValTransform output"}},
               OUT / "yolox_nano_outputs.pt")
    obj, cls = out[0, :, 4], out[0, :, 5:]
    print(f"yolox_nano.pth: {len(state)} tensors, {sum(v.numel() for v in state.values())} numbers; outputs "
          f"obj {obj.min():.3g}..{obj.max():.3g}, cls {cls.min():.3g}..{cls.max():.3g}, "
          f"w {out[0, :, 2].min():.3g}..{out[0, :, 2].max():.3g} px")


# ---------------------------------------------------------------------------------- torchvision ResNet
def make_resnet(tv_root: Path) -> None:
    resnet = importlib.import_module("torchvision.models.resnet")
    layout = {}
    for depth in (50, 101):
        model = getattr(resnet, f"resnet{depth}")()
        bn = model.bn1
        layout[f"resnet{depth}"] = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")]
                                    for k, v in model.state_dict().items()]
        layout[f"resnet{depth}_bn"] = {"eps": bn.eps, "momentum": bn.momentum}
    layout["torchvision"] = "0.28.0"
    layout["source"] = "torchvision/models/resnet.py: resnet50(), resnet101() with default arguments"
    lines = []                                    # one key per line, diff-friendly
    for k, v in layout.items():
        body = ("[\n" + ",\n".join("  " + json.dumps(e) for e in v) + "\n ]") if isinstance(v, list) else json.dumps(v)
        lines.append(f" {json.dumps(k)}: {body}")
    (OUT / "resnet_layout.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")

    keys = json.loads((OUT / "resnet_layout.json").read_text())["resnet50"]
    a, b = seeded_resnet_state(keys, RESNET_SEED), seeded_resnet_state(keys, RESNET_SEED)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    torch.manual_seed(RESNET_SEED)
    model = resnet.resnet50()
    model.load_state_dict(a, strict=True)
    model.eval()
    feats = {}
    for name in ("layer2", "layer3", "layer4"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: feats.__setitem__(name, o))
    x = torch.randn((1, 3, 64, 64), generator=torch.Generator().manual_seed(RESNET_INPUT_SEED))
    with torch.no_grad():
        logits = model(x)
    torch.save({"seed": RESNET_SEED, "input_seed": RESNET_INPUT_SEED, "input": x, "c3": feats["layer2"],
                "c4": feats["layer3"], "c5": feats["layer4"], "logits": logits,
                "meta": {"torchvision": "0.28.0", "torch": str(torch.__version__),
                         "procedure": "seeded_resnet_state(resnet_layout.json['resnet50'], seed), eval mode"}},
               OUT / "resnet50_features.pt")
    print("resnet:", {k: len(v) for k, v in layout.items() if k.startswith("resnet") and isinstance(v, list)},
          "C3/C4/C5 std", [round(float(feats[n].std()), 4) for n in ("layer2", "layer3", "layer4")])


def generate(env: Path) -> None:
    install_standins(env / "torchvision-0.28.0")
    OUT.mkdir(parents=True, exist_ok=True)
    make_yolox(env / "yolox-0.3.0")
    make_resnet(env / "torchvision-0.28.0")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setup", action="store_true", help="make the side venv (runs/weightsenv) and run there")
    p.add_argument("--env", default=str(ROOT / "runs/weightsenv"))
    args = p.parse_args()
    if args.setup:
        py = setup(Path(args.env))
        sys.exit(subprocess.run([str(py), __file__, "--env", args.env]).returncode)
    generate(Path(args.env))


if __name__ == "__main__":
    main()

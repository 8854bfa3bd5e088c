"""The Python API under every ``fss`` verb: train, evaluate, export, benchmark (``Detector`` is in detector.py).

Each function takes files and settings, does the work, and returns what it made; bad input raises
``ValueError`` / ``FileNotFoundError`` (or a subclass such as ``CheckpointError`` / ``ExportError``) with a
message naming the file or value. Nothing here prints: pass ``log`` / ``progress`` callbacks to watch.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from fss_core.defaults import CONF, IOU
from fss_core.fileio import first_free
from fss_core.launch import rank_and_world
from fss_train.config import TrainConfig


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when a CUDA GPU is visible, else "cpu"; cpu, cuda and cuda:N unchanged; anything else is
    refused by name (torch listed its 20 device types for --device gpu)."""
    if device != "auto":
        if device not in ("cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
            raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------------ data
def synth(out: str | Path, *, num_images: int = 8, size: int = 512, objects: int = 40, min_size: float = 8.0,
          max_size: float = 64.0, occlusion: float = 0.3, truncation: float = 0.05, seed: int = 0,
          exist_ok: bool = False, progress=None):
    """Synthetic top-down aerial scenes in ``out`` (images/, annotations.json, labelTxt/); the same seed gives
    identical files. A folder holding anything but a synthetic dataset of these settings is replaced only with
    ``exist_ok`` (FileExistsError). Returns the dataset (records with boxes and labels)."""
    from fss_train.data.synth import SynthConfig, synthesize

    return synthesize(out, SynthConfig(num_images, size, objects, min_size, max_size, occlusion, truncation, seed),
                      progress, exist_ok=exist_ok)


# ------------------------------------------------------------------------------------------ train
@dataclass
class TrainResult:
    """A finished (or extended) training run: its folder, checkpoints and metrics."""

    out: Path
    config: TrainConfig
    rows: list[dict] = field(default_factory=list)      # one per epoch (results.json)
    final: dict = field(default_factory=dict)           # metrics of the last evaluation

    @property
    def best(self) -> Path:
        return self.out / "best.pt"

    @property
    def last(self) -> Path:
        return self.out / "last.pt"

    @property
    def best_epoch(self) -> dict | None:
        """The epoch row best.pt was saved from (highest fitness), or None before any evaluation."""
        rows = [r for r in self.rows if r.get("fitness") == r.get("fitness") and "fitness" in r]
        return max(rows, key=lambda r: r["fitness"]) if rows else None


def saved_train_config(out: str | Path) -> dict:
    """The settings a run in ``out`` was started with (its last.pt), to resume it without repeating them."""
    from fss_core.checkpoint import load_checkpoint

    path = Path(out) / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: nothing to resume (no last.pt in {out})")
    saved = dict(load_checkpoint(path).get("train_config") or {})
    saved.pop("init", None)                 # where a fine-tuned run started: recorded, not a setting
    config = Path(out) / "config.yaml"      # what the run in this folder wrote when it started
    if config.is_file():
        import yaml

        try:
            started = yaml.safe_load(config.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError):
            started = {}
        if isinstance(started, dict) and started.get("data") not in (None, saved.get("data")):
            raise ValueError(f"{path} is not this folder's run: it was trained on {saved.get('data')!r}, the run "
                             f"that wrote {config.name} on {started.get('data')!r}; resume the folder that holds "
                             "its own last.pt")
    return saved


def free_folder(out: str | Path) -> Path:
    """``out``, or out2, out3, … — the first that does not exist or is empty (default output folders)."""
    return first_free(out, lambda c: not (c.is_dir() and any(c.iterdir())))


def free_file(path: str | Path) -> Path:
    """``path``, or stem-2, stem-3, … with its suffix — the first that does not exist (default output files)."""
    return first_free(path, lambda c: not c.exists(), file=True)


def next_free_run(out: str | Path) -> Path:
    """``out``, or out2, out3, … — the first that holds no run (its own last.pt)."""
    return first_free(out, lambda c: not (c / "last.pt").is_file())


def train(data: str = "", *, model: str | None = None, assigner: str | None = None, task: str | None = None,
          epochs: int | None = None, batch: int | None = None, imgsz: int | None = None, device: str = "auto",
          out: str | Path = "runs/train",
          val: str | None = None, workers: int | None = None, resume: bool = False, exist_ok: bool = False,
          weights: str | Path | None = None, freeze: str | None = None, overrides: dict | None = None, log=None,
          progress=None) -> TrainResult:
    """Train a detector with FSS or a baseline assigner into ``out`` (config.yaml, results.csv/json/png, last.pt,
    best.pt). ``overrides``: any TrainConfig field, e.g. ``{"lr_per_64": 0.02, "assigner_params": {"rho": 0.25}}``.
    ``task``: "detect" (horizontal boxes) or "obb" (oriented boxes: any card gains the angle channel; polygons of
    the data become minimum-area rectangles; Task1 metrics). ``weights``: an fss checkpoint to fine-tune from (tensors
    matched by name and shape; the class head re-initialised when the classes differ); ``freeze``: "backbone" or
    "backbone+neck". A setting left None takes TrainConfig's default (fss-n, fss, 100 epochs, batch 16, 640 px, 2
    workers). ``resume`` continues OUT/last.pt with the run's own settings (``data`` may be left out; a larger
    ``epochs`` extends it; a setting given that the run cannot change — data, model, assigner, task, imgsz, batch —
    must match). Under torchrun each process calls this; rank 0 writes."""
    from fss_core.fileio import exclusive
    from fss_train.config import make_config
    from fss_train.train import Run

    given = {"data": data or None, "val": val, "model": model, "assigner": assigner, "task": task, "epochs": epochs,
             "batch": batch, "imgsz": imgsz, "workers": workers, "weights": None if weights is None else str(weights),
             "freeze": freeze}
    base = saved_train_config(out) if resume else {}
    if not resume and not data:
        raise ValueError("data is required (a COCO json, a YOLO data.yaml or a DOTA folder)")
    base.update({k: v for k, v in given.items() if v is not None})
    base["device"] = resolve_device(device)            # this machine's, not the one the run started on
    cfg = make_config(base, overrides or {})
    if cfg.imgsz % 32 or cfg.imgsz < 32:
        raise ValueError(f"imgsz must be a positive multiple of 32, got {cfg.imgsz}")
    if cfg.epochs < 1 or cfg.batch < 1:
        raise ValueError(f"epochs and batch must be at least 1, got {cfg.epochs} and {cfg.batch}")
    # one process writes into a run folder (under torchrun, rank 0 holds it for all): a second run is refused
    with exclusive(out, "fss train") if rank_and_world()[0] == 0 else nullcontext():
        run = Run(cfg, out, resume=resume, log=log or (lambda m: None), exist_ok=exist_ok)
        if run.start_epoch >= cfg.epochs:
            raise ValueError(f"{out}/last.pt already finished epoch {run.start_epoch}; pass --epochs N (epochs=N, "
                             f"N > {run.start_epoch}) to extend it")
        final = run.fit(progress)
    results = Path(out) / "results.json"
    rows = json.loads(results.read_text()) if results.is_file() else []
    return TrainResult(Path(out), cfg, rows, final or {})


# ------------------------------------------------------------------------------------------ evaluate
def evaluate(model: str | Path | None = None, data: str = "", *, predictions: str | Path | None = None,
             metric: str = "coco", split: str = "val", imgsz: int | None = None, batch: int = 8,
             device: str = "auto", max_dets: int = 100, alignment: bool = False, out: str | Path | None = None,
             conf: float = CONF, iou: float = IOU, coco_engine: str = "auto", dota_ap: str = "voc07",
             progress=None) -> dict:
    """COCO metrics (pycocotools' COCOeval) or the DOTA devkit's VOC07 mAP50 of a checkpoint, or of saved predictions
    (``fss detect``'s output folder or predictions.json, a COCO results json, a DOTA Task2 folder), on
    ``data``. A folder of DOTA Task1 files (oriented detections) with ``metric="dota"`` is scored as the devkit's
    ``dota_evaluation_task1.py`` (polygon IoU > 0.5, difficult ignored; ``dota_ap`` voc07 or voc12), with a COCO-style
    rotated mAP@[.5:.95] beside it (``result["rotated_coco"]``); the record then has ``"task": "Task1"``. Otherwise on
    ``data``. Images are matched by file and classes by name (fss_train/predictions.py): a class on one side
    only is named in ``classes_note``, no class in common is an error. Returns ``{"metric", "result",
    "per_class", "num_predictions", "classes_note", "alignment"}``; with ``alignment`` (a checkpoint only) the
    task alignment too. With ``out``: metrics.json, predictions.json (in the ground truth's ids),
    PR_curve.png and confusion_matrix.png (detections scoring ``conf`` or more, matched at IoU ``iou``).
    ``coco_engine``: auto | faster-coco-eval | pycocotools (the same numbers; faster-coco-eval is pycocotools'
    COCOeval in C++, 50× faster on dense images; the record names the one used). ``progress(done, total)``
    follows a checkpoint's batches. The work is :func:`fss_train.scoring.evaluate_dataset`."""
    from fss_train.scoring import evaluate_dataset

    return evaluate_dataset(model, data, predictions=predictions, metric=metric, split=split, imgsz=imgsz,
                            batch=batch, device=resolve_device(device), max_dets=max_dets, alignment=alignment,
                            out=out, conf=conf, iou=iou, coco_engine=coco_engine, dota_ap=dota_ap,
                            progress=progress)


# ------------------------------------------------------------------------------------------ convert
def convert(weights: str | Path, *, model: str, out: str | Path, classes: list[str] | str | Path | None = None,
            exist_ok: bool = False) -> Path:
    """A YOLOX checkpoint (for the matching CSPDarkNet card: ``model="fss-s"`` for ``yolox_s.pth``) or a
    torchvision-layout ResNet-50/101 state dict (``fss-r50``/``fss-r101``: the backbone; FPN and head fresh) ->
    an ordinary fss checkpoint at ``out``, which every verb takes (detect, export, eval, bench, train --weights).
    ``classes``: the class names (a list, or a file of one name a line); default COCO's 80. The conventions that
    differ (YOLOX: BGR 0–255 input, cell-corner decode; torchvision: ImageNet normalisation, BN epsilon) are
    folded in exactly (fss_core/foreign_weights.py). An existing ``out`` is replaced only with ``exist_ok``."""
    from fss_core.checkpoint import save_checkpoint
    from fss_core.fileio import read_text
    from fss_core.foreign_weights import convert_weights

    out = Path(out)
    if out.exists() and not exist_ok:
        raise FileExistsError(f"{out} exists; pass exist_ok=True (--exist-ok) to replace it")
    if isinstance(classes, (str, Path)):
        classes = [line.strip() for line in read_text(classes).splitlines() if line.strip()]
    return save_checkpoint(convert_weights(weights, model, classes), out)


# ------------------------------------------------------------------------------------------ export
@dataclass
class Exported:
    """What ``export`` made: the ONNX file (and the TensorRT engine or OpenVINO IR), fingerprint, size,
    verification."""

    onnx: Path
    fingerprint: str
    params: int
    flops: int
    input_size: int
    engine: Path | None = None
    verify: dict | None = None
    openvino: Path | None = None
    int8: Path | None = None

    @property
    def path(self) -> Path:
        return self.engine or self.openvino or self.onnx


def export(checkpoint: str | Path, *, format: str = "onnx", imgsz: int | None = None, batch: int = 1,
           dynamic: bool = False, half: bool = False, opset: int = 17, out: str | Path | None = None,
           verify: bool = False, verify_images: list[str] | None = None, weights: str = "ema",
           exist_ok: bool = False, progress=None, int8: bool = False, calib: str | Path | None = None,
           calib_tiles: int = 32) -> Exported:
    """Export a checkpoint to ONNX (``format="onnx"``), to a TensorRT engine (``"engine"``) or to an OpenVINO IR
    (``"openvino"``: ``.xml`` + ``.bin``), the last two through the ONNX file. With ``verify`` onnxruntime and torch
    run the same images (given, or a synthetic scene) and the report is attached; a mismatch does not raise — read
    ``result.verify["within_tolerance"]``. ``progress(done, total)`` follows the verification. An existing output
    file is replaced when it was exported from the same checkpoint, otherwise only with ``exist_ok``
    (FileExistsError names it). ``int8``: also an INT8 ONNX (``<name>-int8.onnx``, ``result.int8``) calibrated on
    ``calib_tiles`` tiles of the images under ``calib`` (fss_deploy/quantize.py; the prediction convolutions and
    the decode stay in float)."""
    from fss_core.fileio import sha256_file
    from fss_deploy.export import check_replaceable, export_onnx, verify_onnx
    from fss_deploy.sources import resolve_sources

    if format not in ("onnx", "engine", "openvino"):
        raise ValueError(f"format must be onnx, engine or openvino, got {format!r}")
    if int8 and (format != "onnx" or half or not calib):
        raise ValueError("--int8 quantises an FP32 ONNX export: --format onnx, no --half, and --calib DIR (images "
                         "of your own to calibrate on)")
    if format == "openvino":
        from fss_deploy.openvino import import_openvino
        import_openvino()
        if half:
            raise ValueError("--half with openvino: the IR keeps FP32 weights; choose bf16 when running it "
                             "(--precision bf16)")
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be ema or raw, got {weights!r}")
    if format == "engine":
        if not exist_ok and Path(checkpoint).is_file():
            check_replaceable(Path(out) if out else Path(checkpoint).with_suffix(".engine"), sha256_file(checkpoint))
        from fss_deploy.tensorrt import import_tensorrt
        import_tensorrt()
    onnx_out = out if format == "onnx" else Path(out).with_suffix(".onnx") if out and format == "openvino" else None
    onnx_path = Path(onnx_out) if onnx_out else Path(checkpoint).with_suffix(".onnx")
    int8_path = onnx_path.with_name(f"{onnx_path.stem}-int8.onnx")
    xml_path = Path(out) if out and format == "openvino" else onnx_path.with_suffix(".xml")
    if not exist_ok and Path(checkpoint).is_file():     # the derived files obey the rule of the ONNX file itself
        for derived, made in ((int8_path, int8), (xml_path, format == "openvino")):
            if made:
                check_replaceable(derived, sha256_file(checkpoint))
    res = export_onnx(checkpoint, onnx_out, imgsz, batch, dynamic, half, opset, weights,
                      exist_ok)
    size = json.loads(res.metadata["input_size"])[0]
    done = Exported(res.path, res.fingerprint, res.params, res.flops, size)
    if verify:
        images = resolve_sources(verify_images) if verify_images else sample_images(size)
        if not images:
            raise FileNotFoundError(f"verify_images: no images found in {verify_images}")
        done.verify = verify_onnx(res.path, checkpoint, images, weights, progress=progress)
    if int8:
        from fss_deploy.quantize import quantize_onnx
        done.int8 = quantize_onnx(res.path, int8_path, calib, calib_tiles)
    if format == "openvino":
        from fss_deploy.openvino import export_openvino
        done.openvino = export_openvino(res.path, xml_path)
    if format == "engine":
        from fss_deploy.tensorrt import build_engine
        engine = Path(out) if out else res.path.with_suffix(".engine")
        done.engine = build_engine(res.path, engine, half, batch, dynamic, source_checkpoint=str(checkpoint))
    return done


def compare(a: str | Path, b: str | Path, imgsz: int | None = None) -> dict:
    """Are two models (checkpoints or ONNX files) the same inference graph? ``{"identical", "a", "b",
    "differences"}`` — structure, parameter count and FLOPs."""
    from fss_deploy.export import compare as compare_graphs

    return compare_graphs(a, b, imgsz)


def sample_images(size: int) -> list[str]:
    """A synthetic aerial scene made on the fly (for verification when no images are given)."""
    from fss_core.fileio import write_image
    from fss_train.data.synth import SynthConfig, make_scene

    img, *_ = make_scene(SynthConfig(num_images=1, size=size, objects=max(10, size // 16), min_size=max(8, size / 40),
                                     max_size=max(24, size / 6), seed=123), 0)
    return [str(write_image(Path(tempfile.mkdtemp(prefix="fss-verify-")) / "scene.png", img))]


# ------------------------------------------------------------------------------------------ benchmark
def benchmark(model: str | Path, *, backend: str | None = None, imgsz: int | None = None, batch: int = 1,
              warmup: int = 50, iters: int = 300, threads: int = 0, device: str = "auto",
              out: str | Path | None = None, progress=None, precision: str = "fp32") -> dict:
    """Latency per stage (preprocess, inference, postprocess) and FPS at ``batch`` (1 = the paper's setting),
    FP32 (``precision`` bf16 / auto: OpenVINO). With ``out``: report.md, report.json and latency.png there.
    ``progress(done, total)`` per run."""
    from fss_deploy.bench import bench_model

    _check_counts(warmup, iters, batch, threads)
    report = bench_model(str(model), backend, imgsz, batch, warmup, iters, threads, resolve_device(device),
                         progress=progress, precision=precision)
    return _written(report, out, "latency")


def benchmark_overhead(a: str | Path, b: str | Path, *, imgsz: int | None = None, warmup: int = 50,
                       iters: int = 300, threads: int = 0, device: str = "auto", out: str | Path | None = None,
                       progress=None) -> dict:
    """The zero-inference-overhead report: identical graphs (structure, params, FLOPs) and interleaved
    latency of A and B with a bootstrap CI of their ratio."""
    from fss_deploy.bench import bench_overhead

    _check_counts(warmup, iters, 1, threads)
    report = bench_overhead(str(a), str(b), imgsz, warmup, iters, threads, resolve_device(device), progress)
    return _written(report, out, "overhead")


def benchmark_tiled(image: str | Path, model: str | Path, *, backend: str | None = None, batch: int = 8,
                    overlap: int = 200, threads: int = 0, device: str = "auto", out: str | Path | None = None,
                    progress=None, precision: str = "fp32") -> dict:
    """Tiled detection throughput on one large image: s/image, tiles/s, time outside the model."""
    from fss_deploy.bench import bench_tiled

    _check_counts(0, 1, batch, threads)
    report = bench_tiled(str(image), str(model), backend, batch, overlap, threads=threads,
                         device=resolve_device(device), progress=progress, precision=precision)
    return _written(report, out, "tiled")


def _check_counts(warmup: int, iters: int, batch: int, threads: int) -> None:
    """The bench counts up front: ``iters=10**9`` ran for days, ``threads=-1`` ended in torch's unnamed refusal."""
    from fss_core.defaults import MAX_RUNS

    if not (1 <= iters <= MAX_RUNS and 0 <= warmup <= MAX_RUNS and batch >= 1):
        raise ValueError(f"iters must be 1 … {MAX_RUNS:,}, warmup 0 … {MAX_RUNS:,} and batch at least 1, got iters "
                         f"{iters}, warmup {warmup}, batch {batch}")
    if threads < 0:
        raise ValueError(f"threads must be 0 (the library default) or more, got {threads}")


def _written(report: dict, out: str | Path | None, kind: str) -> dict:
    if out is not None:
        from fss_deploy.bench import write_report
        report["report_dir"] = str(write_report(report, out, kind))
    return report

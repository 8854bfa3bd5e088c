"""The `fss` command line: parses options and calls one function per verb. No logic lives here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="fss: train detectors with the FSS label assignment and deploy them fast.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Datasets: convert, split (offline tiling), synth, check.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

def fail(message: str, code: int = 1) -> None:
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False)
    raise typer.Exit(code)


@app.command()
def info(target: Annotated[str, typer.Argument(help="checkpoint (.pt), ONNX file, card name (fss-s) or card YAML")],
         imgsz: Annotated[int | None, typer.Option(help="input size for the FLOPs count")] = None,
         as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False):
    """What a checkpoint, ONNX file or model card describes: architecture, classes, input size, params, FLOPs."""
    from fss_deploy.info import describe

    try:
        facts = describe(target, imgsz)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(facts, indent=2, default=str))
        return
    table = Table(show_header=False, box=None)
    for key, value in facts.items():
        number = _number(value)
        if key == "params" and number is not None:
            value = f"{number / 1e6:.3f} M"
        elif key == "flops" and number is not None:
            value = f"{number / 1e9:.2f} GFLOPs"
        elif isinstance(value, list) and len(value) > 12:
            value = f"{len(value)}: " + ", ".join(map(str, value[:12])) + ", …"
        table.add_row(f"[bold]{key}[/]", str(value))
    console.print(table)


class TrainProgress:
    """A rich progress bar per epoch: losses, positives per GT, images/s; a line per finished epoch."""

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err)

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int, steps: int):
        return self.progress.add_task(f"epoch {epoch + 1}/{epochs}", total=steps, info="")

    def step(self, task, i: int, s: dict) -> None:
        self.progress.update(task, completed=i + 1, info=f"loss {s['loss']:.3f} (cls {s['cls']:.3f} box {s['box']:.3f}"
                             f" obj {s['obj']:.3f}) pos/GT {s['pos_per_gt']:.2f} {s['images_per_s']:.1f} img/s")

    def end_epoch(self, task, row: dict) -> None:
        self.progress.remove_task(task)
        ap = row.get("AP")
        ap_txt = f" AP {ap:.4f} AP50 {row.get('AP50', float('nan')):.4f}" if ap == ap else ""
        self.progress.console.print(f"epoch {row['epoch']}: loss {row['loss']:.4f} pos/GT {row['pos_per_gt']:.2f} "
                                    f"rank-consistency {row['rank_consistency']:.3f}{ap_txt} "
                                    f"({row['images_per_s']:.1f} img/s)", highlight=False)


def _write_failure(out: Path, exc: OSError) -> str:
    """One line for a write that failed mid-run (disk full, permissions): what is kept and how to go on."""
    return (f"{out}: cannot write {Path(exc.filename).name if exc.filename else 'results'} ({exc.strerror or exc}); "
            f"every image finished before is kept in {out}/.per_image — free space and rerun the same command to "
            "resume")


def _writable_out(out: str) -> None:
    """Fail before any work when --out is a file or cannot be written."""
    from fss_deploy.detect import check_output_dir

    try:
        check_output_dir(Path(out))
    except PermissionError as exc:
        fail(str(exc))


def _number(value) -> float | None:
    """A number, also from the strings of ONNX metadata; None when it is not one."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _relaunch_distributed(nproc: int) -> None:
    """Re-run this very command under torch.distributed.run with one process per rank."""
    import subprocess
    import sys

    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if arg.startswith("--nproc="):
            continue
        argv.append(arg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "fss", *argv]
    raise typer.Exit(subprocess.call(cmd))


@app.command()
def train(data: Annotated[str, typer.Option(help="COCO json, YOLO data.yaml or DOTA folder")],
          model: Annotated[str, typer.Option(help="card name (fss-n … fss-x, fss-r50/r101) or card YAML")] = "fss-n",
          assigner: Annotated[str, typer.Option(help="fss | simota | tal | atss | maxiou")] = "fss",
          epochs: Annotated[int, typer.Option(help="total epochs (with --resume: extend to this many)")] = 100,
          batch: Annotated[int, typer.Option(help="images per step over all processes")] = 16,
          imgsz: Annotated[int, typer.Option(help="square training size, multiple of 32")] = 640,
          device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
          nproc: Annotated[int, typer.Option(help="processes (DDP through torch.distributed.run)")] = 1,
          out: Annotated[str, typer.Option(help="run folder (runs/train, then runs/train2, … when it holds a "
                                               "run)")] = "runs/train",
          val: Annotated[str, typer.Option(help="validation dataset (default: data.yaml val split, else --data)")] = "",
          workers: Annotated[int, typer.Option(help="data loader workers per process")] = 2,
          resume: Annotated[bool, typer.Option(help="continue from OUT/last.pt")] = False,
          exist_ok: Annotated[bool, typer.Option(help="start over in an OUT that already holds a run")] = False,
          set_: Annotated[list[str] | None, typer.Option("--set", help="override: key=value (see fss_train/config.py)")]
          = None):
    """Train a detector with FSS or a baseline assigner. Writes config.yaml, results.csv/png, last.pt, best.pt."""
    import os

    from fss_train.checkpoint import CheckpointError
    from fss_train.config import make_config, parse_overrides
    from fss_train.engine import NonFiniteLoss

    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        _relaunch_distributed(nproc)
    if imgsz % 32 or imgsz < 32:
        fail(f"--imgsz must be a positive multiple of 32, got {imgsz}")
    if epochs < 1 or batch < 1:
        fail(f"--epochs and --batch must be at least 1, got {epochs} and {batch}")
    if out == "runs/train" and not resume and not exist_ok and (Path(out) / "last.pt").is_file():
        n = 2                                   # the default folder moves on, as Ultralytics does
        while (Path(f"{out}{n}") / "last.pt").is_file():
            n += 1
        out = f"{out}{n}"
    _writable_out(out)
    try:
        cfg = make_config({"data": data, "val": val, "model": model, "assigner": assigner, "epochs": epochs,
                           "batch": batch, "imgsz": imgsz, "device": device, "workers": workers},
                          parse_overrides(set_ or []))
        from fss_train.train import Run
        run = Run(cfg, out, resume=resume, log=lambda m: err.print(m, highlight=False, soft_wrap=True),
                  exist_ok=exist_ok)
    except (ValueError, FileNotFoundError, FileExistsError, CheckpointError, RuntimeError) as exc:
        fail(str(exc))
    if run.start_epoch >= cfg.epochs:
        fail(f"{out}/last.pt already finished epoch {run.start_epoch}; pass --epochs N (> {run.start_epoch}) "
             "to extend it")
    try:
        with TrainProgress() as progress:
            final = run.fit(progress)
    except NonFiniteLoss as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if final:
        console.print(f"done: {out}/last.pt, {out}/best.pt, {out}/results.csv "
                      f"(AP {final.get('AP', float('nan')):.4f}, AP50 {final.get('AP50', float('nan')):.4f})")


@app.command(name="eval")
def evaluate(model: Annotated[str | None, typer.Argument(help="checkpoint (.pt)")] = None,
             data: Annotated[str, typer.Option(help="ground truth: COCO json, data.yaml or DOTA folder")] = "",
             predictions: Annotated[str | None, typer.Option(help="COCO results json or DOTA Task2 folder")] = None,
             metric: Annotated[str, typer.Option(help="coco | dota")] = "coco",
             split: Annotated[str, typer.Option(help="split of a data.yaml")] = "val",
             imgsz: Annotated[int | None, typer.Option(help="input size (default: the checkpoint's)")] = None,
             batch: Annotated[int, typer.Option(help="images per batch")] = 8,
             device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
             json_out: Annotated[str | None, typer.Option("--json", help="write metrics (and predictions) here")]
             = None,
             max_dets: Annotated[int, typer.Option(help="COCO detections per image (100 = COCO; raise it for dense "
                                                        "aerial images)")] = 100,
             alignment: Annotated[bool, typer.Option(help="also measure task alignment: Spearman(score, IoU) over "
                                                          "each GT's candidate points, top-1 agreement, top-1 IoU")]
             = False):
    """Evaluate a model or saved predictions (COCO metrics via pycocotools, or the DOTA devkit's VOC07 mAP)."""
    from pathlib import Path

    from fss_train.checkpoint import CheckpointError
    from fss_train.metrics import coco_eval, coco_gt_from_dataset, dota_eval, read_dota_task2

    if metric not in ("coco", "dota"):
        fail(f"--metric must be coco or dota, got {metric!r}")
    if (model is None) == (predictions is None):
        fail("give a MODEL checkpoint or --predictions, not both")
    if not data:
        fail("--data is required")
    if alignment and model is None:
        fail("--alignment needs a MODEL checkpoint (it looks at every candidate point, not at saved detections)")
    align = None
    try:
        ds = _read_eval_dataset(data, split)
        if predictions is not None:
            p = Path(predictions)
            if p.is_dir():
                preds = read_dota_task2(p, ds)
            else:
                preds = json.loads(p.read_text())
                if not isinstance(preds, list):
                    raise ValueError(f"{p}: a COCO results json is a list of detections")
        else:
            preds, align = _predict_with(model, ds, imgsz, batch, device, alignment)
        if metric == "coco":
            gt = data if data.endswith(".json") and predictions is not None else coco_gt_from_dataset(ds)
            result = coco_eval(gt, preds, max_dets=max_dets)
        else:
            result = dota_eval(ds, preds)
    except (ValueError, FileNotFoundError, CheckpointError, KeyError) as exc:
        fail(str(exc))
    if metric == "coco":
        for k, v in result.items():
            console.print(f"{k:6s} {v:.4f}")
    else:
        for k, v in result["per_class"].items():
            console.print(f"{k:20s} {v:.4f}")
        console.print(f"[bold]mAP50 (VOC07, DOTA devkit) {result['mAP50']:.4f}[/]")
    if align is not None:
        console.print(f"task alignment over {align['num_gt']} GTs (candidates: inside the box or within "
                      f"{align['radius']} strides of its centre): rank consistency {align['rank_consistency']:.4f}, "
                      f"top-1 agreement {align['top1_agreement']:.4f}, top-1 IoU {align['top1_iou']:.4f} "
                      f"(best {align['best_iou']:.4f})")
    if json_out:
        from fss_train.fileio import atomic_write
        record = {"metric": metric, "result": result, "num_predictions": len(preds)}
        if align is not None:
            record["alignment"] = align
        atomic_write(json_out, json.dumps(record, indent=2))


def _read_eval_dataset(data: str, split: str):
    from fss_train.data import read_dataset

    if data.endswith((".yaml", ".yml")):
        try:
            return read_dataset(data, split)
        except ValueError:
            return read_dataset(data, "train")
    return read_dataset(data)


def _predict_with(model_path: str, ds, imgsz, batch: int, device: str, alignment: bool = False) -> tuple:
    """COCO predictions of a checkpoint over ``ds`` and, with ``alignment``, its task alignment on the same
    loaded model and loader. Returns (predictions, alignment dict or None)."""
    import torch

    from fss_train.alignment import task_alignment
    from fss_train.checkpoint import load_model
    from fss_train.data.loader import DetectionDataset, make_loader
    from fss_train.engine import predict

    model, ckpt = load_model(model_path)
    if ckpt["class_names"] != ds.classes:
        raise ValueError(f"{model_path}: classes {ckpt['class_names']} differ from the dataset's {ds.classes}")
    size = imgsz or ckpt["input_size"][0]
    dev = torch.device(device)
    model = model.to(dev)
    loader = make_loader(DetectionDataset(ds, size), batch, shuffle=False, workers=0)
    preds = predict(model, loader, dev, conf=0.001, iou=0.65, max_det=300)
    return preds, task_alignment(model, loader, dev) if alignment else None


@app.command()
def export(source: Annotated[str, typer.Argument(help="checkpoint (.pt), or the word 'compare'")],
           other: Annotated[str | None, typer.Argument(help="with compare: A")] = None,
           third: Annotated[str | None, typer.Argument(help="with compare: B")] = None,
           format: Annotated[str, typer.Option(help="onnx | engine (TensorRT)")] = "onnx",
           imgsz: Annotated[int | None, typer.Option(help="input size (default: the checkpoint's)")] = None,
           batch: Annotated[int, typer.Option(help="static batch (tiles per call), or the profile's opt batch")] = 1,
           dynamic: Annotated[bool, typer.Option(help="dynamic batch axis")] = False,
           half: Annotated[bool, typer.Option(help="FP16 (default: strict FP32)")] = False,
           opset: Annotated[int, typer.Option(help="ONNX opset")] = 17,
           out: Annotated[str | None, typer.Option(help="output path (default: next to the checkpoint)")] = None,
           verify: Annotated[bool, typer.Option(help="onnxruntime vs torch on real images")] = False,
           verify_images: Annotated[list[str] | None, typer.Option(help="images for --verify")] = None,
           weights: Annotated[str, typer.Option(help="ema | raw")] = "ema"):
    """Export a checkpoint to ONNX or a TensorRT engine; `fss export compare A B` proves two graphs identical."""
    from pathlib import Path

    from fss_deploy.export import ExportError, compare, export_onnx, verify_onnx
    from fss_train.checkpoint import CheckpointError

    if source == "compare":
        if not other or not third:
            fail("usage: fss export compare A B (checkpoints or ONNX files)")
        try:
            result = compare(other, third, imgsz)
        except (ExportError, CheckpointError) as exc:
            fail(str(exc))
        for tag in ("a", "b"):
            d = result[tag]
            console.print(f"{tag.upper()}: {d['file']}\n   trained with {d['trained_with']}, fingerprint "
                          f"{d['fingerprint']}\n   params {d['params']:,}, FLOPs {d['flops'] / 1e9:.3f} G",
                          highlight=False)
        if result["identical"]:
            console.print("[bold green]IDENTICAL[/] graph structure, parameter count and FLOPs")
            return
        console.print("[bold red]DIFFERENT[/]:")
        for line in result["differences"]:
            console.print(f"  {line}", highlight=False)
        raise typer.Exit(1)
    if other or third:
        fail("export takes one checkpoint (or: fss export compare A B)")
    if format not in ("onnx", "engine"):
        fail(f"--format must be onnx or engine, got {format!r}")
    if weights not in ("ema", "raw"):
        fail(f"--weights must be ema or raw, got {weights!r}")
    onnx_out = out if (out and format == "onnx") else None
    try:
        if format == "engine":
            from fss_deploy.tensorrt import import_tensorrt
            import_tensorrt()
        res = export_onnx(source, onnx_out, imgsz, batch, dynamic, half, opset, weights)
        console.print(f"ONNX: {res.path}  fingerprint {res.fingerprint[:16]}…  params {res.params:,}  "
                      f"FLOPs {res.flops / 1e9:.3f} G", highlight=False)
        if verify:
            from fss_deploy.detect import resolve_sources
            images = (resolve_sources(verify_images) if verify_images
                      else _sample_images(json.loads(res.metadata["input_size"])[0]))
            if not images:
                fail(f"--verify-images: no images found in {verify_images}")
            report = verify_onnx(res.path, source, images, weights)
            # the raw outputs decide: within float32 tolerance, detections can only differ where a score sits at
            # --conf or two boxes at the NMS threshold (a weak model has many such borderline cases)
            status = "[green]OK[/]" if report["within_tolerance"] else "[red]MISMATCH[/]"
            borderline = "" if report["detection_f1"] >= 0.99 or not report["within_tolerance"] else \
                " (the differing detections are threshold ties: raw outputs agree)"
            console.print(f"verify {status}: {report['images']} images, max |raw diff| "
                          f"{report['max_abs_diff_raw']:.2e} (tolerance {report['atol']:.0e} + {report['rtol']:.0e} × "
                          f"the largest raw box value + float32 resolution; worst excess "
                          f"{report['max_excess_over_tolerance']:+.1e}), detections "
                          f"{report['detections_torch']} torch / {report['detections_onnx']} onnxruntime, "
                          f"F1 {report['detection_f1']:.4f}{borderline}", highlight=False)
            if "MISMATCH" in status:
                raise typer.Exit(1)
        final = res.path
        if format == "engine":
            from fss_deploy.tensorrt import build_engine
            engine = Path(out) if out else res.path.with_suffix(".engine")
            final = build_engine(res.path, engine, half, batch, dynamic, source_checkpoint=str(source))
            console.print(f"engine: {final} (+ {final.name}.json)")
    except typer.Exit:
        raise                                   # a MISMATCH verdict (typer's Exit is a RuntimeError)
    except (ExportError, CheckpointError, FileNotFoundError, RuntimeError, ValueError) as exc:
        fail(str(exc))
    size = imgsz or json.loads(res.metadata["input_size"])[0]
    console.print("next:", highlight=False)
    console.print(f"  fss detect IMAGES --model {final} --tile {size} --batch {batch}", highlight=False)
    console.print(f"  fss bench {final} --imgsz {size}", highlight=False)


def _sample_images(size: int) -> list[str]:
    """Verification images when none are given: a synthetic aerial scene made on the fly."""
    import tempfile

    from fss_train.data.synth import SynthConfig, make_scene

    img, *_ = make_scene(SynthConfig(num_images=1, size=size, objects=max(10, size // 16), min_size=max(8, size / 40),
                                     max_size=max(24, size / 6), seed=123), 0)
    from fss_train.fileio import write_image

    return [str(write_image(Path(tempfile.mkdtemp(prefix="fss-verify-")) / "scene.png", img))]


@app.command()
def detect(sources: Annotated[list[str] | None, typer.Argument(help="images, folders, globs or .txt lists")] = None,
           model: Annotated[str | None, typer.Option(help=".pt, .onnx or .engine (default: bundled model)")] = None,
           backend: Annotated[str | None, typer.Option(help="torch | onnxruntime | tensorrt (default: by file)")]
           = None,
           device: Annotated[str, typer.Option(help="cpu | cuda[:N]")] = "cpu",
           tile: Annotated[int | None, typer.Option(help="tile side (default: the model's input size)")] = None,
           overlap: Annotated[int, typer.Option(help="overlap between tiles, px")] = 200,
           batch: Annotated[int, typer.Option(help="tiles per backend call")] = 8,
           conf: Annotated[float, typer.Option(help="score threshold")] = 0.25,
           iou: Annotated[float, typer.Option(help="class-aware NMS IoU for the merge")] = 0.5,
           full_image: Annotated[bool, typer.Option(help="add a whole-image pass for objects larger than a tile")]
           = False,
           out: Annotated[str, typer.Option(help="output folder (default runs/detect, runs/detect2, … for a run "
                                                  "with another model, settings or inputs)")] = "runs/detect",
           exist_ok: Annotated[bool, typer.Option(help="replace OUT's results when they came from another run")]
           = False,
           max_det: Annotated[int, typer.Option(help="detections kept per image (a warning names images that "
                                                    "reach it)")] = 10000,
           max_pixels: Annotated[int | None, typer.Option(help="refuse PNG/JPEG images with more pixels (default "
                                                             "20,000² = 400 M; decoded in memory)")] = None,
           save_images: Annotated[bool, typer.Option(help="write annotated images")] = False,
           formats: Annotated[str, typer.Option(help="comma-separated: coco,dota,yolo")] = "coco,dota,yolo",
           threads: Annotated[int, typer.Option(help="CPU threads for the backend (0: library default)")] = 0):
    """Tiled high-resolution detection over images and folders (DOTA-style 4000-20000 px aerial images)."""
    import os

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from fss_deploy.backends import load_backend
    from fss_deploy.detect import (
        DEFAULT_MODEL,
        FORMATS,
        SAMPLE_IMAGE,
        OutputConflict,
        TiledDetector,
        check_output_dir,
        prepare_output,
        resolve_sources,
        run_detect,
        run_identity,
        write_outputs,
    )
    from fss_deploy.export import ExportError
    from fss_train.checkpoint import CheckpointError

    fmts = tuple(f.strip() for f in formats.split(",") if f.strip())
    bad = [f for f in fmts if f not in FORMATS]
    if bad:
        fail(f"--formats: unknown {bad}; choose from {', '.join(FORMATS)}")
    if model is None:
        if not DEFAULT_MODEL.is_file():
            fail(f"no --model given and the bundled default model {DEFAULT_MODEL.name} is not in models/ yet; "
                 "pass --model FILE (.pt, .onnx or .engine)")
        model = str(DEFAULT_MODEL)
    if not sources:
        if not SAMPLE_IMAGE.is_file():
            fail(f"no SOURCE given and the bundled sample {SAMPLE_IMAGE.name} is missing; pass images or folders")
        sources = [str(SAMPLE_IMAGE)]
    out_dir = Path(out)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if not str(model).endswith((".pt", ".pth")) or (backend and backend != "torch"):
        from fss_deploy.backends import torch_postprocess_only
        torch_postprocess_only()
    try:
        check_output_dir(out_dir)
        paths = resolve_sources(sources)
        if not paths:
            fail(f"no images found in {sources}")
        engine = load_backend(model, backend, f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
                              if device.startswith("cuda") and world > 1 else device, threads=threads)
        detector = TiledDetector(engine, tile, overlap, batch, conf, iou, full_image, max_det)
        if world > 1:
            import torch.distributed as dist
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        identity = run_identity(detector, Path(model))
        if rank == 0:
            out_dir = prepare_output(out_dir, identity, exist_ok, increment=out == "runs/detect")
        if world > 1:
            dist.barrier()
            if rank:
                out_dir = prepare_output(out_dir, identity, False, increment=out == "runs/detect")
    except (ExportError, CheckpointError, FileNotFoundError, PermissionError, ValueError, RuntimeError,
            OutputConflict) as exc:
        fail(str(exc))
    progress = Progress(TextColumn("[bold]detect"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err, disable=rank != 0)
    with progress:
        task = progress.add_task("detect", total=len(paths[rank::world]), info="")

        def on_image(path, dets):
            info = f"{path.name}: failed" if dets is None else f"{path.name}: {len(dets)} objects"
            progress.update(task, advance=1, info=info)

        try:
            summary = run_detect(paths, detector, out_dir, fmts, save_images, rank, world, on_image, max_pixels)
        except OSError as exc:
            fail(_write_failure(out_dir, exc))
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
    if rank == 0:
        summaries = [json.loads((out_dir / f".summary.rank{r}.json").read_text()) for r in range(world)]
        try:
            summary = write_outputs(paths, out_dir, engine.class_names, fmts, summaries)
        except OSError as exc:
            fail(_write_failure(out_dir, exc))
        for f in summary["failed"]:
            err.print(f"[yellow]skipped:[/] {f['error']}", highlight=False)
        for f in summary["hit_max_det"]:
            err.print(f"[yellow]warning:[/] {f}: {max_det} detections, the --max-det cap; raise it to keep more",
                      highlight=False)
        console.print(f"{summary['images']} images ({summary['processed']} processed, {summary['skipped_done']} "
                      f"already done, {len(summary['failed'])} failed): {summary['detections']} detections, "
                      f"{summary['seconds_per_image']:.2f} s/image, {summary['tiles_per_s']:.1f} tiles/s -> {out_dir}",
                      highlight=False)
    if world > 1:
        import torch.distributed as dist
        dist.destroy_process_group()
    if summary["failed"]:
        raise typer.Exit(1)


@app.command()
def bench(target: Annotated[str, typer.Argument(help="model file, or 'overhead' / 'tiled'")],
          second: Annotated[str | None, typer.Argument(help="overhead: A; tiled: IMAGE")] = None,
          third: Annotated[str | None, typer.Argument(help="overhead: B")] = None,
          model: Annotated[str | None, typer.Option(help="tiled: the model")] = None,
          backend: Annotated[str | None, typer.Option(help="torch | onnxruntime | tensorrt")] = None,
          device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
          imgsz: Annotated[int | None, typer.Option(help="input size (torch backend)")] = None,
          batch: Annotated[int, typer.Option(help="batch (1 for the paper's setting)")] = 1,
          warmup: Annotated[int, typer.Option(help="untimed runs first")] = 50,
          iters: Annotated[int, typer.Option(help="timed runs")] = 300,
          threads: Annotated[int, typer.Option(help="CPU threads (0: library default)")] = 0,
          overlap: Annotated[int, typer.Option(help="tiled: overlap between tiles, px")] = 200,
          out: Annotated[str, typer.Option(help="report folder")] = "runs/bench"):
    """Latency/FPS at batch 1 FP32 (`fss bench MODEL`), the zero-overhead report (`fss bench overhead A B`),
    tiled throughput (`fss bench tiled IMAGE --model M`). Writes report.md, report.json (and latency.png)."""
    from fss_deploy.backends import torch_postprocess_only
    from fss_deploy.bench import bench_model, bench_overhead, bench_tiled, write_report
    from fss_deploy.export import ExportError
    from fss_train.checkpoint import CheckpointError

    if iters < 1 or warmup < 0 or batch < 1:
        fail(f"--iters and --batch must be at least 1 and --warmup at least 0, got {iters}, {batch}, {warmup}")
    models = [m for m in (target, second, third, model) if m and m not in ("overhead", "tiled")]
    if not threads and all(not m.endswith((".pt", ".pth")) for m in models if Path(m).suffix in
                           (".pt", ".pth", ".onnx", ".engine")):
        torch_postprocess_only()

    try:
        if target == "overhead":
            if not second or not third:
                fail("usage: fss bench overhead A B")
            report = bench_overhead(second, third, imgsz, warmup, iters, threads, device)
            path = write_report(report, out, "overhead")
            verdict = "[bold green]IDENTICAL GRAPH[/]" if report["identical_graph"] else "[bold red]DIFFERENT[/]"
            console.print(f"{verdict}: params {report['a']['params']:,} / {report['b']['params']:,}, GFLOPs "
                          f"{report['a']['flops'] / 1e9:.3f} / {report['b']['flops'] / 1e9:.3f}; latency A/B "
                          f"{report['ratio_a_over_b']:.3f} (95% CI {report['ratio_ci95'][0]:.3f}–"
                          f"{report['ratio_ci95'][1]:.3f}) -> {path}/report.md")
            for d in report["differences"]:
                console.print(f"  {d}", highlight=False)
            if not report["identical_graph"]:
                raise typer.Exit(1)
            return
        if target == "tiled":
            if not second or not model:
                fail("usage: fss bench tiled IMAGE --model MODEL")
            report = bench_tiled(second, model, backend, batch if batch > 1 else 8, overlap, threads=threads,
                                 device=device)
            path = write_report(report, out, "tiled")
            console.print(f"{report['seconds_per_image']:.3f} s/image, {report['tiles_per_s']:.1f} tiles/s, outside "
                          f"the model {100 * report['outside_model_fraction']:.1f}% -> {path}/report.md")
            return
        if second or third:
            fail("fss bench takes one model (or: overhead A B, tiled IMAGE --model M)")
        report = bench_model(target, backend, imgsz, batch, warmup, iters, threads, device)
        path = write_report(report, out, "latency")
        st = report["stages"]
        console.print(f"{report['input']} {report['environment']['backend']} {report['environment']['precision']}: "
                      f"preprocess {st['preprocess']['median_ms']:.2f} ms, inference {st['inference']['median_ms']:.2f}"
                      f" ms (p90 {st['inference']['p90_ms']:.2f}), postprocess {st['postprocess']['median_ms']:.2f} ms;"
                      f" {report['fps']:.1f} FPS -> {path}/report.md")
        if report.get("trtexec"):
            console.print(f"trtexec equivalent: {report['trtexec']}", highlight=False)
    except (ExportError, CheckpointError, FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(str(exc))


@app.command()
def demo(out: Annotated[str, typer.Option(help="output folder")] = "runs/demo",
         quick: Annotated[bool, typer.Option(help="tiny budget (the test suite's: under a minute)")] = False,
         seed: Annotated[int, typer.Option(help="seed of data and training")] = 0):
    """The main job end to end: synthetic data, FSS vs SimOTA training, export, identical graphs, tiled
    detection on a large scene, benchmark, report.md."""
    from fss.demo import StageError, run_demo

    _writable_out(out)
    try:
        run_demo(out, quick, console, seed)
    except StageError as exc:
        fail(str(exc))


@app.command()
def assign(image: Annotated[str, typer.Argument(help="image file")],
           model: Annotated[str, typer.Option(help="checkpoint (.pt) or model card (untrained: random predictions)")],
           gt: Annotated[str, typer.Option(help="labels: DOTA labelTxt, YOLO txt or COCO json")],
           out: Annotated[str, typer.Option(help="output PNG")] = "assign.png",
           assigner: Annotated[str, typer.Option(help="the assigner explained (fss)")] = "fss",
           vs: Annotated[str, typer.Option(help="baseline drawn beside it")] = "simota",
           imgsz: Annotated[int | None, typer.Option(help="network input size (default: model's)")] = None,
           num_gts: Annotated[int, typer.Option(help="ground truths shown, small to large")] = 3,
           seed: Annotated[int, typer.Option(help="seed of an untrained card's weights")] = 0):
    """Visualise a label assignment (the paper's Fig. 3): P, Gaussian prior, dynamic k, weights, vs a baseline."""
    from fss_train.assigners.figure import assignment_figure
    from fss_train.checkpoint import CheckpointError

    try:
        summary = assignment_figure(image, model, gt, out, assigner, vs, imgsz, num_gts, seed)
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        fail(str(exc))
    for row in summary["gts"]:
        console.print(f"GT {row['gt']}: k={row['k']} of {row['candidates']} candidates, FSS {row['fss_positives']} "
                      f"positives (weights {row['weights']}), {vs} {row[f'{vs}_positives']}")
    console.print(f"wrote {summary['png']}")


def _open_dataset(path: str, split: str = "train"):
    from fss_train.data import read_dataset

    try:
        return read_dataset(path, split)
    except ValueError as exc:
        fail(str(exc))


def _progress(total: int, label: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    progress = Progress("[bold]" + label, BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                        disable=total == 0)
    task = progress.add_task(label, total=total)
    return progress, lambda: progress.advance(task)


def _report_problems(problems, limit: int = 20) -> None:
    for p in problems[:limit]:
        err.print(f"[yellow]warning:[/] {p}", highlight=False, soft_wrap=True)
    if len(problems) > limit:
        err.print(f"[yellow]… and {len(problems) - limit} more problems[/]")


@data_app.command()
def convert(dataset: Annotated[str, typer.Argument(help="COCO json, YOLO data.yaml or DOTA folder")],
            to: Annotated[str, typer.Option(help="coco | yolo | dota")],
            out: Annotated[str, typer.Option(help="output folder")],
            split: Annotated[str, typer.Option(help="split of a data.yaml to read")] = "train"):
    """Convert a dataset between COCO, YOLO and DOTA."""
    from pathlib import Path

    from fss_train.data import write_coco, write_dota, write_yolo

    if to not in ("coco", "yolo", "dota"):
        fail(f"--to must be coco, yolo or dota, got {to!r}")
    ds = _open_dataset(dataset, split)
    _report_problems(ds.problems)
    _writable_out(out)
    if to == "coco":
        images = Path(out) / "images"
        images.mkdir(parents=True, exist_ok=True)
        from fss_train.data.formats import link_or_copy, output_stems
        for rec, name in zip(ds.records, output_stems(ds.records)):
            link_or_copy(rec.path, images / f"{name}{rec.path.suffix}")
            rec.path = images / f"{name}{rec.path.suffix}"
        path = write_coco(ds, Path(out) / "annotations.json", image_root=out)
    elif to == "yolo":
        path = write_yolo(ds, out, split)
    else:
        path = write_dota(ds, out)
    console.print(f"{len(ds.records)} images, {ds.num_objects} objects -> {path} "
                  f"({len(ds.problems)} problems reported)")


@data_app.command()
def split(dataset: Annotated[str, typer.Argument(help="COCO json, YOLO data.yaml or DOTA folder")],
          out: Annotated[str, typer.Option(help="output folder")],
          tile: Annotated[int, typer.Option(help="tile side, px")] = 1024,
          gap: Annotated[int, typer.Option(help="overlap between neighbouring tiles, px")] = 200,
          keep_ratio: Annotated[float, typer.Option(help="cut objects keeping less area are marked difficult")] = 0.7,
          workers: Annotated[int, typer.Option(help="parallel images")] = 2):
    """Cut large images into overlapping tiles (DOTA devkit semantics); rerunning skips finished images."""
    from fss_train.data.split import split_dataset

    ds = _open_dataset(dataset)
    _report_problems(ds.problems)
    progress, advance = _progress(len(ds.records), "splitting")
    try:
        with progress:
            tiled, problems = split_dataset(ds, out, tile, gap, keep_ratio, workers, advance)
    except ValueError as exc:
        fail(str(exc))
    _report_problems(problems)
    console.print(f"{len(ds.records)} images -> {len(tiled.records)} tiles, {tiled.num_objects} objects in {out}")
    if problems:
        raise typer.Exit(1)


@data_app.command()
def synth(out: Annotated[str, typer.Argument(help="output folder")],
          num_images: Annotated[int, typer.Option(help="images")] = 8,
          size: Annotated[int, typer.Option(help="image side, px")] = 512,
          objects: Annotated[int, typer.Option(help="objects per image")] = 40,
          min_size: Annotated[float, typer.Option(help="smallest object side, px")] = 8.0,
          max_size: Annotated[float, typer.Option(help="largest object side, px")] = 64.0,
          occlusion: Annotated[float, typer.Option(help="max covered fraction of an object's box")] = 0.3,
          truncation: Annotated[float, typer.Option(help="fraction of objects cut by the border")] = 0.05,
          seed: Annotated[int, typer.Option(help="random seed (same seed -> identical files)")] = 0):
    """Generate synthetic top-down aerial scenes (images/, annotations.json, labelTxt/)."""
    from fss_train.data.synth import SynthConfig, synthesize

    try:
        cfg = SynthConfig(num_images, size, objects, min_size, max_size, occlusion, truncation, seed)
    except ValueError as exc:
        fail(str(exc))
    progress, advance = _progress(num_images, "synthesizing")
    with progress:
        ds = synthesize(out, cfg, advance)
    console.print(f"{len(ds.records)} images, {ds.num_objects} objects -> {out}")


@data_app.command()
def check(dataset: Annotated[str, typer.Argument(help="COCO json, YOLO data.yaml or DOTA folder")],
          split: Annotated[str, typer.Option(help="split of a data.yaml")] = "train",
          decode: Annotated[bool, typer.Option(help="decode every image to find corrupt files")] = True,
          as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False):
    """Report counts per class, object sizes, objects per image and every problem (file and line)."""
    from fss_train.data.check import check_dataset

    ds = _open_dataset(dataset, split)
    progress, advance = _progress(len(ds.records) if decode else 0, "decoding")
    with progress:
        report = check_dataset(ds, decode, advance)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    console.print(f"[bold]{report['source']}[/]: {report['images']} images, {report['objects']} objects "
                  f"({report['difficult']} difficult)")
    table = Table("class", "objects")
    for name, n in report["per_class"].items():
        if n:
            table.add_row(name, str(n))
    console.print(table)
    sizes = Table("object size sqrt(area), px", "objects")
    for k, n in report["size_hist"].items():
        sizes.add_row(k, str(n))
    console.print(sizes)
    opi = report["objects_per_image"]
    console.print(f"objects per image: min {opi['min']}, median {opi['median']}, max {opi['max']}")
    for line in report["problems"]:
        console.print(f"[yellow]problem:[/] {line}", highlight=False, soft_wrap=True)
    console.print(f"{len(report['problems'])} problems: {report['problem_counts']}")


if __name__ == "__main__":
    app()

"""The ``fss`` command: option parsing and printing over the Python API (fss.api, fss.detector).

Sub-command groups live beside it: cli_deploy.py (export, bench), cli_data.py (data); shared pieces in
clikit.py."""

from __future__ import annotations

import errno
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from fss.cli_data import data_app
from fss.cli_deploy import bench_app, export_app
from fss.clikit import (
    HELP,
    Backend,
    Device,
    Imgsz,
    Precision,
    console,
    fail,
    one_line_summaries,
    report_file,
    report_folder,
    size_option,
    user_errors,
    writable_out,
)
from fss.progress import err
from fss_core import defaults as DET
from fss_core.launch import rank_and_world


class T:
    """The options of ``fss train``."""
    Data = Annotated[str | None, typer.Option(help="COCO json, YOLO data.yaml or DOTA folder (with --resume: the "
                                                    "run's own)", show_default=False)]
    Model = Annotated[str, typer.Option(help="card name (fss-n … fss-x, fss-r50/r101) or card YAML")]
    Assigner = Annotated[str, typer.Option(help="fss | simota | tal | atss | maxiou")]
    Task = Annotated[str, typer.Option(help="detect (horizontal boxes) | obb (oriented boxes)")]
    Epochs = Annotated[int, typer.Option(help="total epochs (with --resume: extend to this many)")]
    Batch = Annotated[int, typer.Option(help="images per step over all processes")]
    Size = Annotated[int, typer.Option(help="square training size, multiple of 32")]
    Nproc = Annotated[int, typer.Option(help="processes (DDP through torch.distributed.run)")]
    Out = Annotated[str, typer.Option(help="run folder (runs/train, then runs/train2, … when it holds a run)")]
    Val = Annotated[str, typer.Option(help="validation dataset (default: data.yaml val split, else --data)")]
    Workers = Annotated[int, typer.Option(help="data loader workers per process")]
    Resume = Annotated[bool, typer.Option(help="continue from OUT/last.pt with the run's own settings (options "
                                                "given here change them: --epochs extends it)")]
    ExistOk = Annotated[bool, typer.Option(help="start over in an OUT that already holds a run")]
    Set = Annotated[list[str] | None, typer.Option("--set", help="override: key=value (see fss_train/config.py)")]
    Weights = Annotated[str | None, typer.Option(help="fine-tune: start from this fss checkpoint, or a YOLOX / "
                                                      "torchvision ResNet file (converted on the fly, as fss convert; "
                                                      "layers matched by name and shape; class head re-initialised if "
                                                      "classes differ)")]
    Freeze = Annotated[str, typer.Option(help="backbone | backbone+neck: not trained")]


class D:
    """The options of ``fss detect``."""
    Sources = Annotated[list[str] | None, typer.Argument(help="images, folders, globs or .txt lists")]
    Model = Annotated[str | None, typer.Option(help=".pt, .onnx or .engine (default: bundled model)")]
    Tile = Annotated[int | None, typer.Option(help="tile side (default: the model's input size)")]
    Overlap = Annotated[float, typer.Option(help="overlap between tiles: px, or a fraction of the tile below 1 (0.2)")]
    Batch = Annotated[int, typer.Option(help="tiles per backend call")]
    Conf = Annotated[float, typer.Option(help="score threshold")]
    Iou = Annotated[float, typer.Option(help="the merge's threshold (IoU or IOS, see --match)")]
    FullImage = Annotated[bool, typer.Option(help="add a whole-image pass for objects larger than a tile")]
    Out = Annotated[str, typer.Option(help="output folder (default runs/detect, runs/detect2, … for a run with "
                                           "another model, settings or inputs)")]
    ExistOk = Annotated[bool, typer.Option(help="replace OUT's results when they came from another run")]
    MaxDet = Annotated[int | None, typer.Option(help=f"detections kept per image (default: {DET.max_det_rule()}); a "
                                                     "warning names images that reach it")]
    MaxPixels = Annotated[int | None, typer.Option(help="refuse PNG/JPEG images with more pixels (default 20,000² "
                                                        "= 400 M; decoded in memory)", min=1)]
    SaveImages = Annotated[bool, typer.Option(help="write annotated images")]
    Formats = Annotated[str, typer.Option(help="comma-separated: coco,dota,yolo,geojson (geojson: georeferenced "
                                               "GeoTIFFs)")]
    Bands = Annotated[str | None, typer.Option(help="GeoTIFF bands read as red,green,blue, 1-based (3,2,1; one "
                                                    "band: grey); default the first three colour bands")]
    Stretch = Annotated[str, typer.Option(help="GeoTIFFs other than 8 bit: low,high percentiles per band "
                                               "scaled to 0,255")]
    Merge = Annotated[str, typer.Option(help="tile merge: nms (suppress) | nmm (merge into the kept box, SAHI's "
                                             "NMM)")]
    Match = Annotated[str, typer.Option(help="overlap measure of the merge: iou | ios (over the smaller box)")]
    Agnostic = Annotated[bool, typer.Option("--agnostic", help="the merge ignores classes")]
    Classes = Annotated[str | None, typer.Option(help="detect only these classes: names or indices, "
                                                      "comma-separated (small-vehicle,ship or 9,10)")]
    ToWgs84 = Annotated[bool, typer.Option("--to-wgs84", help="GeoJSON in longitude/latitude (default: the "
                                                                "raster's CRS)")]
    Threads = Annotated[int, typer.Option(help="CPU threads for the backend (0: library default)")]


app = typer.Typer(help="fss: train detectors with the FSS label assignment and deploy them fast.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, context_settings=HELP)
app.add_typer(data_app, name="data")
app.add_typer(export_app, name="export")
app.add_typer(bench_app, name="bench")


def _version(value: bool) -> None:
    if value:
        from fss import __version__
        console.print(f"fss {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="print the version and exit")] = False):
    """fss: train detectors with the FSS label assignment and deploy them fast."""


@app.command()
def info(target: Annotated[str, typer.Argument(help="checkpoint (.pt), ONNX file, card name (fss-s) or card YAML")],
         imgsz: Annotated[int | None, size_option("input size for the FLOPs count")] = None,
         as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False):
    """What a checkpoint, ONNX file or model card describes: architecture, classes, input size, params, FLOPs."""
    from fss_deploy.info import describe, readable

    with user_errors():
        facts = describe(target, imgsz)
    if as_json:
        print(json.dumps(facts, indent=2, default=str))
        return
    table = Table(show_header=False, box=None)
    for key, value in readable(facts).items():
        table.add_row(f"[bold]{key}[/]", escape(str(value)))
    console.print(table)


@app.command()
def train(ctx: typer.Context, data: T.Data = None, model: T.Model = "fss-n", assigner: T.Assigner = "fss",
          task: T.Task = "detect", epochs: T.Epochs = 100, batch: T.Batch = 16, imgsz: T.Size = 640,
          device: Device = "auto", nproc: T.Nproc = 1, out: T.Out = "runs/train", val: T.Val = "",
          workers: T.Workers = 2, resume: T.Resume = False, exist_ok: T.ExistOk = False, weights: T.Weights = None,
          freeze: T.Freeze = "", set_: T.Set = None):
    """Train a detector with FSS or a baseline assigner. Writes config.yaml, results.csv/png, last.pt, best.pt, and
    after the last epoch PR_curve.png and confusion_matrix.png of that epoch's model. `fss train --resume --out RUN`
    continues RUN with its own settings."""
    from fss.api import next_free_run
    from fss.api import train as train_api
    from fss.progress import TrainProgress
    from fss_train.config import parse_overrides

    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        _relaunch_distributed(nproc)
    out = str(next_free_run(out)) if out == "runs/train" and not (resume or exist_ok) else out
    settings = {"model": model, "assigner": assigner, "task": task, "epochs": epochs, "batch": batch, "imgsz": imgsz,
                "val": val, "workers": workers, "weights": weights, "freeze": freeze}
    if resume:              # the run's own settings, except those given on this command line
        # by name: typer carries its own copy of click, whose ParameterSource is another class
        settings = {k: (None if getattr(ctx.get_parameter_source(k), "name", "DEFAULT") == "DEFAULT" else v)
                    for k, v in settings.items()}
    elif not data:
        fail("--data is required (a COCO json, a YOLO data.yaml or a DOTA folder)")
    writable_out(out)
    with user_errors(), TrainProgress() as progress:
        try:
            run = train_api(data or "", **settings, device=device, out=out, resume=resume, exist_ok=exist_ok,
                            overrides=parse_overrides(set_ or []), progress=progress,
                            log=lambda m: err.print(m, markup=False, highlight=False, soft_wrap=True))
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    best = run.best_epoch
    if best:
        console.print(f"done: best epoch {best['epoch']} (AP {best['AP']:.4f}, AP50 {best['AP50']:.4f}) -> {run.best}; "
                      f"last epoch -> {run.last}; curves in {out}/results.csv", markup=False, highlight=False)


def _relaunch_distributed(nproc: int) -> None:
    """Re-run this very command under torch.distributed.run with one process per rank."""
    import subprocess

    argv = [a for i, a in enumerate(sys.argv[1:]) if a != "--nproc" and not a.startswith("--nproc=")
            and (i == 0 or sys.argv[i] != "--nproc")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "fss",
           *argv]
    raise typer.Exit(subprocess.call(cmd))


@app.command(name="eval")
def evaluate(model: Annotated[str | None, typer.Argument(help="checkpoint (.pt)")] = None,
             data: Annotated[str, typer.Option(help="ground truth: COCO json, data.yaml or DOTA folder")] = "",
             predictions: Annotated[str | None, typer.Option(help="COCO results json, fss detect folder, or a DOTA "
                                                                  "Task2 (boxes) or Task1 (oriented) folder")] = None,
             metric: Annotated[str, typer.Option(help="coco | dota")] = "coco",
             split: Annotated[str, typer.Option(help="split of a data.yaml")] = "val",
             imgsz: Imgsz = None, batch: Annotated[int, typer.Option(help="images per batch", min=1)] = 8,
             device: Device = "auto",
             json_out: Annotated[str | None, typer.Option("--json", help="also write the metrics to this file")]
             = None,
             out: Annotated[str, typer.Option(help="folder for metrics.json, predictions.json, PR_curve.png, "
                                                   "confusion_matrix.png (default runs/eval, runs/eval2, …)")]
             = "runs/eval",
             exist_ok: Annotated[bool, typer.Option(help="write into an --out that holds files; replace an existing "
                                                        "--json file")] = False,
             max_dets: Annotated[int, typer.Option(help="COCO detections per image (100 = COCO; raise it for dense "
                                                        "aerial images)")] = 100,
             alignment: Annotated[bool, typer.Option(help="also measure task alignment: Spearman(score, IoU) over "
                                                          "each GT's candidate points, top-1 agreement, top-1 IoU")]
             = False,
             coco_engine: Annotated[str, typer.Option(help="auto | faster-coco-eval | pycocotools: who runs "
                                                           "pycocotools' COCOeval (the same numbers; faster-coco-eval "
                                                           "is its C++ port, 50× faster on dense images)")] = "auto",
             dota_ap: Annotated[str, typer.Option(help="voc07 | voc12: the DOTA metric's AP (the devkit's 11-point "
                                                       "VOC07 by default)")] = "voc07"):
    """Evaluate a model or saved predictions (COCO metrics as pycocotools' COCOeval, or the DOTA devkit's VOC07
    mAP)."""
    from fss.api import evaluate as evaluate_api
    from fss.progress import work_bar
    from fss_core.fileio import atomic_write

    if json_out:                                  # it may be anything, a ground truth json too
        report_file(json_out, exist_ok, "--json")
    with user_errors():
        out = report_folder(out, "runs/eval", exist_ok)
        existed = Path(out).exists()
        writable_out(out)
        bar, progress = work_bar("eval")
        try:
            with bar:
                record = evaluate_api(model, data, predictions=predictions, metric=metric, split=split, imgsz=imgsz,
                                      batch=batch, device=device, max_dets=max_dets, alignment=alignment, out=out,
                                      coco_engine=coco_engine, dota_ap=dota_ap, progress=progress)
        except BaseException:
            if not existed and Path(out).is_dir() and not any(Path(out).iterdir()):
                Path(out).rmdir()                        # a failed eval leaves no empty folder behind
            raise
    _print_metrics(record)
    if json_out:
        atomic_write(json_out, json.dumps({k: v for k, v in record.items() if v is not None}, indent=2))
    if record.get("problems"):                   # Task1 lines skipped (printed with the metrics): not a clean run
        raise typer.Exit(1)
    if record.get("unreadable_images"):
        bad = record["unreadable_images"]
        err.print(f"[yellow]warning:[/] {len(bad)} unreadable image(s) left out of the evaluation (neither scored "
                  f"nor counted as missed): {escape(', '.join(bad[:5]))}{' …' if len(bad) > 5 else ''}",
                  highlight=False)
        raise typer.Exit(1)


def _print_metrics(record: dict) -> None:
    result, align = record["result"], record["alignment"]
    coco, task1 = record["metric"] == "coco", record.get("task") == "Task1"
    ap = result.get("ap", "voc07").upper()
    columns = ("AP", "AP50") if coco else (f"AP50 ({ap})", "AP .50:.95") if task1 else ("AP50 (VOC07)",)
    keys = ("AP", "AP50") if coco else ("AP50", "AP") if task1 else ("AP50",)
    table = Table("class", *columns)
    for name, v in record["per_class"].items():
        table.add_row(escape(name), *(f"{v[k]:.4f}" if v[k] >= 0 else "no GT" for k in keys))
    console.print(table)
    if coco:
        cap = record.get("max_dets") or 100
        for k, v in result.items():      # COCO's third recall is at the detection cap: AR100 only when it is 100
            console.print(f"{k if k != 'AR100' or cap == 100 else f'AR@{cap}':6s} {v:.4f}")
        console.print(f"(COCOeval by {record['coco_engine']})", highlight=False)
    elif task1:
        rotated = result["rotated_coco"]
        console.print(f"[bold]mAP50 ({ap}, DOTA devkit Task1, polygon IoU > 0.5) {result['mAP50']:.4f}[/]")
        console.print(f"rotated mAP .50:.95 (COCO-style, polygon IoU) {rotated['mAP']:.4f}, "
                      f"mAP75 {rotated['mAP75']:.4f}")
        for p in record.get("problems") or []:
            err.print(f"[yellow]warning:[/] {escape(p)}", highlight=False, soft_wrap=True)
    else:
        console.print(f"[bold]mAP50 (VOC07, DOTA devkit) {result['mAP50']:.4f}[/]")
    if record.get("classes_note"):
        err.print(f"[yellow]note:[/] {escape(record['classes_note'])}", highlight=False)
    for advice in ("max_dets_advice", "scale_advice"):
        if record.get(advice):
            err.print(f"[yellow]warning:[/] {escape(record[advice])}", highlight=False)
    if record.get("out"):
        made = "metrics" if task1 else "metrics, predictions, PR curve and confusion matrix"
        console.print(f"{made} -> {record['out']}", markup=False,
                      highlight=False)
    if align is not None:
        console.print(f"task alignment over {align['num_gt']} GTs (candidates: inside the box or within "
                      f"{align['radius']} strides of its centre): rank consistency {align['rank_consistency']:.4f}, "
                      f"top-1 agreement {align['top1_agreement']:.4f}, top-1 IoU {align['top1_iou']:.4f} "
                      f"(best {align['best_iou']:.4f})")


@app.command()
def detect(sources: D.Sources = None, model: D.Model = None, backend: Backend = None, device: Device = "auto",
           tile: D.Tile = None, overlap: D.Overlap = DET.OVERLAP, batch: D.Batch = DET.BATCH, conf: D.Conf = DET.CONF,
           iou: D.Iou = DET.IOU, full_image: D.FullImage = False, out: D.Out = "runs/detect",
           exist_ok: D.ExistOk = False, max_det: D.MaxDet = None, max_pixels: D.MaxPixels = None,
           save_images: D.SaveImages = False, formats: D.Formats = ",".join(DET.FORMATS), threads: D.Threads = 0,
           bands: D.Bands = None, stretch: D.Stretch = ",".join(f"{v:g}" for v in DET.DEFAULT_STRETCH),
           to_wgs84: D.ToWgs84 = False, merge: D.Merge = DET.MERGE, match: D.Match = DET.MATCH,
           agnostic: D.Agnostic = False, classes: D.Classes = None, precision: Precision = "fp32"):
    """Tiled high-resolution detection over images and folders (DOTA-style 4000 px aerial images; GeoTIFFs of any
    size read window by window, with GeoJSON on the map)."""
    from fss.detector import DEFAULT_MODEL_NOTICE, Detector, check_formats, image_paths
    from fss.progress import counter, tile_counter
    from fss_deploy.detect import DEFAULT_MODEL, SAMPLE_IMAGE

    with user_errors():
        rank, world = rank_and_world()
        if model is None:
            err.print(f"[yellow]notice:[/] {escape(DEFAULT_MODEL_NOTICE)}", highlight=False)
        fmts = check_formats([f.strip() for f in formats.split(",") if f.strip()])
        detector = Detector(model or DEFAULT_MODEL, device=device, backend=backend, tile=tile, overlap=overlap,
                            batch=batch, conf=conf, iou=iou, full_image=full_image, max_det=max_det, threads=threads,
                            bands=bands, stretch=stretch, merge=merge, match=match, class_agnostic=agnostic,
                            classes=classes, precision=precision)
        paths = image_paths(sources or [str(SAMPLE_IMAGE)])          # resolved once, here
        progress, advance = counter(len(paths[rank::world]), "detect", rank)
        with progress, _disk_errors_resume(Path(out)):
            summary = detector.run(paths, out, formats=fmts, save_images=save_images, exist_ok=exist_ok,
                                   max_pixels=max_pixels, to_wgs84=to_wgs84,
                                   on_tiles=tile_counter(progress),
                                   on_image=lambda p, d: advance(
                                       f"{p.name}: " + ("failed" if d is None else f"{len(d)} objects")))
    if rank == 0:
        _print_detect_summary(summary)
    if summary["failed"]:
        raise typer.Exit(1)


@contextmanager
def _disk_errors_resume(out: Path):
    """A write that fails mid-run (disk full, permissions) -> one line: what is kept and how to go on."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None:                       # ours (a message), not the disk's: user_errors says it
            raise
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)    # only then is "free space" the advice
        fail(f"{out}: cannot write {Path(exc.filename).name if exc.filename else 'results'} ({exc.strerror or exc});"
             f" every image finished before is kept in {out}/.per_image — {'free space and ' if full else ''}rerun "
             "the same command to resume")


def _print_detect_summary(s: dict) -> None:
    for f in s["failed"]:
        err.print(f"[yellow]skipped:[/] {escape(f['error'])}", highlight=False)
    for f in s["hit_max_det"]:
        cap = f"the default per-image cap ({DET.max_det_rule()})" if s["max_det"] == "auto" else \
            f"the --max-det cap ({s['max_det']})"
        err.print(f"[yellow]warning:[/] {escape(f)}: detections reached {cap}; raise --max-det to keep more",
                  highlight=False)
    console.print(f"{s['images']} images ({s['processed']} processed, {s['skipped_done']} already done, "
                  f"{len(s['failed'])} failed): {s['detections']} detections, {s['seconds_per_image']:.2f} s/image, "
                  f"{s['tiles_per_s']:.1f} tiles/s -> {s['out']}", markup=False, highlight=False)
    b = s.get("backend") or {}
    if b:
        console.print(f"backend: {b['backend']} {b['precision']} on {b['device']}" +
                      (f" ({b['note']})" if b.get("note") else ""), markup=False, highlight=False)
    if s.get("tiles_nodata"):
        console.print(f"{s['tiles_nodata']} tiles held only nodata and were not run", highlight=False)
    if s.get("geojson"):
        console.print(f"map layer: {s['geojson']} ({s['geojson_crs']})", markup=False, highlight=False)


@app.command()
def convert(weights: Annotated[str, typer.Argument(help="a YOLOX checkpoint (yolox_s.pth) or a torchvision-layout "
                                                         "ResNet-50/101 state dict")],
            model: Annotated[str, typer.Option(help="the fss card it becomes: fss-n … fss-x for YOLOX nano … x, "
                                                    "fss-r50 / fss-r101 for a ResNet")],
            out: Annotated[str, typer.Option(help="the fss checkpoint to write")],
            classes: Annotated[str | None, typer.Option(help="file of class names, one a line (default: COCO's "
                                                             "80)")] = None,
            exist_ok: Annotated[bool, typer.Option(help="replace an existing --out")] = False):
    """Turn weights people already have (YOLOX, ImageNet ResNets) into an fss checkpoint, conventions folded in."""
    from fss.api import convert as convert_api
    from fss_core.checkpoint import load_checkpoint

    report_file(out, exist_ok)
    with user_errors():
        path = convert_api(weights, model=model, out=out, classes=classes, exist_ok=True)
        ckpt = load_checkpoint(path)
    record = ckpt["train_config"]["converted_from"]
    fresh = f"; fresh: {', '.join(record['fresh'])}" if record["fresh"] else ""
    console.print(f"{record['kind']} weights ({record['tensors']} tensors) -> {path} ({ckpt['card']['name']}, "
                  f"{len(ckpt['class_names'])} classes{fresh})", markup=False, highlight=False)


@app.command()
def demo(out: Annotated[str, typer.Option(help="output folder")] = "runs/demo",
         quick: Annotated[bool, typer.Option(help="tiny budget (the test suite's: under a minute)")] = False,
         seed: Annotated[int, typer.Option(help="seed of data and training")] = 0):
    """The main job end to end: synthetic data, FSS vs SimOTA training, export, identical graphs, tiled
    detection on a large scene, benchmark, report.md."""
    from fss.demo import run_demo

    writable_out(out)
    with user_errors():
        run_demo(out, quick, console, seed)


@app.command()
def assign(image: Annotated[str, typer.Argument(help="image file")],
           model: Annotated[str, typer.Option(help="checkpoint (.pt) or model card (untrained: random predictions)")],
           gt: Annotated[str, typer.Option(help="labels: DOTA labelTxt, YOLO txt or COCO json")],
           out: Annotated[str | None, typer.Option(
               help="output PNG (default runs/assign/IMAGE_STEM.png, then IMAGE_STEM-2.png, … when it exists)",
               show_default=False)] = None,
           exist_ok: Annotated[bool, typer.Option(help="replace an existing --out")] = False,
           assigner: Annotated[str, typer.Option(help="the assigner explained (fss)")] = "fss",
           vs: Annotated[str, typer.Option(help="baseline drawn beside it")] = "simota",
           imgsz: Annotated[int | None, size_option("network input size (default: model's)")] = None,
           num_gts: Annotated[int, typer.Option(help="ground truths shown, small to large", min=1, max=12)] = 3,
           seed: Annotated[int, typer.Option(help="seed of an untrained card's weights")] = 0):
    """Visualise a label assignment (the paper's Fig. 3): P, Gaussian prior, dynamic k, weights, vs a baseline."""
    from fss.api import free_file
    from fss_train.figure import assignment_figure

    if out is None:
        out = str(free_file(Path("runs/assign") / f"{Path(image).stem}.png"))
    else:
        report_file(out, exist_ok)
    with user_errors():
        summary = assignment_figure(image, model, gt, out, assigner, vs, imgsz, num_gts, seed)
    for row in summary["gts"]:
        console.print(f"GT {row['gt']}: k={row['k']} of {row['candidates']} candidates, FSS {row['fss_positives']} "
                      f"positives (weights {row['weights']}), {vs} {row[f'{vs}_positives']}")
    console.print(f"wrote {summary['png']}", markup=False)



one_line_summaries(app)

if __name__ == "__main__":
    app()

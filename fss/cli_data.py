"""``fss data …``: convert, split (offline tiling), synth, check."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from fss.clikit import DatasetArg as Dataset
from fss.clikit import console, fail, size_option, user_errors, writable_out
from fss.progress import err

data_app = typer.Typer(help="Datasets: convert, split (offline tiling), synth, check.", no_args_is_help=True)


def _open_dataset(path: str, split: str = "train", report: bool = True, oriented: bool = False):
    from fss_train.data import read_dataset

    with user_errors():
        ds = read_dataset(path, split, oriented)
    for p in ds.problems[:20] if report else []:
        err.print(f"[yellow]warning:[/] {escape(str(p))}", highlight=False, soft_wrap=True)
    if report and len(ds.problems) > 20:
        err.print(f"[yellow]… and {len(ds.problems) - 20} more problems[/]")
    return ds


@data_app.command()
def convert(dataset: Dataset, to: Annotated[str, typer.Option(help="coco | yolo | yolo-obb | dota")],
            out: Annotated[str, typer.Option(help="output folder")],
            split: Annotated[str, typer.Option(help="split of a data.yaml to read (and the YOLO split "
                                                    "written)")] = "train",
            exist_ok: Annotated[bool, typer.Option(help="replace an earlier conversion in OUT (its files that this "
                                                        "one does not write are removed)")] = False,
            oriented: Annotated[bool, typer.Option(help="make every outline an oriented object (COCO "
                                                        "segmentations, YOLO segments, vector polygons -> their "
                                                        "minimum-area rectangles)")] = False):
    """Convert a dataset between COCO, YOLO, YOLO-OBB and DOTA. Oriented objects (DOTA, YOLO-OBB, 4-point COCO
    segmentations) keep their polygons in COCO, YOLO-OBB and DOTA. Converting another split into a YOLO folder adds
    it to its data.yaml."""
    from fss_train.data.dota import dota_class_tokens
    from fss_train.data.formats import CONVERT_FORMATS, convert_dataset

    if to not in CONVERT_FORMATS:
        fail(f"--to must be one of {', '.join(CONVERT_FORMATS)}, got {to!r}")
    ds = _open_dataset(dataset, split, oriented=oriented)
    writable_out(out)
    with user_errors():
        path = convert_dataset(ds, to, out, split, exist_ok)
        encoded = {n: t for n, t in dota_class_tokens(ds.classes).items() if n != t} if to == "dota" else {}
    if encoded:
        shown = ", ".join(f"{n!r} -> {t!r}" for n, t in list(encoded.items())[:3]) + (", …" if len(encoded) > 3 else "")
        err.print(f"note: {len(encoded)} class names are written with '_' for their whitespace (DOTA label lines are "
                  f"split on whitespace): {shown}", markup=False, highlight=False)
    console.print(f"{len(ds.records)} images, {ds.num_objects} objects -> {path} ({len(ds.problems)} problems "
                  "reported)", markup=False)


@data_app.command()
def split(dataset: Dataset, out: Annotated[str, typer.Option(help="output folder")],
          tile: Annotated[int, typer.Option(help="tile side, px")] = 1024,
          gap: Annotated[int, typer.Option(help="overlap between neighbouring tiles, px")] = 200,
          keep_ratio: Annotated[float, typer.Option(help="cut objects keeping less area are marked difficult")] = 0.7,
          workers: Annotated[int, typer.Option(help="parallel images")] = 2):
    """Cut large images into overlapping tiles (DOTA devkit semantics); rerunning skips finished images."""
    from fss.progress import counter
    from fss_train.data.split import split_dataset

    ds = _open_dataset(dataset)
    progress, advance = counter(len(ds.records), "splitting")
    with user_errors(), progress:
        tiled, problems = split_dataset(ds, out, tile, gap, keep_ratio, workers, advance)
    for p in problems:
        err.print(f"[yellow]warning:[/] {escape(str(p))}", highlight=False, soft_wrap=True)
    console.print(f"{len(ds.records)} images -> {len(tiled.records)} tiles, {tiled.num_objects} objects in {out}",
                  markup=False)
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
          seed: Annotated[int, typer.Option(help="random seed (same seed -> identical files)")] = 0,
          exist_ok: Annotated[bool, typer.Option(help="replace what OUT holds (a rerun with the same settings "
                                                      "needs no flag)")] = False):
    """Generate synthetic top-down aerial scenes (images/, annotations.json, labelTxt/)."""
    from fss.api import synth as synth_api
    from fss.progress import counter

    progress, advance = counter(num_images, "synthesizing")
    with user_errors(), progress:
        ds = synth_api(out, num_images=num_images, size=size, objects=objects, min_size=min_size, max_size=max_size,
                       occlusion=occlusion, truncation=truncation, seed=seed, exist_ok=exist_ok, progress=advance)
    console.print(f"{len(ds.records)} images, {ds.num_objects} objects -> {out}", markup=False)


@data_app.command()
def check(dataset: Dataset, split: Annotated[str, typer.Option(help="split of a data.yaml")] = "train",
          decode: Annotated[bool, typer.Option(help="decode every image to find corrupt files")] = True,
          as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
          imgsz: Annotated[int | None, size_option("the training input size: warn when the images are much larger "
                                                   "(objects shrunk away; tile them first)")] = None):
    """Report counts per class, object sizes, objects per image and every problem (file and line)."""
    from fss.progress import counter
    from fss_train.config import TrainConfig
    from fss_train.data.check import check_dataset, input_scale_advice
    from fss_train.metrics import suggested_cap

    ds = _open_dataset(dataset, split, report=False)
    progress, advance = counter(len(ds.records) if decode else 0, "decoding")
    with progress:
        report = check_dataset(ds, decode, advance)
    if imgsz:
        report["input_scale_advice"] = input_scale_advice(ds, imgsz, str(dataset))
    most, train_cap = report["objects_per_image"]["max"] or 0, TrainConfig().max_det
    if most > 100:       # COCO scores 100 detections an image: dense images need a larger cap to reach recall 1
        n = suggested_cap(most)
        report["detection_cap_note"] = (
            f"images hold up to {most:,} objects, more than the 100 detections per image COCO scores"
            + (f" and the {train_cap} training keeps" if most > train_cap else "")
            + f": evaluate with `fss eval --max-dets {n}`" + (f" and train with `--set max_det={n}`"
                                                               if most > train_cap else ""))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    console.print(f"[bold]{escape(str(report['source']))}[/]: {report['images']} images, {report['objects']} objects "
                  f"({report['difficult']} difficult)")
    console.print(_table(("class", "objects"), [(k, n) for k, n in report["per_class"].items() if n]))
    console.print(_table(("object size sqrt(area), px", "objects"), report["size_hist"].items()))
    opi = report["objects_per_image"]
    console.print(f"objects per image: min {opi['min']}, median {opi['median']}, max {opi['max']}")
    if report.get("detection_cap_note"):
        console.print(f"[yellow]note:[/] {escape(report['detection_cap_note'])}", highlight=False, soft_wrap=True)
    for line in report["problems"]:
        console.print(f"[yellow]problem:[/] {escape(str(line))}", highlight=False, soft_wrap=True)
    console.print(f"{len(report['problems'])} problems: {report['problem_counts']}", markup=False)
    if report.get("input_scale_advice"):
        console.print(f"[yellow]warning:[/] {escape(report['input_scale_advice'])}", highlight=False, soft_wrap=True)
    elif imgsz:
        console.print(f"every image fits the {imgsz} px input within a factor of 2")


def _table(header: tuple[str, str], rows) -> Table:
    table = Table(*header)
    for a, b in rows:
        table.add_row(escape(str(a)), escape(str(b)))
    return table

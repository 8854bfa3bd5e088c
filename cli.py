"""The `fss` command line: parses options and calls one function per verb. No logic lives here."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="fss: train detectors with the FSS label assignment and deploy them fast.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Datasets: convert, split (offline tiling), synth, check.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err = Console(stderr=True)

PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def not_yet(verb: str) -> None:
    err.print(f"fss {verb}: not available yet in this version of fss.", highlight=False)
    raise typer.Exit(2)


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
        if key == "params":
            value = f"{value / 1e6:.3f} M"
        elif key == "flops":
            value = f"{value / 1e9:.2f} GFLOPs"
        elif isinstance(value, list) and len(value) > 12:
            value = f"{len(value)}: " + ", ".join(map(str, value[:12])) + ", …"
        table.add_row(f"[bold]{key}[/]", str(value))
    console.print(table)


@app.command(context_settings=PASSTHROUGH)
def train(ctx: typer.Context):
    """Train a detector with FSS or a baseline assigner."""
    not_yet("train")


@app.command(name="eval", context_settings=PASSTHROUGH)
def evaluate(ctx: typer.Context):
    """Evaluate a model or saved predictions (COCO or DOTA metric)."""
    not_yet("eval")


@app.command(context_settings=PASSTHROUGH)
def export(ctx: typer.Context):
    """Export a checkpoint to ONNX or TensorRT."""
    not_yet("export")


@app.command(context_settings=PASSTHROUGH)
def detect(ctx: typer.Context):
    """Tiled high-resolution detection over images and folders."""
    not_yet("detect")


@app.command(context_settings=PASSTHROUGH)
def bench(ctx: typer.Context):
    """Latency / FPS benchmarks and the zero-inference-overhead report."""
    not_yet("bench")


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


@app.command(context_settings=PASSTHROUGH)
def demo(ctx: typer.Context):
    """The main job end to end on the embedded default."""
    not_yet("demo")


@data_app.command(context_settings=PASSTHROUGH)
def convert(ctx: typer.Context):
    """Convert a dataset between COCO, YOLO and DOTA."""
    not_yet("data convert")


@data_app.command(context_settings=PASSTHROUGH)
def split(ctx: typer.Context):
    """Cut large images into overlapping tiles (DOTA devkit semantics)."""
    not_yet("data split")


@data_app.command(context_settings=PASSTHROUGH)
def synth(ctx: typer.Context):
    """Generate synthetic aerial scenes."""
    not_yet("data synth")


@data_app.command(context_settings=PASSTHROUGH)
def check(ctx: typer.Context):
    """Report counts, sizes and every problem in a dataset."""
    not_yet("data check")


if __name__ == "__main__":
    app()

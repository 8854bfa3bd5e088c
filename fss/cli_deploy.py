"""``fss export …`` and ``fss bench …``: sub-command groups whose first word may be left out."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from fss.clikit import (
    Backend,
    Device,
    Imgsz,
    Iters,
    Precision,
    Threads,
    Warmup,
    console,
    first_word_optional,
    report_folder,
    user_errors,
)

export_app = typer.Typer(cls=first_word_optional("model"), no_args_is_help=True,
                         help="Export: `fss export CKPT` (ONNX / TensorRT), `fss export compare A B`.")
bench_app = typer.Typer(cls=first_word_optional("latency"), no_args_is_help=True,
                        help="Benchmarks: `fss bench MODEL` (latency), `overhead A B`, `tiled IMAGE --model M`.")


@export_app.command("model")
def export(source: Annotated[str, typer.Argument(help="checkpoint (.pt)")],
           format: Annotated[str, typer.Option(help="onnx | engine (TensorRT) | openvino (IR .xml + .bin)")] = "onnx",
           imgsz: Imgsz = None,
           batch: Annotated[int, typer.Option(help="static batch (tiles per call), or the profile's opt batch")] = 1,
           dynamic: Annotated[bool, typer.Option(help="dynamic batch axis")] = False,
           half: Annotated[bool, typer.Option(help="FP16 (default: strict FP32)")] = False,
           opset: Annotated[int, typer.Option(help="ONNX opset")] = 17,
           out: Annotated[str | None, typer.Option(help="output path (default: next to the checkpoint)")] = None,
           verify: Annotated[bool, typer.Option(help="onnxruntime vs torch on real images")] = False,
           verify_images: Annotated[list[str] | None, typer.Option(help="images for --verify")] = None,
           weights: Annotated[str, typer.Option(help="ema | raw")] = "ema",
           exist_ok: Annotated[bool, typer.Option(help="replace an output file exported from another checkpoint "
                                                       "(one from the same checkpoint is always replaced)")] = False,
           int8: Annotated[bool, typer.Option(help="also an INT8 ONNX (NAME-int8.onnx), calibrated on --calib; the "
                                                   "prediction convolutions and decode stay float")] = False,
           calib: Annotated[str | None, typer.Option(help="images (a folder, files or a glob) to calibrate --int8 "
                                                          "on: your own")] = None,
           calib_tiles: Annotated[int, typer.Option(help="calibration tiles", min=1, max=10_000)] = 32):
    """Export a checkpoint to ONNX, a TensorRT engine or an OpenVINO IR (`fss export CKPT`; the word `model` may be
    left out)."""
    from fss.api import export as export_api
    from fss.progress import work_bar

    bar, progress = work_bar("verify")
    with user_errors(), bar:
        res = export_api(source, format=format, imgsz=imgsz, batch=batch, dynamic=dynamic, half=half, opset=opset,
                         out=out, verify=verify, verify_images=verify_images, weights=weights, exist_ok=exist_ok,
                         progress=progress, int8=int8, calib=calib, calib_tiles=calib_tiles)
    console.print(f"ONNX: {res.onnx}  fingerprint {res.fingerprint[:16]}…  params {res.params:,}  "
                  f"FLOPs {res.flops / 1e9:.3f} G", markup=False, highlight=False)
    if res.verify is not None and not _print_verify(res.verify):
        raise typer.Exit(1)
    if res.engine:
        console.print(f"engine: {res.engine} (+ {res.engine.name}.json)", markup=False)
    if res.int8:
        console.print(f"INT8: {res.int8}", markup=False)
    if res.openvino:
        console.print(f"OpenVINO: {res.openvino} (+ {res.openvino.with_suffix('.bin').name})", markup=False)
    size = imgsz or res.input_size
    console.print(f"next:\n  fss detect IMAGES --model {res.path} --tile {size} --batch {batch}\n"
                  f"  fss bench {res.path} --imgsz {size}", markup=False, highlight=False)


def _print_verify(report: dict) -> bool:
    # the raw outputs decide: within float32 tolerance, detections can only differ where a score sits at --conf
    # or two boxes at the NMS threshold (a weak model has many such borderline cases)
    ok = report["within_tolerance"]
    borderline = "" if report["detection_f1"] >= 0.99 or not ok else \
        " (the differing detections are threshold ties: raw outputs agree)"
    console.print(f"verify {'[green]OK[/]' if ok else '[red]MISMATCH[/]'}: {report['images']} images, max |raw diff| "
                  f"{report['max_abs_diff_raw']:.2e} (tolerance {report['atol']:.0e} + {report['rtol']:.0e} × the "
                  f"largest raw box value + float32 resolution; worst excess {report['max_excess_over_tolerance']:+.1e}"
                  f"), detections {report['detections_torch']} torch / {report['detections_onnx']} onnxruntime, "
                  f"F1 {report['detection_f1']:.4f}{borderline}", highlight=False)
    return ok


@export_app.command("compare")
def export_compare(a: Annotated[str, typer.Argument(metavar="A", help="checkpoint or ONNX file")],
                   b: Annotated[str, typer.Argument(metavar="B", help="checkpoint or ONNX file")], imgsz: Imgsz = None):
    """Prove two models the same inference graph: structure, parameter count, FLOPs (exit 1 if not)."""
    from fss.api import compare

    with user_errors():
        result = compare(a, b, imgsz)
    for tag in ("a", "b"):
        d = result[tag]
        console.print(f"{tag.upper()}: {d['file']}\n   trained with {d['trained_with']}, fingerprint "
                      f"{d['fingerprint']}\n   params {d['params']:,}, FLOPs {d['flops'] / 1e9:.3f} G", markup=False,
                      highlight=False)
    if result["identical"]:
        console.print("[bold green]IDENTICAL[/] graph structure, parameter count and FLOPs")
        return
    console.print("[bold red]DIFFERENT[/]:\n" + "\n".join(f"  {escape(line)}" for line in result["differences"]),
                  highlight=False)
    raise typer.Exit(1)


BenchOut = Annotated[str, typer.Option(help="report folder (default runs/bench, then runs/bench2, … when it holds a "
                                            "report)")]
BenchExistOk = Annotated[bool, typer.Option(help="write into an --out that holds files (its report is replaced)")]


@bench_app.command("latency")
def bench(model: Annotated[str, typer.Argument(help="model file (.pt, .onnx, .engine)")], backend: Backend = None,
          device: Device = "auto", imgsz: Imgsz = None,
          batch: Annotated[int, typer.Option(help="batch (1 for the paper's setting)")] = 1, warmup: Warmup = 50,
          iters: Iters = 300, threads: Threads = 0, out: BenchOut = "runs/bench", exist_ok: BenchExistOk = False,
          precision: Precision = "fp32"):
    """Latency per stage and FPS at batch 1 FP32 (`fss bench MODEL`; the word `latency` may be left out).
    Writes report.md, report.json and latency.png."""
    from fss.api import benchmark
    from fss.progress import work_bar

    out = report_folder(out, "runs/bench", exist_ok)
    bar, progress = work_bar("bench")
    with user_errors(), bar:
        r = benchmark(model, backend=backend, imgsz=imgsz, batch=batch, warmup=warmup, iters=iters, threads=threads,
                      device=device, out=out, progress=progress, precision=precision)
    st = r["stages"]
    console.print(f"{r['input']} {r['environment']['backend']} {r['environment']['precision']}: preprocess "
                  f"{st['preprocess']['median_ms']:.2f} ms, inference {st['inference']['median_ms']:.2f} ms (p90 "
                  f"{st['inference']['p90_ms']:.2f}), postprocess {st['postprocess']['median_ms']:.2f} ms; "
                  f"{r['fps']:.1f} FPS -> {r['report_dir']}/report.md", markup=False)
    if r.get("trtexec"):
        console.print(f"trtexec equivalent: {r['trtexec']}", highlight=False)


@bench_app.command("overhead")
def bench_overhead(a: Annotated[str, typer.Argument(metavar="A", help="model A")],
                   b: Annotated[str, typer.Argument(metavar="B", help="model B")],
                   device: Device = "auto", imgsz: Imgsz = None, warmup: Warmup = 50, iters: Iters = 300,
                   threads: Threads = 0, out: BenchOut = "runs/bench", exist_ok: BenchExistOk = False):
    """The zero-inference-overhead report: identical graphs and interleaved latency of A and B (exit 1 if not)."""
    from fss.api import benchmark_overhead
    from fss.progress import work_bar

    out = report_folder(out, "runs/bench", exist_ok)
    bar, progress = work_bar("A/B pairs")
    with user_errors(), bar:
        r = benchmark_overhead(a, b, imgsz=imgsz, warmup=warmup, iters=iters, threads=threads, device=device, out=out,
                               progress=progress)
    verdict = "[bold green]IDENTICAL GRAPH[/]" if r["identical_graph"] else "[bold red]DIFFERENT[/]"
    console.print(f"{verdict}: params {r['a']['params']:,} / {r['b']['params']:,}, GFLOPs {r['a']['flops'] / 1e9:.3f}"
                  f" / {r['b']['flops'] / 1e9:.3f}; latency A/B {r['ratio_a_over_b']:.3f} (95% CI "
                  f"{r['ratio_ci95'][0]:.3f}–{r['ratio_ci95'][1]:.3f}) -> {r['report_dir']}/report.md")
    for d in r["differences"]:
        console.print(f"  {d}", highlight=False)
    if not r["identical_graph"]:
        raise typer.Exit(1)


@bench_app.command("tiled")
def bench_tiled(image: Annotated[str, typer.Argument(help="a large image")],
                model: Annotated[str, typer.Option(help="the model")], backend: Backend = None, device: Device = "auto",
                batch: Annotated[int, typer.Option(help="tiles per call")] = 8,
                overlap: Annotated[int, typer.Option(help="overlap between tiles, px")] = 200, threads: Threads = 0,
                out: BenchOut = "runs/bench", exist_ok: BenchExistOk = False, precision: Precision = "fp32"):
    """Tiled detection throughput on one large image: s/image, tiles/s, time outside the model."""
    from fss.api import benchmark_tiled
    from fss.progress import work_bar

    out = report_folder(out, "runs/bench", exist_ok)
    bar, progress = work_bar("repeats")
    with user_errors(), bar:
        r = benchmark_tiled(image, model, backend=backend, batch=batch, overlap=overlap, threads=threads,
                            device=device, out=out, progress=progress, precision=precision)
    console.print(f"{r['seconds_per_image']:.3f} s/image, {r['tiles_per_s']:.1f} tiles/s, outside the model "
                  f"{100 * r['outside_model_fraction']:.1f}% -> {r['report_dir']}/report.md", markup=False)

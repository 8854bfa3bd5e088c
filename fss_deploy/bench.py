"""`fss bench`: latency and FPS at batch 1 FP32, the zero-inference-overhead report, tiled throughput.

Timing: ``time.perf_counter`` around each stage; on CUDA the torch backend synchronises before
reading the clock. Reports give median, p90, p99 and mean over ``iters`` runs after ``warmup``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fss_core.fileio import atomic_write, save_figure
from fss_core.imageio import read_image
from fss_core.nn.postprocess import postprocess, postprocess_obb
from fss_core.preprocess import letterbox, to_array
from fss_deploy.backends import Backend, backend_threads, load_backend


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(backend: Backend, threads: int) -> dict:
    import onnxruntime

    torch_side = torch.get_num_threads() if backend.name == "torch" else f"{backend.name} default"
    env = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads": threads or torch_side,
           "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
           "backend": backend.name, "device": backend.device,
           "precision": "fp16" if getattr(backend, "half", False) else backend.precision,
           "tf32": bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)
           if torch.cuda.is_available() else False}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    try:
        import tensorrt

        env["tensorrt"] = tensorrt.__version__
    except ImportError:
        env["tensorrt"] = None
    return env


def summarize(samples: list[float]) -> dict:
    a = np.asarray(samples) * 1000.0
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "min_ms": float(a.min()),
            "n": int(len(a))}


def _sync(backend: Backend) -> None:
    if backend.device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_model(model: str, backend: str | None = None, imgsz: int | None = None, batch: int = 1, warmup: int = 50,
                iters: int = 300, threads: int = 0, device: str = "cpu", image: np.ndarray | None = None,
                progress=None, precision: str = "fp32") -> dict:
    """Per-stage latency of one model: preprocess (letterbox + normalise), inference, postprocess.
    ``progress(done, total)`` is called after every run. ``threads``: of the backend (0: library default);
    torch's are the caller's again afterwards."""
    b = load_backend(model, backend, device, imgsz, threads, precision)
    with backend_threads(b):
        return _bench_model(b, model, batch, warmup, iters, threads, image, progress)


def _bench_model(b: Backend, model: str, batch: int, warmup: int, iters: int, threads: int,
                 image: np.ndarray | None, progress) -> dict:
    size = b.input_size
    if image is None:
        image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    if b.fixed_batch and b.fixed_batch != batch:
        batch = b.fixed_batch
    stages: dict[str, list[float]] = {"preprocess": [], "inference": [], "postprocess": [], "total": []}
    post = postprocess_obb if b.task == "obb" else postprocess
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        canvas, _, _ = letterbox(image, (size, size))
        x = to_array([canvas] * batch)
        t1 = time.perf_counter()
        _sync(b)
        out = b.infer(x)
        _sync(b)
        t2 = time.perf_counter()
        post(torch.from_numpy(out), 0.25, 0.5)
        t3 = time.perf_counter()
        if i >= warmup:
            for k, v in (("preprocess", t1 - t0), ("inference", t2 - t1), ("postprocess", t3 - t2),
                         ("total", t3 - t0)):
                stages[k].append(v)
        if progress:
            progress(i + 1, warmup + iters)
    report = {"model": str(model), "input": f"{batch}x3x{size}x{size}", "warmup": warmup, "iters": iters,
              "environment": environment(b, threads), "stages": {k: summarize(v) for k, v in stages.items()}}
    med = report["stages"]["total"]["median_ms"]
    report["fps"] = 1000.0 * batch / med if med else 0.0
    report["samples_ms"] = [round(v * 1000, 4) for v in stages["total"]]
    if b.name == "tensorrt":
        from fss_deploy.tensorrt import trtexec_command
        report["trtexec"] = trtexec_command(model, batch, size, size)
    return report


def bootstrap_ratio(a: list[float], b: list[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """median(a) / median(b) with a 95% bootstrap confidence interval."""
    rng = np.random.default_rng(seed)
    a_, b_ = np.asarray(a), np.asarray(b)
    ratios = [np.median(rng.choice(a_, len(a_))) / np.median(rng.choice(b_, len(b_))) for _ in range(rounds)]
    return float(np.median(a_) / np.median(b_)), float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def bench_overhead(a: str, b: str, imgsz: int | None = None, warmup: int = 30, iters: int = 200, threads: int = 0,
                   device: str = "cpu", progress=None) -> dict:
    """Two models of one card: structure (fingerprints, params, FLOPs) and latency measured
    interleaved A B A B … in one process, so drift and noise hit both alike."""
    from fss_deploy.export import compare

    structure = compare(a, b, imgsz)
    ba, bb = load_backend(a, None, device, imgsz, threads), load_backend(b, None, device, imgsz, threads)
    with backend_threads(ba, bb):
        return _bench_overhead(structure, ba, bb, warmup, iters, threads, progress)


def _bench_overhead(structure: dict, ba: Backend, bb: Backend, warmup: int, iters: int, threads: int,
                    progress) -> dict:
    size = ba.input_size
    x = to_array([np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)])
    ta, tb = [], []
    for i in range(warmup + iters):
        for backend, store in ((ba, ta), (bb, tb)) if i % 2 == 0 else ((bb, tb), (ba, ta)):
            _sync(backend)
            t0 = time.perf_counter()
            backend.infer(x)
            _sync(backend)
            if i >= warmup:
                store.append(time.perf_counter() - t0)
        if progress:
            progress(i + 1, warmup + iters)
    ratio, lo, hi = bootstrap_ratio(ta, tb)
    return {"a": structure["a"], "b": structure["b"], "identical_graph": structure["identical"],
            "differences": structure["differences"], "latency_a": summarize(ta), "latency_b": summarize(tb),
            "ratio_a_over_b": ratio, "ratio_ci95": [lo, hi], "iters": iters, "warmup": warmup,
            "environment": environment(ba, threads)}


def bench_tiled(image_path: str, model: str, backend: str | None = None, batch: int = 8, overlap: int = 200,
                repeats: int = 3, threads: int = 0, device: str = "cpu", progress=None,
                precision: str = "fp32") -> dict:
    from fss_deploy.detect import TiledDetector

    b = load_backend(model, backend, device, None, threads, precision)
    image = read_image(image_path)
    det = TiledDetector(b, overlap=overlap, batch=batch)
    det(image)                                                          # warm-up
    times = []
    for r in range(repeats):
        det.stats = TiledDetector.fresh_stats()
        t0 = time.perf_counter()
        dets = det(image)
        times.append(time.perf_counter() - t0)
        if progress:
            progress(r + 1, repeats)
    med = statistics.median(times)
    stats = det.stats
    return {"image": str(image_path), "size": list(image.shape[:2]), "tiles": stats["tiles"], "detections": len(dets),
            "seconds_per_image": med, "images_per_s": 1 / med, "tiles_per_s": stats["tiles"] / med,
            "stage_seconds_last": {k: v for k, v in stats.items() if k.endswith("_s")},
            "outside_model_fraction": (med - stats["infer_s"]) / max(stats["infer_s"], 1e-9),
            "repeats": repeats, "batch": det.batch, "environment": environment(b, threads)}


# ------------------------------------------------------------------------------------------ reports
REPORT_FILES = ("report.json", "report.md", "latency.png")     # every file a bench report may write


def write_report(report: dict, out: str | Path, kind: str) -> Path:
    """report.json, report.md (+ latency.png for ``latency``) in ``out``; an earlier report's files there are
    removed first, so none of another kind's survives beside this one."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        (out / name).unlink(missing_ok=True)
    atomic_write(out / "report.json", json.dumps(report, indent=2))
    lines = [f"# fss bench — {kind}", "", "Environment:", ""]
    lines += [f"- {k}: {v}" for k, v in report.get("environment", {}).items()]
    lines.append("")
    if kind == "latency":
        lines += [f"Model `{report['model']}`, input {report['input']}, {report['warmup']} warm-up + "
                  f"{report['iters']} timed runs.", "", "| stage | median ms | p90 | p99 | mean |",
                  "|---|---|---|---|---|"]
        for k, v in report["stages"].items():
            lines.append(f"| {k} | {v['median_ms']:.3f} | {v['p90_ms']:.3f} | {v['p99_ms']:.3f} | {v['mean_ms']:.3f} |")
        lines += ["", f"FPS (batch / median total): **{report['fps']:.1f}**"]
        if report.get("trtexec"):
            lines += ["", f"Equivalent trtexec: `{report['trtexec']}`"]
        _plot_latency(report["samples_ms"], out / "latency.png", report["model"])
    elif kind == "overhead":
        verdict = "IDENTICAL GRAPH" if report["identical_graph"] else "DIFFERENT GRAPHS"
        lines += [f"**{verdict}**", "", "| | A | B |", "|---|---|---|",
                  f"| file | {report['a']['file']} | {report['b']['file']} |",
                  f"| trained with | {report['a']['trained_with']} | {report['b']['trained_with']} |",
                  f"| fingerprint | `{report['a']['fingerprint'][:16]}…` | `{report['b']['fingerprint'][:16]}…` |",
                  f"| params | {report['a']['params']:,} | {report['b']['params']:,} |",
                  f"| GFLOPs | {report['a']['flops'] / 1e9:.3f} | {report['b']['flops'] / 1e9:.3f} |",
                  f"| median latency ms | {report['latency_a']['median_ms']:.3f} | "
                  f"{report['latency_b']['median_ms']:.3f} |",
                  "", f"Latency ratio A/B (interleaved, {report['iters']} pairs): **{report['ratio_a_over_b']:.3f}** "
                  f"(95% bootstrap CI {report['ratio_ci95'][0]:.3f}–{report['ratio_ci95'][1]:.3f})"]
        if report["differences"]:
            lines += ["", "Differences:", ""] + [f"- {d}" for d in report["differences"]]
    else:
        lines += [f"Image `{report['image']}` ({report['size'][1]}×{report['size'][0]}), {report['tiles']} tiles, "
                  f"batch {report['batch']}, median of {report['repeats']}:", "",
                  f"- {report['seconds_per_image']:.3f} s/image, {report['images_per_s']:.3f} images/s, "
                  f"{report['tiles_per_s']:.1f} tiles/s",
                  f"- stages (last run, s): {report['stage_seconds_last']}",
                  f"- everything outside the model: {100 * report['outside_model_fraction']:.1f}% of model time"]
    atomic_write(out / "report.md", "\n".join(lines) + "\n")
    return out


def _plot_latency(samples_ms: list[float], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(samples_ms, bins=40, color="steelblue")
    med = float(np.median(samples_ms))
    ax.axvline(med, color="red", ls="--", label=f"median {med:.2f} ms")
    ax.set_xlabel("end-to-end latency per call (ms)")
    ax.set_ylabel("runs")
    ax.set_title(Path(title).name)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)

"""OpenVINO on the CPU (extra ``openvino``): the IR export and the runtime's settings.

    fss export best.pt --format openvino              # best.xml + best.bin, the ONNX's metadata in the IR
    fss detect scene.tif --model best.xml --precision bf16
    fss bench best.onnx --backend openvino            # an .onnx loads directly too

The IR is OpenVINO's own conversion of the exported ONNX (``openvino.convert_model``), weights kept in FP32; the fss
metadata (class names, input size, source checkpoint, graph fingerprint, …) travels in the IR's ``rt_info`` under
``fss``, so the ``.xml`` describes itself as the ``.onnx`` does. Precision is chosen when the model is compiled, as
OpenVINO intends: ``fp32``, or ``bf16`` (the ``INFERENCE_PRECISION_HINT``; only where the CPU computes BF16 natively,
AVX-512 BF16 or AMX: elsewhere OpenVINO would emulate it, slower than FP32). ``latency`` and ``throughput`` are
OpenVINO's performance hints (one stream for batch 1; streams for batches).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fss_core.fileio import atomic_write
from fss_deploy.export import ExportError, read_onnx

PRECISIONS = ("fp32", "bf16", "auto")
HINTS = ("latency", "throughput")


class OpenVinoUnavailable(RuntimeError):
    pass


def import_openvino():
    try:
        import openvino as ov
    except ImportError:
        raise OpenVinoUnavailable("OpenVINO is not installed: `pip install 'fss[openvino]'`") from None
    return ov


def native_bf16() -> bool:
    """Does this CPU compute BF16 natively (OpenVINO's CPU plugin lists BF16 among its capabilities)?"""
    ov = import_openvino()
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def resolve_precision(precision: str) -> str:
    """fp32 | bf16 as asked; ``auto``: bf16 on a CPU with native BF16 (its measured cost: docs/results/
    cpu_backends.md), else fp32. bf16 asked on a CPU without it is refused (it would be emulated, slower)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    if precision == "bf16" and not native_bf16():
        raise ValueError("precision bf16: this CPU has no native BF16 (AVX-512 BF16 or AMX); OpenVINO would emulate "
                         "it, slower than fp32")
    return precision


def export_openvino(onnx_path: str | Path, out: str | Path) -> Path:
    """The IR (``out``: .xml, with its .bin) of an fss ONNX export, its metadata under rt_info ``fss``; the .bin is
    written first, the .xml last (a reader never finds an .xml without its weights)."""
    ov = import_openvino()
    out = Path(out)
    if out.suffix != ".xml":
        raise ExportError(f"{out}: an OpenVINO IR is named .xml (its weights go to the .bin beside it)")
    _, meta = read_onnx(onnx_path, weights=False)
    model = ov.convert_model(str(onnx_path))
    for key, value in meta.items():
        model.set_rt_info(str(value), ["fss", key])
    with tempfile.TemporaryDirectory(prefix="fss-openvino-") as scratch:   # never a half IR beside the target
        tmp = Path(scratch) / "model.xml"
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        atomic_write(out.with_suffix(".bin"), tmp.with_suffix(".bin").read_bytes())
        atomic_write(out, tmp.read_text())
    return out


def read_metadata(path: str | Path) -> dict:
    """The fss metadata of an IR (.xml) or ONNX file, as ONNX ``metadata_props`` would give it (str -> str)."""
    path = Path(path)
    if path.suffix == ".onnx":
        return read_onnx(path, weights=False)[1]
    ov = import_openvino()
    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:  # noqa: BLE001 — OpenVINO raises its own RuntimeError kinds on bad IR
        raise ExportError(f"{path}: OpenVINO cannot read this model ({str(exc).strip().splitlines()[0][:200]})") \
            from None
    if not model.has_rt_info(["fss"]):
        raise ExportError(f"{path}: an OpenVINO model without fss metadata; export it with `fss export --format "
                          "openvino`")
    return {str(key): model.get_rt_info(["fss", key]).astype(str) for key in model.get_rt_info(["fss"]).value}


def compile_model(path: str | Path, precision: str = "fp32", hint: str = "latency", threads: int = 0):
    """The compiled CPU model of an .xml or .onnx: OpenVINO's precision and performance hints, ``threads`` CPU
    threads (0: OpenVINO's choice)."""
    ov = import_openvino()
    if hint not in HINTS:
        raise ValueError(f"hint must be one of {HINTS}, got {hint!r}")
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
              "PERFORMANCE_HINT": hint.upper()}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        return ov.Core().compile_model(str(path), "CPU", config)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{path}: OpenVINO cannot compile this model ({str(exc).strip().splitlines()[0][:200]})") \
            from None

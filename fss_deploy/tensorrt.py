"""TensorRT engines (extra ``gpu``), against the TensorRT 10 Python API.

NOT VERIFIED ON OUR MACHINES: TensorRT cannot be installed here (no GPU). What is tested here
is everything that does not need TensorRT: the sidecar, the environment check, the messages.

A plain ``.engine`` (``trtexec --loadEngine`` can load it) plus a JSON sidecar
``<engine>.json`` with the TensorRT/CUDA versions, GPU name and compute capability, the ONNX
sha256 and the precision flags. Loading checks the sidecar before deserialising and prints the
rebuild command on a mismatch. Strict FP32 by default (TF32 off); ``half`` enables FP16.
"""

from __future__ import annotations

import json
from pathlib import Path

from fss_core.fileio import atomic_write
from fss_deploy.export import INPUT_NAME, ExportError, read_onnx, sha256_file

SIDECAR_FORMAT = "fss-engine/1"


class TensorRTUnavailable(RuntimeError):
    pass


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable("TensorRT is not installed: `pip install 'fss[gpu]'` on a machine with an NVIDIA "
                                  "GPU and CUDA (TensorRT 10)") from None
    return trt


def gpu_environment() -> dict:
    """GPU name, compute capability and CUDA version as torch sees them."""
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable("no CUDA GPU is visible (torch.cuda.is_available() is False); TensorRT engines "
                                  "are built and run on the GPU they target")
    major, minor = torch.cuda.get_device_capability(0)
    return {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}",
            "cuda": torch.version.cuda}


def rebuild_command(sidecar: dict, engine: Path) -> str:
    flags = " --half" if sidecar.get("precision") == "fp16" else ""
    batch = sidecar.get("batch", {})
    batch_flag = f" --batch {batch.get('opt', 1)}" + (" --dynamic" if batch.get("dynamic") else "")
    source = sidecar.get("source_checkpoint") or "MODEL.pt"
    return f"fss export {source} --format engine{flags}{batch_flag} --out {engine}"


def check_sidecar(engine: str | Path, env: dict | None = None, trt_version: str | None = None) -> dict:
    """Compare the engine's sidecar with this machine; raise ExportError with the rebuild command."""
    engine = Path(engine)
    side = engine.with_suffix(engine.suffix + ".json")
    if not side.is_file():
        raise ExportError(f"{engine}: no sidecar {side.name}; rebuild the engine with `fss export … --format engine`")
    try:
        sidecar = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise ExportError(f"{side}: unreadable sidecar: {exc}") from None
    if sidecar.get("format") != SIDECAR_FORMAT:
        raise ExportError(f"{side}: not an fss engine sidecar")
    env = env if env is not None else gpu_environment()
    if trt_version is None:
        trt_version = import_tensorrt().__version__
    mismatches = []
    ours = {"tensorrt": trt_version, "gpu": env["gpu"], "compute_capability": env["compute_capability"]}
    for key, have in ours.items():
        if str(sidecar.get(key)) != str(have):
            mismatches.append(f"{key}: engine built for {sidecar.get(key)!r}, this machine has {have!r}")
    if mismatches:
        raise ExportError(f"{engine} was built elsewhere ({'; '.join(mismatches)}). Engines are tied to the GPU and "
                          f"TensorRT version; rebuild it here:\n  {rebuild_command(sidecar, engine)}")
    return sidecar


def build_engine(onnx_path: str | Path, out: str | Path, half: bool = False, batch: int = 1, dynamic: bool = False,
                 max_batch: int | None = None, workspace_gib: float = 4.0, source_checkpoint: str = "") -> Path:
    """ONNX -> serialized engine + sidecar. A static batch for tiles, or a min/opt/max profile
    (1 / ``batch`` / ``max_batch``) for a dynamic-batch ONNX."""
    trt = import_tensorrt()
    env = gpu_environment()
    proto, meta = read_onnx(onnx_path)
    size = json.loads(meta["input_size"])
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)                      # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT could not parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    config.clear_flag(trt.BuilderFlag.TF32)                  # strict FP32 unless --half
    if half:
        config.set_flag(trt.BuilderFlag.FP16)
    if dynamic:
        profile = builder.create_optimization_profile()
        mx = max_batch or max(batch, 1) * 2
        shape = (3, size[0], size[1])
        profile.set_shape(INPUT_NAME, (1, *shape), (batch, *shape), (mx, *shape))
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT failed to build an engine (see the log above)")
    out = Path(out)
    atomic_write(out, bytes(serialized))
    sidecar = {"format": SIDECAR_FORMAT, "tensorrt": trt.__version__, "cuda": env["cuda"], "gpu": env["gpu"],
               "compute_capability": env["compute_capability"], "onnx_sha256": sha256_file(onnx_path),
               "precision": "fp16" if half else "fp32", "tf32": False,
               "batch": {"dynamic": dynamic, "min": 1 if dynamic else batch, "opt": batch,
                         "max": (max_batch or batch * 2) if dynamic else batch},
               "source_checkpoint": source_checkpoint, "metadata": meta}
    side = out.with_suffix(out.suffix + ".json")
    atomic_write(side, json.dumps(sidecar, indent=2))
    return out


def trtexec_command(engine: str | Path, batch: int, height: int, width: int) -> str:
    return (f"trtexec --loadEngine={engine} --shapes=images:{batch}x3x{height}x{width} "
            "--warmUp=500 --iterations=300 --useSpinWait")

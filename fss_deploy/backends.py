"""torch / onnxruntime / OpenVINO / TensorRT behind one interface: ``infer(batch) -> detections``.

batch: (B, 3, S, S) float32 RGB in [0, 1] (``fss_core.preprocess``); detections: (B, A, 4 + C)
float32 numpy — xyxy input pixels, then per-class scores. Every backend describes its model:
``class_names``, ``input_size``, ``fixed_batch`` (None when any batch works).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from fss_core.checkpoint import load_model
from fss_core.nn.card import resolve_model_file
from fss_deploy.export import INPUT_NAME, OUTPUT_NAME, ExportError, deployed_facts, deployed_task, read_onnx
from fss_deploy.graph import InferenceGraph

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")


class Backend:
    name = "?"
    class_names: list[str]
    input_size: int
    fixed_batch: int | None = None
    task: str = "detect"        # "obb": detections (B, A, 5 + C), cx cy w h θ then scores
    device: str = "cpu"
    threads: int = 0            # torch's intra-op threads while this backend runs (0: the caller's)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    precision: str = "fp32"

    note: str = ""              # how this backend came to run the model, when it is not the file's own kind

    def describe(self) -> dict:
        return {"backend": self.name, "device": self.device, "precision": self.precision, "task": self.task,
                **({"note": self.note} if self.note else {}),
                "input_size": self.input_size, "fixed_batch": self.fixed_batch, "classes": len(self.class_names)}


def strict_fp32() -> None:
    """No TF32 anywhere: FP32 numbers mean FP32 (Ampere+ GPUs would otherwise use TF32 in convs)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, ckpt: str | Path, device: str = "cpu", imgsz: int | None = None, half: bool = False,
                 threads: int = 0):
        model, meta = load_model(ckpt)
        self.threads = threads
        self.class_names = list(meta["class_names"])
        self.input_size = int(imgsz or meta["input_size"][0])
        self.task = model.card.task
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("--device cuda requested but no CUDA GPU is visible")
        strict_fp32()
        self.device = device
        self.dtype = torch.float16 if half else torch.float32
        # channels-last: batch 8 of 512 px 496 -> 344 ms on a 2-core Xeon (oneDNN); the tensor-core layout on CUDA
        self.graph = InferenceGraph(model, self.input_size, self.input_size).eval().to(
            device, self.dtype, memory_format=torch.channels_last)

    @torch.no_grad()
    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device, self.dtype, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)
        return self.graph(x).float().cpu().numpy()


class OnnxBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int = 0, spinning: bool = True, proto=None):
        import onnxruntime as ort

        if proto is None:
            _, meta = read_onnx(path, weights=False)
        else:                           # an export held in memory (from_checkpoint): its own metadata
            meta = {p.key: p.value for p in proto.metadata_props}
        self.class_names, self.input_size = deployed_facts(meta, path)
        self.task = deployed_task(meta)
        self.fixed_batch = None if meta.get("batch") == "dynamic" else int(meta.get("batch", 1))
        self.half = meta.get("precision") == "fp16"
        self.precision = meta.get("precision", "fp32")                 # fp32, fp16 or int8 (as exported)
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in available:
                raise RuntimeError("--device cuda with onnxruntime needs onnxruntime-gpu (`pip install 'fss[gpu]'`)")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            source = str(path) if proto is None else proto.SerializeToString()
            self.session = ort.InferenceSession(source, sess_options=opts, providers=providers)
        except Exception as exc:      # noqa: BLE001 — onnxruntime's own kinds (Fail, InvalidGraph, …), not ValueError
            detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"{path}: onnxruntime cannot load this model ({detail})") from None
        self.device = device
        inputs, outputs = [i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
            raise ExportError(f"{path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r} as `fss export` "
                              f"writes them, found inputs {inputs} and outputs {outputs}")
        head = self.session.get_outputs()[outputs.index(OUTPUT_NAME)].shape[-1]
        k = 5 if self.task == "obb" else 4                                   # [box (k), scores…]
        if isinstance(head, int) and head != k + len(self.class_names):
            raise ExportError(f"{path}: the model predicts {head - k} classes but its metadata names "
                              f"{len(self.class_names)}")

    @classmethod
    def from_checkpoint(cls, ckpt: str | Path, imgsz: int | None = None, threads: int = 0) -> OnnxBackend:
        """onnxruntime on the CPU over the checkpoint's network exported in memory (dynamic batch, FP32, EMA
        weights): nothing is written. What ``fss detect`` runs a ``.pt`` with on the CPU unless ``--backend torch``:
        on this project's 2-core CPU the fastest path whose accuracy equals torch FP32 (docs/results/cpu_backends.md:
        112 tiles/s at batch 8 against torch's 47)."""
        from fss_core.checkpoint import load_checkpoint, model_from_checkpoint
        from fss_deploy.export import DEFAULT_OPSET, build_proto, sha256_file

        data = load_checkpoint(ckpt)
        model = model_from_checkpoint(data, "ema")
        size = int(imgsz or data["input_size"][0])
        proto, *_ = build_proto(data, model, size, 1, True, False, DEFAULT_OPSET, "ema", sha256_file(ckpt))
        backend = cls(ckpt, "cpu", threads, proto=proto)
        backend.note = f"in-memory ONNX export of {Path(ckpt).name}, the default for a checkpoint on the CPU"
        return backend

    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(np.float16) if self.half else batch
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0].astype(np.float32)


class OpenVinoBackend(Backend):
    """OpenVINO on the CPU, from an IR (.xml) or an fss ONNX file; precision fp32 | bf16 | auto and OpenVINO's
    latency / throughput hint (fss_deploy/openvino.py)."""

    name = "openvino"

    def __init__(self, path: str | Path, precision: str = "fp32", threads: int = 0, hint: str = "latency"):
        from fss_deploy.openvino import compile_model, read_metadata, resolve_precision

        meta = read_metadata(path)
        self.class_names, self.input_size = deployed_facts(meta, path)
        self.task = deployed_task(meta)
        self.fixed_batch = None if meta.get("batch") == "dynamic" else int(meta.get("batch", 1))
        if meta.get("precision") == "fp16":
            raise ExportError(f"{path}: an FP16 export; OpenVINO on the CPU takes the FP32 one (precision bf16 "
                              "makes it fast)")
        self.precision = resolve_precision(precision)
        self.compiled = compile_model(path, self.precision, hint, threads)
        self.request = self.compiled.create_infer_request()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        out = self.request.infer({0: np.ascontiguousarray(batch, np.float32)})
        return np.asarray(out[self.compiled.output(OUTPUT_NAME)], np.float32)


class TensorRTBackend(Backend):
    """TensorRT 10 engine (NOT VERIFIED here: no GPU/TensorRT on our machines)."""

    name = "tensorrt"

    def __init__(self, path: str | Path, device: str = "cuda"):
        from fss_deploy.tensorrt import check_sidecar, import_tensorrt

        trt = import_tensorrt()
        sidecar = check_sidecar(path)
        meta = sidecar["metadata"]
        self.class_names, self.input_size = deployed_facts(meta, path)
        self.task = deployed_task(meta)
        b = sidecar["batch"]
        self.fixed_batch = None if b.get("dynamic") else int(b["opt"])
        self.max_batch = int(b["max"])
        self.device = "cuda"
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise ExportError(f"{path}: TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.half = sidecar.get("precision") == "fp16"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).cuda()
        self.context.set_input_shape(INPUT_NAME, tuple(x.shape))
        out_shape = tuple(self.context.get_tensor_shape(OUTPUT_NAME))
        out = torch.empty(out_shape, dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(INPUT_NAME, x.data_ptr())
        self.context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return out.cpu().numpy()


@contextmanager
def torch_threads(n: int):
    """torch's intra-op threads are ``n`` inside the block (0: unchanged) and what they were after it, so a
    library call never changes the caller's process. With an onnxruntime or TensorRT backend torch only
    post-processes: 1 thread keeps its pool from colliding with onnxruntime's spinning threads (measured on
    2 cores: 25 tiles of 1024 px in 1.92 s instead of 1.22 s)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def backend_threads(*backends: Backend):
    """``torch_threads`` for running ``backends``: a torch backend's own ``threads``, else 1 (torch only
    post-processes ONNX / TensorRT outputs)."""
    torch_ones = [b for b in backends if b.name == "torch"]
    return torch_threads(max(b.threads for b in torch_ones) if torch_ones else 1)


def load_backend(model: str | Path, backend: str | None = None, device: str = "cpu", imgsz: int | None = None,
                 threads: int = 0, precision: str = "fp32") -> Backend:
    """The backend for a model file: .pt -> torch (on the CPU, unless ``backend="torch"`` asks for it: onnxruntime
    over an in-memory export, ``OnnxBackend.from_checkpoint``), .onnx -> onnxruntime (or openvino), .xml ->
    openvino, .engine -> tensorrt. ``threads``: CPU threads of onnxruntime's session or OpenVINO's, or torch's
    while the torch backend runs (``backend_threads``); the process's torch threads are never changed by loading.
    ``precision``: fp32, or for OpenVINO bf16 / auto (fss_deploy/openvino.py)."""
    path = resolve_model_file(model)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    by_suffix = {".pt": "torch", ".pth": "torch", ".onnx": "onnxruntime", ".xml": "openvino", ".engine": "tensorrt"}
    chosen = backend or by_suffix.get(path.suffix)
    if chosen is None:
        raise ExportError(f"{path}: unknown model type; use .pt, .onnx, .xml or .engine, or pass --backend")
    if chosen not in BACKENDS:
        raise ExportError(f"--backend must be one of {BACKENDS}, got {chosen!r}")
    expected = {"torch": (".pt", ".pth"), "onnxruntime": (".onnx",), "openvino": (".xml", ".onnx"),
                "tensorrt": (".engine",)}[chosen]
    if path.suffix not in expected:
        raise ExportError(f"{path}: the {chosen} backend needs a {' or '.join(expected)} file")
    if precision != "fp32" and chosen != "openvino":
        raise ExportError(f"precision {precision}: only the openvino backend chooses its precision at load time "
                          "(TensorRT and ONNX take --half at export)")
    if chosen == "openvino":
        return OpenVinoBackend(path, precision, threads)
    if chosen == "torch" and backend is None and device == "cpu":     # the fastest accurate CPU path, measured
        return OnnxBackend.from_checkpoint(path, imgsz, threads)
    if chosen == "torch":
        return TorchBackend(path, device, imgsz, threads=threads)
    if chosen == "onnxruntime":
        return OnnxBackend(path, device, threads)
    return TensorRTBackend(path)

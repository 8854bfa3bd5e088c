"""ONNX export with self-describing metadata, a structural graph fingerprint, parity checks,
and the comparison that makes "FSS adds nothing at inference" a checked fact."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fss_core.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from fss_core.defaults import CONF, IOU, check_input
from fss_core.fileio import atomic_write, sha256_file  # noqa: F401 (re-exported for tensorrt.py)
from fss_core.imageio import read_image
from fss_core.nn import count_flops, count_params
from fss_core.preprocess import MEAN, PAD_VALUE, STD, letterbox, to_tensor
from fss_deploy.graph import InferenceGraph

ONNX_FORMAT = "fss-onnx/1"
INPUT_NAME, OUTPUT_NAME = "images", "detections"
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 11, 20  # the TorchScript exporter's range that our graph (SiLU, Resize) exports to


OUTPUT_LAYOUTS = {
    "detect": f"{OUTPUT_NAME}: (batch, anchors, 4 + num_classes): x1 y1 x2 y2 (input pixels), then per-class score = "
              "sigmoid(cls) * sigmoid(obj)",
    "obb": f"{OUTPUT_NAME}: (batch, anchors, 5 + num_classes): cx cy w h (input pixels) theta (radians from +x towards "
           "+y, in (-pi/4, 3pi/4); w and h not ordered), then per-class score = sigmoid(cls) * sigmoid(obj)"}


def deployed_task(meta: dict) -> str:
    """The task of an exported model ("detect" for files exported before oriented models existed)."""
    return meta.get("task", "detect")


class ExportError(ValueError):
    """Bad input for export/compare; the message names the file or value."""


# ---------------------------------------------------------------------------------- fingerprint
def _value_info(vi) -> list:
    t = vi.type.tensor_type
    return [t.elem_type, [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]]


def _attribute(attr):
    import onnx

    v = onnx.helper.get_attribute_value(attr)
    if isinstance(v, onnx.TensorProto):          # constants: structure only, never values
        return ["tensor", v.data_type, list(v.dims)]
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list):
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else
                (["tensor", x.data_type, list(x.dims)] if isinstance(x, onnx.TensorProto) else x) for x in v]
    if hasattr(v, "node"):                        # subgraph
        return graph_structure(v)
    return v


def graph_structure(graph) -> dict:
    """The graph as plain data: op types, attributes, connections (canonically renamed),
    tensor shapes and dtypes — no weight values, no names."""
    names: dict[str, str] = {}

    def canon(name: str) -> str:
        if name == "":
            return ""
        if name not in names:
            names[name] = f"t{len(names)}"
        return names[name]

    inputs = [[canon(i.name), *_value_info(i)] for i in graph.input]
    inits = sorted(([i.name, i.data_type, list(i.dims)] for i in graph.initializer), key=lambda x: x[0])
    init_canon = [[canon(n), dt, dims] for n, dt, dims in inits]
    nodes = [[n.op_type, n.domain, [canon(x) for x in n.input], [canon(x) for x in n.output],
              sorted([a.name, _attribute(a)] for a in n.attribute)] for n in graph.node]
    outputs = [[canon(o.name), *_value_info(o)] for o in graph.output]
    return {"inputs": inputs, "initializers": init_canon, "nodes": nodes, "outputs": outputs}


def fingerprint_model(model) -> str:
    blob = json.dumps(graph_structure(model.graph), sort_keys=True, default=str).encode()
    opsets = json.dumps(sorted((o.domain, o.version) for o in model.opset_import)).encode()
    return hashlib.sha256(blob + opsets).hexdigest()


def onnx_params(model) -> int:
    return int(sum(int(np.prod(i.dims)) if len(i.dims) else 1 for i in model.graph.initializer))


# ---------------------------------------------------------------------------------- export
@dataclass
class ExportResult:
    path: Path
    fingerprint: str
    params: int
    flops: int
    metadata: dict
    verify: dict | None = None


def export_onnx(ckpt_path: str | Path, out: str | Path | None = None, imgsz: int | None = None, batch: int = 1,
                dynamic: bool = False, half: bool = False, opset: int = DEFAULT_OPSET,
                weights: str = "ema", exist_ok: bool = False) -> ExportResult:
    """Checkpoint -> ONNX (fused, decode inside, no NMS), written atomically. An existing ``out`` is replaced
    when it is an export of the same checkpoint (it can be made again), otherwise only with ``exist_ok``."""

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"--opset {opset} is not supported: choose {MIN_OPSET}–{MAX_OPSET} (default {DEFAULT_OPSET})")
    ckpt_path = Path(ckpt_path)
    ckpt = load_checkpoint(ckpt_path)
    model = model_from_checkpoint(ckpt, weights)
    size = int(imgsz or ckpt["input_size"][0])
    out = _checked_export_target(ckpt_path, out, model, size, batch)
    source_sha = sha256_file(ckpt_path)
    if not exist_ok:
        check_replaceable(out, source_sha)
    proto, fp, flops, meta = build_proto(ckpt, model, size, batch, dynamic, half, opset, weights, source_sha)
    atomic_write(out, proto.SerializeToString())
    return ExportResult(out, fp, onnx_params(proto), flops, meta)


def build_proto(ckpt: dict, model, size: int, batch: int, dynamic: bool, half: bool, opset: int, weights: str,
                source_sha: str):
    """The ONNX model of a checkpoint's network (fused, decode inside, no NMS), checked, with fss metadata ->
    (proto, fingerprint, FLOPs, metadata). Nothing is written."""
    import onnx

    graph = InferenceGraph(model, size, size).eval()
    dtype = torch.float16 if half else torch.float32
    if half:
        graph = graph.half()
    dummy = torch.zeros(batch, 3, size, size, dtype=dtype)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (dummy,), buf, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None)
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto)
    fp = fingerprint_model(proto)
    flops = count_flops(model, size, size)
    meta = _onnx_metadata(ckpt, model, size, batch, dynamic, half, weights, source_sha, fp, flops)
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    return proto, fp, flops, meta


def _checked_export_target(ckpt_path: Path, out: str | Path | None, model, size: int, batch: int) -> Path:
    """The ONNX file to write (default: beside the checkpoint), once size, batch and the target are acceptable."""
    if size % max(model.card.strides):
        raise ExportError(f"--imgsz {size} is not a multiple of the largest stride {max(model.card.strides)}")
    if batch < 1:
        raise ExportError(f"--batch must be >= 1, got {batch}")
    try:
        check_input(size, batch, "--imgsz")
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    out = Path(out) if out else ckpt_path.with_suffix(".onnx")
    if out.suffix.lower() != ".onnx":     # an ONNX file named .txt was written, then not recognised by detect
        raise ExportError(f"--out {out}: an ONNX export is named *.onnx")
    if out.exists() and not out.is_file():   # /dev/null, a folder, a pipe: never replaced, --exist-ok or not
        raise ExportError(f"--out {out}: exists and is not a regular file")
    _check_writable(out)
    return out


def _onnx_metadata(ckpt: dict, model, size: int, batch: int, dynamic: bool, half: bool, weights: str,
                   source_sha: str, fp: str, flops: int) -> dict[str, str]:
    """The facts an exported file carries about itself (``metadata_props``): what detect and info read."""
    return {
        "format": ONNX_FORMAT, "fss_version": ckpt["versions"].get("fss", ""),
        "class_names": json.dumps(ckpt["class_names"]), "num_classes": str(len(ckpt["class_names"])),
        "strides": json.dumps(list(model.card.strides)), "input_size": json.dumps([size, size]),
        "input": f"{INPUT_NAME}: (batch, 3, {size}, {size}) float{'16' if half else '32'} RGB in [0, 1], "
                 f"letterboxed (top-left, pad {PAD_VALUE})",
        "mean": json.dumps(list(MEAN)), "std": json.dumps(list(STD)),
        "task": model.card.task, "output_layout": OUTPUT_LAYOUTS[model.card.task],
        "decode_in_graph": "true", "nms_in_graph": "false", "batch": "dynamic" if dynamic else str(batch),
        "precision": "fp16" if half else "fp32", "card": json.dumps(model.card.to_dict()),
        "source_checkpoint_sha256": source_sha, "weights": weights,
        "trained_with": (ckpt.get("assigner") or {}).get("name", "none"),
        "params": str(count_params(model)), "flops": str(flops), "graph_fingerprint": fp,
    }


def check_replaceable(out: Path, source_sha: str) -> None:
    """Refuse to overwrite ``out`` (an ONNX file, an OpenVINO IR, or a TensorRT engine by its sidecar) unless it was
    exported from
    the checkpoint whose SHA-256 is ``source_sha``: another checkpoint's export may be all that is left of it."""
    out = Path(out)
    if not out.exists():
        return
    source = None
    try:
        if out.suffix == ".onnx":
            import onnx

            meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
        elif out.suffix == ".xml":                      # an OpenVINO IR: the metadata is in its rt_info
            from fss_deploy.openvino import read_metadata

            meta = read_metadata(out)
        else:
            meta = json.loads(out.with_suffix(out.suffix + ".json").read_text()).get("metadata", {})
        source = meta.get("source_checkpoint_sha256")
    except Exception:  # noqa: BLE001 - unreadable or not ours: not replaced without being asked
        pass
    if source == source_sha:
        return
    what = f"an export of another checkpoint (SHA-256 {source[:12]}…)" if source else "a file that is not an " \
        "export of this checkpoint"
    raise FileExistsError(f"{out} holds {what}; pass --exist-ok (exist_ok=True) to replace it, or --out another "
                          "path")


def _check_writable(out: Path) -> None:
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{out}: cannot create the output folder: {exc.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise ExportError(f"{out}: the output folder {parent} is not writable")
    if out.is_dir():
        raise ExportError(f"{out}: is a folder; give a file path")


def read_onnx(path: str | Path, require_fss: bool = True, weights: bool = True):
    """Load an ONNX file and its metadata; clear errors for corrupt files or missing fss metadata. ``weights=False``
    leaves external weight files unread (for the metadata alone: a file whose external data claims 3 GB took
    6 GB to be refused)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path), load_external_data=weights)
    except Exception as exc:  # DecodeError and friends
        raise ExportError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if require_fss and meta.get("format") != ONNX_FORMAT:
        raise ExportError(f"{path}: an ONNX model without fss metadata (format={meta.get('format')!r}); "
                          "export it with `fss export`")
    return proto, meta


def deployed_facts(meta: dict, where: str | Path) -> tuple[list[str], int]:
    """(class names, input size) from an exported model's metadata, checked: a missing key or another type is an
    error naming the file and the key (it was a bare KeyError 'class_names', or a TypeError from len())."""
    def value(key):
        try:
            return json.loads(meta[key])
        except KeyError:
            raise ExportError(f"{where}: its fss metadata has no {key!r}; export the model again") from None
        except (TypeError, ValueError, RecursionError) as exc:
            raise ExportError(f"{where}: its metadata {key!r} is not valid JSON ({exc})") from None

    names, size = value("class_names"), value("input_size")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ExportError(f"{where}: its metadata 'class_names' must be a list of names, got {str(names)[:80]}")
    if not (isinstance(size, list) and len(size) == 2 and all(type(v) is int and 32 <= v <= 65536 for v in size)):
        raise ExportError(f"{where}: its metadata 'input_size' must be [height, width] in px, got {str(size)[:80]}")
    return names, size[0]


# ---------------------------------------------------------------------------------- verify
def verify_onnx(onnx_path: str | Path, ckpt_path: str | Path, images: list[str | Path], weights: str = "ema",
                atol: float = 1e-4, conf: float = CONF, iou: float = IOU, rtol: float = 1e-3, progress=None) -> dict:
    """onnxruntime vs torch on real images: max abs difference of the raw outputs (the decode
    inverted on both sides), and agreement of the final detections (IoU ≥ 0.5, same class).
    ``progress(done, total)`` after every image."""
    import onnxruntime as ort

    from fss_core.nn.postprocess import postprocess, postprocess_obb

    proto, meta = read_onnx(onnx_path)
    task = deployed_task(meta)
    post = postprocess_obb if task == "obb" else postprocess
    size = json.loads(meta["input_size"])[0]
    fixed = meta["batch"] != "dynamic"
    model = model_from_checkpoint(load_checkpoint(ckpt_path), weights)
    graph = InferenceGraph(model, size, size).eval()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = int(meta["batch"]) if fixed else 1
    max_abs, max_px, worst_excess, matched, total_t, total_o = 0.0, 0.0, float("-inf"), 0, 0, 0
    for n, path in enumerate(images, start=1):
        if progress:
            progress(n - 1, len(images))
        canvas, _, _ = letterbox(read_image(path), (size, size))
        x = to_tensor([canvas] * batch)
        with torch.no_grad():
            ref = graph(x)
        got = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
        # compare in the raw (pre-decode) space: exp() in the decode turns a 1e-5 raw difference
        # into large pixel differences for the absurd boxes of background points
        raw_ref, raw_got = (undecode(x, graph.points, graph.strides, task) for x in (ref, got))
        diff = (raw_got - raw_ref).abs()
        max_abs = max(max_abs, float(diff.max()))
        tol = raw_tolerance(ref, graph.strides, atol, rtol, raw_ref, task)
        worst_excess = max(worst_excess, float((diff - tol).max()))
        max_px = max(max_px, float((got[..., :4] - ref[..., :4]).abs().max()))
        dt, do = post(ref, conf, iou)[0], post(got, conf, iou)[0]
        total_t += len(dt)
        total_o += len(do)
        if len(dt) and len(do):
            matched += int(match_detections(dt, do).sum())
    f1 = 1.0 if total_t == total_o == 0 else 2 * matched / max(total_t + total_o, 1)
    if progress:
        progress(len(images), len(images))
    return {"images": len(images), "max_abs_diff_raw": max_abs, "atol": atol, "rtol": rtol,
            "max_abs_diff_box_px": max_px,
            "max_excess_over_tolerance": worst_excess,
            "within_tolerance": worst_excess <= 0, "detections_torch": total_t, "detections_onnx": total_o,
            "detection_f1": f1}


def match_detections(a: torch.Tensor, b: torch.Tensor, iou: float = 0.5, px: float = 0.01) -> torch.Tensor:
    """(Ka,) bool: a detection of ``a`` has a same-class partner in ``b`` at IoU ≥ ``iou``, or with
    every coordinate within ``px`` pixels (IoU is meaningless for near-degenerate boxes). Detections (K, 6), or
    oriented (K, 7) (rotated IoU)."""
    from fss_core.boxes import box_iou
    from fss_core.rbox_iou import rbox_iou_aligned

    k = a.shape[1] - 2
    same = a[:, k + 1:k + 2] == b[:, k + 1][None]                               # (Ka, Kb)
    close = (a[:, None, :4] - b[None, :, :4]).abs().amax(-1) <= px
    overlap = rbox_iou_aligned(a[:, None, :5], b[None, :, :5]) if k == 5 else box_iou(a[:, :4], b[:, :4])
    return ((overlap >= iou) | close).logical_and(same).any(dim=1)


def raw_tolerance(out: torch.Tensor, strides: torch.Tensor, atol: float, rtol: float = 0.0,
                  raw: torch.Tensor | None = None, task: str = "detect") -> torch.Tensor:
    """Per-element tolerance in the raw space: ``atol``, plus ``rtol`` × the largest raw box value of
    the image (float32 convolutions accumulate errors in proportion to the magnitudes flowing through
    the network, not to the element's own value; the exported graph also has BatchNorm fused into the
    convolutions: a 1-epoch model showed differences up to 1.4e-3 with raw boxes up to 6.9, i.e. 2e-4 of
    the magnitude, on raw values of 0.7–2.5), plus what the float32 output itself can resolve (a decoded coordinate
    near 5e4 px is only stored to ~0.004 px)."""
    eps = torch.finfo(torch.float32).eps
    if task == "obb":                                   # cx cy w h: the centre and sides are the outputs
        mag = out[..., 0:2].abs()
        wh = out[..., 2:4].clamp(min=1e-12)
    else:
        mag = torch.maximum(out[..., 0:2].abs(), out[..., 2:4].abs())               # (B, A, 2)
        wh = (out[..., 2:4] - out[..., 0:2]).clamp(min=1e-12)
    if raw is not None and rtol:
        atol = atol + rtol * raw[..., :4].abs().amax(dim=(1, 2), keepdim=True)     # (B, 1, 1)
    tol_centre = atol + 4 * eps * mag / strides[None, :, None]
    tol_size = atol + 4 * eps * (mag + wh) / wh if task == "obb" else atol + 4 * eps * mag / wh
    return torch.cat((tol_centre, tol_size, torch.zeros_like(out[..., 4:]) + atol), dim=-1)


def undecode(out: torch.Tensor, points: torch.Tensor, strides: torch.Tensor, task: str = "detect") -> torch.Tensor:
    """Inverse of the in-graph decode: (B, A, 4 + C) -> [tx, ty, tw, th, scores…] (raw scale); oriented
    (B, A, 5 + C) -> [tx, ty, tw, th, θ, scores…] (θ itself: bounded, so compared as it is)."""
    s = strides[None, :, None]
    if task == "obb":
        centre, wh = out[..., 0:2], out[..., 2:4].clamp(min=1e-12)
    else:
        centre = (out[..., 0:2] + out[..., 2:4]) * 0.5
        wh = (out[..., 2:4] - out[..., 0:2]).clamp(min=1e-12)
    return torch.cat(((centre - points[None]) / s, torch.log(wh / s), out[..., 4:]), dim=-1)


# ---------------------------------------------------------------------------------- compare
def describe_for_compare(path: str | Path, imgsz: int | None = None) -> dict:
    """Fingerprint, params, FLOPs and structure of a checkpoint (exported on the fly) or ONNX file."""
    path = Path(path)
    if path.suffix == ".onnx":
        proto, meta = read_onnx(path)
        return {"file": str(path), "fingerprint": fingerprint_model(proto), "params": onnx_params(proto),
                "flops": int(meta.get("flops", 0)), "structure": graph_structure(proto.graph),
                "trained_with": meta.get("trained_with", "?")}
    try:
        load_checkpoint(path)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    with tempfile.TemporaryDirectory() as tmp:
        res = export_onnx(path, Path(tmp) / "m.onnx", imgsz=imgsz)
        proto, _ = read_onnx(res.path)
        return {"file": str(path), "fingerprint": res.fingerprint, "params": res.params, "flops": res.flops,
                "structure": graph_structure(proto.graph), "trained_with": res.metadata["trained_with"]}


def structure_differences(a: dict, b: dict, limit: int = 20) -> list[str]:
    diffs = []
    for key in ("inputs", "outputs"):
        if a[key] != b[key]:
            diffs.append(f"graph {key}: {a[key]} vs {b[key]}")
    if len(a["initializers"]) != len(b["initializers"]):
        diffs.append(f"initializers: {len(a['initializers'])} vs {len(b['initializers'])}")
    else:
        for x, y in zip(a["initializers"], b["initializers"]):
            if x[1:] != y[1:]:
                diffs.append(f"initializer {x[0]}: dtype/shape {x[1:]} vs {y[1:]}")
    if len(a["nodes"]) != len(b["nodes"]):
        diffs.append(f"node count: {len(a['nodes'])} vs {len(b['nodes'])}")
    for i, (x, y) in enumerate(zip(a["nodes"], b["nodes"])):
        if x != y:
            diffs.append(f"node {i}: {x[0]} {x[4]} vs {y[0]} {y[4]}")
        if len(diffs) >= limit:
            diffs.append("…")
            break
    return diffs


def compare(a: str | Path, b: str | Path, imgsz: int | None = None) -> dict:
    da, db = describe_for_compare(a, imgsz), describe_for_compare(b, imgsz)
    diffs = [] if da["fingerprint"] == db["fingerprint"] else structure_differences(da["structure"], db["structure"])
    if da["fingerprint"] != db["fingerprint"] and not diffs:
        diffs = ["opset or metadata-free structure differs (fingerprints differ)"]
    for k in ("params", "flops"):
        if da[k] != db[k]:
            diffs.append(f"{k}: {da[k]} vs {db[k]}")
    strip = ("structure",)
    return {"a": {k: v for k, v in da.items() if k not in strip}, "b": {k: v for k, v in db.items() if k not in strip},
            "identical": not diffs, "differences": diffs}

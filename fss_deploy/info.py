"""What a checkpoint, ONNX file, OpenVINO IR or model card describes: `fss info`."""

from __future__ import annotations

from pathlib import Path

from fss_core.checkpoint import card_of, load_checkpoint, model_from_checkpoint
from fss_core.nn import ModelCard, build_model, count_flops, count_params, load_card


def describe(target: str, imgsz: int | None = None) -> dict:
    """A flat dict of facts about ``target`` (card name, card YAML, .pt checkpoint, .onnx file or OpenVINO .xml)."""
    path = Path(target)
    if path.suffix == ".onnx":
        return _describe_onnx(path)
    if path.suffix == ".xml":
        from fss_deploy.openvino import read_metadata

        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such OpenVINO model")
        return {**read_metadata(path), "file": str(path), "kind": "openvino ir",
                "weights": str(path.with_suffix(".bin"))}
    if path.suffix in (".pt", ".pth", ".ckpt"):
        ckpt = load_checkpoint(path)
        model = model_from_checkpoint(ckpt)
        h, w = (imgsz, imgsz) if imgsz else tuple(ckpt["input_size"])
        assigner = ckpt.get("assigner") or {}
        return {"file": str(path), "kind": "checkpoint", **_arch(card_of(ckpt)), "classes": ckpt["class_names"],
                "input_size": f"{h}x{w}", "params": count_params(model), "flops": count_flops(model, h, w),
                "assigner": assigner.get("name", "none (untrained)"),
                "assigner_params": assigner.get("params", {}), "epoch": ckpt.get("epoch"),
                "metrics": ckpt.get("metrics", {}), "versions": ckpt.get("versions", {})}
    card = load_card(target)
    model = build_model(card)
    h, w = (imgsz, imgsz) if imgsz else card.input_size
    return {"file": str(target), "kind": "model card", **_arch(card),
            "classes": f"{card.num_classes} (set by the data)",
            "input_size": f"{h}x{w}", "params": count_params(model), "flops": count_flops(model, h, w),
            "assigner": "chosen at training time (fss train --assigner)"}


def _arch(card: ModelCard) -> dict:
    if card.backbone == "cspdarknet":
        arch = (f"CSPDarkNet + PAFPN + decoupled head (depth {card.depth}, width {card.width}"
                f"{', depthwise' if card.depthwise else ''})")
    else:
        arch = f"ResNet-{card.resnet_depth} + FPN ({card.neck_channels} ch) + decoupled head"
    task = "obb (oriented boxes: cx cy w h θ)" if card.task == "obb" else "detect (horizontal boxes)"
    return {"name": card.name, "architecture": arch, "task": task, "strides": list(card.strides)}


def _describe_onnx(path: Path) -> dict:
    import onnx

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for corrupt files
        raise ValueError(f"{path}: not a readable ONNX model: {exc}") from None
    meta = {p.key: p.value for p in model.metadata_props}
    inputs = [(i.name, [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim]) for i in model.graph.input]
    outputs = [(o.name, [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim]) for o in model.graph.output]
    domains = sorted({n.domain for n in model.graph.node} - {"", "ai.onnx"})      # ops no standard runtime has
    # the file's own metadata first: a key of it named like a fact below (`file`, `kind`) cannot replace that fact
    return {**meta, "file": str(path), "kind": "onnx",
            "opset": model.opset_import[0].version if model.opset_import else None, "inputs": inputs,
            "outputs": outputs, **({"custom_op_domains": domains} if domains else {})}


def readable(facts: dict) -> dict:
    """The facts as a person reads them: params in M, FLOPs in G (numbers in ONNX metadata are strings),
    long lists shortened."""
    def number(value) -> float | None:
        try:
            return float(value)
        except (TypeError, ValueError):
            return None

    shown = {}
    for key, value in facts.items():
        n = number(value)
        if key == "params" and n is not None:
            value = f"{n / 1e6:.3f} M"
        elif key == "flops" and n is not None:
            value = f"{n / 1e9:.2f} GFLOPs"
        elif isinstance(value, list) and len(value) > 12:
            value = f"{len(value)}: " + ", ".join(map(str, value[:12])) + ", …"
        shown[key] = value
    return shown

"""YOLOX and torchvision-ResNet weights as fss checkpoints, against outputs of the reference code itself
(tests/fixtures/weights, made by benchmarks/weights_fixtures.py running YOLOX 0.3.0 and torchvision 0.28.0)."""

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fss_core.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from fss_core.foreign_weights import (
    WeightsError,
    _fold_yolox_conventions,
    _renamed_yolox,
    convert_weights,
    read_state_dict,
)
from fss_core.nn import build_model, load_card
from fss_core.nn.decode import decode

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests/fixtures/weights"
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.fixture(scope="module")
def yolox():
    return torch.load(FIX / "yolox_nano_outputs.pt", weights_only=True)


def _decoded(model, x):
    """(cx cy w h) (A, 4) and scores obj, cls of our network on x, in x's dtype."""
    with torch.no_grad():
        raw = model(x)
    pts, strides = model.points(x.shape[2], x.shape[3])
    boxes, obj, cls = decode(raw, pts.to(x.dtype), strides.to(x.dtype))
    return torch.cat(((boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]), -1)[0], obj[0], cls[0]


def test_renamed_yolox_equals_yolox_on_its_own_input(yolox):
    """The renaming alone (plus the decode offset) on YOLOX's BGR 0–255 input: YOLOX's outputs to float32 noise."""
    state, _ = read_state_dict(FIX / "yolox_nano.pth")
    weights = _renamed_yolox(state)
    for key in [k for k in weights if k.startswith("head.reg_preds") and k.endswith("bias")]:
        weights[key] = weights[key] - torch.tensor([0.5, 0.5, 0, 0])
    model = build_model(load_card("fss-n")).eval()
    assert len(weights) == 642 and not model.load_state_dict(weights, strict=True).missing_keys
    box, obj, cls = _decoded(model, yolox["input"].float())
    ref = yolox["outputs"][0]
    assert (box[:, :2] - ref[:, :2]).abs().max() < 0.01
    assert ((box[:, 2:] - ref[:, 2:4]).abs() / ref[:, 2:4].clamp(min=1)).max() < 1e-4
    assert (obj - ref[:, 4]).abs().max() < 1e-6 and (cls - ref[:, 5:]).abs().max() < 1e-6


def test_folding_the_input_convention_is_exact(yolox):
    """RGB 0–1 into the folded stem equals BGR 0–255 into YOLOX's stem, in float64 (exact arithmetic's answer)."""
    state, _ = read_state_dict(FIX / "yolox_nano.pth")
    state = {k: v.double() if v.is_floating_point() else v for k, v in _renamed_yolox(state).items()}
    plain = build_model(load_card("fss-n")).double().eval()
    plain.load_state_dict(state)
    folded = build_model(load_card("fss-n")).double().eval()
    folded.load_state_dict(_fold_yolox_conventions(state))
    bgr255 = yolox["input"].double()
    rgb01 = bgr255.flip(1) / 255
    with torch.no_grad():
        a, b = plain(bgr255), folded(rgb01)
    shift = torch.zeros(85, dtype=torch.float64)
    shift[:2] = 0.5                                             # the decode offset, folded into the biases
    assert (a - shift - b).abs().max() < 1e-9 * a.abs().max()


def test_converted_checkpoint_reproduces_yolox(yolox, tmp_path):
    path = save_checkpoint(convert_weights(FIX / "yolox_nano.pth", "fss-n"), tmp_path / "yolox_nano-fss.pt")
    ckpt = load_checkpoint(path)
    assert ckpt["class_names"][:3] == ["person", "bicycle", "car"] and len(ckpt["class_names"]) == 80
    assert ckpt["train_config"]["converted_from"]["kind"] == "yolox"
    model = model_from_checkpoint(ckpt)
    rgb01 = torch.from_numpy(yolox["image"].numpy()[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    box, obj, cls = _decoded(model, rgb01)
    ref = yolox["outputs"][0]
    # float32 noise of this deep random network: its own float32 and float64 runs differ by ~7e-4 (a missing
    # decode offset would be 4–16 px)
    assert (box[:, :2] - ref[:, :2]).abs().max() < 0.05
    assert ((box[:, 2:] - ref[:, 2:4]).abs() / ref[:, 2:4].clamp(min=1)).max() < 2e-3
    assert (obj - ref[:, 4]).abs().max() < 3e-4 and (cls - ref[:, 5:]).abs().max() < 3e-4


def test_exported_onnx_of_a_converted_yolox_reproduces_yolox(yolox, tmp_path):
    import onnxruntime as ort

    from fss.api import export

    path = save_checkpoint(convert_weights(FIX / "yolox_nano.pth", "fss-n"), tmp_path / "yn.pt")
    onnx = export(path, imgsz=416, out=tmp_path / "yn.onnx").onnx
    rgb01 = yolox["image"].numpy()[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255
    sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: rgb01})[0][0]               # (A, 4 + 80) xyxy, cls · obj
    ref = yolox["outputs"][0].numpy()
    xyxy = np.concatenate((ref[:, :2] - ref[:, 2:4] / 2, ref[:, :2] + ref[:, 2:4] / 2), 1)
    assert (np.abs(out[:, :4] - xyxy) / np.maximum(ref[:, 2:4].max(1, keepdims=True), 1)).max() < 2e-3
    assert np.abs(out[:, 4:] - ref[:, 5:] * ref[:, 4:5]).max() < 3e-4
    # and the graph is a native fss-n's: the same structure, only the weights differ (a native model with weights
    # of its own, as after training: a fresh one has many equal tensors, which the exporter shares)
    from fss_core.checkpoint import make_checkpoint
    from fss_core.foreign_weights import COCO_CLASSES

    trained_like = build_model(load_card("fss-n"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for value in trained_like.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=g) + 0.5)
    native = save_checkpoint(make_checkpoint(trained_like, COCO_CLASSES), tmp_path / "native.pt")
    assert export(native, imgsz=416, out=tmp_path / "native.onnx").fingerprint == export(
        path, imgsz=416, out=tmp_path / "yn2.onnx").fingerprint


def test_wrong_card_names_the_one_that_fits():
    with pytest.raises(WeightsError, match="those of fss-n, not of fss-s.*--model fss-n"):
        convert_weights(FIX / "yolox_nano.pth", "fss-s")


def test_torchvision_resnet50_loads_every_backbone_tensor_and_matches_its_features(tmp_path):
    from weights_fixtures import seeded_resnet_state

    ref = torch.load(FIX / "resnet50_features.pt", weights_only=True)
    layout = json.loads((FIX / "resnet_layout.json").read_text())["resnet50"]
    state = seeded_resnet_state(layout, ref["seed"])
    torch.save(state, tmp_path / "resnet50.pth")
    ckpt = convert_weights(tmp_path / "resnet50.pth", "fss-r50")
    record = ckpt["train_config"]["converted_from"]
    assert record["tensors"] == len(state) - 2 == 318 and record["fresh"] == ["neck", "head"]   # all but fc
    card = ckpt["card"]
    assert card["input_mean"] == (0.485, 0.456, 0.406) and card["bn_eps"] == 1e-5
    model = model_from_checkpoint(ckpt)
    with torch.no_grad():
        c3, c4, c5 = model.backbone(ref["input"])                # the fixture's input is already normalised
    for ours, theirs in ((c3, ref["c3"]), (c4, ref["c4"]), (c5, ref["c5"])):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5 * theirs.abs().max())
    with torch.no_grad():                                         # the graph normalises RGB 0–1 itself
        mean, std = torch.tensor(card["input_mean"]).view(1, 3, 1, 1), torch.tensor(card["input_std"]).view(1, 3, 1, 1)
        assert torch.allclose(model.forward_features(ref["input"] * std + mean)[0],
                              model.neck(model.backbone(ref["input"]))[0], atol=1e-4)


def test_torchvision_resnet101_layout_maps_onto_fss_r101(tmp_path):
    """The large card by key and shape: every one of torchvision's 626 tensors but fc has its place in fss-r101."""
    from weights_fixtures import seeded_resnet_state

    layout = json.loads((FIX / "resnet_layout.json").read_text())["resnet101"]
    torch.save(seeded_resnet_state(layout, 0), tmp_path / "resnet101.pth")
    assert convert_weights(tmp_path / "resnet101.pth", "fss-r101")["train_config"]["converted_from"]["tensors"] == 624
    with pytest.raises(WeightsError, match="those of fss-r101, not of fss-r50"):
        convert_weights(tmp_path / "resnet101.pth", "fss-r50")


def test_unsafe_pickles_are_refused_without_running_them(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("executed!",))

    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "x": Boom()}, path)
    with pytest.raises(WeightsError, match="pickles the global 'print', which is not on the allow-list"):
        read_state_dict(path)
    with open(path, "wb") as f:                                   # a plain pickle (not torch.save): refused too
        pickle.dump({"model": {"w": torch.zeros(1)}, "x": Boom()}, f)
    with pytest.raises(WeightsError, match="refusing to load it"):
        read_state_dict(path)


def test_numpy_scalars_of_released_checkpoints_are_allowed(tmp_path):
    state, extra = read_state_dict(FIX / "yolox_nano.pth")          # YOLOX's trainer pickles best_ap as numpy
    assert extra["start_epoch"] == 300 and isinstance(extra["best_ap"], float)

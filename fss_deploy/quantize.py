"""INT8 post-training quantisation of an fss ONNX export, calibrated on the user's own images (onnxruntime).

    fss export best.pt --int8 --calib tiles/             # best-int8.onnx beside best.onnx

onnxruntime's static quantisation (``quantize_static``, QDQ format: int8 weights per output channel, uint8
activations, MinMax calibration) over the convolutions of the backbone, the neck and the head's hidden layers.
The head's final prediction convolutions (box, objectness, class) and the decode stay in float: quantising the box
regression put raw box outputs up to 56 off in the issue's first try, and the decode's ``exp`` turns any error in
them into a proportional error in box size. Calibration tiles: ``tiles`` crops of the model's input size cut from
the images of ``calib`` (spread over the images, each letterboxed as detection does).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fss_core.imageio import read_image
from fss_core.preprocess import letterbox, to_array
from fss_deploy.export import INPUT_NAME, ExportError, read_onnx
from fss_deploy.sources import resolve_sources

QUANTISED = ("/net/backbone/", "/net/neck/", "/net/head/stems", "/net/head/cls_convs", "/net/head/reg_convs")


def calibration_tiles(calib: str | Path, size: int, tiles: int = 32) -> np.ndarray:
    """(N, 3, size, size) float32 inputs from the images under ``calib``: tiles taken on a grid over each image,
    the images visited in turn until ``tiles`` are cut. Raises ExportError when no image can be read."""
    paths = resolve_sources([str(calib)])
    images = []
    for p in paths:
        try:
            images.append(read_image(p))
        except ValueError:
            continue
    if not images:
        raise ExportError(f"--calib {calib}: no readable image to calibrate on")
    crops = []
    for k in range(tiles):                       # image k mod N, its (k div N)-th cell of a size × size grid
        img = images[k % len(images)]
        h, w = img.shape[:2]
        n, cols, rows = k // len(images), max(1, (w - 1) // size + 1), max(1, (h - 1) // size + 1)
        x = min((n % cols) * size, max(0, w - size))
        y = min(((n // cols) % rows) * size, max(0, h - size))
        crops.append(letterbox(img[y:y + size, x:x + size], (size, size))[0])
    return to_array(crops)


class _Reader:
    """onnxruntime's CalibrationDataReader over the calibration tiles, one per call."""

    def __init__(self, batch: np.ndarray):
        self.items = iter([{INPUT_NAME: batch[i:i + 1]} for i in range(len(batch))])

    def get_next(self):
        return next(self.items, None)

    def rewind(self):
        pass


def quantize_onnx(onnx_path: str | Path, out: str | Path, calib: str | Path, tiles: int = 32) -> Path:
    """``onnx_path`` (an fss export with a batch of 1 or dynamic) -> an INT8 QDQ model at ``out`` with the same
    metadata (``precision`` "int8", ``int8_calibration`` naming the images and tiles)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model, meta = read_onnx(onnx_path)
    size = int(json.loads(meta["input_size"])[0])
    batch = calibration_tiles(calib, size, tiles)
    keep_float = [n.name for n in model.graph.node if not n.name.startswith(QUANTISED)]
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    quantize_static(str(onnx_path), str(tmp), _Reader(batch), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep_float)
    q = onnx.load(str(tmp))
    del q.metadata_props[:]
    for key, value in {**meta, "precision": "int8",
                       "int8_calibration": f"{len(batch)} tiles of {calib}"}.items():
        q.metadata_props.add(key=key, value=str(value))
    from fss_core.fileio import atomic_write

    atomic_write(out, q.SerializeToString())
    tmp.unlink()
    return out

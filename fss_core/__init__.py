"""What training and deployment share, importing neither (DESIGN.md, "The shape"):

    nn/            the network (backbones, neck, head, decode, fuse), model cards, the bundled-model finder
    preprocess.py  letterbox and arrays (PAD_VALUE): the one preprocessing of training, export and every backend
    imageio.py     image files: suffixes, header sizes, the pixel limit, the EXIF turn, decoding
    raster.py      GeoTIFFs window by window: bands, the 8-bit rule, georeference
    geojson.py     detections as GeoJSON
    boxes.py       box math, NMS, detections -> COCO/DOTA/YOLO records
    rbox.py        rotated boxes: THE angle convention, polygon <-> (cx, cy, w, h, θ), minimum-area rectangles
    polygon_iou.py exact IoU of quadrilaterals (convex clipping, signed fans for non-convex), torch, any device
    rotated_nms.py whole-scene rotated NMS / NMM (envelope sweep, exact IoU of the nearby pairs)
    gaussian_box.py rotated boxes as Gaussians: probiou, KLD, GWD (for losses; never the evaluation IoU)
    tiles.py       the tile grid of data split and detect
    checkpoint.py  the checkpoint schema (loading never executes code)
    fileio.py      atomic writes, safe names, the folder lock
    defaults.py    the shared defaults and bounds (thresholds, caps, input sizes)
    launch.py      the torchrun variables, read once
    models/        package data: model cards (YAML), the bundled model and its sample scene

``fss`` (API + CLI) -> {``fss_train``, ``fss_deploy``} -> ``fss_core``; the two sides never import each other
(tests/test_dependency_rule.py).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fss")       # the one owner: pyproject's version, as installed
except PackageNotFoundError:           # a source tree that was never installed
    __version__ = "0+unknown"

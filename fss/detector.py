"""``Detector``: tiled detection from Python — on arrays, files, folders — and the folder runner behind
``fss detect`` (resumable, several processes under torchrun).

    from fss import Detector
    det = Detector("best.onnx", tile=1024, overlap=200)
    for r in det("scenes/"):                 # a file, a folder, a glob, a list of them, or an array
        print(r.source, len(r), r.names[:3])
        r.to_coco(image_id=1)                # COCO results; r.to_dota(), r.to_yolo(), r.plot()
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fss.api import resolve_device
from fss_core import defaults
from fss_core.boxes import detections_to_coco, detections_to_dota, detections_to_yolo
from fss_core.defaults import FORMATS
from fss_core.geojson import feature_collection, geojson_features
from fss_core.imageio import read_image
from fss_core.launch import local_rank, rank_and_world
from fss_core.nn.card import resolve_model_file
from fss_core.raster import Georef, parse_bands, parse_stretch
from fss_core.rdetections import rdetection_polygons, rdetections_to_coco, rdetections_to_dota, rdetections_to_yolo
from fss_deploy.backends import load_backend
from fss_deploy.detect import DEFAULT_MODEL, TiledDetector, resolve_classes
from fss_deploy.folder_run import check_output_dir, detect_folder
from fss_deploy.sources import open_image, resolve_sources
from fss_deploy.tiling import envelopes
from fss_deploy.writers import annotate_array

log = logging.getLogger("fss")
DEFAULT_MODEL_NOTICE = (f"no model given: using the bundled {DEFAULT_MODEL.name}, a demonstration model trained on "
                        "synthetic scenes only — on real aerial images it finds little (DOTA mAP50 0.035 and 0.001 "
                        "on the two labelled DOTA sample sets); train or fine-tune your own (README: Fine-tuning)")


@dataclass
class Result:
    """The detections of one image. ``boxes`` (N, 4) float32 x1 y1 x2 y2 in image pixels; ``scores`` (N,);
    ``class_ids`` (N,) int64 indices into ``classes`` (the model's class names); ``source`` the file, or
    None for an array; ``shape`` (height, width). An oriented model's result also has ``obb`` (N, 5) float32
    ``cx cy w h θ`` (``fss_core.rbox``'s convention) and ``polygons`` (N, 4, 2); its ``boxes`` are the polygons'
    envelopes; its outputs are Task1 / YOLO-OBB / COCO-with-polygon / GeoJSON polygons."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    classes: list[str]
    shape: tuple[int, int]
    source: Path | None = None
    image: np.ndarray | None = field(default=None, repr=False)     # BGR, kept only for arrays (for plot)
    georef: Georef | None = None                                   # a georeferenced GeoTIFF's transform and CRS
    obb: np.ndarray | None = None                                  # (N, 5) oriented boxes; None: a horizontal model

    @classmethod
    def from_array(cls, dets: np.ndarray, classes: list[str], shape, source=None, image=None,
                   georef: Georef | None = None) -> Result:
        """From (N, 6) detections, or (N, 7) oriented ones (``cx cy w h θ score class``)."""
        dets = np.asarray(dets, np.float32)
        cols = dets.shape[1] if dets.ndim == 2 else 6
        dets = dets.reshape(-1, cols)
        obb = dets[:, :5].copy() if cols == 7 else None
        boxes = envelopes(dets).astype(np.float32) if cols == 7 else dets[:, :4].copy()
        return cls(boxes, dets[:, -2].copy(), dets[:, -1].astype(np.int64), list(classes),
                   (int(shape[0]), int(shape[1])), Path(source) if source else None, image, georef, obb)

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def names(self) -> list[str]:
        """The class name of every detection."""
        return [self.classes[int(c)] for c in self.class_ids]

    @property
    def polygons(self) -> np.ndarray:
        """(N, 4, 2) corners of the oriented boxes (an oriented model's result), clockwise on screen."""
        if self.obb is None:
            raise AttributeError("polygons: a horizontal model's result has boxes only (Result.boxes)")
        return rdetection_polygons(self.detections()).reshape(-1, 4, 2)

    def detections(self) -> np.ndarray:
        """(N, 6) x1 y1 x2 y2 score class — the layout of every writer; (N, 7) cx cy w h θ score class for an
        oriented model."""
        box = self.boxes if self.obb is None else self.obb
        return np.concatenate([box, self.scores[:, None], self.class_ids[:, None].astype(np.float32)], 1)

    def to_coco(self, image_id: int = 1) -> list[dict]:
        """COCO results (``category_id`` = class index + 1, ``bbox`` x y w h; oriented: with the polygon as
        ``segmentation`` and ``rbox``)."""
        to_coco = detections_to_coco if self.obb is None else rdetections_to_coco
        return to_coco(self.detections(), image_id)

    def to_dota(self, image_name: str | None = None) -> list[tuple[str, str]]:
        """DOTA Task2 lines: (class name, ``"image score xmin ymin xmax ymax"``); oriented: Task1 lines
        (``"image score x1 y1 … x4 y4"``)."""
        name = image_name or (self.source.stem if self.source else "image")
        to_dota = detections_to_dota if self.obb is None else rdetections_to_dota
        return to_dota(self.detections(), name, self.classes)

    def to_yolo(self) -> list[str]:
        """YOLO lines ``class cx cy w h score`` (normalised); oriented: YOLO-OBB ``class x1 y1 … x4 y4 score``."""
        to_yolo = detections_to_yolo if self.obb is None else rdetections_to_yolo
        return to_yolo(self.detections(), self.shape[1], self.shape[0])

    def to_geojson(self, wgs84: bool = False) -> dict:
        """A GeoJSON FeatureCollection, one polygon per detection (properties score, class, name): in the
        raster's CRS, or longitude/latitude with ``wgs84``; image pixels for an image without georeference."""
        if wgs84 and self.georef is None:
            raise ValueError(f"{self.source or 'this image'} has no georeference: no longitude/latitude to give")
        feats = geojson_features(self.detections(), self.classes, self.georef, wgs84)
        return feature_collection(feats, self.georef, wgs84)

    def plot(self, min_score: float = 0.0) -> np.ndarray:
        """The image (BGR uint8) with the boxes drawn."""
        image = self.image if self.image is not None else read_image(self.source)
        return annotate_array(image, self.detections()[self.scores >= min_score], self.classes)


def image_paths(source) -> list[Path]:
    """The image files of a file, folder, glob or .txt list — or of a list of those."""
    items = [source] if isinstance(source, (str, Path)) else list(source)
    paths = resolve_sources([str(s) for s in items])
    if not paths:
        raise FileNotFoundError(f"no images found in {[str(s) for s in items]}")
    return paths


def check_formats(formats) -> tuple[str, ...]:
    """The output formats asked for, checked: any of coco, dota, yolo."""
    bad = [f for f in formats if f not in FORMATS]
    if not formats:
        raise ValueError(f"formats: give at least one of {', '.join(FORMATS)}")
    if bad:
        raise ValueError(f"formats: unknown {bad}; choose from {', '.join(FORMATS)}")
    return tuple(formats)


class Detector:
    """A model (.pt, .onnx or .engine; default: the bundled demonstration model) run tile by tile.

    ``tile`` defaults to the model's input size; ``overlap`` is in pixels, or a fraction of the tile when
    below 1 (SAHI's habit: 0.2); ``conf`` / ``iou`` / ``max_det`` as in ``fss detect``. GeoTIFFs (rasterio
    installed) are read window by window: ``bands`` "3,2,1" picks red, green, blue (1-based), ``stretch`` the
    percentiles that scale non-8-bit bands to 0–255 (see fss_core.raster); all-nodata tiles are skipped.
    The tile merge: ``merge`` "nms" or "nmm" (SAHI's greedy non-maximum merging), ``match`` "iou" or "ios"
    (intersection over the smaller box), ``class_agnostic`` (classes suppress/merge each other) at ``iou``.
    ``classes``: detect only these (names or indices, a list or "small-vehicle,ship"; default every class).
    Raises ``FileNotFoundError`` / ``ValueError`` for a bad model or setting."""

    def __init__(self, model: str | Path | None = None, *, device: str = "auto", backend: str | None = None,
                 tile: int | None = None, overlap: float = defaults.OVERLAP, batch: int = defaults.BATCH,
                 conf: float = defaults.CONF, iou: float = defaults.IOU, full_image: bool = False,
                 max_det: int | None = None, threads: int = 0, bands: str | tuple[int, ...] | None = None,
                 stretch: str | tuple[float, float] = defaults.DEFAULT_STRETCH, merge: str = defaults.MERGE,
                 match: str = defaults.MATCH, class_agnostic: bool = False,
                 classes: str | Iterable[str | int] | None = None, precision: str = "fp32"):
        self.model = resolve_model_file(model) if model else DEFAULT_MODEL
        device = resolve_device(device)
        if device == "cuda" and rank_and_world()[1] > 1:                      # torchrun: this rank's GPU
            device = f"cuda:{local_rank()}"
        if not self.model.is_file():
            raise FileNotFoundError(f"{self.model}: no such model file" + (
                "" if model else " (the bundled default model is missing: pass a model file)"))
        if not model:
            log.warning(DEFAULT_MODEL_NOTICE)
        # a checkpoint runs at any tile that is a multiple of 32 (the graph is fully convolutional); exported
        # files are fixed at their export size (TiledDetector says so)
        torch_tile = tile if tile and self.model.suffix in (".pt", ".pth") and backend in (None, "torch") else None
        if torch_tile and torch_tile % 32:
            raise ValueError(f"--tile must be a multiple of 32 for a checkpoint (its strides), got {tile}")
        if tile:
            defaults.check_input(tile, batch)             # before a backend builds anything at that size
        if not math.isfinite(overlap) or overlap < 0:
            raise ValueError(f"--overlap must be a finite number, 0 or more (px, or a fraction < 1 of the tile), "
                             f"got {overlap}")
        if threads < 0:
            raise ValueError(f"--threads must be 0 (all cores) or more, got {threads}")
        self.backend = load_backend(self.model, backend, device, imgsz=torch_tile, threads=threads,
                                    precision=precision)
        if 0 < overlap < 1:
            overlap = int(overlap * (tile or self.backend.input_size))
        self.tiled = TiledDetector(self.backend, tile, int(overlap), batch, conf, iou, full_image, max_det,
                                   bands=parse_bands(bands),
                                   stretch=parse_stretch(stretch), merge=merge, match=match,
                                   class_agnostic=class_agnostic,
                                   classes=resolve_classes(classes, self.backend.class_names))

    @property
    def classes(self) -> list[str]:
        return self.backend.class_names

    def detect(self, image: np.ndarray, rgb: bool = False) -> Result:
        """One image array (H, W, 3) uint8, BGR (OpenCV's order) unless ``rgb``."""
        image = np.ascontiguousarray(image[..., ::-1]) if rgb else image
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        return Result.from_array(self.tiled(image), self.classes, image.shape[:2], image=image)

    def __call__(self, source, rgb: bool = False) -> list[Result]:
        """Detections for an array, or for every image of a file, folder, glob, .txt list or a list of those.
        An image that cannot be read is logged and skipped (a single named file raises ValueError)."""
        if isinstance(source, np.ndarray):
            return [self.detect(source, rgb)]
        paths = image_paths(source)
        results = []
        for path in paths:
            try:
                image = open_image(path, bands=self.tiled.bands, stretch=self.tiled.stretch)
            except ValueError as exc:
                if len(paths) == 1:
                    raise
                log.warning("%s; skipped", exc)
                continue
            if isinstance(image, np.ndarray):
                results.append(Result.from_array(self.tiled(image), self.classes, image.shape[:2], source=path))
                continue
            with image:                                        # a GeoTIFF, read window by window
                results.append(Result.from_array(self.tiled(image), self.classes, image.shape[:2], source=path,
                                                 georef=image.georef))
        return results

    def run(self, sources: str | Path | Iterable[str | Path], out: str | Path = "runs/detect", *, formats=FORMATS,
            save_images: bool = False, exist_ok: bool = False, increment: bool | None = None,
            max_pixels: int | None = None, on_image: Callable | None = None, to_wgs84: bool = False,
            on_tiles: Callable[[int, int], None] | None = None) -> dict:
        """Detect every image of ``sources`` into the folder ``out`` (COCO predictions.json + images.json, DOTA
        Task2 files, YOLO labels, GeoJSON for georeferenced GeoTIFFs — in their CRS, or longitude/latitude
        with ``to_wgs84`` — and annotated images) and return the summary; a rerun resumes. ``increment``
        (default: when ``out`` is runs/detect) moves on to out2, out3, … when ``out`` holds another run.
        Under torchrun every process takes its share of the images; rank 0 writes the outputs. ``on_image(path,
        detections or None)`` is called after every image, ``on_tiles(done, total)`` after every batch of tiles."""
        check_formats(formats)
        out = Path(out)
        increment = str(out) == "runs/detect" if increment is None else increment
        check_output_dir(out)
        paths = image_paths(sources)
        self.tiled.on_tiles = on_tiles
        return detect_folder(paths, self.tiled, self.model, out, tuple(formats), save_images=save_images,
                             exist_ok=exist_ok, increment=increment, max_pixels=max_pixels, on_image=on_image,
                             to_wgs84=to_wgs84)

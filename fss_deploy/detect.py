"""The tiled detector: an image (a decoded array, or a GeoTIFF read window by window) -> its detections in image
pixels. Tiles of the model's input size with overlap, batched through a backend while the next batch is read,
boxes mapped back and merged across tile borders (NMS or SAHI's NMM, IoU or IoS).

The rest of ``fss detect`` lives beside it: ``sources.py`` (what is read), ``folder_run.py`` (the resumable run over
many images into one output folder), ``writers.py`` (the output formats).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from fss_core import defaults
from fss_core.nn.card import MODELS_DIR
from fss_core.nn.postprocess import postprocess, postprocess_obb
from fss_core.preprocess import letterbox, to_array
from fss_core.tiles import check_overlap
from fss_deploy.backends import Backend, backend_threads
from fss_deploy.tiling import (
    MATCH_METRICS,
    MERGE_MODES,
    cut_by_interior_edge,
    merge,
    plan_tiles,
    tile_batch,
    to_image_coords,
)

DEFAULT_MODEL = MODELS_DIR / "fss-n-aerial.pt"
OBB_MODEL = MODELS_DIR / "fss-n-obb.pt"            # the embedded oriented model (scripts_obb_model.sh)
SAMPLE_IMAGE = MODELS_DIR / "sample-scene.jpg"


def resolve_classes(spec, names: list[str]) -> tuple[int, ...] | None:
    """``"small-vehicle,ship"``, ``"0,3"`` or a list of names / indices -> class indices of a model with these
    ``names`` (a name matches case-insensitively; a number that is no class name is an index). None or "" -> None."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return None
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    lower = {n.lower(): i for i, n in enumerate(names)}
    out = []
    for item in items:
        key = str(item).strip()
        if key.lower() in lower:
            out.append(lower[key.lower()])
        elif key.lstrip("-").isdigit() and 0 <= int(key) < len(names):
            out.append(int(key))
        else:
            shown = ", ".join(names[:20]) + (f", … ({len(names)})" if len(names) > 20 else "")
            raise ValueError(f"--classes: {key!r} is not a class of this model (names or indices 0…"
                             f"{len(names) - 1}: {shown})")
    return tuple(sorted(set(out)))


@dataclass
class TiledDetector:
    backend: Backend
    tile: int | None = None            # default: the model's input size
    overlap: int = defaults.OVERLAP
    batch: int = defaults.BATCH
    conf: float = defaults.CONF
    iou: float = defaults.IOU
    full_image: bool = False
    max_det: int | None = None         # detections kept per image; None: defaults.max_det_for (scales with area)
    border_rule: bool = True           # drop boxes cut by an interior tile edge when a neighbour saw them whole
    merge: str = defaults.MERGE        # tile merge: "nms" (suppress) or "nmm" (merge into the kept box, SAHI's NMM)
    match: str = defaults.MATCH        # overlap measure of the merge: "iou" or "ios" (over the smaller box)
    class_agnostic: bool = False       # boxes of different classes suppress / merge each other too
    classes: tuple[int, ...] | None = None   # only these class indices are detected (None: every class)
    prefetch: bool | None = None       # build batch i+1 on a thread while batch i runs (default: GPU backends only;
                                       # on CPU the backend already uses every core and a second thread competes)
    bands: tuple[int, ...] | None = None   # GeoTIFFs: bands read as red, green, blue (1-based; None: the first three)
    stretch: tuple[float, float] = defaults.DEFAULT_STRETCH   # GeoTIFFs that are not 8 bit: percentiles -> 0 and 255
    on_tiles: Callable[[int, int], None] | None = None    # (tiles done, tiles of the image) after every batch
    stats: dict = field(default_factory=lambda: TiledDetector.fresh_stats())

    @staticmethod
    def fresh_stats() -> dict:
        """Tiles run, tiles skipped as nodata, and seconds in the backend / building batches / post-processing."""
        return {"tiles": 0, "tiles_nodata": 0, "infer_s": 0.0, "prep_s": 0.0, "post_s": 0.0}

    @property
    def max_det_setting(self) -> int | str:
        """``max_det`` as run.json and summary.json record it: the number, or "auto" (the default, by area)."""
        return self.max_det or "auto"

    def cap(self, height: int, width: int) -> int:
        """Detections kept for an image of this size (``max_det``, or by default in proportion to its area)."""
        return defaults.max_det_for(height, width, self.max_det)

    def __post_init__(self):
        size = self.backend.input_size
        checks = [(self.tile is None or self.tile >= 32, f"--tile must be at least 32 px, got {self.tile}"),
                  (self.batch >= 1, f"--batch must be at least 1, got {self.batch}"),
                  (0.0 <= self.conf <= 1.0, f"--conf must lie in [0, 1], got {self.conf}"),
                  (0.0 <= self.iou <= 1.0, f"--iou must lie in [0, 1], got {self.iou}"),
                  (self.max_det is None or self.max_det >= 1, f"--max-det must be at least 1, got {self.max_det}"),
                  (self.merge in MERGE_MODES, f"--merge must be one of {', '.join(MERGE_MODES)}, got {self.merge!r}"),
                  (self.match in MATCH_METRICS, f"--match must be one of {', '.join(MATCH_METRICS)}, got "
                                                f"{self.match!r}")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        defaults.check_input(self.tile or size, self.batch)
        n = len(self.backend.class_names)
        if self.classes is not None:
            self.classes = tuple(sorted(set(int(c) for c in self.classes)))
            if not self.classes or min(self.classes) < 0 or max(self.classes) >= n:
                raise ValueError(f"--classes must be class indices 0…{n - 1} of this model, got {list(self.classes)}")
        self.tile = self.tile or size
        if self.tile != size:
            raise ValueError(f"--tile {self.tile} differs from the model's input size {size}; export the model at "
                             f"{self.tile} (fss export … --imgsz {self.tile})")
        check_overlap(self.tile, self.overlap)
        if self.backend.fixed_batch:
            self.batch = self.backend.fixed_batch
        if self.prefetch is None:
            self.prefetch = self.backend.device.startswith("cuda")

    def _infer(self, batch: np.ndarray, n: int) -> list[np.ndarray]:
        t0 = time.perf_counter()
        out = self.backend.infer(batch)
        t1 = time.perf_counter()
        post = postprocess_obb if self.backend.task == "obb" else postprocess
        dets = [d.numpy() for d in post(torch.from_numpy(out[:n]), self.conf, self.iou,
                                        self.max_det or defaults.MAX_DET, classes=self.classes)]
        self.stats["infer_s"] += t1 - t0
        self.stats["post_s"] += time.perf_counter() - t1
        return dets

    def __call__(self, image) -> np.ndarray:
        """(K, 6) detections in image pixels of an (H, W, 3) uint8 BGR array or a window-read Raster ((K, 7)
        oriented detections of an oriented model)."""
        with backend_threads(self.backend):     # the caller's torch threads are restored after the image
            return self._detect(image)

    def _batches(self, image, tiles: list, pad: int | None):
        """(tiles, network input) per batch; a raster's tiles that hold only nodata are left out (counted)."""
        group = []
        for t in tiles:
            if not isinstance(image, np.ndarray) and not image.has_data(t.x, t.y, t.width, t.height):
                self.stats["tiles_nodata"] += 1
                continue
            group.append(t)
            if len(group) == self.batch:
                yield group, tile_batch(image, group, self.tile, pad)
                group = []
        if group:
            yield group, tile_batch(image, group, self.tile, pad)

    def _detect(self, image) -> np.ndarray:
        """``image``: an (H, W, 3) uint8 BGR array, or a :class:`fss_core.raster.Raster` read window by window."""
        h, w = image.shape[:2]
        tiles = plan_tiles(w, h, self.tile, self.overlap)
        pad = self.batch if self.backend.fixed_batch else None
        # a raster's windows are decoded as they are needed: always read the next batch while this one runs
        prefetch = self.prefetch or not isinstance(image, np.ndarray)
        batches = self._batches(image, tiles, pad)
        all_dets, all_cut, all_src = [], [], []
        done, nodata_before = 0, self.stats["tiles_nodata"]
        with ThreadPoolExecutor(max_workers=1) as prep:            # build batch i+1 while batch i runs
            t0 = time.perf_counter()
            future = prep.submit(next, batches, None) if prefetch else None
            while True:
                item = future.result() if prefetch else next(batches, None)
                if item is None:
                    break
                if prefetch:
                    future = prep.submit(next, batches, None)
                group, batch = item
                self.stats["prep_s"] += time.perf_counter() - t0
                for t, d in zip(group, self._infer(batch, len(group))):
                    d = to_image_coords(d, t, w, h)
                    all_dets.append(d)
                    all_cut.append(cut_by_interior_edge(d, t, w, h) if self.border_rule
                                   else np.zeros(len(d), bool))
                    all_src.append(np.full(len(d), done))
                    done += 1
                if self.on_tiles:
                    self.on_tiles(done + self.stats["tiles_nodata"] - nodata_before, len(tiles))
                t0 = time.perf_counter()
        self.stats["tiles"] += done
        if self.full_image and max(h, w) > self.tile:
            if isinstance(image, np.ndarray):
                canvas, scale, _ = letterbox(image, (self.tile, self.tile))
            else:
                thumb, scale = image.thumbnail(self.tile)
                canvas, s2, _ = letterbox(thumb, (self.tile, self.tile), allow_upscale=False)
                scale *= s2
            batch = to_array([canvas])
            if pad:
                batch = np.concatenate([batch, np.zeros((pad - 1, *batch.shape[1:]), np.float32)])
            d = self._infer(batch, 1)[0]
            d[:, :4] /= scale
            all_dets.append(d)
            all_cut.append(np.zeros(len(d), bool))
            all_src.append(np.full(len(d), -1))
        if not all_dets:
            return np.zeros((0, 7 if self.backend.task == "obb" else 6), np.float32)
        t1 = time.perf_counter()
        merged = merge(np.concatenate(all_dets), np.concatenate(all_cut), np.concatenate(all_src), self.iou,
                       max_det=self.cap(h, w), mode=self.merge, metric=self.match, class_agnostic=self.class_agnostic)
        self.stats["post_s"] += time.perf_counter() - t1
        return merged


# ------------------------------------------------------------------------------------------ run

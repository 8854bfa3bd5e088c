"""`fss detect`: tiled high-resolution detection over files, folders, globs and lists.

A decode thread reads the next images while the current one runs through the backend; tiles
are views into the decoded image. Each finished image leaves a small JSON in
``OUT/.per_image/``; the run's outputs (COCO json, DOTA Task2, YOLO txt, summary) are rebuilt
from those at the end, atomically — so an interrupted run, rerun, skips what it finished and
writes no duplicates.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from fss_core import defaults
from fss_core.boxes import detections_to_coco, detections_to_dota, detections_to_yolo
from fss_core.fileio import (
    LOCK_NAME,
    atomic_write,
    first_free,
    input_fingerprint,
    is_temp,
    path_key,
    read_text,
    safe_name,
    sha256_file,
    unique_stems,
)
from fss_core.geojson import collection_json, features_json
from fss_core.imageio import IMAGE_SUFFIXES, read_image
from fss_core.nn.card import MODELS_DIR
from fss_core.nn.postprocess import postprocess
from fss_core.preprocess import letterbox, to_array
from fss_core.raster import (
    GEO_SUFFIXES,
    MISSING,
    Georef,
    Raster,
    RasterReadError,
    is_geotiff,
    raster_errors,
)
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

FORMATS = defaults.FORMATS
DEFAULT_MODEL = MODELS_DIR / "fss-n-aerial.pt"
SAMPLE_IMAGE = MODELS_DIR / "sample-scene.jpg"


def resolve_sources(sources: list[str]) -> list[Path]:
    """Files, folders (recursively), globs and .txt lists of paths -> image paths, in order, once each."""
    found: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():          # regular files only: a named pipe (FIFO) would block the run on open
            found += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
        elif p.suffix == ".txt" and p.is_file():
            base = p.parent
            for n, line in enumerate(read_text(p).splitlines(), start=1):
                if line.strip():
                    q = Path(line.strip())
                    q = q if q.is_absolute() else base / q
                    if q.is_dir() or q.suffix == ".txt":    # expanded once here, again when resolved a second time
                        raise ValueError(f"{p}:{n}: {q} is a folder or a list; a list names image files only")
                    found.append(q)
        elif any(ch in s for ch in "*?[") and not p.exists():        # an existing `a[1].png` is a file, not a glob
            found += sorted(Path(q) for q in glob.glob(s, recursive=True)
                            if Path(q).suffix.lower() in IMAGE_SUFFIXES and Path(q).is_file())
        else:
            found.append(p)           # a missing file is reported per image, not here
    seen, unique = set(), []
    for p in found:
        key = str(p.resolve()) if p.exists() else str(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


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


def image_key(path: Path) -> str:
    """The per-image record's name: unique to the file (stem + hash of its absolute path)."""
    return path_key(path)


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
        dets = [d.numpy() for d in postprocess(torch.from_numpy(out[:n]), self.conf, self.iou,
                                                     self.max_det or defaults.MAX_DET, classes=self.classes)]
        self.stats["infer_s"] += t1 - t0
        self.stats["post_s"] += time.perf_counter() - t1
        return dets

    def __call__(self, image) -> np.ndarray:
        """(K, 6) detections in image pixels of an (H, W, 3) uint8 BGR array or a window-read Raster."""
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
            return np.zeros((0, 6), np.float32)
        t1 = time.perf_counter()
        merged = merge(np.concatenate(all_dets), np.concatenate(all_cut), np.concatenate(all_src), self.iou,
                       max_det=self.cap(h, w), mode=self.merge, metric=self.match, class_agnostic=self.class_agnostic)
        self.stats["post_s"] += time.perf_counter() - t1
        return merged


# ------------------------------------------------------------------------------------------ run
class OutputConflict(RuntimeError):
    """The output folder holds results of another model, other settings or other inputs."""


RESULT_FILES = (".per_image", "predictions.json", "images.json", "yolo", "dota", "geojson", "detections.geojson",
                "images", "summary.json")


def run_identity(detector: TiledDetector, model: Path) -> dict:
    """What the results of a detect run depend on (recorded as OUT/run.json): the model file's content and
    every setting that changes detections. Inputs are checked per image (path, size and mtime in each
    record), and the outputs are rebuilt from the records of this run's inputs only."""
    return {"model": str(Path(model).resolve()), "model_sha256": sha256_file(model),
            "backend": detector.backend.name, "tile": detector.tile, "overlap": detector.overlap,
            "conf": detector.conf, "iou": detector.iou, "full_image": detector.full_image,
            "max_det": detector.max_det_setting, "border_rule": detector.border_rule, "merge": detector.merge,
            "match": detector.match, "class_agnostic": detector.class_agnostic,
            "classes": [detector.backend.class_names[c] for c in detector.classes] if detector.classes else None,
            "bands": list(detector.bands) if detector.bands else None, "stretch": list(detector.stretch)}


def prepare_output(out: Path, identity: dict, exist_ok: bool = False, increment: bool = False) -> Path:
    """The folder this run writes into.

    ``out`` itself when it is new or empty, or when its ``run.json`` records the same identity (then
    finished images are reused: a resume). Otherwise, with ``exist_ok`` the earlier results are
    deleted first; with ``increment`` (the default folder) the first ``out2``, ``out3``, … that is new
    or matches is used, as Ultralytics does; else :class:`OutputConflict` says what differs.
    """
    record = out / "run.json"
    if not out.exists() or all(p.name == LOCK_NAME for p in out.iterdir()):
        atomic_write(record, json.dumps(identity, indent=1))
        return out
    old = _recorded(record)
    if old == identity:
        return out
    if old is None and (exist_ok or not increment):     # not an fss output folder: nothing in it is ours
        raise OutputConflict(f"{out} holds files but no readable run.json, so it is not the output folder of an fss "
                             "detect run; --exist-ok replaces only an earlier run's results: pass a new or empty "
                             "--out")
    diff = [f"{k} {old.get(k)!r} -> {identity.get(k)!r}" for k in identity if old.get(k) != identity.get(k)] \
        if old is not None else []
    if exist_ok:
        for name in RESULT_FILES:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        atomic_write(record, json.dumps(identity, indent=1))
        return out
    if increment:
        return prepare_output(first_free(out, lambda c: c != out and (not c.exists() or
                                                                      _recorded(c / "run.json") == identity)), identity)
    raise OutputConflict(f"{out} holds the results of another run ({'; '.join(diff)}); pass another --out, or "
                         "--exist-ok to replace them")


def _recorded(record: Path) -> dict | None:
    """The identity a run.json records; None when it is missing or unreadable."""
    try:
        found = json.loads(record.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return found if isinstance(found, dict) else None


def finished(record: Path, path: Path) -> bool:
    """A per-image record counts only when it parses and was made from this very file (size, mtime)."""
    try:
        rec = json.loads(record.read_text())
        return rec.get("input") == input_fingerprint(path)
    except (OSError, ValueError, AttributeError):
        return False           # missing, truncated (e.g. disk full) or from another file: redo it


def check_output_dir(out: Path) -> None:
    """Fail before any work when the output folder cannot be written (or is a file)."""
    if out.exists() and not out.is_dir():
        raise PermissionError(f"{out}: --out is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / f".fss-write-test.{os.getpid()}", "ok").unlink()   # per process: ranks probe at once
    except OSError as exc:
        raise PermissionError(f"{out}: output folder is not writable ({exc.strerror})") from None


def open_image(path: Path, max_pixels: int | None = None, bands: tuple[int, ...] | None = None,
               stretch: tuple[float, float] = defaults.DEFAULT_STRETCH):
    """A GeoTIFF opened for window reads (rasterio installed: nothing decoded yet), else the decoded BGR array.
    Raises ValueError naming the file when it cannot be read."""
    if is_geotiff(path):
        return Raster(path, bands, stretch)
    if bands:
        raise ValueError(f"{path}: --bands applies to GeoTIFFs (.tif) read with rasterio ({MISSING})"
                         if Path(path).suffix.lower() in GEO_SUFFIXES else f"{path}: --bands applies to GeoTIFFs only")
    return read_image(path, max_pixels)


def _decoder(paths: list[Path], q: queue.Queue, stop: threading.Event, max_pixels: int | None = None,
             bands=None, stretch=defaults.DEFAULT_STRETCH) -> None:
    for i, p in enumerate(paths):
        if stop.is_set():
            break
        try:
            q.put((i, p, open_image(p, max_pixels, bands, stretch), None))
        except ValueError as exc:
            q.put((i, p, None, str(exc)))
    q.put(None)


THUMBNAIL_SIDE = 4096      # --save-images of a GeoTIFF: the whole scene at most this many px a side


def annotated_jpeg(image, dets: np.ndarray, class_names: list[str]) -> bytes:
    """The annotated JPEG of an array, or of a raster's thumbnail (boxes scaled to it)."""
    if isinstance(image, np.ndarray):
        return annotate(image, dets, class_names)
    thumb, scale = image.thumbnail(THUMBNAIL_SIDE)
    scaled = dets.copy()
    scaled[:, :4] *= scale
    return annotate(thumb, scaled, class_names)


def run_detect(paths: list[Path], detector: TiledDetector, out: Path, formats: tuple[str, ...] = FORMATS,
               save_images: bool = False, rank: int = 0, world: int = 1, on_image=None,
               max_pixels: int | None = None) -> dict:
    """Detect every image (this rank's share), then (rank 0) write the run's outputs."""
    per_image = out / ".per_image"
    per_image.mkdir(parents=True, exist_ok=True)
    mine = [p for i, p in enumerate(paths) if i % world == rank]
    names = dict(zip(paths, unique_stems(paths)))      # a unique output name per input
    todo = [p for p in mine if not finished(per_image / f"{image_key(p)}.json", p)]
    skipped = len(mine) - len(todo)
    q: queue.Queue = queue.Queue(maxsize=2)                       # bounded: at most 2 decoded images ahead
    stop = threading.Event()
    thread = threading.Thread(target=_decoder, args=(todo, q, stop, max_pixels, detector.bands, detector.stretch),
                              daemon=True)
    thread.start()
    failed, seconds, capped = [], [], []
    try:
        while (item := q.get()) is not None:
            _, path, image, error = item
            if error:
                failed.append({"file": str(path), "error": error})
                if on_image:
                    on_image(path, None)
                continue
            t0 = time.perf_counter()
            nodata_before = detector.stats["tiles_nodata"]
            try:
                dets = detector(image)
                if save_images:
                    atomic_write(out / "images" / f"{names[path]}.jpg",
                                 annotated_jpeg(image, dets, detector.backend.class_names), within=out)
            except raster_errors() as exc:         # a damaged block of a GeoTIFF: this image fails, the run goes on
                message = str(exc) if isinstance(exc, RasterReadError) else f"{path}: unreadable raster data ({exc})"
                failed.append({"file": str(path), "error": message})
                if on_image:
                    on_image(path, None)
                continue
            finally:
                if not isinstance(image, np.ndarray):
                    image.close()
            seconds.append(time.perf_counter() - t0)
            h, w = image.shape[:2]
            if len(dets) >= detector.cap(h, w):
                capped.append(str(path))
            record = {"file": str(path), "input": input_fingerprint(path), "width": w, "height": h,
                      "detections": np.round(dets, 3).tolist()}
            if not isinstance(image, np.ndarray):
                record["raster"] = {**image.describe(), "tiles_nodata": detector.stats["tiles_nodata"] - nodata_before}
                record["georef"] = image.georef.to_dict() if image.georef else None
            atomic_write(per_image / f"{image_key(path)}.json", json.dumps(record))
            if on_image:
                on_image(path, dets)
    finally:
        stop.set()
    summary = {"images": len(mine), "processed": len(seconds), "skipped_done": skipped, "failed": failed,
               "hit_max_det": capped, "max_det": detector.max_det_setting,
               "seconds_per_image": float(np.mean(seconds)) if seconds else 0.0,
               "tiles": detector.stats["tiles"],
               "tiles_per_s": detector.stats["tiles"] / max(sum(seconds), 1e-9) if seconds else 0.0,
               "tiles_nodata": detector.stats["tiles_nodata"],
               "stage_seconds": {k: round(v, 4) for k, v in detector.stats.items() if k.endswith("_s")},
               "backend": detector.backend.describe(), "tile": detector.tile, "overlap": detector.overlap,
               "batch": detector.batch, "conf": detector.conf, "iou": detector.iou}
    atomic_write(out / f".summary.rank{rank}.json", json.dumps(summary))
    return summary


def write_outputs(paths: list[Path], out: Path, class_names: list[str], formats: tuple[str, ...],
                  summaries: list[dict], to_wgs84: bool = False) -> dict:
    """Rebuild the run's outputs from the per-image records (rank 0, after every rank finished).
    GeoJSON (georeferenced images only): ``geojson/<name>.geojson`` per image in its CRS (``to_wgs84``:
    longitude/latitude), and ``detections.geojson`` holding them all when they share one CRS."""
    images, preds = [], []                        # preds: each image's COCO results as JSON text (compact)
    geo_features: dict[str, list] = {}            # CRS (WKT, or "wgs84") -> (georef, features JSON) per image
    geo_images = 0
    written: dict[str, set[str]] = {"yolo": set(), "geojson": set()}    # per-image files of this run
    dota: dict[str, list[str]] = {c: [] for c in class_names}
    total = 0
    names = dict(zip(paths, unique_stems(paths)))      # a unique output name per input
    for image_id, path in enumerate(paths, start=1):
        rec_path = out / ".per_image" / f"{image_key(path)}.json"
        if not rec_path.is_file():
            continue
        rec = json.loads(rec_path.read_text())
        images.append({"id": image_id, "file_name": rec["file"], "name": names[path], "width": rec["width"],
                       "height": rec["height"]})
        dets = np.array(rec["detections"], np.float64).reshape(-1, 6)
        total += len(dets)
        if "coco" in formats:
            preds.append(json.dumps(detections_to_coco(dets, image_id))[1:-1])
        for cls_name, line in detections_to_dota(dets, names[path], class_names):
            dota[cls_name].append(line)
        if "yolo" in formats:
            yolo_lines = detections_to_yolo(dets, rec["width"], rec["height"])
            atomic_write(out / "yolo" / f"{names[path]}.txt", "\n".join(yolo_lines) + ("\n" if yolo_lines else ""),
                         within=out)
            written["yolo"].add(f"{names[path]}.txt")
        georef = Georef.from_dict(rec.get("georef"))
        if "geojson" in formats and georef is not None and to_wgs84 and not georef.crs:
            # a transform without a CRS: no way to longitude/latitude (it failed at the end, outputs unwritten)
            logging.getLogger("fss").warning("%s: has a transform but no CRS, so --to-wgs84 cannot place it; its "
                                             "GeoJSON is not written (drop --to-wgs84 for map coordinates in its "
                                             "own units)", path)
            georef = None
        if "geojson" in formats and georef is not None:
            feats = features_json(dets, class_names, georef, to_wgs84, image=names[path])
            atomic_write(out / "geojson" / f"{names[path]}.geojson", collection_json([feats], georef, to_wgs84),
                         within=out)
            written["geojson"].add(f"{names[path]}.geojson")
            geo_features.setdefault("wgs84" if to_wgs84 else georef.crs, []).append((georef, feats))
            geo_images += 1
    for folder, keep in written.items():          # a per-image file of an input this run does not have is stale
        if folder in formats and (out / folder).is_dir():
            for f in (out / folder).iterdir():
                if f.name not in keep and not is_temp(f):
                    f.unlink()
    if "coco" in formats:
        atomic_write(out / "predictions.json", "[" + ", ".join(p for p in preds if p) + "]")
        atomic_write(out / "images.json", json.dumps({"images": images, "categories": [
            {"id": i + 1, "name": n} for i, n in enumerate(class_names)]}))
    if "dota" in formats:
        for name, lines in dota.items():
            atomic_write(out / "dota" / f"Task2_{safe_name(name)}.txt", "\n".join(lines) + ("\n" if lines else ""),
                         within=out)
    merged_geojson = None
    if len(geo_features) == 1:
        per_image = next(iter(geo_features.values()))
        merged_geojson = str(out / "detections.geojson")
        atomic_write(out / "detections.geojson", collection_json([f for _, f in per_image], per_image[0][0],
                                                                  to_wgs84))
    elif (out / "detections.geojson").exists():
        (out / "detections.geojson").unlink()          # never left from an earlier run over other inputs
    failed = [f for s in summaries for f in s["failed"]]
    processed = sum(s["processed"] for s in summaries)
    secs = [s["seconds_per_image"] * s["processed"] for s in summaries]
    summary = {**summaries[0], "images": len(paths), "processed": processed,
               "skipped_done": sum(s["skipped_done"] for s in summaries), "failed": failed,
               "hit_max_det": [f for s in summaries for f in s.get("hit_max_det", [])],
               "detections": total, "images_with_results": len(images),
               "seconds_per_image": sum(secs) / processed if processed else 0.0,
               "tiles": sum(s["tiles"] for s in summaries),
               "tiles_nodata": sum(s.get("tiles_nodata", 0) for s in summaries),
               "georeferenced_images": geo_images, "geojson": merged_geojson,
               "geojson_crs": _crs_label(geo_features, to_wgs84),
               "tiles_per_s": sum(s["tiles"] for s in summaries) / max(sum(secs), 1e-9) if processed else 0.0}
    atomic_write(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def _crs_label(geo_features: dict, to_wgs84: bool) -> str | None:
    """The summary's word for the GeoJSON outputs' coordinates."""
    if not geo_features:
        return None
    if to_wgs84:
        return "WGS84 (longitude, latitude)"
    if len(geo_features) > 1:
        return "several CRSs: one file per image in geojson/, no detections.geojson"
    georef = next(iter(geo_features.values()))[0][0]
    return f"EPSG:{georef.epsg}" if georef.epsg else "the raster's CRS (WKT under fss:crs_wkt)"


def annotate(image: np.ndarray, dets: np.ndarray, class_names: list[str]) -> bytes:
    """A JPEG of the image with its boxes."""
    ok, buf = cv2.imencode(".jpg", annotate_array(image, dets, class_names), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return buf.tobytes()


def annotate_array(image: np.ndarray, dets: np.ndarray, class_names: list[str]) -> np.ndarray:
    """A copy of the BGR image with its boxes drawn (line width scaled to the image size)."""
    canvas = image.copy()
    lw = max(1, round(max(image.shape[:2]) / 2500))
    palette = [(0, 255, 255), (255, 128, 0), (255, 0, 255), (0, 255, 0), (0, 128, 255), (255, 255, 0), (128, 0, 255)]
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    for x1, y1, x2, y2, score, cls in dets:
        c = int(cls)
        colour = palette[c % len(palette)]
        cv2.rectangle(canvas, (int(x1), int(y1)), (int(x2), int(y2)), colour, lw)
        text = f"{class_names[c]} {score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
        if x2 - x1 >= tw:                   # dense scenes: a label only where it fits its box
            cv2.putText(canvas, text, (int(x1), max(th, int(y1) - 2)), font, scale, colour, 1, cv2.LINE_AA)
    return canvas

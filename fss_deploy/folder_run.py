"""The resumable folder run of ``fss detect``: many images (this rank's share under torchrun) through one
:class:`~fss_deploy.detect.TiledDetector` into one output folder.

Each finished image leaves a small JSON in ``OUT/.per_image/``; the run's outputs (``writers.py``: COCO json, DOTA
Task2, YOLO txt, GeoJSON, summary) are rebuilt from those at the end, atomically — so an interrupted run, rerun,
skips what it finished and writes no duplicates. ``OUT/run.json`` records what the results depend on: a rerun with
another model or settings is refused, or (``--exist-ok``) replaces only what an earlier fss run wrote there.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from fss_core import defaults
from fss_core.fileio import (
    LOCK_NAME,
    atomic_write,
    exclusive,
    first_free,
    input_fingerprint,
    path_key,
    sha256_file,
    unique_stems,
)
from fss_core.launch import rank_and_world
from fss_core.raster import RasterReadError, raster_errors
from fss_deploy.detect import TiledDetector
from fss_deploy.sources import decode_ahead
from fss_deploy.writers import WRITERS, annotate

log = logging.getLogger("fss")


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


THUMBNAIL_SIDE = 4096      # --save-images of a GeoTIFF: the whole scene at most this many px a side


def annotated_jpeg(image, dets: np.ndarray, class_names: list[str]) -> bytes:
    """The annotated JPEG of an array, or of a raster's thumbnail (boxes scaled to it)."""
    if isinstance(image, np.ndarray):
        return annotate(image, dets, class_names)
    thumb, scale = image.thumbnail(THUMBNAIL_SIDE)
    scaled = dets.copy()
    scaled[:, :4] *= scale
    return annotate(thumb, scaled, class_names)


def detect_folder(paths: list[Path], tiled: TiledDetector, model: Path, out: Path, formats: tuple[str, ...], *,
                  save_images: bool = False, exist_ok: bool = False, increment: bool = False,
                  max_pixels: int | None = None, on_image=None, to_wgs84: bool = False) -> dict:
    """The whole run into ``out``: the folder chosen and held (rank 0, for all), inputs inside it left out, every
    rank's share detected (:func:`run_detect`), rank 0's outputs written from all records; returns the summary with
    ``out``. Under torchrun the ranks meet in a process group (NCCL on CUDA, else gloo)."""
    rank, world = rank_and_world()
    identity = run_identity(tiled, model)
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if tiled.backend.device.startswith("cuda") else "gloo")
    try:
        with ExitStack() as held:
            if rank == 0:      # the run's folder, held (for every rank) before anything in it is read or written
                out = held.enter_context(hold_output(out, identity, exist_ok, increment))
            if world > 1:
                dist.barrier()
                out = prepare_output(out, identity, False, increment) if rank else out
            paths = outside(paths, out)
            summary = run_detect(paths, tiled, out, formats, save_images, rank, world, on_image, max_pixels)
            if world > 1:
                dist.barrier()
            if rank == 0:
                summaries = [summary] if world == 1 else [
                    json.loads((out / f".summary.rank{r}.json").read_text()) for r in range(world)]
                summary = write_outputs(paths, out, tiled.backend.class_names, formats, summaries, to_wgs84)
    finally:
        if world > 1:
            dist.destroy_process_group()
    return {**summary, "out": str(out)}             # summary carries max_det (run_detect)


@contextmanager
def hold_output(out: Path, identity: dict, exist_ok: bool, increment: bool) -> Iterator[Path]:
    """The folder this run writes into (:func:`prepare_output`), held against other fss processes from before it is
    read until the block ends; when the default folder moves on to out2, … only that one stays held."""
    with ExitStack() as first:
        first.enter_context(exclusive(out, "fss detect"))
        chosen = prepare_output(out, identity, exist_ok, increment)
        if chosen == out:
            with first.pop_all():
                yield out
            return
        with exclusive(chosen, "fss detect"):
            first.close()
            yield chosen


def outside(paths: list[Path], out: Path) -> list[Path]:
    """The inputs that do not lie in the output folder: with --out inside the input folder, a rerun would detect
    its own saved images (4 -> 8 -> 12 inputs)."""
    root = Path(os.path.realpath(out))
    kept = [p for p in paths if not Path(os.path.realpath(p)).is_relative_to(root)]   # a link loop: as it is
    if not kept:
        raise FileNotFoundError(f"no images found outside the output folder {out}")
    if len(kept) < len(paths):
        log.warning(f"{len(paths) - len(kept)} image(s) inside the output folder {out} are not inputs (fss writes "
                    "there)")
    return kept



def run_detect(paths: list[Path], detector: TiledDetector, out: Path, formats: tuple[str, ...] = defaults.FORMATS,
               save_images: bool = False, rank: int = 0, world: int = 1, on_image=None,
               max_pixels: int | None = None) -> dict:
    """Detect every image (this rank's share), each leaving its record in ``OUT/.per_image/``; returns (and writes
    as ``OUT/.summary.rank<r>.json``) this rank's summary. ``write_outputs`` then builds the run's files."""
    per_image = out / ".per_image"
    per_image.mkdir(parents=True, exist_ok=True)
    mine = [p for i, p in enumerate(paths) if i % world == rank]
    names = dict(zip(paths, unique_stems(paths)))      # a unique output name per input
    todo = [p for p in mine if not finished(per_image / f"{path_key(p)}.json", p)]
    q: queue.Queue = queue.Queue(maxsize=2)                       # bounded: at most 2 decoded images ahead
    stop = threading.Event()
    thread = threading.Thread(target=decode_ahead, args=(todo, q, stop, max_pixels, detector.bands, detector.stretch),
                              daemon=True)
    thread.start()
    failed, seconds, capped = [], [], []
    try:
        while (item := q.get()) is not None:
            _, path, image, error = item
            t0 = time.perf_counter()
            dets, error = _detect_one(detector, path, image, out, names[path] if save_images else None) \
                if error is None else (None, error)
            if error is not None:
                failed.append({"file": str(path), "error": error})
            else:
                seconds.append(time.perf_counter() - t0)
                if len(dets) >= detector.cap(*image.shape[:2]):
                    capped.append(str(path))
            if on_image:
                on_image(path, dets)
    finally:
        stop.set()
    summary = _rank_summary(detector, len(mine), len(mine) - len(todo), failed, seconds, capped)
    atomic_write(out / f".summary.rank{rank}.json", json.dumps(summary))
    return summary


def _detect_one(detector: TiledDetector, path: Path, image, out: Path, save_as: str | None):
    """(detections, None) after writing the image's record (and, with ``save_as``, its annotated JPEG), or
    (None, message) when a damaged block of a GeoTIFF stops it (the run goes on)."""
    nodata_before = detector.stats["tiles_nodata"]
    try:
        dets = detector(image)
        if save_as is not None:
            atomic_write(out / "images" / f"{save_as}.jpg", annotated_jpeg(image, dets, detector.backend.class_names),
                         within=out)
    except raster_errors() as exc:
        return None, str(exc) if isinstance(exc, RasterReadError) else f"{path}: unreadable raster data ({exc})"
    finally:
        if not isinstance(image, np.ndarray):
            image.close()
    h, w = image.shape[:2]
    rounded = np.round(dets, 3)
    if dets.shape[1] == 7:                   # oriented: θ to 1e-6 rad (1e-3 moves a 100 px box's corner 0.05 px)
        rounded[:, 4] = np.round(dets[:, 4], 6)
    record = {"file": str(path), "input": input_fingerprint(path), "width": w, "height": h,
              "columns": dets.shape[1], "detections": rounded.tolist()}
    if not isinstance(image, np.ndarray):
        record["raster"] = {**image.describe(), "tiles_nodata": detector.stats["tiles_nodata"] - nodata_before}
        record["georef"] = image.georef.to_dict() if image.georef else None
    atomic_write(out / ".per_image" / f"{path_key(path)}.json", json.dumps(record))
    return dets, None


def _rank_summary(detector: TiledDetector, images: int, skipped: int, failed: list, seconds: list[float],
                  capped: list[str]) -> dict:
    stats = detector.stats
    return {"images": images, "processed": len(seconds), "skipped_done": skipped, "failed": failed,
            "hit_max_det": capped, "max_det": detector.max_det_setting,
            "seconds_per_image": float(np.mean(seconds)) if seconds else 0.0,
            "tiles": stats["tiles"], "tiles_per_s": stats["tiles"] / max(sum(seconds), 1e-9) if seconds else 0.0,
            "tiles_nodata": stats["tiles_nodata"],
            "stage_seconds": {k: round(v, 4) for k, v in stats.items() if k.endswith("_s")},
            "backend": detector.backend.describe(), "tile": detector.tile, "overlap": detector.overlap,
            "batch": detector.batch, "conf": detector.conf, "iou": detector.iou}


def write_outputs(paths: list[Path], out: Path, class_names: list[str], formats: tuple[str, ...],
                  summaries: list[dict], to_wgs84: bool = False) -> dict:
    """Rebuild the run's outputs from the per-image records (rank 0, after every rank finished): each format's
    writer (``writers.WRITERS``) takes every image in the run's order, then the summary of all ranks."""
    writers = [WRITERS[f](out, class_names, to_wgs84) for f in formats]
    names = dict(zip(paths, unique_stems(paths)))      # a unique output name per input
    images, total = 0, 0
    for image_id, path in enumerate(paths, start=1):
        rec_path = out / ".per_image" / f"{path_key(path)}.json"
        if not rec_path.is_file():
            continue
        rec = json.loads(rec_path.read_text())
        image = {"id": image_id, "file_name": rec["file"], "name": names[path], "width": rec["width"],
                 "height": rec["height"]}
        dets = np.array(rec["detections"], np.float64).reshape(-1, rec.get("columns", 6))
        for w in writers:
            w.add(image, rec, dets)
        images, total = images + 1, total + len(dets)
    found = {"georeferenced_images": 0, "geojson": None, "geojson_crs": None}
    for w in writers:
        found |= w.finish()
    if "geojson" not in formats and (out / "detections.geojson").exists():
        (out / "detections.geojson").unlink()          # never left from an earlier run over other inputs
    summary = merged_summary(summaries, len(paths)) | found | {"detections": total, "images_with_results": images}
    atomic_write(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def merged_summary(summaries: list[dict], images: int) -> dict:
    """The ranks' summaries as one: counts summed, failures listed, speeds over the time all ranks spent."""
    processed = sum(s["processed"] for s in summaries)
    secs = sum(s["seconds_per_image"] * s["processed"] for s in summaries)
    tiles = sum(s["tiles"] for s in summaries)
    return {**summaries[0], "images": images, "processed": processed,
            "skipped_done": sum(s["skipped_done"] for s in summaries),
            "failed": [f for s in summaries for f in s["failed"]],
            "hit_max_det": [f for s in summaries for f in s.get("hit_max_det", [])],
            "seconds_per_image": secs / processed if processed else 0.0, "tiles": tiles,
            "tiles_nodata": sum(s.get("tiles_nodata", 0) for s in summaries),
            "tiles_per_s": tiles / max(secs, 1e-9) if processed else 0.0}

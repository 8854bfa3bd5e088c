"""Offline tiling of large images, DOTA-devkit semantics (``fss data split``).

Origins step by ``tile − gap`` from 0; the last row/column sits flush with the right/bottom
edge. An image smaller than a tile becomes one tile padded with zeros (black, as the devkit).
An object fully inside a tile is kept; one cut by the tile is kept clipped and marked
difficult (2) when less than ``keep_ratio`` of its area is inside: the polygon's own area for oriented objects
(the piece inside the tile cut out exactly, with shapely, and kept as itself when it is a quadrilateral, else as
its minimum-area rectangle within the tile — where the devkit drops pieces of more than 5 corners), the box's
area otherwise.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fss_core.fileio import atomic_write, input_fingerprint, unique_stems, write_image
from fss_core.imageio import read_image
from fss_core.raster import Raster, is_geotiff
from fss_core.tiles import check_overlap, tile_grid
from fss_train.data.coco import write_coco
from fss_train.data.polyclip import clip_polygons, window_envelopes
from fss_train.data.records import Dataset, ImageRecord, Problem

DIFFICULT_TRUNCATED = 2
# the rule by which objects are cut (2: polygons cut exactly, fss_train/data/polyclip.py); part of every image's
# fingerprint, so tiles an older rule cut are cut again instead of being reused
CUT_RULE = 2


def objects_in_tile(rec: ImageRecord, x0: int, y0: int, tile: int, keep_ratio: float = 0.7):
    """Boxes (K, 4) in tile pixels, labels, difficult flags and polygons of the objects a tile keeps."""
    if len(rec.labels) == 0:
        return np.zeros((0, 4), np.float32), rec.labels[:0], rec.difficult[:0], None
    if rec.polygons is not None:
        return _polygons_in_tile(rec, x0, y0, tile, keep_ratio)
    b = rec.boxes
    x1, y1 = np.clip(b[:, 0], x0, x0 + tile), np.clip(b[:, 1], y0, y0 + tile)
    x2, y2 = np.clip(b[:, 2], x0, x0 + tile), np.clip(b[:, 3], y0, y0 + tile)
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    keep = inter > 0
    ratio = np.where(area > 0, inter / np.maximum(area, 1e-9), 0)
    difficult = rec.difficult.copy()
    difficult[keep & (ratio < keep_ratio)] = DIFFICULT_TRUNCATED
    boxes = np.stack((x1 - x0, y1 - y0, x2 - x0, y2 - y0), 1)[keep].astype(np.float32)
    polys = None
    if rec.polygons is not None:
        polys = rec.polygons[keep].copy()
        polys[:, 0::2] = np.clip(polys[:, 0::2] - x0, 0, tile)
        polys[:, 1::2] = np.clip(polys[:, 1::2] - y0, 0, tile)
    return boxes, rec.labels[keep], difficult[keep], polys


def _polygons_in_tile(rec: ImageRecord, x0: int, y0: int, tile: int, keep_ratio: float):
    """objects_in_tile for oriented objects: each polygon cut by the tile exactly (fss_train/data/polyclip.py)."""
    b = rec.boxes
    near = np.nonzero((b[:, 2] > x0) & (b[:, 0] < x0 + tile) & (b[:, 3] > y0) & (b[:, 1] < y0 + tile))[0]
    polys, ratio = clip_polygons(rec.polygons[near], x0, y0, x0 + tile, y0 + tile)
    keep = ratio > 0
    near, polys, ratio = near[keep], polys[keep] - np.tile([x0, y0], 4), ratio[keep]
    difficult = np.where(ratio < keep_ratio, DIFFICULT_TRUNCATED, rec.difficult[near])
    boxes = window_envelopes(polys, 0, 0, tile, tile)
    return boxes, rec.labels[near], difficult.astype(np.int64), polys.astype(np.float32)


def split_image(rec: ImageRecord, out_images: Path, tile: int, gap: int, keep_ratio: float,
                stem: str | None = None) -> list[dict]:
    """Cut one image; returns the tiles' records as plain dicts (for the per-image done file).
    Tiles are named ``<stem>__1__<x>___<y>.png`` (DOTA devkit), ``stem`` defaulting to the file's."""
    stem = stem or rec.path.stem
    if is_geotiff(rec.path):                   # any size: read window by window, never decoded whole
        with Raster(rec.path) as raster:
            return _split(raster, rec, out_images, tile, gap, keep_ratio, stem)
    return _split(read_image(rec.path), rec, out_images, tile, gap, keep_ratio, stem)


def _split(image, rec: ImageRecord, out_images: Path, tile: int, gap: int, keep_ratio: float, stem: str) -> list[dict]:
    h, w = image.shape[:2]
    rows = []
    for x0, y0 in tile_grid(w, h, tile, gap):
        boxes, labels, difficult, polys = objects_in_tile(rec, x0, y0, tile, keep_ratio)
        tw, th = min(tile, w - x0), min(tile, h - y0)
        if not isinstance(image, np.ndarray) and not len(labels) and not image.has_data(x0, y0, tw, th):
            continue                           # a GeoTIFF's nodata area: nothing to learn from
        crop = image[y0:y0 + tile, x0:x0 + tile] if isinstance(image, np.ndarray) else image.read(x0, y0, tw, th)
        if crop.shape[0] < tile or crop.shape[1] < tile:
            padded = np.zeros((tile, tile, 3), np.uint8)
            padded[:crop.shape[0], :crop.shape[1]] = crop
            crop = padded
        name = f"{stem}__1__{x0}___{y0}.png"
        write_image(out_images / name, crop)
        rows.append({"file": name, "width": tile, "height": tile, "boxes": boxes.tolist(),
                     "labels": labels.tolist(), "difficult": difficult.tolist(),
                     "polygons": polys.tolist() if polys is not None else None})
    return rows


def source_fingerprint(rec: ImageRecord) -> dict:
    """What an image's tiles depend on besides the settings: the image file (path, size, mtime), its labels and the
    cut rule."""
    import hashlib

    labels = hashlib.sha1()
    for a in (rec.boxes, rec.labels, rec.difficult, rec.polygons if rec.polygons is not None else np.zeros(0)):
        labels.update(np.ascontiguousarray(a).tobytes())
    return {"source": str(rec.path.resolve()), **input_fingerprint(rec.path), "labels_sha1": labels.hexdigest(),
            "cut_rule": CUT_RULE}


def _done_rows(marker: Path, fingerprint: dict | None) -> list[dict] | None:
    """The tiles a done-file lists, when it was made from this very image and labels (else None: cut again)."""
    try:
        done = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(done, dict) or (fingerprint is not None and done.get("input") != fingerprint):
        return None
    return done.get("rows")


def split_dataset(ds: Dataset, out_dir: str | Path, tile: int = 1024, gap: int = 200, keep_ratio: float = 0.7,
                  workers: int = 4, progress=None) -> tuple[Dataset, list[Problem]]:
    """Split every image; resumable: an image whose done-file says it was cut from this very file and labels is
    not cut again (a changed image or label file is cut again, its old tiles removed). ``OUT/split.json`` records
    the settings; a rerun with other settings into the same OUT is refused (ValueError), so tiles of two
    tilings never mix."""
    _check_split_settings(tile, gap, keep_ratio, workers)
    out = Path(out_dir)
    images, done_dir = out / "images", out / ".done"
    _claim_split_folder(ds, out, {"tile": tile, "gap": gap, "keep_ratio": keep_ratio, "classes": list(ds.classes)})
    problems: list[Problem] = []
    stems = dict(zip((id(r) for r in ds.records), unique_stems([r.path for r in ds.records])))

    def work(rec: ImageRecord):
        _split_once(rec, images, done_dir / f"{stems[id(rec)]}.json", tile, gap, keep_ratio, stems[id(rec)],
                    problems)
        if progress:
            progress()

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(work, ds.records))
    records = []
    for rec in ds.records:
        for row in _done_rows(done_dir / f"{stems[id(rec)]}.json", None) or []:
            polys = np.array(row["polygons"], np.float32).reshape(-1, 8) if row["polygons"] is not None else None
            records.append(ImageRecord(images / row["file"], row["width"], row["height"],
                                       np.array(row["boxes"], np.float32).reshape(-1, 4),
                                       np.array(row["labels"], np.int64), np.array(row["difficult"], np.int64),
                                       polys, image_id=len(records) + 1))
    tiled = Dataset(list(ds.classes), records, problems, str(out))
    write_coco(tiled, out / "annotations.json", image_root=out)
    atomic_write(out / "classes.txt", "\n".join(ds.classes) + "\n")
    return tiled, problems


def _check_split_settings(tile: int, gap: int, keep_ratio: float, workers: int) -> None:
    if not 32 <= tile <= 65536:                                      # --tile 1 wrote 61,207 one-pixel tiles
        raise ValueError(f"--tile must lie in 32…65536 px, got {tile}")
    check_overlap(tile, gap, "--gap")
    if not 0 < keep_ratio <= 1:                                       # NaN fails this too
        raise ValueError(f"--keep-ratio must lie in (0, 1], got {keep_ratio}")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")


def _claim_split_folder(ds: Dataset, out: Path, settings: dict) -> None:
    """``out`` may take these tiles: it is not where the sources are, and it holds no tiles of other settings;
    its ``split.json`` then records them."""
    images, done_dir, record = out / "images", out / ".done", out / "split.json"
    sources = {r.path.resolve().parent for r in ds.records}
    if any(folder.is_relative_to(images.resolve()) or folder == out.resolve() for folder in sources):
        # SRC --out SRC: tiles mixed into the source's images/, then trained as unlabelled negatives
        raise ValueError(f"{out}: --out holds the images being split; split into another folder")
    if record.is_file() and json.loads(record.read_text()) != settings:
        old = json.loads(record.read_text())
        diff = "; ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v)
        raise ValueError(f"{out} holds tiles made with other settings ({diff}); split into another --out")
    if not record.is_file() and done_dir.is_dir() and any(done_dir.iterdir()):
        raise ValueError(f"{out} holds tiles of an earlier split whose settings are unknown; use another --out")
    images.mkdir(parents=True, exist_ok=True)
    done_dir.mkdir(exist_ok=True)
    atomic_write(record, json.dumps(settings))


def _split_once(rec: ImageRecord, images: Path, marker: Path, tile: int, gap: int, keep_ratio: float, stem: str,
                problems: list[Problem]) -> None:
    """Cut one image unless its done-file ``marker`` says these very inputs were cut; a changed input's old tiles
    are removed first. An unreadable image is reported and skipped."""
    try:
        fingerprint = source_fingerprint(rec)
    except OSError as exc:
        problems.append(Problem(str(rec.path), None, f"cannot read: {exc.strerror}", "image skipped"))
        marker.unlink(missing_ok=True)
        return
    if _done_rows(marker, fingerprint) is not None:
        return
    stale = _done_rows(marker, None) or []
    marker.unlink(missing_ok=True)
    for row in stale:                                   # tiles of an earlier version of this image
        (images / row["file"]).unlink(missing_ok=True)
    try:
        rows = split_image(rec, images, tile, gap, keep_ratio, stem)
    except ValueError as exc:
        problems.append(Problem(str(rec.path), None, str(exc), "image skipped"))
        return
    atomic_write(marker, json.dumps({"input": fingerprint, "rows": rows}))

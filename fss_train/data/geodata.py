"""GeoTIFFs with vector labels (GeoJSON or shapefile polygons) as a dataset.

Layout: each ``<stem>.tif`` has its labels in ``<stem>.geojson`` or ``<stem>.shp`` beside it or in a
``labels/`` folder beside it (GeoTIFFs may also sit in ``images/``). A polygon's class is its ``class``
property (else ``name``, ``label``, ``category`` or ``type``); its map coordinates become pixels through the
raster's transform, reprojected first when the vector file is in another CRS. Classes come from a
``classes.txt`` in the folder when present (other names are reported and skipped), else the sorted names
found. Bad features are reported as problems naming the file and the feature number, and skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fss_core.raster import GEO_SUFFIXES, Raster
from fss_train.data.records import Dataset, ImageRecord, Problem, quad_polygon, sanitize_box
from fss_train.data.vectors import polygon_box, read_vector_labels

LABEL_SUFFIXES = (".geojson", ".shp")


def label_file(tif: Path) -> Path | None:
    """The vector label file of a GeoTIFF (module doc), or None."""
    for folder in (tif.parent, tif.parent / "labels", tif.parent.parent / "labels"):
        for suffix in LABEL_SUFFIXES:
            if (folder / f"{tif.stem}{suffix}").is_file():
                return folder / f"{tif.stem}{suffix}"
    return None


def is_geo_dataset(path: Path) -> bool:
    """A GeoTIFF with a label file, or a folder holding at least one."""
    if path.is_file():
        return path.suffix.lower() in GEO_SUFFIXES and label_file(path) is not None
    return path.is_dir() and any(label_file(t) for t in _tifs(path))


def _tifs(folder: Path) -> list[Path]:
    roots = [folder / "images"] if (folder / "images").is_dir() else [folder]
    return sorted(p for r in roots for p in r.iterdir() if p.suffix.lower() in GEO_SUFFIXES)


def read_geo(path: str | Path, class_field: str | None = None, oriented: bool = False) -> Dataset:
    """A dataset of GeoTIFFs and their vector labels (module doc); ``path`` is a folder or one GeoTIFF. An image whose
    polygons are all quadrilaterals keeps them (oriented objects); ``oriented`` keeps every polygon, as its
    minimum-area rectangle when it has other than 4 corners."""
    path = Path(path)
    tifs = [path] if path.is_file() else _tifs(path)
    folder = path.parent if path.is_file() else path
    fixed = (folder / "classes.txt").is_file()
    classes = [c.strip() for c in (folder / "classes.txt").read_text().splitlines() if c.strip()] if fixed else []
    problems: list[Problem] = []
    per_image = []
    for tif in tifs:
        labels = label_file(tif)
        if labels is None:
            problems.append(Problem(str(tif), None, "no label file (.geojson or .shp of the same name); image kept "
                                                    "with no objects", "repaired"))
        try:
            with Raster(tif) as raster:
                size, georef = (raster.width, raster.height), raster.georef
        except ValueError as exc:
            problems.append(Problem(str(tif), None, str(exc), "image skipped"))
            continue
        try:
            feats = read_vector_labels(labels, georef, class_field) if labels else []
        except ValueError as exc:
            problems.append(Problem(str(labels), None, str(exc), "image kept with no objects"))
            feats = []
        per_image.append((tif, size, labels, feats))
        if not fixed:
            classes += sorted({name for _, name, _, bad in feats if bad is None} - set(classes))
    if not fixed:
        classes = sorted(classes)
    records = []
    for i, (tif, (w, h), labels, feats) in enumerate(per_image, start=1):
        rec = ImageRecord(tif, w, h, image_id=i)
        rows = []
        for number, name, verts, bad in feats:
            if bad is None and name not in classes:
                bad = f"class {name!r} is not in classes.txt"
            if bad is not None:
                problems.append(Problem(str(labels), number, bad, "skipped"))
                continue
            box = sanitize_box(polygon_box(verts), w, h, str(labels), number, problems)
            if box is not None:
                rows.append((box, classes.index(name), verts))
        if rows:
            rec.boxes = np.array([r[0] for r in rows], np.float32)
            rec.labels = np.array([r[1] for r in rows], np.int64)
            rec.difficult = np.zeros(len(rows), np.int64)
            # oriented objects: quadrilaterals as drawn; with ``oriented`` any other ring as its minimum-area rectangle
            if oriented or all(len(_open_ring(r[2])) == 4 for r in rows):
                rec.polygons = np.array([quad_polygon(_open_ring(r[2])) for r in rows], np.float32)
        records.append(rec)
    return Dataset(classes, records, problems, str(path))


def _open_ring(verts: np.ndarray) -> np.ndarray:
    """The vertices without the closing repeat of the first."""
    return verts[:-1] if len(verts) > 1 and np.allclose(verts[0], verts[-1]) else verts

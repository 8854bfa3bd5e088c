"""The one in-memory dataset format every reader produces and every writer consumes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

# DOTA-v1.5 category names, in the devkit's order (v1.0's 15 plus container-crane).
DOTA_CLASSES = ["plane", "baseball-diamond", "bridge", "ground-track-field", "small-vehicle", "large-vehicle",
                "ship", "tennis-court", "basketball-court", "storage-tank", "soccer-ball-field", "roundabout",
                "harbor", "swimming-pool", "helicopter", "container-crane"]


@dataclass
class Problem:
    """One thing wrong with the input, where it is, and what was done about it."""

    file: str
    line: int | None          # 1-based line (or annotation id for COCO json), None for the whole file
    message: str
    action: str               # "skipped" | "repaired" | "image skipped"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        if self.line is None and self.message.startswith(f"{self.file}: "):     # a reader's error names it already
            return f"{self.message} ({self.action})"
        return f"{where}: {self.message} ({self.action})"


def brief(value) -> str:
    """A short repr of any value for a message, bounded however large or deep the value (a YAML alias bomb is a
    list of 387 million strings: its full repr would never finish)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxstring, r.maxother = 3, 4, 4, 40, 40
    return r.repr(value)


def checked_class_names(names, where: str) -> list[str]:
    """``names`` as a list of distinct, non-empty strings, else a ValueError naming ``where`` and the value: a number,
    null or list as a class name, or two classes of one name, would merge classes or crash later."""
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
        raise ValueError(f"{where}: class names must be a list of names, got {brief(names)}")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}: class {i} has the name {brief(name)}; every class needs a non-empty text name")
        if name in seen:
            raise ValueError(f"{where}: classes {seen[name]} and {i} are both named {name!r}; class names must differ")
        seen[name] = i
    return list(names)


@dataclass
class ImageRecord:
    """One image and its objects. Boxes are float32 xyxy pixels, labels index ``Dataset.classes``."""

    path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))       # (K, 4)
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))          # (K,)
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))       # (K,) 0, 1 or 2
    polygons: np.ndarray | None = None                                                    # (K, 8) or None
    image_id: int = 0

    @property
    def name(self) -> str:
        return self.path.stem


@dataclass
class Dataset:
    classes: list[str]
    records: list[ImageRecord]
    problems: list[Problem] = field(default_factory=list)
    source: str = ""
    category_ids: list[int] | None = None      # a COCO json's own category id of each class (None: index + 1)

    @property
    def num_objects(self) -> int:
        return sum(len(r.labels) for r in self.records)

    def without(self, image_ids) -> Dataset:
        """The same dataset less the images of these ids (evaluation leaves out images it could not read)."""
        drop = set(image_ids)
        if not drop:
            return self
        return replace(self, records=[r for r in self.records if r.image_id not in drop])


def sanitize_box(box: list[float], width: int, height: int, file: str, line: int | None,
                 problems: list[Problem]) -> list[float] | None:
    """Validate one xyxy box: NaN/inf or zero area -> skipped; outside the image -> clipped
    (skipped when nothing is left). Every decision is recorded in ``problems``."""
    if not all(np.isfinite(v) for v in box):
        problems.append(Problem(file, line, f"non-finite coordinates {box}", "skipped"))
        return None
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        problems.append(Problem(file, line, f"zero-area box {box}", "skipped"))
        return None
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if cx2 - cx1 <= 0 or cy2 - cy1 <= 0:
        problems.append(Problem(file, line, f"box {box} lies outside the {width}x{height} image", "skipped"))
        return None
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        problems.append(Problem(file, line, f"box {[round(v, 2) for v in box]} extends past the {width}x{height} "
                                            "image; clipped", "repaired"))
    return [cx1, cy1, cx2, cy2]


def quad_polygon(points) -> list[float]:
    """The 4-point polygon ``x1 y1 … x4 y4`` an oriented object is kept as: ``points`` (P, 2) themselves when there
    are 4 (a DOTA or YOLO-OBB label, as drawn), else their minimum-area rectangle (a segmentation outline, a
    vector polygon of any number of vertices; fss_core.rbox's convention)."""
    import torch

    from fss_core.rbox import min_area_rect, rbox_to_poly

    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if len(pts) == 4:
        return pts.reshape(-1).tolist()
    return rbox_to_poly(min_area_rect(torch.from_numpy(pts))).tolist()


THIN_PX = 2.0      # an oriented object narrower than this (its minimum-area rectangle's short side) is reported


def report_polygons(rows: list, file: str, lines: list, problems: list[Problem]) -> None:
    """Report (and keep) the oriented objects among reader ``rows`` whose polygon crosses itself (corners out of
    order: a bow-tie), has no area, or is thinner than THIN_PX — each with its file and line (COCO: annotation id)."""
    import shapely
    import torch

    from fss_core.rbox import poly_to_rbox

    k = [i for i, r in enumerate(rows) if r[3] is not None]
    if not k:
        return
    polys = np.array([rows[i][3] for i in k], np.float64)                                    # (K, 8)
    shapes = shapely.polygons(polys.reshape(-1, 4, 2))
    valid, area = shapely.is_valid(shapes), shapely.area(shapely.convex_hull(shapes))   # a bow-tie's own area is 0
    short = poly_to_rbox(torch.from_numpy(polys))[:, 3].numpy()
    for j, i in enumerate(k):
        corners = " ".join(f"{v:g}" for v in polys[j])
        if area[j] <= 0:
            problems.append(Problem(file, lines[i], f"polygon {corners} has no area (its corners lie on one line)",
                                    "kept"))
        elif not valid[j]:
            problems.append(Problem(file, lines[i], f"polygon {corners} crosses itself (its corners are out of "
                                                    "order)", "kept"))
        elif short[j] < THIN_PX:
            problems.append(Problem(file, lines[i], f"object {corners} is {short[j]:.2f} px thin (under {THIN_PX:g} "
                                                    "px: hardly learnable)", "kept"))


def record_polygons(rec: ImageRecord) -> np.ndarray:
    """(K, 8) polygons of a record's objects: its own, or each box's corners clockwise from top-left when it has
    none (a horizontal-box dataset written in an oriented format)."""
    from fss_core.boxes import box_corners

    return rec.polygons if rec.polygons is not None else box_corners(rec.boxes).astype(np.float32)


def fill_record(rec: ImageRecord, rows: list) -> None:
    """Set a record's boxes, labels, difficult flags (and polygons, when every row has one) from reader rows
    (box, class, difficult, polygon or None)."""
    if rows:
        rec.boxes = np.array([r[0] for r in rows], np.float32)
        rec.labels = np.array([r[1] for r in rows], np.int64)
        rec.difficult = np.array([r[2] for r in rows], np.int64)
        if all(r[3] is not None for r in rows):
            rec.polygons = np.array([r[3] for r in rows], np.float32)

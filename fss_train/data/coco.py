"""COCO json: the reader (every bad annotation or image reported and skipped) and the writer."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from fss_core.fileio import atomic_write
from fss_train.data.records import (
    Dataset,
    ImageRecord,
    Problem,
    brief,
    checked_class_names,
    fill_record,
    quad_polygon,
    report_polygons,
    sanitize_box,
)


def read_coco(json_path: str | Path, image_root: str | Path | None = None, oriented: bool = False) -> Dataset:
    """A COCO json (images under ``image_root``, default: beside the json or its ``images/``): every malformed image
    entry or annotation is reported and skipped, boxes outside their image are clipped, class names are checked.
    A segmentation of one 4-point ring is always kept as the object's polygon; ``oriented`` also makes every other
    polygon segmentation (instance outlines) the minimum-area rectangle of its points."""
    json_path = Path(json_path)
    data, cats = _load_coco(json_path)
    root = Path(image_root) if image_root else _coco_image_root(json_path, data)
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    problems: list[Problem] = []
    records, duplicate = _coco_images(data["images"], root, str(json_path), problems)
    rows: dict[int, list] = {image_id: [] for image_id in records}
    ids: dict[int, list] = {image_id: [] for image_id in records}
    for ann in data.get("annotations") or []:
        found = _coco_row(ann, records, duplicate, cat_index, str(json_path), problems, oriented)
        if found is not None:
            rows[found[0]].append(found[1])
            ids[found[0]].append(ann.get("id"))
    for image_id, rec in records.items():
        report_polygons(rows[image_id], str(json_path), ids[image_id], problems)
        fill_record(rec, rows[image_id])
    return Dataset([c["name"] for c in cats], list(records.values()), problems, str(json_path),
                   category_ids=[c["id"] for c in cats])


def _load_coco(json_path: Path) -> tuple[dict, list[dict]]:
    """The parsed json and its categories sorted by id; ValueError naming the file when it is no COCO json."""
    try:
        data = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{json_path}: not a readable COCO json: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{json_path}: not a COCO json (no 'images' list)")
    anns, cats_raw = data.get("annotations") or [], data.get("categories") or []
    if not isinstance(anns, list) or not isinstance(cats_raw, list):
        raise ValueError(f"{json_path}: 'annotations' and 'categories' must be lists")
    if not all(isinstance(c, dict) and type(c.get("id")) is int and "name" in c for c in cats_raw):
        raise ValueError(f"{json_path}: every category needs an integer 'id' and a 'name'")
    cats = sorted(cats_raw, key=lambda c: c["id"])
    checked_class_names([c["name"] for c in cats], f"{json_path} categories")
    return data, cats


def _coco_images(images: list, root: Path, file: str, problems: list[Problem]) -> tuple[dict[int, ImageRecord],
                                                                                      set[int]]:
    """The image records by id, and the ids used by more than one image (those images and their annotations are
    skipped: they cannot be told apart)."""
    records: dict[int, ImageRecord] = {}
    duplicate: set[int] = set()
    seen_files: dict[Path, int] = {}
    for img in images:
        try:
            rec = ImageRecord(root / img["file_name"], int(img["width"]), int(img["height"]), image_id=int(img["id"]))
            if rec.width <= 0 or rec.height <= 0:
                raise ValueError("width and height must be positive")
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            problems.append(Problem(file, None, f"image entry {brief(img)} is malformed: {exc}", "image skipped"))
            continue
        if rec.image_id in records or rec.image_id in duplicate:
            other = records.pop(rec.image_id, None)
            duplicate.add(rec.image_id)
            problems.append(Problem(file, None, f"image id {rec.image_id} is used by more than one image "
                                    f"({rec.path.name}{', ' + other.path.name if other else ''}): its annotations "
                                    "cannot be attributed", "images with this id and their annotations skipped"))
            continue
        if rec.path in seen_files:     # one picture under two ids: a conversion wrote it once, lost the other's
            problems.append(Problem(file, None, f"image file {img['file_name']!r} is listed twice (ids "
                                    f"{seen_files[rec.path]} and {rec.image_id})", "the second entry and its "
                                    "annotations skipped"))
            continue
        seen_files[rec.path] = rec.image_id
        records[rec.image_id] = rec
    return records, duplicate


def _coco_row(ann, records: dict[int, ImageRecord], duplicate: set[int], cat_index: dict[int, int], file: str,
              problems: list[Problem], oriented: bool = False) -> tuple[int, tuple] | None:
    """(image id, (box, class, difficult, polygon)) of one annotation, or None when it is reported and skipped."""
    if not isinstance(ann, dict):
        problems.append(Problem(file, None, f"annotation {ann!r:.60} is not an object", "skipped"))
        return None
    aid = ann.get("id") if isinstance(ann.get("id"), int) else None
    if type(ann.get("image_id")) is not int or type(ann.get("category_id")) is not int:     # not bool
        problems.append(Problem(file, aid, "annotation without integer image_id/category_id", "skipped"))
        return None
    if ann["image_id"] in duplicate:
        return None                                    # reported once with the duplicate id
    rec = records.get(ann["image_id"])
    if rec is None:
        problems.append(Problem(file, aid, f"annotation for unknown image_id {ann['image_id']}", "skipped"))
        return None
    if ann["category_id"] not in cat_index:
        problems.append(Problem(file, aid, f"unknown category_id {ann['category_id']}", "skipped"))
        return None
    try:
        x, y, w, h = (float(v) for v in ann["bbox"])
    except (KeyError, TypeError, ValueError):
        problems.append(Problem(file, aid, f"bbox {ann.get('bbox')!r} is not 4 numbers", "skipped"))
        return None
    box = sanitize_box([x, y, x + w, y + h], rec.width, rec.height, file, aid, problems)
    if box is None:
        return None
    return rec.image_id, (box, cat_index[ann["category_id"]], _coco_difficult(ann, aid, file, problems),
                          _coco_polygon(ann, aid, file, problems, oriented))


def _coco_difficult(ann: dict, aid, file: str, problems: list[Problem]) -> int:
    """DOTA's flag carried in COCO (0, 1, or 2 for a piece cut by a tile), or 1 for a crowd."""
    flag = ann.get("difficult", 0)
    if flag not in (0, 1, 2, True, False):        # int() of Infinity, [1] or "yes" was a traceback
        problems.append(Problem(file, aid, f"difficult must be 0, 1 or 2 (a cut piece), got {brief(flag)}",
                                "taken as 0"))
        flag = 0
    return int(flag) or (1 if ann.get("iscrowd") else 0)


def _coco_polygon(ann: dict, aid, file: str, problems: list[Problem], oriented: bool) -> list | None:
    """The 8-number polygon of an oriented object: a segmentation of one 4-point ring as it is; with ``oriented``,
    any other polygon segmentation (an instance outline, several rings) as the minimum-area rectangle of all its
    points; else None (also for RLE masks and annotations without a segmentation)."""
    seg = ann.get("segmentation")
    if not (isinstance(seg, list) and seg and all(isinstance(ring, list) for ring in seg)):
        return None
    if not oriented and not (len(seg) == 1 and len(seg[0]) == 8):
        return None
    points = [v for ring in seg for v in ring]
    if len(points) < 6 or len(points) % 2 or any(len(ring) % 2 for ring in seg) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) < 1e7
            for v in points):
        problems.append(Problem(file, aid, f"segmentation {brief(seg)} is not rings of finite x y pairs",
                                "box kept without its polygon"))
        return None
    return points if len(seg) == 1 and len(points) == 8 else quad_polygon(points)


def _coco_image_root(json_path: Path, data: dict) -> Path:
    """Images are found relative to the json's folder, or to a sibling ``images/`` folder."""
    first = next((img for img in data["images"] if isinstance(img, dict)), None)
    name = first.get("file_name") if first else None
    if not isinstance(name, str):
        return json_path.parent
    for root in (json_path.parent, json_path.parent / "images", json_path.parent.parent / "images"):
        if (root / name).is_file():
            return root
    return json_path.parent


def write_coco(ds: Dataset, out_json: str | Path, image_root: str | Path | None = None) -> Path:
    """COCO json with category ids 1..C; file names relative to ``image_root`` (default: the json's folder)."""
    out_json = Path(out_json)
    root = Path(image_root) if image_root else out_json.parent
    images, anns = [], []
    for i, rec in enumerate(ds.records, start=1):
        images.append({"id": i, "file_name": os.path.relpath(rec.path, root), "width": rec.width,
                       "height": rec.height})
        for k in range(len(rec.labels)):
            x1, y1, x2, y2 = (float(v) for v in rec.boxes[k])
            ann = {"id": len(anns) + 1, "image_id": i, "category_id": int(rec.labels[k]) + 1,
                   "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                   "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0, "difficult": int(rec.difficult[k])}
            if rec.polygons is not None:
                ann["segmentation"] = [[round(float(v), 2) for v in rec.polygons[k]]]
            anns.append(ann)
    cats = [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(ds.classes)]
    atomic_write(out_json, json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return out_json

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
    sanitize_box,
)


def read_coco(json_path: str | Path, image_root: str | Path | None = None) -> Dataset:
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{json_path}: not a readable COCO json: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{json_path}: not a COCO json (no 'images' list)")
    root = Path(image_root) if image_root else _coco_image_root(json_path, data)
    anns, cats_raw = data.get("annotations") or [], data.get("categories") or []
    if not isinstance(anns, list) or not isinstance(cats_raw, list):
        raise ValueError(f"{json_path}: 'annotations' and 'categories' must be lists")
    if not all(isinstance(c, dict) and type(c.get("id")) is int and "name" in c for c in cats_raw):
        raise ValueError(f"{json_path}: every category needs an integer 'id' and a 'name'")
    cats = sorted(cats_raw, key=lambda c: c["id"])
    checked_class_names([c["name"] for c in cats], f"{json_path} categories")
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    problems: list[Problem] = []
    file = str(json_path)
    records: dict[int, ImageRecord] = {}
    rows: dict[int, list] = {}
    duplicate: set[int] = set()
    seen_files: dict[Path, int] = {}
    for img in data["images"]:
        try:
            rec = ImageRecord(root / img["file_name"], int(img["width"]), int(img["height"]), image_id=int(img["id"]))
            if rec.width <= 0 or rec.height <= 0:
                raise ValueError("width and height must be positive")
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            problems.append(Problem(file, None, f"image entry {brief(img)} is malformed: {exc}", "image skipped"))
            continue
        if rec.image_id in records or rec.image_id in duplicate:
            other = records.pop(rec.image_id, None)
            rows.pop(rec.image_id, None)
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
        rows[rec.image_id] = []
    for ann in anns:
        if not isinstance(ann, dict):
            problems.append(Problem(file, None, f"annotation {ann!r:.60} is not an object", "skipped"))
            continue
        aid = ann.get("id") if isinstance(ann.get("id"), int) else None
        if type(ann.get("image_id")) is not int or type(ann.get("category_id")) is not int:     # not bool
            problems.append(Problem(file, aid, "annotation without integer image_id/category_id", "skipped"))
            continue
        if ann.get("image_id") in duplicate:
            continue                                   # reported once with the duplicate id above
        rec = records.get(ann.get("image_id"))
        if rec is None:
            problems.append(Problem(file, aid, f"annotation for unknown image_id {ann.get('image_id')}", "skipped"))
            continue
        if ann.get("category_id") not in cat_index:
            problems.append(Problem(file, aid, f"unknown category_id {ann.get('category_id')}", "skipped"))
            continue
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            problems.append(Problem(file, aid, f"bbox {ann.get('bbox')!r} is not 4 numbers", "skipped"))
            continue
        box = sanitize_box([x, y, x + w, y + h], rec.width, rec.height, file, aid, problems)
        if box is None:
            continue
        flag = ann.get("difficult", 0)
        if flag not in (0, 1, 2, True, False):        # int() of Infinity, [1] or "yes" was a traceback
            problems.append(Problem(file, aid, f"difficult must be 0, 1 or 2 (a cut piece), got {brief(flag)}",
                                    "taken as 0"))
            flag = 0
        difficult = int(flag) or (1 if ann.get("iscrowd") else 0)
        seg = ann.get("segmentation")
        poly = seg[0] if isinstance(seg, list) and seg and isinstance(seg[0], list) and len(seg[0]) == 8 else None
        if poly is not None and not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                        and math.isfinite(v) and abs(v) < 1e7 for v in poly):
            problems.append(Problem(file, aid, f"segmentation {brief(poly)} is not 8 finite numbers", "box kept"))
            poly = None
        rows[rec.image_id].append((box, cat_index[ann["category_id"]], difficult, poly))
    for image_id, rec in records.items():
        fill_record(rec, rows[image_id])
    return Dataset([c["name"] for c in cats], list(records.values()), problems, str(json_path),
                   category_ids=[c["id"] for c in cats])


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

"""Saved or fresh predictions put into the ground truth's ids — images by file, classes by name — so that an
evaluation can never score predictions against the wrong classes or images without saying so.

The ground truth's ids: a COCO json's own image and category ids; for every other format the dataset's
record ids and class index + 1 (``metrics.coco_gt_from_dataset``). Predictions come from

- a checkpoint (its class names), mapped by name;
- ``fss detect``'s ``predictions.json`` with the ``images.json`` beside it (file names and class names),
  or the detect output folder itself;
- a plain COCO results json: its ids must be the ground truth's, so only against the COCO json it refers to;
- a DOTA Task2 folder (``Task2_<class>.txt``, images by name).

Classes present on one side only are reported (``ClassMapping.note``); no class in common is an error.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from fss_train.data.records import Dataset, brief


@dataclass
class ClassMapping:
    """Prediction class names -> the ground truth's category ids, and what did not match."""

    to_gt: dict[str, int]                   # name -> GT category id
    unknown: list[str]                      # predicted classes the ground truth does not have (dropped)
    unpredicted: list[str]                  # ground-truth classes the predictions cannot contain

    def note(self) -> str | None:
        parts = []
        if self.unknown:
            parts.append(f"predicted classes not in the ground truth, ignored: {self.unknown}")
        if self.unpredicted:
            parts.append(f"ground-truth classes the predictions do not know (AP 0): {self.unpredicted}")
        return "; ".join(parts) or None


def gt_category_ids(ds: Dataset) -> dict[str, int]:
    """Class name -> category id in the ground truth used for ``ds`` (its COCO json's ids, else index + 1)."""
    ids = ds.category_ids or list(range(1, len(ds.classes) + 1))
    return dict(zip(ds.classes, ids))


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _malformed(x: dict) -> str | None:
    """What is wrong with one COCO result (a string score or a 3-number bbox crashed inside COCOeval), or None."""
    if not _is_number(x["score"]):
        return f"has the score {brief(x['score'])}, not a finite number"
    if not isinstance(x["bbox"], list) or len(x["bbox"]) != 4 or not all(_is_number(v) for v in x["bbox"]):
        return "has a bbox that is not 4 finite numbers [x, y, width, height]"
    if x["bbox"][2] < 0 or x["bbox"][3] < 0:
        return "has a bbox of negative width or height"
    if type(x["category_id"]) is not int or not isinstance(x["image_id"], (int, str)) or isinstance(x["image_id"],
                                                                                                     bool):
        return "needs an integer category_id and an integer (or file name) image_id"
    return None


def map_classes(pred_classes: list[str], ds: Dataset, source: str) -> ClassMapping:
    """By name; a clear error when the two sides share no class at all."""
    gt = gt_category_ids(ds)
    common = [c for c in pred_classes if c in gt]
    if pred_classes and not common:
        raise ValueError(f"{source}: its classes {pred_classes[:8]}{'…' if len(pred_classes) > 8 else ''} share no "
                         f"name with the ground truth's {ds.classes[:8]}{'…' if len(ds.classes) > 8 else ''}; "
                         "evaluate on data labelled with the same class names")
    return ClassMapping({c: gt[c] for c in common}, [c for c in pred_classes if c not in gt],
                        [c for c in ds.classes if c not in pred_classes])


def remap(preds: list[dict], pred_classes: list[str], mapping: ClassMapping, image_ids: dict | None = None
          ) -> list[dict]:
    """COCO results with ``category_id`` = index + 1 into ``pred_classes`` (and image ids through
    ``image_ids`` when given) -> the ground truth's ids; detections of unknown classes dropped."""
    out = []
    for p in preds:
        name = pred_classes[int(p["category_id"]) - 1]
        if name not in mapping.to_gt:
            continue
        q = {**p, "category_id": mapping.to_gt[name]}
        if image_ids is not None:
            q["image_id"] = image_ids[p["image_id"]]
        out.append(q)
    return out


def read_predictions(path: str | Path, ds: Dataset) -> tuple[list[dict], ClassMapping]:
    """Saved predictions (module doc) in the ground truth's ids."""
    from fss_train.metrics import read_dota_task2

    p = Path(path)
    if p.is_dir() and (p / "predictions.json").is_file():
        p = p / "predictions.json"                                   # an fss detect output folder
    elif p.is_dir():
        folder = p / "dota" if (p / "dota").is_dir() else p
        names = sorted(f.name[len("Task2_"):-len(".txt")] for f in folder.glob("Task2_*.txt"))
        if not names:
            raise ValueError(f"{p}: no Task2_<class>.txt files (a DOTA Task2 folder) and no predictions.json")
        mapping = map_classes(names, ds, str(folder))
        return read_dota_task2(folder, ds, gt_category_ids(ds)), mapping
    try:
        preds = json.loads(p.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise ValueError(f"{p}: not a readable predictions file ({exc})") from None
    if not isinstance(preds, list) or not all(isinstance(x, dict) and {"image_id", "category_id", "bbox", "score"}
                                              <= set(x) for x in preds):
        raise ValueError(f"{p}: a COCO results json is a list of {{image_id, category_id, bbox, score}}")
    for i, x in enumerate(preds):
        if problem := _malformed(x):
            raise ValueError(f"{p}: result {i} {problem}: {brief(x)}")
    images_json = p.parent / "images.json"
    if images_json.is_file():
        return _from_detect_run(preds, images_json, ds)
    if ds.category_ids is None:
        raise ValueError(f"{p}: a COCO results json without the images.json that fss detect writes beside it names "
                         "images and classes by the ids of the COCO json it was made for; evaluate it against that "
                         "json (--data annotations.json), or give the fss detect output folder")
    gt_ids = set(ds.category_ids)
    bad = sorted({x["category_id"] for x in preds} - gt_ids)
    if bad:
        raise ValueError(f"{p}: category ids {bad[:10]} are not among the ground truth's {sorted(gt_ids)[:10]}: "
                         "predictions made for another labelling (map them by name: give fss detect's output "
                         "folder, whose images.json names the classes)")
    used = {x["category_id"] for x in preds}
    return preds, ClassMapping({c: i for c, i in gt_category_ids(ds).items() if i in used}, [], [])


def _from_detect_run(preds: list[dict], images_json: Path, ds: Dataset) -> tuple[list[dict], ClassMapping]:
    """fss detect's predictions: its image ids -> the dataset's by file (path, then name, then stem); its class
    index -> the dataset's by name."""
    try:
        info = json.loads(images_json.read_text())
        classes = [c["name"] for c in sorted(info["categories"], key=lambda c: c["id"])]
        images = {im["id"]: Path(im["file_name"]) for im in info["images"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{images_json}: not the images.json of an fss detect run ({exc})") from None
    by_path = {str(r.path.resolve()): r.image_id for r in ds.records}
    by_name = _unique({r.path.name: r.image_id for r in ds.records}, [r.path.name for r in ds.records])
    by_stem = _unique({r.path.stem: r.image_id for r in ds.records}, [r.path.stem for r in ds.records])
    ids, missing = {}, []
    for pid, f in images.items():
        rid = by_path.get(str(f.resolve())) or by_name.get(f.name) or by_stem.get(f.stem)
        if rid is None:
            missing.append(f.name)
        else:
            ids[pid] = rid
    if missing:
        raise ValueError(f"{images_json}: {len(missing)} predicted image(s) are not in the ground truth (first: "
                         f"{missing[:5]}); predictions and --data must describe the same images")
    mapping = map_classes(classes, ds, str(images_json))
    return remap(preds, classes, mapping, ids), mapping


def _unique(table: dict, keys: list[str]) -> dict:
    """Only keys that name one record (a file name shared by two folders matches neither)."""
    counts = Counter(keys)
    return {k: v for k, v in table.items() if counts[k] == 1}

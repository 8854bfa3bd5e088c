"""Readers and writers: COCO json, YOLO txt + data.yaml (Ultralytics), DOTA labelTxt.

Every reader returns a :class:`Dataset`; bad input never raises halfway through a folder:
each bad line/annotation/image is repaired (clipped) or skipped and recorded as a Problem
naming the file and line. Only a dataset that cannot be opened at all raises ValueError.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import yaml

from fss_core.fileio import atomic_write, is_temp, link_or_copy, read_text, unique_stems
from fss_core.imageio import IMAGE_SUFFIXES, image_size
from fss_train.data.geodata import is_geo_dataset, read_geo
from fss_train.data.records import DOTA_CLASSES, Dataset, ImageRecord, Problem, brief, checked_class_names, sanitize_box

# in an output folder while a conversion writes it; a dataset holding it is refused by read_dataset
INCOMPLETE = ".fss-incomplete"


# ------------------------------------------------------------------------------------------ detection
def convert_dataset(ds: Dataset, to: str, out: str | Path, split: str = "train", exist_ok: bool = False) -> Path:
    """Write ``ds`` as a COCO folder (images/ + annotations.json), a YOLO dataset or a DOTA folder under
    ``out``; returns the file or folder written. Images are linked (or copied) under unique names.

    ``out`` may already hold other YOLO splits (their data.yaml entries are kept; the class names must agree)
    or be the source folder itself (DOTA -> COCO in place). Files of an earlier conversion in the folders this
    one writes need ``exist_ok``; they are then replaced, and those this conversion does not write are removed,
    so the result never mixes two conversions (a leftover image would be a negative in YOLO)."""
    if to not in ("coco", "yolo", "dota"):
        raise ValueError(f"--to must be coco, yolo or dota, got {to!r}")
    out = Path(out)
    images, labels = {"coco": (out / "images", None), "yolo": (out / "images" / split, out / "labels" / split),
                      "dota": (out / "images", out / "labelTxt")}[to]
    own_files = {"coco": [out / "annotations.json"], "yolo": [], "dota": [out / "classes.txt"]}[to]
    names = unique_stems([r.path for r in ds.records])
    planned = {images / f"{n}{r.path.suffix}" for r, n in zip(ds.records, names)} | set(own_files)
    if labels is not None:
        planned |= {labels / f"{n}.txt" for n in names}
    # a folder that holds source images (DOTA -> COCO in place) is the user's, not an earlier conversion: nothing
    # in it is counted or removed, not even the images the reader skipped (corrupt, unlabelled)
    source_dirs = {r.path.resolve().parent for r in ds.records}
    earlier = [p for folder in (images, labels) if folder is not None and folder.is_dir()
               and folder.resolve() not in source_dirs for p in sorted(folder.iterdir())
               if p.is_file() and not is_temp(p)]
    earlier += [f for f in own_files if f.is_file()]
    yaml_cfg = _merged_yolo_yaml(out / "data.yaml", ds, split) if to == "yolo" else None
    if to == "dota":
        dota_class_tokens(ds.classes)              # names DOTA lines cannot hold: refused before anything is written
    if earlier and not exist_ok:
        where = sorted({str(p.parent.relative_to(out)) if p.parent != out else p.name for p in earlier})
        raise FileExistsError(f"{out}: holds an earlier conversion ({len(earlier)} files in {', '.join(where)}); "
                              "pass --exist-ok to replace it, or choose another --out")
    for folder in (images, labels):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    # until the last file is in place the folder says it is incomplete (a killed conversion looked complete)
    atomic_write(out / INCOMPLETE, f"{to}: fss data convert of {len(ds.records)} images", within=out)
    for rec, name in zip(ds.records, names):
        link_or_copy(rec.path, images / f"{name}{rec.path.suffix}")
    if to == "coco":
        for rec, name in zip(ds.records, names):
            rec.path = images / f"{name}{rec.path.suffix}"
        result = write_coco(ds, out / "annotations.json", image_root=out)
    elif to == "yolo":
        for rec, name in zip(ds.records, names):
            atomic_write(labels / f"{name}.txt", yolo_label_text(rec), within=out)
        atomic_write(out / "data.yaml", yaml.safe_dump(yaml_cfg, sort_keys=False))
        result = out / "data.yaml"
    else:
        for rec, name in zip(ds.records, names):
            atomic_write(labels / f"{name}.txt", dota_label_text(ds, rec), within=out)
        atomic_write(out / "classes.txt", "\n".join(dota_class_tokens(ds.classes).values()) + "\n", within=out)
        result = out
    for p in earlier:
        if p not in planned:
            p.unlink(missing_ok=True)
    (out / INCOMPLETE).unlink()
    return result


def _merged_yolo_yaml(path: Path, ds: Dataset, split: str) -> dict:
    """The data.yaml after adding ``split``: the splits an existing yaml names are kept when its class names
    are this dataset's (another list would relabel them)."""
    names = {i: n for i, n in enumerate(ds.classes)}
    cfg = {"path": ".", split: f"images/{split}", "names": names}
    if not path.is_file():
        return cfg
    try:
        old = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot be read to add the {split!r} split ({exc})") from None
    if not isinstance(old, dict):
        raise ValueError(f"{path}: not a data.yaml mapping; choose another --out")
    old_names = old.get("names")
    if isinstance(old_names, list):
        old_names = dict(enumerate(old_names))
    if old_names is not None and {int(k): str(v) for k, v in old_names.items()} != names:
        raise ValueError(f"{path}: its classes {list(old_names.values())} differ from this dataset's "
                         f"{ds.classes}; convert into another --out")
    merged = {k: v for k, v in old.items() if k not in ("names",)}
    merged[split] = f"images/{split}"
    merged["names"] = names
    return merged


def read_val_split(path: str | Path) -> Dataset:
    """The validation images of a dataset: a data.yaml's ``val`` split, else its ``train`` split (a yaml
    without ``val``); any other format is one split and is read as it is."""
    if str(path).endswith((".yaml", ".yml")):
        try:
            return read_dataset(path, "val")
        except ValueError:
            return read_dataset(path, "train")
    return read_dataset(path)


def read_dataset(path: str | Path, split: str = "train") -> Dataset:
    """A COCO json, an Ultralytics ``data.yaml`` (``split`` chooses train/val/test), a DOTA
    folder (``images/`` + ``labelTxt/``), or GeoTIFFs with vector labels (a folder or one .tif; geodata.py)."""
    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        return read_coco(_complete(p, "coco"))
    if p.is_file() and p.suffix in (".yaml", ".yml"):
        return read_yolo(_complete(p, "yolo"), split)
    if p.is_dir() and (p / "labelTxt").is_dir():
        return read_dota(_complete(p, "dota"))      # images/ may be absent: evaluation from labels alone
    if p.is_dir() and (p / "annotations.json").is_file():
        return read_coco(_complete(p / "annotations.json", "coco"))
    if not p.exists():
        raise ValueError(f"{p}: no such dataset")
    if is_geo_dataset(p):
        return read_geo(p)
    raise ValueError(f"{p}: not a dataset: expected a COCO .json, a YOLO data.yaml, a DOTA folder with "
                     "images/ and labelTxt/, or GeoTIFFs with .geojson/.shp labels of the same name")


def _complete(path: Path, fmt: str) -> Path:
    """``path``, unless a conversion to ``fmt`` into its folder was interrupted (the folder would read as a smaller
    dataset that looks complete)."""
    marker = (path if path.is_dir() else path.parent) / INCOMPLETE
    if marker.is_file() and marker.read_text().split(":", 1)[0] == fmt:
        raise ValueError(f"{path}: an interrupted conversion to {fmt} ({marker} is there); rerun `fss data convert` "
                         "with --exist-ok to complete it")
    return path


# ------------------------------------------------------------------------------------------ COCO
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
        _fill(rec, rows[image_id])
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


def _fill(rec: ImageRecord, rows: list) -> None:
    if rows:
        rec.boxes = np.array([r[0] for r in rows], np.float32)
        rec.labels = np.array([r[1] for r in rows], np.int64)
        rec.difficult = np.array([r[2] for r in rows], np.int64)
        if all(r[3] is not None for r in rows):
            rec.polygons = np.array([r[3] for r in rows], np.float32)


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


# ------------------------------------------------------------------------------------------ YOLO
def yolo_root(data_yaml: Path, path: str | None) -> Path:
    """The folder a data.yaml's splits are relative to (Ultralytics' rules): its ``path:`` when absolute; a
    relative ``path:`` against the yaml's folder when that exists (``path: .``), else against the working
    folder (``path: ../datasets/coco8`` run from a project root); no ``path:`` = the yaml's folder."""
    here = data_yaml.resolve().parent
    if not path:
        return here
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    for candidate in (here / p, Path.cwd() / p):
        if candidate.is_dir():
            return candidate.resolve()
    raise ValueError(f"{data_yaml}: path {path!r} is neither under the yaml's folder ({here}) nor under the "
                     f"working folder ({Path.cwd()})")


def read_yolo(data_yaml: str | Path, split: str = "train") -> Dataset:
    data_yaml = Path(data_yaml)
    try:
        cfg = yaml.safe_load(read_text(data_yaml))
    except (OSError, yaml.YAMLError, RecursionError) as exc:
        raise ValueError(f"{data_yaml}: not a readable data.yaml: {exc}") from None
    if not isinstance(cfg, dict) or "names" not in cfg:
        raise ValueError(f"{data_yaml}: a YOLO data.yaml needs 'names'")
    classes = _yolo_names(cfg["names"], data_yaml)
    if not isinstance(cfg.get("path"), (str, type(None))):
        raise ValueError(f"{data_yaml}: 'path' must be a folder, got {brief(cfg['path'])}")
    base = yolo_root(data_yaml, cfg.get("path"))
    if split not in cfg or cfg[split] is None:
        raise ValueError(f"{data_yaml}: no '{split}' split")
    entries = cfg[split] if isinstance(cfg[split], list) else [cfg[split]]
    if not all(isinstance(e, str) for e in entries):
        raise ValueError(f"{data_yaml}: split '{split}' must be a path or a list of paths, got {brief(cfg[split])}")
    images: list[Path] = []
    for entry in entries:
        p = base / entry
        if p.is_dir():
            images += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.suffix == ".txt" and p.is_file():
            images += [(base / line.strip()) for line in read_text(p).splitlines() if line.strip()]
        else:
            raise ValueError(f"{data_yaml}: split '{split}' path {p} does not exist")
    problems: list[Problem] = []
    records = []
    for i, img in enumerate(images):
        size = image_size(img)
        if size is None:
            problems.append(Problem(str(img), None, "image missing or unreadable", "image skipped"))
            continue
        label = _yolo_label_path(img)
        rec = ImageRecord(img, size[0], size[1], image_id=i)
        _fill(rec, _read_yolo_lines(label, size, len(classes), problems))
        records.append(rec)
    _report_orphan_labels({_yolo_label_path(img) for img in images}, entries, base, problems)
    return Dataset(classes, records, problems, str(data_yaml))


def _yolo_names(names, data_yaml: Path) -> list[str]:
    """Ultralytics' ``names``: a list, or a mapping of class index 0…n-1 to name (no gaps: they would renumber the
    labels silently). A plain string is refused (it read as one class per letter)."""
    if isinstance(names, dict):
        keys = list(names)
        if not all(type(k) is int for k in keys) or sorted(keys) != list(range(len(keys))):
            raise ValueError(f"{data_yaml}: 'names' as a mapping needs the class indices 0…{len(keys) - 1} as keys, "
                             f"got {brief(keys)}")
        names = [names[k] for k in range(len(keys))]
    return checked_class_names(names, f"{data_yaml} names")


def _report_orphan_labels(expected: set[Path], entries: list, base: Path, problems: list[Problem]) -> None:
    """Label files in the split's labels/ folders that no image of the split uses: their objects are lost."""
    for entry in entries:
        lab_dir = _yolo_label_path(base / entry / "x").parent
        if lab_dir.is_dir() and (base / entry).is_dir():
            for label in sorted(lab_dir.rglob("*.txt")):
                if label not in expected:
                    problems.append(Problem(str(label), None, "label file without an image", "skipped"))


def _yolo_label_path(img: Path) -> Path:
    parts = list(img.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _read_yolo_lines(label: Path, size: tuple[int, int], num_classes: int, problems: list[Problem]) -> list:
    if not label.is_file():
        return []          # an image without a label file is a background image (Ultralytics convention)
    w, h = size
    rows = []
    text = label.read_bytes().decode("utf-8-sig", errors="replace")     # a BOM is not part of line 1
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) < 5:
                raise ValueError
            cls = int(float(parts[0]))
            values = [float(v) for v in parts[1:]]
            if len(values) > 4:        # Ultralytics' segment / OBB line `cls x1 y1 x2 y2 …`: its enclosing box
                if len(values) % 2 or len(values) < 6:
                    raise ValueError
                xs, ys = values[0::2], values[1::2]
                xc, yc, bw, bh = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)
            else:
                xc, yc, bw, bh = values
        except (ValueError, OverflowError):
            problems.append(Problem(str(label), n, f"unparsable line {line!r:.60}", "skipped"))
            continue
        if not 0 <= cls < num_classes or float(parts[0]) != cls:
            problems.append(Problem(str(label), n, f"unknown class {parts[0]}", "skipped"))
            continue
        box = [(xc - bw / 2) * w, (yc - bh / 2) * h, (xc + bw / 2) * w, (yc + bh / 2) * h]
        box = sanitize_box(box, w, h, str(label), n, problems)
        if box is not None:
            rows.append((box, cls, 0, None))
    return rows


def yolo_label_text(rec: ImageRecord) -> str:
    lines = []
    for k in range(len(rec.labels)):
        x1, y1, x2, y2 = (float(v) for v in rec.boxes[k])
        lines.append(f"{int(rec.labels[k])} {(x1 + x2) / 2 / rec.width:.6f} {(y1 + y2) / 2 / rec.height:.6f} "
                     f"{(x2 - x1) / rec.width:.6f} {(y2 - y1) / rec.height:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


# ------------------------------------------------------------------------------------------ DOTA
def read_dota(folder: str | Path, classes: list[str] | None = None) -> Dataset:
    """``folder/images/*`` with ``folder/labelTxt/<stem>.txt``. Classes: ``classes.txt`` in the
    folder if present (other names are skipped), else DOTA-v1.5's 16 names followed by any other
    name found (each reported once)."""
    folder = Path(folder)
    img_dir, lab_dir = folder / "images", folder / "labelTxt"
    if not lab_dir.is_dir():
        raise ValueError(f"{folder}: a DOTA folder needs labelTxt/ (and images/)")
    fixed = classes is not None or (folder / "classes.txt").is_file()
    if classes is None:
        classes = ([c.strip() for c in read_text(folder / "classes.txt").splitlines() if c.strip()]
                   if fixed else list(DOTA_CLASSES))
    classes = list(classes)
    problems: list[Problem] = []
    records = []
    if not img_dir.is_dir():
        return _read_dota_labels_only(folder, lab_dir, classes, fixed, problems)
    for i, img in enumerate(sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)):
        size = image_size(img)
        if size is None:
            problems.append(Problem(str(img), None, "image unreadable", "image skipped"))
            continue
        rec = ImageRecord(img, size[0], size[1], image_id=i)
        label = lab_dir / f"{img.stem}.txt"
        if not label.is_file():
            problems.append(Problem(str(label), None, "no label file; image kept with no objects", "repaired"))
            rows = []
        else:
            rows = _read_dota_lines(label, size, classes, fixed, problems)
        _fill(rec, rows)
        records.append(rec)
    stems = {p.stem for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    for label in sorted(lab_dir.glob("*.txt")):
        if label.stem not in stems:
            problems.append(Problem(str(label), None, "label file without an image", "skipped"))
    return Dataset(classes, records, problems, str(folder))


def _read_dota_labels_only(folder: Path, lab_dir: Path, classes: list[str], fixed: bool,
                           problems: list[Problem]) -> Dataset:
    """Evaluation from labels alone (no images/): the image size is unknown, so boxes are not
    clipped; width and height are set to the extent of the labelled objects."""
    records = []
    big = (10 ** 9, 10 ** 9)
    for i, label in enumerate(sorted(lab_dir.glob("*.txt"))):
        rows = _read_dota_lines(label, big, classes, fixed, problems)
        rec = ImageRecord(folder / "images" / f"{label.stem}.png", 1, 1, image_id=i)
        _fill(rec, rows)
        if len(rec.boxes):
            rec.width, rec.height = int(np.ceil(rec.boxes[:, 2].max())), int(np.ceil(rec.boxes[:, 3].max()))
        records.append(rec)
    problems.append(Problem(str(folder), None, "no images/ folder: read from labelTxt alone (sizes unknown, "
                                               "boxes not clipped)", "repaired"))
    return Dataset(classes, records, problems, str(folder))


def _read_dota_lines(label: Path, size: tuple[int, int], classes: list[str], fixed: bool,
                     problems: list[Problem]) -> list:
    w, h = size
    rows = []
    text = label.read_bytes().decode("utf-8-sig", errors="replace")     # a BOM is not part of line 1
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("imagesource:", "gsd:")):
            continue
        parts = line.split()
        try:
            if len(parts) < 9:
                raise ValueError
            poly = [float(v) for v in parts[:8]]
            name = parts[8]
            difficult = int(parts[9]) if len(parts) > 9 else 0
            if difficult not in (0, 1, 2):  # the devkit's flags (2: a piece its splitter cut; 10**20 overflowed)
                raise ValueError
        except ValueError:
            problems.append(Problem(str(label), n, f"unparsable line {line!r:.60}", "skipped"))
            continue
        if name not in classes:
            if fixed:
                problems.append(Problem(str(label), n, f"unknown class {name!r}", "skipped"))
                continue
            classes.append(name)
            problems.append(Problem(str(label), n, f"class {name!r} is not a DOTA-v1.5 class; added as class "
                                                   f"{len(classes) - 1}", "repaired"))
        if not all(math.isfinite(v) and abs(v) < 1e7 for v in poly):    # 1e39 became inf in float32 outputs
            problems.append(Problem(str(label), n, f"non-finite or absurd coordinates {poly}", "skipped"))
            continue
        xs, ys = poly[0::2], poly[1::2]
        box = sanitize_box([min(xs), min(ys), max(xs), max(ys)], w, h, str(label), n, problems)
        if box is not None:
            rows.append((box, classes.index(name), difficult, poly))
    return rows


def dota_class_tokens(classes: list[str]) -> dict[str, str]:
    """The token each class name is written as in DOTA label lines (``x1 y1 … x4 y4 class difficult``, split on
    whitespace): the name, with every run of whitespace made one ``_`` (``potted plant`` -> ``potted_plant``: the
    line would not parse otherwise). Raises ValueError when two names would become one token, or one none."""
    tokens = {name: "_".join(str(name).split()) for name in classes}
    seen: dict[str, str] = {}
    for name, token in tokens.items():
        if not token:
            raise ValueError(f"class name {name!r} has no characters a DOTA label line can hold")
        if token in seen:
            raise ValueError(f"classes {seen[token]!r} and {name!r} would both be written as {token!r} in DOTA label "
                             "lines (whitespace separates their fields); rename one")
        seen[token] = name
    return tokens


def dota_label_text(ds: Dataset, rec: ImageRecord) -> str:
    tokens = dota_class_tokens(ds.classes)
    lines = []
    for k in range(len(rec.labels)):
        if rec.polygons is not None:
            poly = rec.polygons[k]
        else:
            x1, y1, x2, y2 = rec.boxes[k]
            poly = [x1, y1, x2, y1, x2, y2, x1, y2]
        coords = " ".join(f"{float(v):.1f}" for v in poly)
        lines.append(f"{coords} {tokens[ds.classes[int(rec.labels[k])]]} {int(rec.difficult[k])}")
    return "\n".join(lines) + ("\n" if lines else "")


# ------------------------------------------------------------------------------------------ helpers


def read_labels_for_image(labels: str | Path, image: str | Path, size: tuple[int, int],
                          classes: list[str] | None = None) -> tuple[np.ndarray, list[str], list[Problem]]:
    """Boxes (K, 4) xyxy px and class names of one image from a DOTA labelTxt, a YOLO txt
    (``classes`` names its indices; default "0", "1", …) or a COCO json (matched by file name)."""
    labels, image = Path(labels), Path(image)
    problems: list[Problem] = []
    if labels.suffix == ".json":
        ds = read_coco(labels)
        match = [r for r in ds.records if r.path.name == image.name]
        if not match:
            raise ValueError(f"{labels}: no image named {image.name}")
        rec = match[0]
        return rec.boxes, [ds.classes[i] for i in rec.labels], ds.problems
    text = labels.read_bytes().decode("utf-8-sig", errors="replace")
    data_lines = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.startswith(("imagesource", "gsd"))]
    is_dota = bool(data_lines) and len(data_lines[0]) >= 9
    if is_dota:
        names = list(DOTA_CLASSES)
        rows = _read_dota_lines(labels, size, names, False, problems)
        return (np.array([r[0] for r in rows], np.float32).reshape(-1, 4), [names[r[1]] for r in rows], problems)
    n_cls = len(classes) if classes else 1 + max((int(p[0]) for p in data_lines if p[0].isdigit()), default=0)
    rows = _read_yolo_lines(labels, size, n_cls, problems)
    names = classes or [str(i) for i in range(n_cls)]
    return np.array([r[0] for r in rows], np.float32).reshape(-1, 4), [names[r[1]] for r in rows], problems

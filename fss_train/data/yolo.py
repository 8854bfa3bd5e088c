"""YOLO (Ultralytics): data.yaml with its splits and names, labels/*.txt beside images/ — reader, label lines,
and the data.yaml a conversion merges its split into."""

from __future__ import annotations

from pathlib import Path

import yaml

from fss_core.fileio import read_text
from fss_core.imageio import IMAGE_SUFFIXES, image_size
from fss_train.data.records import (
    Dataset,
    ImageRecord,
    Problem,
    brief,
    checked_class_names,
    fill_record,
    quad_polygon,
    record_polygons,
    report_polygons,
    sanitize_box,
)


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


def read_yolo(data_yaml: str | Path, split: str = "train", oriented: bool = False) -> Dataset:
    """An Ultralytics data.yaml's ``split``: boxes ``cls cx cy w h``, OBB lines ``cls x1 y1 … x4 y4`` (kept as the
    object's polygon, and its envelope as the box) and segment lines (their envelope; with ``oriented`` also
    their minimum-area rectangle as the polygon). Coordinates normalised by the image size."""
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
        fill_record(rec, read_yolo_lines(label, size, len(classes), problems, oriented))
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


def read_yolo_lines(label: Path, size: tuple[int, int], num_classes: int, problems: list[Problem],
                    oriented: bool = False) -> list:
    """Rows (box xyxy px, class, 0, polygon or None) of one label file; bad lines reported and skipped."""
    if not label.is_file():
        return []          # an image without a label file is a background image (Ultralytics convention)
    w, h = size
    rows, numbers = [], []
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
            poly = None
            if len(values) > 4:        # Ultralytics' segment / OBB line `cls x1 y1 x2 y2 …`: its enclosing box
                if len(values) % 2 or len(values) < 6:
                    raise ValueError
                xs, ys = values[0::2], values[1::2]
                xc, yc, bw, bh = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)
                if len(values) == 8 or oriented:
                    poly = quad_polygon([(x * w, y * h) for x, y in zip(xs, ys)])
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
            rows.append((box, cls, 0, poly))
            numbers.append(n)
    report_polygons(rows, str(label), numbers, problems)
    return rows


def yolo_label_text(rec: ImageRecord, oriented: bool = False) -> str:
    """The label file of one image: ``cls cx cy w h`` lines, or with ``oriented`` Ultralytics' OBB lines
    ``cls x1 y1 … x4 y4`` (the object's polygon; an object without one as its box's corners), normalised."""
    if oriented:
        return "".join(f"{int(c)} " + " ".join(f"{v / (rec.width if i % 2 == 0 else rec.height):.6f}"
                                              for i, v in enumerate(poly)) + "\n"
                       for c, poly in zip(rec.labels, record_polygons(rec)))
    lines = []
    for k in range(len(rec.labels)):
        x1, y1, x2, y2 = (float(v) for v in rec.boxes[k])
        lines.append(f"{int(rec.labels[k])} {(x1 + x2) / 2 / rec.width:.6f} {(y1 + y2) / 2 / rec.height:.6f} "
                     f"{(x2 - x1) / rec.width:.6f} {(y2 - y1) / rec.height:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def merged_yolo_yaml(path: Path, ds: Dataset, split: str) -> dict:
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

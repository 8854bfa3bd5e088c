"""DOTA: images/ + labelTxt/ (the devkit's polygon lines with class and difficult flag), classes.txt; the reader
and the label text of the writer (class names made whitespace-free tokens)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fss_core.fileio import read_text
from fss_core.imageio import IMAGE_SUFFIXES, image_size
from fss_train.data.records import (
    DOTA_CLASSES,
    Dataset,
    ImageRecord,
    Problem,
    fill_record,
    record_polygons,
    report_polygons,
    sanitize_box,
)


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
            rows = read_dota_lines(label, size, classes, fixed, problems)
        fill_record(rec, rows)
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
        rows = read_dota_lines(label, big, classes, fixed, problems)
        rec = ImageRecord(folder / "images" / f"{label.stem}.png", 1, 1, image_id=i)
        fill_record(rec, rows)
        if len(rec.boxes):
            rec.width, rec.height = int(np.ceil(rec.boxes[:, 2].max())), int(np.ceil(rec.boxes[:, 3].max()))
        records.append(rec)
    problems.append(Problem(str(folder), None, "no images/ folder: read from labelTxt alone (sizes unknown, "
                                               "boxes not clipped)", "repaired"))
    return Dataset(classes, records, problems, str(folder))


def read_dota_lines(label: Path, size: tuple[int, int], classes: list[str], fixed: bool,
                     problems: list[Problem]) -> list:
    w, h = size
    rows, numbers = [], []
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
            numbers.append(n)
    report_polygons(rows, str(label), numbers, problems)
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
    for k, poly in enumerate(record_polygons(rec)):
        coords = " ".join(f"{float(v):.1f}" for v in poly)
        lines.append(f"{coords} {tokens[ds.classes[int(rec.labels[k])]]} {int(rec.difficult[k])}")
    return "\n".join(lines) + ("\n" if lines else "")

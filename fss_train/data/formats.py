"""The dispatch over the dataset formats (one file each: coco.py, yolo.py, dota.py; GeoTIFFs: geodata.py): read any
of them, convert between them, read one image's labels.

Every reader returns a :class:`Dataset`; bad input never raises halfway through a folder:
each bad line/annotation/image is repaired (clipped) or skipped and recorded as a Problem
naming the file and line. Only a dataset that cannot be opened at all raises ValueError.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from fss_core.fileio import atomic_write, is_temp, link_or_copy, unique_stems
from fss_train.data.coco import read_coco, write_coco
from fss_train.data.dota import dota_class_tokens, dota_label_text, read_dota, read_dota_lines
from fss_train.data.geodata import is_geo_dataset, read_geo
from fss_train.data.records import DOTA_CLASSES, Dataset, Problem
from fss_train.data.yolo import merged_yolo_yaml, read_yolo, read_yolo_lines, yolo_label_text

# in an output folder while a conversion writes it; a dataset holding it is refused by read_dataset
INCOMPLETE = ".fss-incomplete"
# what `fss data convert --to` writes; yolo-obb is Ultralytics' OBB label format (a YOLO folder, polygon lines)
CONVERT_FORMATS = ("coco", "yolo", "yolo-obb", "dota")


def convert_dataset(ds: Dataset, to: str, out: str | Path, split: str = "train", exist_ok: bool = False) -> Path:
    """Write ``ds`` as a COCO folder (images/ + annotations.json), a YOLO dataset or a DOTA folder under
    ``out``; returns the file or folder written. Images are linked (or copied) under unique names.

    ``out`` may already hold other YOLO splits (their data.yaml entries are kept; the class names must agree)
    or be the source folder itself (DOTA -> COCO in place). Files of an earlier conversion in the folders this
    one writes need ``exist_ok``; they are then replaced, and those this conversion does not write are removed,
    so the result never mixes two conversions (a leftover image would be a negative in YOLO)."""
    if to not in CONVERT_FORMATS:
        raise ValueError(f"--to must be one of {', '.join(CONVERT_FORMATS)}, got {to!r}")
    oriented = to == "yolo-obb"
    to = "yolo" if oriented else to
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
    yaml_cfg = merged_yolo_yaml(out / "data.yaml", ds, split) if to == "yolo" else None
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
            atomic_write(labels / f"{name}.txt", yolo_label_text(rec, oriented), within=out)
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


def read_val_split(path: str | Path) -> Dataset:
    """The validation images of a dataset: a data.yaml's ``val`` split, else its ``train`` split (a yaml
    without ``val``); any other format is one split and is read as it is."""
    if str(path).endswith((".yaml", ".yml")):
        try:
            return read_dataset(path, "val")
        except ValueError:
            return read_dataset(path, "train")
    return read_dataset(path)


def read_dataset(path: str | Path, split: str = "train", oriented: bool = False) -> Dataset:
    """A COCO json, an Ultralytics ``data.yaml`` (``split`` chooses train/val/test), a DOTA
    folder (``images/`` + ``labelTxt/``), or GeoTIFFs with vector labels (a folder or one .tif; geodata.py).

    Oriented objects keep their 4-point polygon (DOTA lines, YOLO-OBB lines, COCO 4-point segmentations, vector
    quadrilaterals); ``oriented`` also makes every other outline (COCO segmentations, YOLO segment lines, vector
    polygons) an oriented object, its minimum-area rectangle (fss_core.rbox)."""
    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        return read_coco(_complete(p, "coco"), oriented=oriented)
    if p.is_file() and p.suffix in (".yaml", ".yml"):
        return read_yolo(_complete(p, "yolo"), split, oriented)
    if p.is_dir() and (p / "labelTxt").is_dir():
        return read_dota(_complete(p, "dota"))      # images/ may be absent: evaluation from labels alone
    if p.is_dir() and (p / "annotations.json").is_file():
        return read_coco(_complete(p / "annotations.json", "coco"), oriented=oriented)
    if not p.exists():
        raise ValueError(f"{p}: no such dataset")
    if is_geo_dataset(p):
        return read_geo(p, oriented=oriented)
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
        rows = read_dota_lines(labels, size, names, False, problems)
        return (np.array([r[0] for r in rows], np.float32).reshape(-1, 4), [names[r[1]] for r in rows], problems)
    n_cls = len(classes) if classes else 1 + max((int(p[0]) for p in data_lines if p[0].isdigit()), default=0)
    rows = read_yolo_lines(labels, size, n_cls, problems)
    names = classes or [str(i) for i in range(n_cls)]
    return np.array([r[0] for r in rows], np.float32).reshape(-1, 4), [names[r[1]] for r in rows], problems

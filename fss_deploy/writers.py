"""The output formats of ``fss detect``, one registry: each writer takes every image's detections in turn and
writes its files at the end (atomically, inside the run's folder). Adding a format is one class here and its
name in ``fss_core.defaults.FORMATS`` (a test holds the two equal).

    coco     predictions.json (COCO results) + images.json (the image ids, names and classes they refer to)
    dota     dota/Task2_<class>.txt (DOTA-devkit Task2 lines: image score x1 y1 x2 y2); an oriented model's
             dota/Task1_<class>.txt (Task1 lines: image score x1 y1 … x4 y4)
    yolo     yolo/<name>.txt (class cx cy w h score, normalised); oriented: YOLO-OBB (class x1 y1 … x4 y4 score)
    geojson  geojson/<name>.geojson per georeferenced image (its CRS, or longitude/latitude with --to-wgs84) and
             detections.geojson holding them all when they share one CRS
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np

from fss_core.boxes import detections_to_coco, detections_to_dota, detections_to_yolo
from fss_core.fileio import atomic_write, is_temp, safe_name
from fss_core.geojson import collection_json, features_json
from fss_core.raster import Georef
from fss_core.rdetections import rdetection_polygons, rdetections_to_coco, rdetections_to_dota, rdetections_to_yolo

log = logging.getLogger("fss")


class Writer:
    """One output format: ``add`` per image (in the run's order), then ``finish`` -> what it adds to the summary.
    ``folder``: its per-image folder, whose files of inputs this run does not have are removed as stale."""

    folder: str | None = None

    def __init__(self, out: Path, class_names: list[str], to_wgs84: bool = False):
        self.out, self.class_names, self.to_wgs84 = out, class_names, to_wgs84
        self.written: set[str] = set()

    def add(self, image: dict, rec: dict, dets: np.ndarray) -> None:
        """``image``: {"id", "name", "file_name", "width", "height"}; ``rec``: the per-image record; ``dets`` (K, 6), or
        (K, 7) oriented."""

    def finish(self) -> dict:
        if self.folder and (self.out / self.folder).is_dir():
            for f in (self.out / self.folder).iterdir():
                if f.name not in self.written and not is_temp(f):
                    f.unlink()
        return {}

    def _write(self, relative: str, text: str) -> None:
        atomic_write(self.out / relative, text, within=self.out)
        if self.folder and relative.startswith(self.folder + "/"):
            self.written.add(relative[len(self.folder) + 1:])


class CocoWriter(Writer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.images: list[dict] = []
        self.preds: list[str] = []           # each image's COCO results as JSON text (compact)

    def add(self, image, rec, dets):
        self.images.append(image)
        to_coco = rdetections_to_coco if dets.shape[1] == 7 else detections_to_coco
        self.preds.append(json.dumps(to_coco(dets, image["id"]))[1:-1])

    def finish(self):
        self._write("predictions.json", "[" + ", ".join(p for p in self.preds if p) + "]")
        self._write("images.json", json.dumps({"images": self.images, "categories": [
            {"id": i + 1, "name": n} for i, n in enumerate(self.class_names)]}))
        return {}


class DotaWriter(Writer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lines: dict[str, list[str]] = {c: [] for c in self.class_names}
        self.task = "Task2"

    def add(self, image, rec, dets):
        to_dota = detections_to_dota
        if dets.shape[1] == 7:
            to_dota, self.task = rdetections_to_dota, "Task1"
        for cls_name, line in to_dota(dets, image["name"], self.class_names):
            self.lines[cls_name].append(line)

    def finish(self):
        for name, lines in self.lines.items():
            self._write(f"dota/{self.task}_{safe_name(name)}.txt", "\n".join(lines) + ("\n" if lines else ""))
        return {}


class YoloWriter(Writer):
    folder = "yolo"

    def add(self, image, rec, dets):
        to_yolo = rdetections_to_yolo if dets.shape[1] == 7 else detections_to_yolo
        lines = to_yolo(dets, rec["width"], rec["height"])
        self._write(f"yolo/{image['name']}.txt", "\n".join(lines) + ("\n" if lines else ""))


class GeoJsonWriter(Writer):
    folder = "geojson"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.by_crs: dict[str, list] = {}     # CRS (WKT, or "wgs84") -> (georef, features JSON) per image

    def add(self, image, rec, dets):
        georef = Georef.from_dict(rec.get("georef"))
        if georef is not None and self.to_wgs84 and not georef.crs:
            # a transform without a CRS: no way to longitude/latitude (it failed at the end, outputs unwritten)
            log.warning("%s: has a transform but no CRS, so --to-wgs84 cannot place it; its GeoJSON is not written "
                        "(drop --to-wgs84 for map coordinates in its own units)", rec["file"])
            return
        if georef is None:
            return
        feats = features_json(dets, self.class_names, georef, self.to_wgs84, image=image["name"])
        self._write(f"geojson/{image['name']}.geojson", collection_json([feats], georef, self.to_wgs84))
        self.by_crs.setdefault("wgs84" if self.to_wgs84 else georef.crs, []).append((georef, feats))

    def finish(self):
        super().finish()
        merged = None
        if len(self.by_crs) == 1:
            per_image = next(iter(self.by_crs.values()))
            merged = str(self.out / "detections.geojson")
            self._write("detections.geojson", collection_json([f for _, f in per_image], per_image[0][0],
                                                                self.to_wgs84))
        elif (self.out / "detections.geojson").exists():
            (self.out / "detections.geojson").unlink()      # never left from an earlier run over other inputs
        return {"georeferenced_images": sum(len(v) for v in self.by_crs.values()), "geojson": merged,
                "geojson_crs": self._crs_label()}

    def _crs_label(self) -> str | None:
        """The summary's word for the GeoJSON outputs' coordinates."""
        if not self.by_crs:
            return None
        if self.to_wgs84:
            return "WGS84 (longitude, latitude)"
        if len(self.by_crs) > 1:
            return "several CRSs: one file per image in geojson/, no detections.geojson"
        georef = next(iter(self.by_crs.values()))[0][0]
        return f"EPSG:{georef.epsg}" if georef.epsg else "the raster's CRS (WKT under fss:crs_wkt)"


WRITERS: dict[str, type[Writer]] = {"coco": CocoWriter, "dota": DotaWriter, "yolo": YoloWriter,
                                    "geojson": GeoJsonWriter}


def annotate(image: np.ndarray, dets: np.ndarray, class_names: list[str]) -> bytes:
    """A JPEG of the image with its boxes."""
    ok, buf = cv2.imencode(".jpg", annotate_array(image, dets, class_names), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return buf.tobytes()


def annotate_array(image: np.ndarray, dets: np.ndarray, class_names: list[str]) -> np.ndarray:
    """A copy of the BGR image with its boxes drawn (line width scaled to the image size); oriented detections
    (K, 7) as their polygons."""
    canvas = image.copy()
    lw = max(1, round(max(image.shape[:2]) / 2500))
    palette = [(0, 255, 255), (255, 128, 0), (255, 0, 255), (0, 255, 0), (0, 128, 255), (255, 255, 0), (128, 0, 255)]
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    polys = rdetection_polygons(dets).reshape(-1, 4, 2) if dets.shape[1] == 7 else None
    for k, d in enumerate(dets):
        score, c = float(d[-2]), int(d[-1])
        colour = palette[c % len(palette)]
        if polys is None:
            x1, y1, x2, y2 = d[:4]
            cv2.rectangle(canvas, (int(x1), int(y1)), (int(x2), int(y2)), colour, lw)
        else:
            cv2.polylines(canvas, [np.round(polys[k]).astype(np.int32)], True, colour, lw, cv2.LINE_AA)
            (x1, y1), (x2, _) = polys[k].min(0), polys[k].max(0)
        text = f"{class_names[c]} {score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
        if x2 - x1 >= tw:                   # dense scenes: a label only where it fits its box
            cv2.putText(canvas, text, (int(x1), max(th, int(y1) - 2)), font, scale, colour, 1, cv2.LINE_AA)
    return canvas

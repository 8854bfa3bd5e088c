"""Deterministic synthetic top-down aerial scenes (``fss data synth``).

Ground: low-frequency textured soil with fields, roads and water. Objects, drawn as rotated
shapes with shading and shadows: small-vehicle, large-vehicle, ship (on water when there is
some), plane, storage-tank. Sizes are log-uniform in [min_size, max_size] (longest side, px).
``occlusion`` is the largest fraction of a new object's box that earlier objects may cover
(objects drawn later occlude earlier ones); ``truncation`` is the fraction of objects allowed
to be cut by the image border. The same arguments and seed give byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fss_core.fileio import atomic_write, write_image
from fss_train.data.coco import write_coco
from fss_train.data.dota import dota_label_text
from fss_train.data.records import Dataset, ImageRecord

SYNTH_CLASSES = ["small-vehicle", "large-vehicle", "ship", "plane", "storage-tank"]
# (aspect = length / width, relative frequency, relative size)
SHAPES = {"small-vehicle": (2.1, 0.40, 0.35), "large-vehicle": (3.2, 0.2, 0.7), "ship": (3.8, 0.15, 1.0),
          "plane": (1.0, 0.1, 1.0), "storage-tank": (1.0, 0.15, 0.8)}


# The largest scene side: the ground is drawn in float32, ~29 bytes a pixel at its peak (peak RSS on the dev VM: 8192 px
# 2.5 GB, 12,000 px 4.2 GB); 20,000 px, the former bound, would need ~11 GB.
MAX_SIDE = 10_000


@dataclass(frozen=True)
class SynthConfig:
    num_images: int = 8
    size: int = 512                 # image side, px (256 … 8000+)
    objects: int = 40               # target objects per image
    min_size: float = 8.0           # longest object side, px
    max_size: float = 64.0
    occlusion: float = 0.3          # max fraction of a new object's box covered by earlier ones
    truncation: float = 0.05        # fraction of objects allowed across the image border
    seed: int = 0

    def __post_init__(self):
        if not 64 <= self.size <= MAX_SIDE:
            raise ValueError(f"size must be within 64…{MAX_SIDE} px, got {self.size} (a scene is drawn in memory at "
                             f"about 32 bytes a pixel; larger scenes: fss data split or tile a GeoTIFF)")
        if not 1 <= self.min_size <= self.max_size <= self.size:       # inf reached numpy (an OverflowError)
            raise ValueError(f"need 1 <= min_size <= max_size <= size, got {self.min_size}, {self.max_size}")
        for name in ("occlusion", "truncation"):                      # fractions; NaN fails the test too
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in 0…1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be 0 or more, got {self.seed}")
        if self.objects < 0 or self.num_images < 1:
            raise ValueError("objects must be >= 0 and num_images >= 1")
        room = int((self.size / self.min_size) ** 2)        # objects of min_size px side by side fill the image
        if self.objects > room:           # placement would search for ever (--objects 100000000 did)
            raise ValueError(f"objects: at most {room} objects of {self.min_size:g} px fit in a {self.size} px "
                             f"image, got {self.objects}")


def ground(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Textured ground (BGR uint8) and a water mask."""
    def noise(cells: int, channels: int = 1) -> np.ndarray:
        small = rng.random((cells, cells, channels)).astype(np.float32)
        return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC).reshape(size, size, channels)

    base = np.array([70, 105, 110], np.float32)                       # dusty soil (BGR)
    img = base + (noise(6, 3) - 0.5) * 50 + (noise(max(8, size // 24), 1) - 0.5) * 30
    # fields: a few large tinted rectangles
    for _ in range(rng.integers(2, 6)):
        x, y = rng.integers(0, size, 2)
        w, h = rng.integers(size // 8, size // 2, 2)
        tint = rng.choice([[40, 120, 60], [60, 140, 150], [50, 90, 70]]).astype(np.float32)
        img[y:y + h, x:x + w] = img[y:y + h, x:x + w] * 0.4 + tint * 0.6
    water = np.zeros((size, size), np.uint8)
    if rng.random() < 0.6:                                            # a lake or a coast
        cx, cy = rng.integers(0, size, 2)
        axes = (int(rng.integers(size // 6, size // 2)), int(rng.integers(size // 6, size // 2)))
        cv2.ellipse(water, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    img[water > 0] = np.array([110, 80, 40], np.float32) + (noise(10, 3)[water > 0] - 0.5) * 20
    road_w = max(3, size // 60)
    for _ in range(rng.integers(1, 4)):                               # roads
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        p2 = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.line(img, p1, p2, (95, 95, 95), road_w)
    return np.clip(img, 0, 255).astype(np.uint8), water


def rotated_rect(cx: float, cy: float, length: float, width: float, angle: float) -> np.ndarray:
    """(4, 2) corners of a rectangle of ``length`` along ``angle`` (radians), clockwise."""
    c, s = np.cos(angle), np.sin(angle)
    u, v = np.array([c, s]) * length / 2, np.array([-s, c]) * width / 2
    centre = np.array([cx, cy])
    return np.stack([centre - u - v, centre + u - v, centre + u + v, centre - u + v])


def object_parts(cls: str, cx: float, cy: float, length: float, angle: float, colour: tuple):
    """The shape of an object: a list of ("poly", (k, 2) points, BGR) or ("disc", (cx, cy, r), BGR)."""
    width = length / SHAPES[cls][0]
    u, v = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
    c = np.array([cx, cy])
    if cls in ("small-vehicle", "large-vehicle"):
        parts = [("poly", rotated_rect(cx, cy, length, width, angle), colour),
                 ("poly", rotated_rect(*(c + u * length * 0.18), length * 0.18, width * 0.8, angle), (50, 45, 40))]
        if cls == "large-vehicle":
            parts.append(("poly", rotated_rect(*(c + u * length * 0.38), length * 0.2, width, angle),
                          tuple(max(0, k - 50) for k in colour)))
        return parts
    if cls == "ship":
        hull = np.stack([c - u * length / 2 - v * width / 2, c + u * length * 0.3 - v * width / 2, c + u * length / 2,
                         c + u * length * 0.3 + v * width / 2, c - u * length / 2 + v * width / 2])
        return [("poly", hull, (220, 220, 225)),
                ("poly", rotated_rect(*(c - u * length * 0.1), length * 0.35, width * 0.55, angle), colour)]
    if cls == "plane":
        grey = (225, 225, 230)
        return [("poly", rotated_rect(cx, cy, length * 0.22, length, angle), grey),
                ("poly", rotated_rect(*(c - u * length * 0.42), length * 0.1, length * 0.38, angle), grey),
                ("poly", rotated_rect(cx, cy, length, length * 0.12, angle), grey)]
    r = length / 2
    return [("disc", (cx, cy, r), (200, 200, 205)), ("disc", (cx - r * 0.2, cy - r * 0.2, r * 0.6), (230, 230, 235))]


def _draw(img: np.ndarray, parts, dx: float = 0.0, dy: float = 0.0, colour: tuple | None = None) -> None:
    for kind, geom, col in parts:
        col = colour or col
        if kind == "poly":
            cv2.fillPoly(img, [_px(geom + np.array([dx, dy]))], col, lineType=cv2.LINE_AA)
        else:
            x, y, r = geom
            cv2.circle(img, (int(round(x + dx)), int(round(y + dy))), max(1, int(round(r))), col, -1,
                       lineType=cv2.LINE_AA)


def outline_of(parts) -> np.ndarray:
    """(4, 2) minimum-area oriented rectangle around every part: the object's DOTA polygon."""
    pts = []
    for kind, geom, _ in parts:
        if kind == "poly":
            pts.append(geom)
        else:
            x, y, r = geom
            t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
            pts.append(np.stack([x + r * np.cos(t), y + r * np.sin(t)], 1))
    return cv2.boxPoints(cv2.minAreaRect(np.concatenate(pts).astype(np.float32))).astype(np.float64)


def draw_object(img: np.ndarray, parts, length: float) -> None:
    """Draw one object with its shadow (the same silhouette, offset down-right)."""
    offset = max(1.0, length * 0.08)
    _draw(img, parts, offset, offset, colour=(35, 40, 40))
    _draw(img, parts)


def _px(poly: np.ndarray) -> np.ndarray:
    return np.round(poly).astype(np.int32)


def make_scene(cfg: SynthConfig, index: int):
    """One scene: (image BGR, boxes (K, 4), labels (K,), polygons (K, 8))."""
    rng = np.random.default_rng([cfg.seed, index])
    size = cfg.size
    img, water = ground(rng, size)
    names = list(SHAPES)
    freq = np.array([SHAPES[n][1] for n in names])
    boxes, labels, polys = [], [], []
    placed = np.zeros((0, 4), np.float32)
    attempts = 0
    while len(boxes) < cfg.objects and attempts < cfg.objects * 20:
        attempts += 1
        cls = names[int(rng.choice(len(names), p=freq / freq.sum()))]
        length = float(np.exp(rng.uniform(np.log(cfg.min_size), np.log(cfg.max_size)))) * (0.6 + 0.4 *
                                                                                              SHAPES[cls][2])
        length = float(np.clip(length, cfg.min_size, cfg.max_size))
        truncate = rng.random() < cfg.truncation
        margin = -length * 0.4 if truncate else length * 0.6
        if size - 2 * margin <= 0:
            continue
        cx, cy = rng.uniform(margin, size - margin, 2)
        if cls == "ship" and water.any() and not truncate:
            ys, xs = np.nonzero(water[::8, ::8])
            if len(xs):
                j = rng.integers(len(xs))
                cx, cy = xs[j] * 8 + rng.uniform(0, 8), ys[j] * 8 + rng.uniform(0, 8)
        angle = float(rng.uniform(0, np.pi))
        parts = object_parts(cls, cx, cy, length, angle, tuple(int(v) for v in rng.integers(30, 235, 3)))
        outline = outline_of(parts)
        pts = np.concatenate([g if k == "poly" else np.array([[g[0] - g[2], g[1] - g[2]], [g[0] + g[2], g[1] + g[2]]])
                              for k, g, _ in parts])
        box = np.array([*pts.min(0), *pts.max(0)], np.float32)
        clipped = np.clip(box, 0, size)
        if (clipped[2] - clipped[0]) < 2 or (clipped[3] - clipped[1]) < 2:
            continue
        if len(placed):
            ix = np.clip(np.minimum(placed[:, 2], box[2]) - np.maximum(placed[:, 0], box[0]), 0, None)
            iy = np.clip(np.minimum(placed[:, 3], box[3]) - np.maximum(placed[:, 1], box[1]), 0, None)
            area = (box[2] - box[0]) * (box[3] - box[1])
            if (ix * iy).sum() / area > cfg.occlusion:
                continue
        draw_object(img, parts, length)
        placed = np.vstack([placed, box])
        labels.append(SYNTH_CLASSES.index(cls))
        polys.append(np.clip(outline, 0, size).reshape(-1))
        # the labelled box is the polygon's enclosure, as DOTA's own horizontal boxes, so labelTxt/ (read as DOTA)
        # and annotations.json agree; the drawn parts' tight box `clipped` is up to a few px smaller
        boxes.append([polys[-1][0::2].min(), polys[-1][1::2].min(), polys[-1][0::2].max(), polys[-1][1::2].max()])
    return (img, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64),
            np.array(polys, np.float32).reshape(-1, 8))


SYNTH_FILES = ("images/synth_*.png", "labelTxt/synth_*.txt", "annotations.json", "classes.txt", "synth.json")


def synthesize(out_dir: str | Path, cfg: SynthConfig, progress=None, exist_ok: bool = False) -> Dataset:
    """Write ``images/``, ``annotations.json`` (COCO), ``labelTxt/`` (DOTA), ``classes.txt`` and ``synth.json``
    (the settings, written first). A folder holding a synthetic dataset of the same settings (finished or
    interrupted) is written again (the same files); any other non-empty folder only with ``exist_ok``, and then
    an earlier synthetic dataset's files are removed first, so two never mix (4 old images beside 2 new ones)."""
    out = Path(out_dir)
    settings = json.dumps(cfg.__dict__, indent=2, sort_keys=True)
    marker = out / "synth.json"
    if out.is_dir() and any(out.iterdir()):
        try:
            same = json.dumps(json.loads(marker.read_text()), indent=2, sort_keys=True) == settings
        except (OSError, ValueError):
            same = False
        if not same:
            if not exist_ok:
                what = "a synthetic dataset of other settings" if marker.is_file() else "files"
                raise FileExistsError(f"{out} holds {what}; pass --exist-ok (exist_ok=True) to replace it, or "
                                      "choose another folder")
            for pattern in SYNTH_FILES:
                for old in out.glob(pattern):
                    old.unlink()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labelTxt").mkdir(parents=True, exist_ok=True)
    atomic_write(marker, settings)
    records = []
    for i in range(cfg.num_images):
        img, boxes, labels, polys = make_scene(cfg, i)
        path = out / "images" / f"synth_{i:05d}.png"
        write_image(path, img, (cv2.IMWRITE_PNG_COMPRESSION, 3))
        rec = ImageRecord(path, cfg.size, cfg.size, boxes, labels, np.zeros_like(labels), polys, image_id=i + 1)
        records.append(rec)
        if progress:
            progress()
    ds = Dataset(list(SYNTH_CLASSES), records, [], str(out))
    for rec in records:
        atomic_write(out / "labelTxt" / f"{rec.path.stem}.txt", dota_label_text(ds, rec))
    write_coco(ds, out / "annotations.json", image_root=out)
    atomic_write(out / "classes.txt", "\n".join(SYNTH_CLASSES) + "\n")
    return ds

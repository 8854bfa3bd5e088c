"""``fss data check``: counts, sizes, objects per image, and every problem found."""

from __future__ import annotations

from collections import Counter

import numpy as np

from fss_core.imageio import exif_orientation, read_image
from fss_train.data.records import Dataset, Problem

SIZE_BINS = [0, 8, 16, 32, 64, 128, 256, 512, 1e9]      # sqrt(area), px


def _size_mismatch(rec, shape: tuple[int, ...]) -> str:
    """The message for an image whose decoded size is not its annotated one; it names the EXIF turn when that is why."""
    text = f"decoded size {shape[1]}x{shape[0]} differs from the annotated {rec.width}x{rec.height}"
    turn = exif_orientation(rec.path)
    if turn >= 5 and shape[:2] == (rec.width, rec.height):
        text += (f" because its EXIF orientation ({turn}) turns it upright, as every viewer shows it: labels drawn "
                 "on the unturned pixels are in the wrong frame")
    return text


def check_dataset(ds: Dataset, decode: bool = True, progress=None) -> dict:
    """A report dict; with ``decode`` every image is decoded to find corrupt or truncated files."""
    problems: list[Problem] = list(ds.problems)
    if decode:
        for rec in ds.records:
            try:
                img = read_image(rec.path)
                if img.shape[:2] != (rec.height, rec.width):
                    problems.append(Problem(str(rec.path), None, _size_mismatch(rec, img.shape), "reported"))
            except ValueError as exc:
                problems.append(Problem(str(rec.path), None, str(exc), "image skipped"))
            if progress:
                progress()
    labels = np.concatenate([r.labels for r in ds.records]) if ds.records else np.zeros(0, np.int64)
    boxes = np.concatenate([r.boxes for r in ds.records]) if ds.records else np.zeros((0, 4), np.float32)
    side = np.sqrt(np.clip((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 0, None))
    hist, _ = np.histogram(side, bins=SIZE_BINS)
    per_image = np.array([len(r.labels) for r in ds.records])
    counts = Counter(labels.tolist())
    return {
        "source": ds.source, "images": len(ds.records), "objects": int(len(labels)), "classes": ds.classes,
        "per_class": {ds.classes[k]: int(counts.get(k, 0)) for k in range(len(ds.classes))},
        "size_hist": {f"{int(lo)}-{int(hi) if hi < 1e9 else 'inf'}": int(n)
                      for lo, hi, n in zip(SIZE_BINS[:-1], SIZE_BINS[1:], hist)},
        "objects_per_image": {"min": int(per_image.min()) if len(per_image) else 0,
                              "median": float(np.median(per_image)) if len(per_image) else 0.0,
                              "max": int(per_image.max()) if len(per_image) else 0},
        "difficult": int(sum(int((r.difficult > 0).sum()) for r in ds.records)),
        "problems": [str(p) for p in problems],
        "problem_counts": dict(Counter(p.action for p in problems)),
    }


SHRINK_WARN = 0.5       # letterbox scale below which an image is "much larger than the input" (long side > 2 × imgsz)
TINY_PX = 4             # object side (sqrt(area), px) at the input size under which the finest level (stride 8) has
                        # hardly one point inside the object


def input_scale_advice(ds: Dataset, imgsz: int, data: str = "DATA") -> str | None:
    """A warning when training images are much larger than the input, so letterboxing shrinks their objects away
    (a 4000 px DOTA scene trained whole at 640 px: objects 6× smaller); None when the images fit. Aerial scenes are
    tiled offline first (``fss data split``) and tiled again at inference (``fss detect``)."""
    if not ds.records:
        return None
    sizes = np.array([(r.width, r.height) for r in ds.records], np.float64)                  # (N, 2)
    scale = imgsz / sizes.max(1)                                                             # (N,)
    big = scale < SHRINK_WARN
    if not big.any():
        return None
    sides = [np.sqrt(np.clip((r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1]), 0, None))
             for r, b in zip(ds.records, big) if b]                                          # objects of big images
    before = np.concatenate(sides)
    after = np.concatenate([s * sc for s, sc in zip(sides, scale[big])])
    w, h = np.median(sizes[big], 0)
    msg = (f"{int(big.sum())} of {len(ds.records)} images are more than twice the {imgsz} px input "
           f"(median {w:.0f}×{h:.0f}) and are shrunk whole to it")
    if len(before):
        tiny = (after < TINY_PX).mean()
        msg += (f": their median object goes from {np.median(before):.0f} to {np.median(after):.1f} px"
                + (f" and {tiny:.0%} of their objects end under {TINY_PX} px" if tiny >= 0.005 else ""))
    return (msg + f". Tile them first (fss data split {data} --out tiles --tile {imgsz} --gap {round(0.2 * imgsz)})"
            " and train on the tiles; fss detect tiles large images the same way at inference")

"""``fss data check``: counts, sizes, objects per image, and every problem found."""

from __future__ import annotations

from collections import Counter

import numpy as np

from fss_train.data.records import Dataset, Problem
from fss_train.nn.preprocess import read_image

SIZE_BINS = [0, 8, 16, 32, 64, 128, 256, 512, 1e9]      # sqrt(area), px


def check_dataset(ds: Dataset, decode: bool = True, progress=None) -> dict:
    """A report dict; with ``decode`` every image is decoded to find corrupt or truncated files."""
    problems: list[Problem] = list(ds.problems)
    if decode:
        for rec in ds.records:
            try:
                img = read_image(rec.path)
                if img.shape[:2] != (rec.height, rec.width):
                    problems.append(Problem(str(rec.path), None, f"decoded size {img.shape[1]}x{img.shape[0]} differs "
                                                                 f"from the annotated {rec.width}x{rec.height}",
                                            "reported"))
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

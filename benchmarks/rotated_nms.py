"""How long exact rotated NMS and NMM take on a whole scene (issue #30: "20,000 boxes in about a second").

    python benchmarks/rotated_nms.py [--boxes 20000] [--runs 7] [--threads 2]

The scene is a detector's raw output over a large aerial image: 4,000 objects (8–60 px, any angle) scattered over
8,000 × 8,000 px, each seen 5 times with jitter (centre σ 3 px, sides ±15 %, angle σ 0.1 rad) and random scores,
3 classes. NMS at IoU 0.1 (the DOTA devkit's merge threshold) and 0.5, class-aware, and NMM at 0.1. The first run
of each setting warms up and is not counted; the median of ``--runs`` is reported, with the machine. Writes
docs/results/rotated_nms.md and .json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fss_core.boxes import overlapping_pairs  # noqa: E402
from fss_core.fileio import atomic_write  # noqa: E402
from fss_core.rbox import poly_envelope, rbox_to_poly  # noqa: E402
from fss_core.rotated_nms import rotated_nmm, rotated_nms  # noqa: E402


def scene(boxes: int, seed: int = 0, copies: int = 5, size: float = 8000.0):
    """(polygons (N, 8) float64, scores (N,), labels (N,)) of jittered clusters, as a detector's raw output."""
    rng = np.random.default_rng(seed)
    objects = boxes // copies
    base = np.concatenate([rng.uniform(0, size, (objects, 2)), rng.uniform(8, 60, (objects, 2)),
                           rng.uniform(0, math.pi, (objects, 1))], 1)
    rb = np.repeat(base, copies, 0)
    rb[:, :2] += rng.normal(0, 3, (len(rb), 2))
    rb[:, 2:4] *= rng.uniform(0.85, 1.15, (len(rb), 2))
    rb[:, 4] += rng.normal(0, 0.1, len(rb))
    return (rbox_to_poly(torch.from_numpy(rb)), torch.from_numpy(rng.uniform(0, 1, len(rb))),
            torch.from_numpy(rng.integers(0, 3, len(rb))))


def timed(fn, runs: int) -> tuple[float, object]:
    out = fn()                                              # warm-up, not counted
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--boxes", type=int, default=20000)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "docs/results/rotated_nms"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    load = os.getloadavg()[0]                 # other work on the machine: the figures are comparable only at equal load
    polys, scores, labels = scene(a.boxes)
    i, _ = overlapping_pairs(poly_envelope(polys).numpy())
    rows = []
    for name, fn in (("NMS IoU 0.1", lambda: rotated_nms(polys, scores, 0.1, labels)),
                     ("NMS IoU 0.5", lambda: rotated_nms(polys, scores, 0.5, labels)),
                     ("NMM IoU 0.1", lambda: rotated_nmm(polys, scores, 0.1, labels)[0])):
        median, keep = timed(fn, a.runs)
        rows.append({"setting": name, "median_s": round(median, 4), "kept": len(keep)})
        print(f"{name}: {median:.3f} s median of {a.runs}, {len(keep)} of {len(polys)} kept", flush=True)
    record = {"boxes": len(polys), "envelope_pairs": len(i), "runs": a.runs, "threads": a.threads,
              "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores", "load_1min": round(load, 2),
              "torch": torch.__version__,
              "results": rows}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out.with_suffix(".json"), json.dumps(record, indent=2))
    lines = [f"# Rotated NMS on a whole scene ({len(polys):,} boxes)", "",
             f"Machine: {record['machine']} (1-minute load {load:.1f} at the start), torch {torch.__version__}, "
             f"{a.threads} thread(s). Scene: "
             f"benchmarks/rotated_nms.py (jittered clusters of 5 over 8,000² px, 3 classes); {len(i):,} pairs of "
             f"overlapping envelopes. Median of {a.runs} runs after one warm-up.", "",
             "| setting | median s | kept |", "|---|---|---|"]
    lines += [f"| {r['setting']} | {r['median_s']:.3f} | {r['kept']:,} |" for r in rows]
    atomic_write(out.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""Time and peak extra memory of every assigner on the same random-but-realistic inputs.

    python benchmarks/assigners.py [--repeats 5] [--threads 2] [--out benchmarks/results/assigners.json]

Each (assigner, configuration) runs in a fresh subprocess so peak memory is its own:
peak extra = max RSS during the calls − RSS after the inputs were built. Times are medians of
``--repeats`` calls after one warm-up call. Inputs: objects 6–120 px (log-uniform), 16 classes,
predicted boxes scattered around each point, random scores — what an early-training batch of
dense aerial tiles looks like to an assigner.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = [(16, 640, 10), (16, 640, 50), (16, 640, 200), (2, 1024, 500), (2, 1024, 2000)]
NUM_CLASSES = 16
# Peers measured on a machine like ours (2 threads, float32, medians), as given in issue #4:
# Ultralytics TaskAlignedAssigner and YOLOX's per-image SimOTA, seconds.
PEERS = {(16, 640, 10): (0.053, 0.014), (16, 640, 50): (0.089, 0.097), (16, 640, 200): (0.47, 1.02),
         (2, 1024, 500): (0.34, 1.51), (2, 1024, 2000): (1.84, 12.9)}


def make_inputs(batch: int, size: int, num_gt: int, seed: int = 0):
    import torch

    from fss_core.nn import make_points

    g = torch.Generator().manual_seed(seed)
    points, strides = make_points(size, size, (8, 16, 32))
    A = len(points)
    wh = torch.exp(torch.empty(batch, num_gt, 2).uniform_(1.8, 4.8, generator=g))     # 6–120 px
    xy = torch.rand(batch, num_gt, 2, generator=g) * (size - wh)
    gt_boxes = torch.cat((xy, xy + wh), -1)
    gt_labels = torch.randint(0, NUM_CLASSES, (batch, num_gt), generator=g)
    gt_mask = torch.ones(batch, num_gt, dtype=torch.bool)
    centre = points[None] + torch.randn(batch, A, 2, generator=g) * strides[None, :, None] * 0.5
    half = torch.exp(torch.randn(batch, A, 2, generator=g) * 0.5) * strides[None, :, None] * 2
    pred_boxes = torch.cat((centre - half, centre + half), -1)
    scores = torch.rand(batch, A, NUM_CLASSES, generator=g) * 0.3
    obj = torch.rand(batch, A, generator=g)
    return scores, obj, pred_boxes, points, strides, gt_labels, gt_boxes, gt_mask


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> None:
    """Start the peak-RSS mark (VmHWM) afresh (Linux >= 4.0). ru_maxrss would not do: it survives exec, so
    a child of a large process (pytest) reports its parent's size."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(name: str, batch: int, size: int, num_gt: int, repeats: int, threads: int) -> dict:
    """Measure one assigner on one configuration in this process."""
    import torch

    from fss_train.assigners import ASSIGNERS

    torch.set_num_threads(threads)
    args = make_inputs(batch, size, num_gt)
    assigner = ASSIGNERS[name]()
    base = _rss_mb()
    _reset_peak()
    result = assigner(*args)                                      # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = assigner(*args)
        times.append(time.perf_counter() - t0)
    peak = _peak_mb()
    return {"assigner": name, "batch": batch, "imgsz": size, "num_gt": num_gt, "points": int(args[3].shape[0]),
            "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats,
            "peak_extra_mb": max(0.0, peak - base), "num_fg": result.num_fg}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--assigners", default="fss,simota,tal,atss,maxiou")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/assigners.json"))
    parser.add_argument("--one", nargs=4, metavar=("NAME", "B", "SIZE", "M"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        name, b, size, m = args.one
        print(json.dumps(run_one(name, int(b), int(size), int(m), args.repeats, args.threads)))
        return
    rows = []
    for b, size, m in CONFIGS:
        for name in args.assigners.split(","):
            out = subprocess.run([sys.executable, __file__, "--one", name, str(b), str(size), str(m),
                                  "--repeats", str(args.repeats), "--threads", str(args.threads)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"B={b:2d} @{size} M={m:4d}  {name:7s} {r['median_s']:.4f} s  +{r['peak_extra_mb']:.0f} MB",
                  flush=True)
    import torch
    env = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "threads": args.threads,
           "torch": torch.__version__, "python": platform.python_version(), "repeats": args.repeats}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"env": env, "rows": rows, "peers_from_issue": {
        f"{b}x{s}x{m}": {"tal_s": t, "simota_s": o} for (b, s, m), (t, o) in PEERS.items()}}, indent=2))
    print()
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    names = sorted({r["assigner"] for r in rows}, key=lambda n: ["fss", "simota", "tal", "atss", "maxiou"].index(n))
    print("| config | " + " | ".join(names) + " | faster peer (issue) | FSS / peer | FSS peak extra |")
    print("|---|" + "---|" * (len(names) + 3))
    for cfg in CONFIGS:
        sel = {r["assigner"]: r for r in rows if (r["batch"], r["imgsz"], r["num_gt"]) == cfg}
        if not sel:
            continue
        peer = min(PEERS[cfg])
        cells = [f"{sel[n]['median_s']:.3f}" for n in names]
        fss = sel.get("fss")
        ratio = f"{fss['median_s'] / peer:.2f}" if fss else "-"
        mem = f"{fss['peak_extra_mb']:.0f} MB" if fss else "-"
        print(f"| B={cfg[0]} @{cfg[1]} M={cfg[2]} | " + " | ".join(cells) + f" | {peer:.3f} | {ratio} | {mem} |")


if __name__ == "__main__":
    main()

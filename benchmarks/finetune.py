"""Does starting from the synthetic model help on real aerial tiles? (issue #18)

    python benchmarks/finetune.py                 # CPU: 2 runs x 30 epochs on 63 DOTA tiles, ~25 min on 2 cores
    python benchmarks/finetune.py --epochs 10     # shorter

Same data, same budget, same recipe, same seeds — once from scratch (random init) and once from the
bundled ``fss_core/models/fss-n-aerial.pt`` (trained on the synthetic scenes only; its class head is
re-initialised because DOTA has 16 classes, it has 5). Data: the DOTA tiles of the assignment study
(P0003, P0004, P0706, P1478 train; P0005, P1888 validate — never the same image on both sides).
Writes ``docs/results/finetune.md`` and ``finetune.json``; a finished run (results.json with every
epoch, in a folder named by start, epochs, lr and seed) is reused, so the script resumes run by run and never
reuses a run made with other settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ablation import BUDGETS, ensure_data  # noqa: E402

from fss_core.fileio import atomic_write  # noqa: E402
from fss_deploy.detect import DEFAULT_MODEL  # noqa: E402

START = {"scratch": None, "synthetic": DEFAULT_MODEL}


def run(name: str, weights: Path | None, sets: dict, args, out: Path, seed: int) -> dict:
    folder = out / f"{name}-e{args.epochs}-lr{args.lr_per_64}-s{seed}"      # other settings: another folder
    results = folder / "results.json"
    rows = json.loads(results.read_text()) if results.is_file() else []
    if not rows or rows[-1]["epoch"] < args.epochs:
        train, val = sets["dota"]
        cmd = [sys.executable, "-m", "fss", "train", "--data", str(train), "--val", str(val), "--model", "fss-n",
               "--assigner", "fss", "--epochs", str(args.epochs), "--batch", "16", "--imgsz", "384", "--out",
               str(folder), "--workers", "1", "--exist-ok", "--set", f"seed={seed}", "--set",
               f"lr_per_64={args.lr_per_64}", "--set", f"eval_interval={max(1, args.epochs // 5)}", "--set",
               "no_mosaic_epochs=2", "--set", "cache=ram"]
        if weights:
            cmd += ["--weights", str(weights)]
        t0 = time.monotonic()
        print(f"== {name} seed {seed}", flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        atomic_write(folder / "wall.json", json.dumps({"wall_s": round(time.monotonic() - t0, 1)}))
        rows = json.loads(results.read_text())
    wall = json.loads((folder / "wall.json").read_text())["wall_s"] if (folder / "wall.json").is_file() else None
    evals = [r for r in rows if r.get("AP") == r.get("AP")]
    return {"start": name, "seed": seed, "weights": str(weights.relative_to(ROOT)) if weights else None,
            "curve": [(r["epoch"], r["AP"], r["AP50"]) for r in evals], "final": evals[-1] if evals else None,
            "wall_s": wall}


def report(res: list[dict], args) -> str:
    lines = ["# Fine-tuning on DOTA tiles: from scratch vs from the synthetic model", "",
             f"Machine: {platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores; fss-n, FSS, "
             f"{args.epochs} epochs, batch 16, 384 px, lr {args.lr_per_64} per 64 images, seeds {args.seeds}. "
             "Train: the 63 tiles of P0003, P0004, P0706, P1478; validate: the 15 tiles of P0005, P1888. "
             "Metric: COCO AP / AP50 (pycocotools) of the EMA model. `python benchmarks/finetune.py`.", "",
             "| start | seed | AP | AP50 | AP_small | AP50 over training (epoch: AP50) |", "|---|---|---|---|---|---|"]
    for r in res:
        f = r["final"] or {}
        curve = ", ".join(f"{e}: {ap50:.3f}" for e, _, ap50 in r["curve"])
        lines.append(f"| {r['start']} | {r['seed']} | {f.get('AP', float('nan')):.4f} | "
                     f"{f.get('AP50', float('nan')):.4f} | {f.get('APs', float('nan')):.4f} | {curve} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr-per-64", type=float, default=0.08)
    p.add_argument("--seeds", default="0")
    p.add_argument("--out", default=str(ROOT / "runs/finetune"))
    p.add_argument("--report", default=str(ROOT / "docs/results/finetune.md"))
    args = p.parse_args()
    out = Path(args.out)
    sets = ensure_data(out, BUDGETS["decide"], {"dota"})
    if "dota" not in sets:
        sys.exit("the DOTA images of ../shared/data are needed")
    res = [run(name, w, sets, args, out, int(s)) for s in args.seeds.split(",") for name, w in START.items()]
    atomic_write(Path(args.report).with_suffix(".json"), json.dumps(res, indent=1))
    atomic_write(args.report, report(res, args))
    print(report(res, args))


if __name__ == "__main__":
    main()

"""How the tile merge changes accuracy on the labelled DOTA samples (issue #18): NMS or NMM (SAHI's greedy
non-maximum merging), IoU or IOS, class-aware or not, with and without the border rule.

    python benchmarks/merge_modes.py [--model runs/finetune/synthetic-e30-lr0.08-s1/best.pt]

The model is the fine-tuned checkpoint of ``benchmarks/finetune.py`` (trained on tiles of P0003, P0004,
P0706, P1478; run that first), since the bundled model knows only synthetic scenes. Two sets: the two images
it never saw (P0005, P1888: "held out") and all six labelled images ("all six", four of them seen in
training). Every setting detects the full images (tile 384 = the model's size, overlap 96, conf 0.05,
threshold 0.5) and is scored with the DOTA devkit's VOC07 mAP50 and COCO AP/AP50 (max 1,000 detections per
image). Writes docs/results/merge_modes.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared/data"
SOURCES = {"P0005": "dota_devkit_yolo_demo/DOTA_demo", "P1888": "dota_devkit_example",
           "P0003": "dota_devkit_yolo_demo/DOTA_demo", "P0004": "dota_devkit_yolo_demo/DOTA_demo",
           "P0706": "dota_devkit_example", "P1478": "dota_devkit_yolo_demo/DOTA_demo"}
HELD_OUT = ("P0005", "P1888")
SETTINGS = [("NMS, IoU (default)", dict(merge="nms", match="iou", class_agnostic=False), True),
            ("NMS, IoU, class-agnostic", dict(merge="nms", match="iou", class_agnostic=True), True),
            ("NMM, IoU", dict(merge="nmm", match="iou", class_agnostic=False), True),
            ("NMM, IOS (SAHI's default)", dict(merge="nmm", match="ios", class_agnostic=False), True),
            ("NMM, IOS, class-agnostic", dict(merge="nmm", match="ios", class_agnostic=True), True),
            ("NMS, IOS", dict(merge="nms", match="ios", class_agnostic=False), True),
            ("NMS, IoU, no border rule", dict(merge="nms", match="iou", class_agnostic=False), False)]


def dota_folder(root: Path, names: tuple[str, ...]) -> Path:
    """A DOTA folder (images/ + labelTxt/) holding ``names``, linked from the shared samples."""
    for sub in ("images", "labelTxt"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for n in names:
        src = DATA / SOURCES[n]
        (root / "images" / f"{n}.png").symlink_to(src / "images" / f"{n}.png")
        (root / "labelTxt" / f"{n}.txt").symlink_to(src / "labelTxt" / f"{n}.txt")
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "runs/finetune/synthetic-e30-lr0.08-s1/best.pt"))
    p.add_argument("--tile", type=int, default=384)
    p.add_argument("--overlap", type=int, default=96)
    p.add_argument("--conf", type=float, default=0.05)
    p.add_argument("--out", default=str(ROOT / "docs/results/merge_modes"))
    args = p.parse_args()
    if not Path(args.model).is_file():
        sys.exit(f"{args.model}: no such checkpoint; run `python benchmarks/finetune.py` first (or pass --model)")
    import fss

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"held out": dota_folder(Path(tmp) / "held", HELD_OUT),
                "all six": dota_folder(Path(tmp) / "all", tuple(SOURCES))}
        for label, opts, border in SETTINGS:
            det = fss.Detector(args.model, device="cpu", tile=args.tile, overlap=args.overlap, conf=args.conf, **opts)
            det.tiled.border_rule = border
            row = {"setting": label, **opts, "border_rule": border}
            for set_name, folder in sets.items():
                out = Path(tmp) / "det" / f"{label}-{set_name}".replace(" ", "_").replace(",", "")
                t0 = time.perf_counter()
                summary = det.run(folder / "images", out, exist_ok=True)
                seconds = time.perf_counter() - t0
                dota = fss.evaluate(predictions=out / "dota", data=str(folder), metric="dota")
                coco = fss.evaluate(predictions=out, data=str(folder), metric="coco", max_dets=1000)
                row[set_name] = {"mAP50_dota": round(dota["result"]["mAP50"], 4),
                                 "AP": round(coco["result"]["AP"], 4), "AP50": round(coco["result"]["AP50"], 4),
                                 "detections": summary["detections"], "seconds": round(seconds, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"model": str(Path(args.model).relative_to(ROOT) if Path(args.model).is_relative_to(ROOT)
                           else args.model),
              "tile": args.tile, "overlap": args.overlap, "conf": args.conf, "threshold": 0.5, "rows": rows,
              "held_out": list(HELD_OUT), "all": list(SOURCES),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# Tile merge settings on the labelled DOTA samples", "",
             f"Model `{result['model']}` (fss-n fine-tuned from the synthetic model on DOTA tiles of P0003, P0004, "
             f"P0706, P1478; `benchmarks/finetune.py`), tile {args.tile}, overlap {args.overlap}, conf {args.conf}, "
             "merge threshold 0.5; one run each (detection is deterministic); "
             f"{result['machine']}, {result['date']}. `python benchmarks/merge_modes.py`.", "",
             "| setting | held out: DOTA mAP50 | AP | AP50 | detections | all six: DOTA mAP50 | AP | AP50 | "
             "detections |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        h, a = r["held out"], r["all six"]
        lines.append(f"| {r['setting']} | {h['mAP50_dota']:.4f} | {h['AP']:.4f} | {h['AP50']:.4f} | {h['detections']} "
                     f"| {a['mAP50_dota']:.4f} | {a['AP']:.4f} | {a['AP50']:.4f} | {a['detections']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"-> {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()

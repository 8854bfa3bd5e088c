"""`fss detect` on a huge GeoTIFF, read window by window, against the same image as a PNG (issue #19).

    python benchmarks/geotiff_detect.py [--size 30000] [--work /tmp/fss-geotiff]
                                        [--out benchmarks/results/geotiff_detect.json]
    python benchmarks/geotiff_detect.py --only geotiff --model fss_core/models/fss-n-obb.pt --formats dota,geojson \
                                        --out benchmarks/results/geotiff_detect_obb.json     # the oriented model

Makes a SIZE × SIZE 3-band GeoTIFF (uint8, tiled 512², deflate, UTM 33N, 0.5 m pixels) by tiling 3000²
synthetic aerial scenes (``fss_train.data.synth``, the sample scene's density: ~840 objects each; four seeds,
flipped by position) — written window by window, never held whole — and the same pixels as a PNG. Runs
`fss detect` with the bundled model (or ``--model``) and default settings (tile 512, overlap 200, batch 8) on each
in a child process and reads the child's peak RSS (wait4) and the run's summary. ``--max-det`` is raised (default
1,000,000) so the per-image cap does not hide detections. Time outside the model = seconds per image −
time inside the backend, as a fraction of the latter. The files are kept under --work and reused when their
recorded recipe matches.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SCENE = 3000


def make_geotiff(path: Path, size: int, seed: int) -> None:
    import rasterio
    from rasterio.transform import Affine
    from rasterio.windows import Window

    from fss_train.data.synth import SynthConfig, make_scene

    cfg = SynthConfig(num_images=4, size=SCENE, objects=round(1500 * (SCENE / 4000) ** 2), seed=seed)
    scenes = [np.ascontiguousarray(make_scene(cfg, i)[0][..., ::-1].transpose(2, 0, 1)) for i in range(4)]  # RGB
    tmp = path.with_suffix(".partial.tif")
    with rasterio.open(tmp, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(0.5, 0, 400000.0, 0, -0.5, 5200000.0), tiled=True, blockxsize=512,
                       blockysize=512, compress="deflate", BIGTIFF="IF_SAFER") as ds:
        for i, y in enumerate(range(0, size, SCENE)):
            for j, x in enumerate(range(0, size, SCENE)):
                s = scenes[(i * 7 + j * 3) % 4]
                s = s[:, ::-1] if (i + j) % 2 else s[:, :, ::-1] if i % 3 == 0 else s
                h, w = min(SCENE, size - y), min(SCENE, size - x)
                ds.write(np.ascontiguousarray(s[:, :h, :w]), window=Window(x, y, w, h))
    tmp.rename(path)


def make_png(tif: Path, png: Path) -> None:
    import cv2
    import rasterio

    with rasterio.open(tif) as ds:
        bgr = np.ascontiguousarray(ds.read()[::-1].transpose(1, 2, 0))
    tmp = png.with_suffix(".partial.png")
    if not cv2.imwrite(str(tmp), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        sys.exit(f"could not write {tmp}")
    tmp.rename(png)


def detect(image: Path, out: Path, size: int, max_det: int, model: str, formats: str) -> dict:
    """One `fss detect` in a child process: its peak RSS, wall time and summary (a fresh output folder: a rerun
    into the old one would resume, i.e. detect nothing)."""
    shutil.rmtree(out, ignore_errors=True)
    log = out.with_suffix(".log")
    t0 = time.perf_counter()
    with open(log, "w") as f:
        child = subprocess.Popen([sys.executable, "-m", "fss", "detect", str(image), "--out", str(out), "--exist-ok",
                                  "--device", "cpu", "--max-det", str(max_det), "--max-pixels", str(size * size),
                                  "--model", model, *(["--formats", formats] if formats else [])],
                                 cwd=ROOT, stdout=f, stderr=f)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        sys.exit(log.read_text()[-3000:])
    s = json.loads((out / "summary.json").read_text())
    infer = s["stage_seconds"]["infer_s"]
    return {"file": image.name, "file_mb": round(image.stat().st_size / 2**20),
            "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "wall_s": round(wall, 1), "detect_s": round(s["seconds_per_image"], 1), "model_s": round(infer, 1),
            "outside_model_fraction": round((s["seconds_per_image"] - infer) / infer, 3),
            "stage_seconds": s["stage_seconds"], "tiles": s["tiles"], "tiles_per_s": round(s["tiles_per_s"], 2),
            "detections": s["detections"], "hit_max_det": bool(s["hit_max_det"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=30000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-det", type=int, default=1_000_000)
    p.add_argument("--work", default="/tmp/fss-geotiff", help="where the images and runs are kept (not committed)")
    p.add_argument("--only", choices=("geotiff", "png"), help="run one side; the other is kept from --out's earlier "
                                                               "result of the same size")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/geotiff_detect.json"))
    p.add_argument("--model", default=str(ROOT / "fss_core/models/fss-n-aerial.pt"))
    p.add_argument("--formats", default="", help="fss detect --formats (default: its own)")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    recipe = {"size": args.size, "seed": args.seed, "scene": SCENE, "version": 1}
    tif, png, record = work / f"scene{args.size}.tif", work / f"scene{args.size}.png", work / f"scene{args.size}.json"
    if not record.is_file() or json.loads(record.read_text()) != recipe:
        for f in (tif, png):
            f.unlink(missing_ok=True)
        record.write_text(json.dumps(recipe))
    t0 = time.perf_counter()
    if not tif.is_file():
        make_geotiff(tif, args.size, args.seed)
        print(f"wrote {tif} ({tif.stat().st_size / 2**20:.0f} MB) in {time.perf_counter() - t0:.0f} s", flush=True)
    earlier = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    runs = dict(earlier.get("runs", {})) if args.only and earlier.get("size") == args.size else {}
    if args.only != "png":
        runs["geotiff"] = detect(tif, work / "det-tif", args.size, args.max_det, args.model, args.formats)
        print(json.dumps(runs["geotiff"]), flush=True)
    if args.only != "geotiff":
        if not png.is_file():
            make_png(tif, png)
        runs["png"] = detect(png, work / "det-png", args.size, args.max_det, args.model, args.formats)
        print(json.dumps(runs["png"]), flush=True)
    import torch

    formats = f" --formats {args.formats}" if args.formats else ""
    result = {"size": args.size, "decoded_image_mb": round(args.size ** 2 * 3 / 2**20), "runs": runs,
              "settings": f"fss detect defaults ({Path(args.model).name}, tile 512, overlap 200, batch 8, conf 0.25) "
                          f"--device cpu --max-det {args.max_det}{formats}",
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
              "date": time.strftime("%Y-%m-%d"), "runs_each": 1,
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip()}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()

"""Peak memory of `fss detect` on one large JPEG (issue #15): bounded by the decoded image plus a
constant number of tile batches, whatever the image size.

    python benchmarks/detect_memory.py [--size 12000] [--out benchmarks/results/detect_memory.json]

Makes a dense synthetic SIZE × SIZE aerial scene (``fss data synth``: the sample scene's density, 1,500
objects per 4000², so ~13,500 at 12,000 px), saves it as JPEG, runs `fss detect` on it with the bundled
model in a child process and reads the child's peak RSS (getrusage). The decoded image alone is
SIZE² × 3 bytes. ``--merge-chunk 0`` runs the border rule in one block, as before the chunked merge.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=12000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--merge-chunk", type=int, default=256, help="cut boxes per border-rule block (0: one block)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/detect_memory.json"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / f"scene{args.size}.jpg"
        objects = round(1500 * (args.size / 4000) ** 2)
        subprocess.run([sys.executable, "-m", "fss", "data", "synth", str(Path(tmp) / "synth"), "--num-images", "1",
                        "--size", str(args.size), "--objects", str(objects), "--seed", "7"], cwd=ROOT, check=True,
                       capture_output=True)
        png = next((Path(tmp) / "synth/images").glob("*.png"))
        cv2.imwrite(str(image), cv2.imread(str(png)), [cv2.IMWRITE_JPEG_QUALITY, 90])
        png.unlink()
        chunk = f"import fss_deploy.tiling as t; t.MERGE_CHUNK = {args.merge_chunk or 10**9}; "
        t0 = time.perf_counter()
        log = open(Path(tmp) / "detect.log", "w")
        child = subprocess.Popen([sys.executable, "-c", chunk + "import sys; from fss.cli import app; app()",
                                  "detect", str(image), "--out", str(Path(tmp) / "det"), "--batch", str(args.batch),
                                  "--max-pixels", str(args.size ** 2)], cwd=ROOT, stdout=log, stderr=log)
        _, status, usage = os.wait4(child.pid, 0)             # this child's own peak RSS
        wall = time.perf_counter() - t0
        if status != 0:
            sys.exit((Path(tmp) / "detect.log").read_text()[-2000:])
        summary = json.loads((Path(tmp) / "det/summary.json").read_text())
    peak_mb = usage.ru_maxrss / 1024
    result = {"size": args.size, "batch": args.batch, "merge_chunk": args.merge_chunk or "all",
              "decoded_image_mb": round(args.size ** 2 * 3 / 2**20),
              "peak_rss_mb": round(peak_mb), "detections": summary["detections"], "tiles": summary["tiles"],
              "wall_s": round(wall, 1), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d")}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

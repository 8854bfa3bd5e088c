"""Every CPU inference path on the same tiles, in one run (issue #33): speed and what each costs in accuracy.

    python benchmarks/cpu_backends.py [--model fss_core/models/fss-n-aerial.pt] [--tile 512] [--rounds 20]

Paths: torch FP32 (channels-last, as the torch backend runs), torch BF16 autocast, torch FP32 through
``torch.compile`` (inductor), onnxruntime FP32, onnxruntime
INT8 (``fss export --int8``: calibrated on 32 tiles of 4 synthetic aerial scenes — never the scene it is scored on —
the prediction convolutions and decode in float), OpenVINO FP32 and OpenVINO BF16 (where the CPU computes BF16
natively). One ONNX export with a dynamic batch serves onnxruntime and OpenVINO. Measured:

* latency at batch 1 and throughput at batch 8 on tiles of the 4000² sample scene (``fss_core/models/sample-
  scene.jpg``): every path runs once per round, the paths interleaved (so load on the machine falls on all alike),
  median over ``--rounds`` after warm-up;
* tiled detection of the whole sample scene (``TiledDetector``, batch 8, overlap 128, the default conf 0.25):
  tiles/s (median of 3 after a warm-up) and the share of the time outside the model (batching, NMS, the border
  rule);
* accuracy: COCO AP and AP50 (pycocotools' COCOeval, max 3,000 detections, conf 0.001) of each path's detections
  of the sample scene against its labels (``sample-scene.txt``), and the difference to onnxruntime FP32.

Writes docs/results/cpu_backends.md and .json, naming the CPU, its load and the library versions.

    python benchmarks/cpu_backends.py --dota-model FINETUNED.pt [--dota-tile 384]

measures only accuracy, on real aerial images: every path of a model fine-tuned on DOTA tiles detects the labelled
DOTA validation images of the study (``../shared/data``: P0005, P1888, never its training images), tiled; COCO AP and
AP50 against their labels and the difference to onnxruntime FP32 -> docs/results/cpu_backends_dota.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fss_core.boxes import detections_to_coco  # noqa: E402
from fss_core.fileio import atomic_write  # noqa: E402
from fss_core.imageio import read_image  # noqa: E402
from fss_core.preprocess import letterbox, to_array  # noqa: E402
from fss_deploy.backends import TorchBackend, backend_threads, load_backend  # noqa: E402
from fss_deploy.bench import cpu_name  # noqa: E402
from fss_deploy.detect import DEFAULT_MODEL, SAMPLE_IMAGE, TiledDetector  # noqa: E402
from fss_deploy.export import export_onnx  # noqa: E402


class TorchBF16(TorchBackend):
    """The torch backend under CPU BF16 autocast (convolutions in BF16, the rest as autocast decides)."""

    name = "torch"
    precision = "bf16"

    @torch.no_grad()
    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.graph(x).float().numpy()


class TorchCompiled(TorchBackend):
    """The torch backend's graph through ``torch.compile`` (inductor, C++ kernels for this CPU); the first call of
    each input shape compiles (the warm-up rounds), not timed."""

    name = "torch"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.graph = torch.compile(self.graph)


def backends(model: Path, onnx: Path, tile: int, threads: int) -> dict:
    """name -> backend, every path this machine has."""
    from fss_deploy.openvino import native_bf16

    paths = {"torch fp32": TorchBackend(model, imgsz=tile, threads=threads),
             "torch bf16 autocast": TorchBF16(model, imgsz=tile, threads=threads),
             "torch fp32 torch.compile": TorchCompiled(model, imgsz=tile, threads=threads),
             "onnxruntime fp32": load_backend(onnx, threads=threads),
             "onnxruntime int8 (head float)": load_backend(int8_model(onnx), threads=threads),
             "openvino fp32": load_backend(onnx, backend="openvino", threads=threads)}
    if native_bf16():
        paths["openvino bf16"] = load_backend(onnx, backend="openvino", threads=threads, precision="bf16")
    return paths


def int8_model(onnx: Path) -> Path:
    """The INT8 ONNX of ``onnx``, calibrated on synthetic aerial scenes (fss data synth), not on the sample scene."""
    from fss_deploy.quantize import quantize_onnx
    from fss_train.data.synth import SynthConfig, synthesize

    calib = onnx.parent / "calib"
    synthesize(calib, SynthConfig(num_images=4, size=1024, objects=60, seed=7))
    return quantize_onnx(onnx, onnx.with_name("model-int8.onnx"), calib / "images", 32)


def tiles(image: np.ndarray, tile: int, n: int) -> np.ndarray:
    """(n, 3, tile, tile) model inputs cut from the scene's diagonal (objects in most of them)."""
    step = (min(image.shape[:2]) - tile) // max(n - 1, 1)
    crops = [letterbox(image[i * step:i * step + tile, i * step:i * step + tile], (tile, tile))[0] for i in range(n)]
    return to_array(crops)


def interleaved_speed(paths: dict, batch1: np.ndarray, batch8: np.ndarray, rounds: int) -> dict:
    """Median ms per call at batch 1 and tiles/s at batch 8, every path once per round."""
    times = {name: {"b1": [], "b8": []} for name in paths}
    for r in range(rounds + 2):                                   # two warm-up rounds, not counted
        for name, b in paths.items():
            with backend_threads(b):
                for key, x in (("b1", batch1), ("b8", batch8)):
                    t = time.perf_counter()
                    b.infer(x)
                    if r >= 2:
                        times[name][key].append(time.perf_counter() - t)
    return {name: {"ms_batch1": 1000 * statistics.median(t["b1"]),
                   "tiles_per_s_batch8": 8 / statistics.median(t["b8"])} for name, t in times.items()}


def scene_speed(b, image: np.ndarray, tile: int, repeats: int = 3) -> dict:
    """Tiles/s of the tiled scene at the default settings (median of ``repeats`` after a warm-up) and the share of
    that time outside the model."""
    det = TiledDetector(b, tile, 128, 8)
    with backend_threads(b):
        det(image)
        runs = []
        for _ in range(repeats):
            det.stats = TiledDetector.fresh_stats()
            t = time.perf_counter()
            det(image)
            runs.append((time.perf_counter() - t, det.stats["tiles"], det.stats["infer_s"]))
    seconds, tiles, infer = sorted(runs)[len(runs) // 2]
    return {"tiles_per_s": tiles / seconds, "seconds": seconds, "outside_model": 1 - infer / seconds}


def scene_accuracy(paths: dict, image: np.ndarray, tile: int) -> dict:
    """Per path: the tiled scene's speed (``scene_speed``) and the COCO AP / AP50 of its detections at conf 0.001."""
    from fss_train.data import read_dataset
    from fss_train.metrics import coco_eval_details, coco_gt_from_dataset

    folder = Path(tempfile.mkdtemp(prefix="fss-cpu-"))
    (folder / "images").mkdir()
    (folder / "labelTxt").mkdir()
    (folder / "images/sample-scene.jpg").symlink_to(SAMPLE_IMAGE)
    (folder / "labelTxt/sample-scene.txt").symlink_to(SAMPLE_IMAGE.with_suffix(".txt"))
    ds = read_dataset(folder)
    gt = coco_gt_from_dataset(ds)
    out = {}
    for name, b in paths.items():
        det = TiledDetector(b, tile, 128, 8, conf=0.001, max_det=3000)
        with backend_threads(b):
            dets = det(image)
        ids = [ds.classes.index(b.class_names[int(c)]) for c in dets[:, 5]]
        mapped = np.concatenate([dets[:, :5], np.array(ids, np.float32)[:, None]], 1) if len(dets) else dets
        stats, _ = coco_eval_details(gt, detections_to_coco(mapped, ds.records[0].image_id), max_dets=3000)
        out[name] = {"AP": stats["AP"], "AP50": stats["AP50"], "detections": len(dets),
                     **scene_speed(b, image, tile)}
    return out


def dota_accuracy(model: Path, tile: int, threads: int) -> dict:
    """Every path of a DOTA fine-tuned ``model`` on the study's labelled DOTA validation images: COCO AP / AP50."""
    from benchmarks.ablation import DOTA_VAL, SHARED
    from fss_train.data import read_dataset
    from fss_train.metrics import coco_eval_details, coco_gt_from_dataset

    folder = Path(tempfile.mkdtemp(prefix="fss-dota-"))
    for sub in ("images", "labelTxt"):
        (folder / sub).mkdir()
    for stem in DOTA_VAL:
        img = next(SHARED.glob(f"dota_devkit*/**/images/{stem}.png"))
        (folder / "images" / img.name).symlink_to(img)
        (folder / "labelTxt" / f"{stem}.txt").symlink_to(img.parent.parent / "labelTxt" / f"{stem}.txt")
    ds = read_dataset(folder)
    gt = coco_gt_from_dataset(ds)
    onnx = export_onnx(model, Path(tempfile.mkdtemp()) / "model.onnx", imgsz=tile, dynamic=True).path
    out = {}
    for name, b in backends(model, onnx, tile, threads).items():
        preds = []
        for rec in ds.records:
            det = TiledDetector(b, tile, tile // 3, 8, conf=0.001, max_det=3000)
            with backend_threads(b):
                dets = det(read_image(rec.path))
            ids = [ds.classes.index(b.class_names[int(c)]) for c in dets[:, 5]]
            mapped = np.concatenate([dets[:, :5], np.array(ids, np.float32)[:, None]], 1) if len(dets) else dets
            preds += detections_to_coco(mapped, rec.image_id)
        stats, _ = coco_eval_details(gt, preds, max_dets=3000)
        out[name] = {"AP": stats["AP"], "AP50": stats["AP50"], "detections": len(preds)}
        print(f"{name}: DOTA AP {stats['AP']:.4f}, AP50 {stats['AP50']:.4f}", flush=True)
    return out


def write_dota(out: Path, r: dict) -> None:
    ref = r["dota"]["onnxruntime fp32"]
    lines = [f"# CPU inference paths: accuracy on real aerial images ({r['model']}, {r['tile']} px tiles)", "",
             f"The model: {r['model_path']} (fine-tuned on the study's DOTA training tiles). Images: the labelled "
             f"DOTA validation images {', '.join(r['images'])} (../shared/data), tiled (overlap a third of the "
             "tile, batch 8, conf 0.001); COCO AP of each path's detections against their labels. "
             f"{', '.join(f'{k} {v}' for k, v in r['versions'].items())}. benchmarks/cpu_backends.py --dota-model.",
             "", "| path | AP | AP50 | ΔAP vs onnxruntime FP32 | ΔAP50 |", "|---|---|---|---|---|"]
    for name, a in r["dota"].items():
        lines.append(f"| {name} | {a['AP']:.4f} | {a['AP50']:.4f} | {a['AP'] - ref['AP']:+.4f} | "
                     f"{a['AP50'] - ref['AP50']:+.4f} |")
    atomic_write(out.with_suffix(".json"), json.dumps(r, indent=2))
    atomic_write(out.with_suffix(".md"), "\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "docs/results/cpu_backends"))
    p.add_argument("--dota-model", default="", help="only the accuracy on the labelled DOTA images, of this model")
    p.add_argument("--dota-tile", type=int, default=384, help="its tile (the size it was fine-tuned at)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.dota_model:
        from benchmarks.ablation import DOTA_VAL

        write_dota(ROOT / "docs/results/cpu_backends_dota", {
            "model": Path(a.dota_model).name, "model_path": "/".join(Path(a.dota_model).parts[-2:]),
            "tile": a.dota_tile, "images": list(DOTA_VAL), "versions": versions(),
            "dota": dota_accuracy(Path(a.dota_model), a.dota_tile, a.threads)})
        return
    load = os.getloadavg()[0]
    onnx = export_onnx(a.model, Path(tempfile.mkdtemp()) / "model.onnx", imgsz=a.tile, dynamic=True).path
    paths = backends(Path(a.model), onnx, a.tile, a.threads)
    image = read_image(SAMPLE_IMAGE)
    crops = tiles(image, a.tile, 8)
    speed = interleaved_speed(paths, crops[:1], crops, a.rounds)
    for name, s in speed.items():
        print(f"{name}: {s['ms_batch1']:.1f} ms at batch 1, {s['tiles_per_s_batch8']:.1f} tiles/s at batch 8",
              flush=True)
    accuracy = scene_accuracy(paths, image, a.tile)
    record = {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": a.threads, "load_1min": round(load, 2),
              "model": Path(a.model).name, "tile": a.tile, "rounds": a.rounds, "versions": versions(),
              "speed": speed, "scene": accuracy}
    write(Path(a.out), record)


def versions() -> dict:
    import onnxruntime
    import openvino

    return {"python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.__version__}


def write(out: Path, r: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out.with_suffix(".json"), json.dumps(r, indent=2))
    ref = r["scene"]["onnxruntime fp32"]
    base = r["speed"]["onnxruntime fp32"]["tiles_per_s_batch8"]
    lines = [f"# CPU inference paths ({Path(r['model']).name}, {r['tile']} px tiles)", "",
             f"CPU: {r['cpu']} ({r['cores']} cores, {r['threads']} threads, 1-minute load {r['load_1min']:.1f} at "
             f"the start); {', '.join(f'{k} {v}' for k, v in r['versions'].items())}. Speed: median of "
             f"{r['rounds']} interleaved rounds on 8 tiles of the sample scene. Scene: the whole 4000² sample scene "
             "tiled (batch 8, overlap 128): tiles/s at the default conf 0.25, median of 3; COCO AP of its detections "
             "at conf 0.001 against its labels. benchmarks/cpu_backends.py.", "",
             "| path | ms / tile, batch 1 | tiles/s, batch 8 | × onnxruntime | scene tiles/s | outside the model | "
             "AP | AP50 | ΔAP50 vs onnxruntime FP32 |", "|---|---|---|---|---|---|---|---|---|"]
    for name, s in r["speed"].items():
        a = r["scene"][name]
        lines.append(f"| {name} | {s['ms_batch1']:.1f} | {s['tiles_per_s_batch8']:.1f} | "
                     f"{s['tiles_per_s_batch8'] / base:.2f} | {a['tiles_per_s']:.1f} | "
                     f"{100 * a['outside_model']:.0f} % | {a['AP']:.4f} | {a['AP50']:.4f} | "
                     f"{a['AP50'] - ref['AP50']:+.4f} |")
    atomic_write(out.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

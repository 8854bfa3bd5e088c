"""fss's tiled runner vs SAHI's sliced prediction, same ONNX model, same tiles.

    pip install --no-deps sahi==0.12.8 && pip install shapely fire termcolor click tqdm requests
    python benchmarks/tiled_vs_sahi.py [--model M.onnx] [--repeats 3] [--threads 2]

(SAHI's own requirements pull opencv-python beside our opencv-python-headless; --no-deps avoids
two packages fighting over cv2.)  Both runners start from the decoded image in memory and end
with final detections. SAHI: ``get_sliced_prediction`` with the same tile and overlap,
``perform_standard_pred=False``, NMS by IoU at 0.5, class-aware. fss: ``TiledDetector``
(batch 1 and, for a dynamic-batch model, batch 8). Reported per image: seconds (median of
``--repeats``), the ratio, the pure model time (tiles × backend latency at that batch), the
share of time outside the model, and detection agreement (matched F1 at IoU 0.5, same class).
"""

from __future__ import annotations

import argparse
import json
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

from fss_core.imageio import read_image  # noqa: E402
from fss_core.nn.postprocess import postprocess  # noqa: E402
from fss_core.preprocess import to_array  # noqa: E402
from fss_deploy.backends import OnnxBackend  # noqa: E402
from fss_deploy.detect import DEFAULT_MODEL, TiledDetector  # noqa: E402
from fss_deploy.export import export_onnx, match_detections  # noqa: E402
from fss_deploy.tiling import plan_tiles  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def sahi_model(backend: OnnxBackend, conf: float, iou: float):
    """A SAHI DetectionModel around our onnxruntime backend (one slice per call, as SAHI runs it)."""
    from sahi.models.base import DetectionModel
    from sahi.prediction import ObjectPrediction

    class FssOnnx(DetectionModel):
        def load_model(self):
            self.model = backend
            self.category_mapping = {str(i): n for i, n in enumerate(backend.class_names)}

        def set_model(self, model, **kwargs):
            self.load_model()

        def perform_inference(self, image: np.ndarray):
            size = backend.input_size
            canvas = np.full((size, size, 3), 114, np.uint8)
            h, w = image.shape[:2]
            canvas[:h, :w] = image[..., ::-1]                      # SAHI gives RGB; our input path takes BGR
            out = backend.infer(to_array([canvas]))
            self._original_predictions = postprocess(torch.from_numpy(out), conf, iou, max_det=10000)[0].numpy()

        def _create_object_prediction_list_from_original_predictions(self, shift_amount_list=None,
                                                                     full_shape_list=None):
            shift_amount_list = shift_amount_list or [[0, 0]]
            shift = shift_amount_list[0] if isinstance(shift_amount_list[0], list) else shift_amount_list
            full = None
            if full_shape_list is not None:
                full = full_shape_list[0] if isinstance(full_shape_list[0], list) else full_shape_list
            preds = []
            for x1, y1, x2, y2, score, cls in self._original_predictions:
                if x2 <= x1 or y2 <= y1:
                    continue
                preds.append(ObjectPrediction(bbox=[float(x1), float(y1), float(x2), float(y2)],
                                              category_id=int(cls), score=float(score), segmentation=None,
                                              category_name=self.category_mapping[str(int(cls))],
                                              shift_amount=list(shift), full_shape=full))
            self._object_prediction_list_per_image = [preds]

    return FssOnnx(confidence_threshold=conf, device="cpu", load_at_init=True)


def run_sahi(model, image_rgb: np.ndarray, tile: int, overlap: int) -> np.ndarray:
    from sahi.predict import get_sliced_prediction

    result = get_sliced_prediction(image_rgb, model, slice_height=tile, slice_width=tile,
                                   overlap_height_ratio=overlap / tile, overlap_width_ratio=overlap / tile,
                                   perform_standard_pred=False, postprocess_type="NMS",
                                   postprocess_match_metric="IOU", postprocess_match_threshold=0.5,
                                   postprocess_class_agnostic=False, verbose=0)
    rows = [[*p.bbox.to_xyxy(), p.score.value, p.category.id] for p in result.object_prediction_list]
    return np.array(rows, np.float32).reshape(-1, 6)


def f1(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0 and len(b) == 0:
        return 1.0
    if len(a) == 0 or len(b) == 0:
        return 0.0
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    matched = (int(match_detections(ta, tb).sum()) + int(match_detections(tb, ta).sum())) / 2
    return 2 * matched / (len(a) + len(b))


def model_time(backend: OnnxBackend, tiles: int, batch: int, repeats: int = 5) -> float:
    """Pure backend time for ``tiles`` tiles in calls of ``batch`` (and one smaller remainder call),
    from the median time of each call size."""
    size = backend.input_size

    def per_call(n: int) -> float:
        x = np.random.default_rng(0).random((n, 3, size, size), dtype=np.float32)
        backend.infer(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            backend.infer(x)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    full, rest = divmod(tiles, batch)
    return (per_call(batch) * full if full else 0.0) + (per_call(rest) if rest else 0.0)


def timed(fn, repeats: int) -> tuple[float, object]:
    result, times = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="dynamic-batch ONNX (default: the bundled fss-n-aerial.pt exported at --tile)")
    p.add_argument("--images", nargs="*", help="default: a 4000x4000 synthetic scene + the largest shared DOTA image")
    p.add_argument("--tile", type=int, default=1024)
    p.add_argument("--overlap", type=int, default=200)
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/tiled_vs_sahi"))
    args = p.parse_args()
    torch.set_num_threads(1)            # both runners: onnxruntime computes, torch only post-processes
    tmp = Path(tempfile.mkdtemp(prefix="fss-sahi-"))
    model = args.model or str(export_onnx(DEFAULT_MODEL, tmp / "m.onnx", imgsz=args.tile, dynamic=True).path)
    images = args.images
    if not images:
        import cv2

        from fss_train.data.synth import SynthConfig, make_scene
        scene, *_ = make_scene(SynthConfig(num_images=1, size=4000, objects=1500, min_size=10, max_size=100, seed=7),
                               0)
        cv2.imwrite(str(tmp / "scene4000.png"), scene)
        images = [str(tmp / "scene4000.png")]
        demo = SHARED / "dota_unlabeled_demo_images"
        if demo.is_dir():
            largest = max(demo.rglob("*.[pj][np]g"), key=lambda q: q.stat().st_size)
            images.append(str(largest))
    backend = OnnxBackend(model, threads=args.threads)
    sahi = sahi_model(backend, args.conf, 0.5)
    import sahi as sahi_pkg

    rows = []
    for path in images:
        image = read_image(path)
        h, w = image.shape[:2]
        rgb = np.ascontiguousarray(image[..., ::-1])
        n_tiles = len(plan_tiles(w, h, args.tile, args.overlap))
        run_sahi(sahi, rgb, args.tile, args.overlap)                                  # warm-up
        t_sahi, d_sahi = timed(lambda rgb=rgb: run_sahi(sahi, rgb, args.tile, args.overlap), args.repeats)
        row = {"image": Path(path).name, "size": f"{w}x{h}", "tiles": n_tiles, "sahi_s": t_sahi,
               "sahi_detections": len(d_sahi), "model_s_batch1": model_time(backend, n_tiles, 1)}
        for batch in (1, 8) if backend.fixed_batch is None else (backend.fixed_batch,):
            for border in (True, False):
                det = TiledDetector(backend, overlap=args.overlap, batch=batch, conf=args.conf, border_rule=border)
                det(image)
                t, d = timed(lambda det=det, image=image: det(image), args.repeats)
                key = f"fss_b{batch}" + ("" if border else "_noborder")
                m = model_time(backend, n_tiles, batch)
                row.update({f"{key}_s": t, f"{key}_detections": len(d), f"{key}_f1_vs_sahi": f1(d, d_sahi),
                            f"{key}_speedup": t_sahi / t, f"{key}_model_s": m,
                            f"{key}_outside_model": (t - m) / m})
        row["sahi_outside_model"] = (t_sahi - row["model_s_batch1"]) / row["model_s_batch1"]
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)
    env = {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__,
           "sahi": sahi_pkg.__version__, "model": model, "tile": args.tile, "overlap": args.overlap,
           "conf": args.conf, "repeats": args.repeats}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"env": env, "rows": rows}, indent=2))
    lines = ["| image | tiles | SAHI s | fss b1 s | fss b8 s | speed-up (b1 / b8) | model s (b1) | outside model: "
             "SAHI / fss b1 / fss b8 | F1 vs SAHI (border rule on / off) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b8 = r.get("fss_b8_s", float("nan"))
        lines.append(f"| {r['image']} ({r['size']}) | {r['tiles']} | {r['sahi_s']:.3f} | {r['fss_b1_s']:.3f} | "
                     f"{b8:.3f} | {r['fss_b1_speedup']:.2f}× / {r.get('fss_b8_speedup', float('nan')):.2f}× | "
                     f"{r['model_s_batch1']:.3f} | {100 * r['sahi_outside_model']:.1f}% / "
                     f"{100 * r['fss_b1_outside_model']:.1f}% / "
                     f"{100 * r.get('fss_b8_outside_model', float('nan')):.1f}%"
                     f" | {r['fss_b1_f1_vs_sahi']:.4f} / {r['fss_b1_noborder_f1_vs_sahi']:.4f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n\n" + json.dumps(env) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

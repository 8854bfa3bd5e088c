"""`fss demo`: the main job end to end on 2 CPU cores, with a report.

Stages: synthetic data -> train fss-n with FSS and with SimOTA (same schedule) -> evaluate ->
export both to ONNX and prove the graphs identical -> tiled detection on a large scene with
each -> the bundled horizontal and oriented models on the sample scene -> interleaved latency
benchmark -> the FSS assignment figure -> report.md.
Lives beside cli.py because it uses both packages (fss_train never imports fss_deploy).
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape

from fss_core.fileio import atomic_write, save_figure


@dataclass(frozen=True)
class DemoBudget:
    train_images: int
    val_images: int
    size: int                 # training image side
    objects: int
    min_size: float
    max_size: float
    epochs: int
    batch: int
    scene: int                # side of the large scene for tiled detection
    scene_objects: int
    tile: int
    bench_iters: int
    card: str = "fss-n"


FULL = DemoBudget(train_images=96, val_images=16, size=320, objects=24, min_size=10, max_size=56, epochs=12,
                  batch=16, scene=4000, scene_objects=1500, tile=640, bench_iters=60)
QUICK = DemoBudget(train_images=8, val_images=4, size=128, objects=6, min_size=14, max_size=40, epochs=3, batch=4,
                   scene=512, scene_objects=40, tile=128, bench_iters=10)


class StageError(RuntimeError):
    pass


def run_demo(out: str | Path, quick: bool = False, console=None, seed: int = 0) -> dict:
    """Every stage in order (module doc); ``results.json`` and ``report.md`` in ``out``. A stage that fails raises
    :class:`StageError` naming it."""
    from rich.console import Console

    demo = _Demo(Path(out), QUICK if quick else FULL, console or Console(), seed, quick)
    demo.out.mkdir(parents=True, exist_ok=True)
    demo.make_data()
    demo.train_both()
    demo.export_and_compare()
    demo.detect_scene()
    demo.default_model()
    demo.oriented_model()
    demo.benchmark()
    demo.figures_and_report()
    timings = demo.timings
    timings["total"] = round(sum(v for k, v in timings.items() if k != "total"), 1)
    demo.console.print(f"[bold]report:[/] {escape(str(demo.out / 'report.md'))} (total {timings['total']} s)")
    return demo.results


class _Demo:
    """The demo's state as it goes: its folder, budget, console, the trained runs and exported models, and what
    each stage found (``results``) and took (``timings``)."""

    def __init__(self, out: Path, budget: DemoBudget, console, seed: int, quick: bool):
        self.out, self.budget, self.console, self.seed = out, budget, console, seed
        self.timings: dict[str, float] = {}
        self.results: dict = {"budget": budget.__dict__, "quick": quick}
        self.quick = quick
        self.runs: dict = {}
        self.onnx: dict = {}

    @contextmanager
    def stage(self, name: str):
        """A titled stage, timed; an error inside it becomes a StageError naming the stage."""
        self.console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        try:
            yield
        except (KeyboardInterrupt, StageError):
            self.timings[name] = round(time.perf_counter() - t0, 1)
            raise
        except Exception as exc:
            self.timings[name] = round(time.perf_counter() - t0, 1)
            raise StageError(f"stage '{name}' failed: {type(exc).__name__}: {exc}") from exc
        self.timings[name] = round(time.perf_counter() - t0, 1)
        self.console.print(f"[green]✓[/] {name} ({self.timings[name]} s)")

    def make_data(self) -> None:
        from fss_train.data.synth import SynthConfig, synthesize

        b, out, seed = self.budget, self.out, self.seed
        with self.stage("synthetic aerial data"):
            synthesize(out / "data/train", SynthConfig(b.train_images, b.size, b.objects, b.min_size, b.max_size,
                                                       seed=seed + 11), exist_ok=True)
            synthesize(out / "data/val", SynthConfig(b.val_images, b.size, b.objects, b.min_size, b.max_size,
                                                     seed=seed + 12), exist_ok=True)
            scene_cfg = SynthConfig(1, b.scene, b.scene_objects, b.min_size, b.max_size * 1.5, seed=seed + 13)
            synthesize(out / "data/scene", scene_cfg, exist_ok=True)       # the demo owns its folder
            self.console.print(f"{b.train_images} training / {b.val_images} validation images of {b.size} px, "
                               f"one {b.scene}×{b.scene} scene with {b.scene_objects} objects")

    def train_both(self) -> None:
        import fss
        from fss.progress import TrainProgress
        from fss_train.assigners import build_assigner

        b, out = self.budget, self.out
        for assigner in ("fss", "simota"):
            with self.stage(f"train {b.card} with {assigner}"), TrainProgress() as progress:
                run = fss.train(str(out / "data/train"), val=str(out / "data/val"), model=b.card,
                                assigner=assigner, epochs=b.epochs, batch=b.batch, imgsz=b.size,
                                workers=0 if self.quick else 1, out=out / f"train_{assigner}", exist_ok=True,
                                overrides={"seed": self.seed, "lr_per_64": 0.16, "warmup_epochs": 1.0,
                                           "no_mosaic_epochs": 2, "eval_interval": b.epochs},
                                log=lambda m: self.console.print(m, markup=False, highlight=False),
                                progress=progress)
            self.runs[assigner] = {"ckpt": run.last, "rows": run.rows,
                                   "final": run.final | {"params": build_assigner(assigner).params()}}
        self.results["train"] = {a: {k: r["final"].get(k) for k in ("AP", "AP50", "APs", "pos_per_gt",
                                                                      "rank_consistency", "seconds", "params")}
                                 for a, r in self.runs.items()}

    def export_and_compare(self) -> None:
        import fss

        with self.stage("export to ONNX and compare graphs"):
            for a, r in self.runs.items():
                self.onnx[a] = fss.export(r["ckpt"], out=self.out / f"{a}.onnx", imgsz=self.budget.tile, batch=1,
                                          dynamic=True, exist_ok=True)   # the demo owns its folder: replaced whole
            cmp = fss.compare(self.onnx["fss"].path, self.onnx["simota"].path)
            if not cmp["identical"]:
                raise StageError(f"the FSS and SimOTA graphs differ: {cmp['differences']}")
            e = self.onnx["fss"]
            self.console.print(f"[bold green]IDENTICAL[/] graphs: fingerprint {e.fingerprint[:16]}…, "
                               f"{e.params:,} params, {e.flops / 1e9:.2f} GFLOPs at {self.budget.tile} px")
        self.results["compare"] = {"identical": cmp["identical"], "fingerprint": e.fingerprint, "params": e.params,
                                   "flops": e.flops}

    def detect_scene(self) -> None:
        """Tiled detection on the large scene with each model, scored against its labels."""
        import fss
        from fss_core.fileio import write_image
        from fss_train.data import read_dataset
        from fss_train.metrics import coco_eval, coco_gt_from_dataset, dota_eval

        scene_ds = read_dataset(self.out / "data/scene")
        self.results["detect"] = {}
        for a in ("fss", "simota"):
            with self.stage(f"tiled detection with the {a} model"):
                det = fss.Detector(self.onnx[a].path, overlap=max(32, self.budget.tile // 5), batch=4, conf=0.05)
                t0 = time.perf_counter()
                r = det(scene_ds.records[0].path)[0]
                secs = time.perf_counter() - t0
                preds = r.to_coco(scene_ds.records[0].image_id)
                coco = coco_eval(coco_gt_from_dataset(scene_ds), preds, max_dets=len(preds) or 100)
                dota = dota_eval(scene_ds, preds)
                write_image(self.out / f"scene_{a}.jpg", r.plot(min_score=0.25))
                tiles = det.tiled.stats["tiles"]
                self.results["detect"][a] = {"detections": len(r), "seconds": round(secs, 2), "tiles": tiles,
                                             "AP": coco["AP"], "AP50": coco["AP50"], "mAP50_dota": dota["mAP50"]}
                self.console.print(f"{len(r)} detections in {secs:.1f} s ({tiles} tiles); scene AP50 "
                                   f"{coco['AP50']:.3f}, DOTA mAP50 {dota['mAP50']:.3f}")

    def default_model(self) -> None:
        """The embedded default: the bundled model on the bundled sample scene."""
        from fss_deploy.detect import DEFAULT_MODEL, SAMPLE_IMAGE

        if not (DEFAULT_MODEL.is_file() and SAMPLE_IMAGE.is_file()):
            self.console.print(f"[yellow]no bundled default model ({DEFAULT_MODEL.name}) in "
                               f"{escape(str(DEFAULT_MODEL.parent))}: stage skipped[/]")
            return
        with self.stage("bundled default model on the bundled sample scene"):
            dm = self.results["default_model"] = evaluate_default_model(self.out / "default_model_sample.jpg")
            self.console.print(f"{DEFAULT_MODEL.name} on {SAMPLE_IMAGE.name} ({dm['objects']} labelled objects): "
                               f"{dm['detections']} detections in {dm['seconds']} s, AP {dm['AP']:.3f}, AP50 "
                               f"{dm['AP50']:.3f}, DOTA mAP50 {dm['mAP50_dota']:.3f}")

    def oriented_model(self) -> None:
        """The oriented pipeline: the embedded OBB model, tiled over the sample scene, scored by DOTA Task1."""
        from fss_deploy.detect import OBB_MODEL, SAMPLE_IMAGE

        if not (OBB_MODEL.is_file() and SAMPLE_IMAGE.is_file()):
            self.console.print(f"[yellow]no bundled oriented model ({OBB_MODEL.name}): stage skipped[/]")
            return
        with self.stage("bundled oriented model on the bundled sample scene"):
            om = self.results["oriented_model"] = evaluate_obb_model(self.out / "oriented_model_sample.jpg")
            self.console.print(f"{OBB_MODEL.name} on {SAMPLE_IMAGE.name} ({om['objects']} labelled objects): "
                               f"{om['detections']} oriented detections in {om['seconds']} s, DOTA Task1 mAP50 "
                               f"{om['task1_mAP50']:.3f}, rotated mAP .50:.95 {om['rotated_AP']:.3f}")

    def benchmark(self) -> None:
        import fss

        iters = self.budget.bench_iters
        with self.stage("zero-overhead benchmark"):
            report = fss.benchmark_overhead(self.onnx["fss"].path, self.onnx["simota"].path,
                                            warmup=max(3, iters // 5), iters=iters, out=self.out / "bench")
            self.console.print(f"latency FSS/SimOTA {report['ratio_a_over_b']:.3f} (95% CI "
                               f"{report['ratio_ci95'][0]:.3f}–{report['ratio_ci95'][1]:.3f}), medians "
                               f"{report['latency_a']['median_ms']:.1f} / {report['latency_b']['median_ms']:.1f} ms")
        bench = {k: report[k] for k in ("ratio_a_over_b", "ratio_ci95", "identical_graph")}
        bench["median_ms"] = {"fss": report["latency_a"]["median_ms"], "simota": report["latency_b"]["median_ms"]}
        self.results["bench"] = bench

    def figures_and_report(self) -> None:
        from fss_train.data import read_dataset
        from fss_train.figure import assignment_figure

        with self.stage("figures and report"):
            rec = read_dataset(self.out / "data/val").records[0]
            label = self.out / "data/val/labelTxt" / f"{rec.path.stem}.txt"
            assignment_figure(rec.path, str(self.runs["fss"]["ckpt"]), label,
                              self.out / "assignment_fss_vs_simota.png", vs="simota", num_gts=3)
            _plot_curves(self.runs, self.out / "training_curves.png")
            self.results["timings_s"] = self.timings
            atomic_write(self.out / "results.json", json.dumps(self.results, indent=2, default=str))
            atomic_write(self.out / "report.md", _report_md(self.results, self.budget))


def evaluate_default_model(annotated: Path | None = None, conf: float = 0.001) -> dict:
    """The bundled model on the bundled sample scene (its labels ship beside it): COCO AP and DOTA mAP50."""
    import numpy as np

    from fss.detector import Detector
    from fss_core.fileio import write_image
    from fss_deploy.detect import DEFAULT_MODEL, SAMPLE_IMAGE
    from fss_train.data.formats import read_labels_for_image
    from fss_train.data.records import Dataset, ImageRecord
    from fss_train.metrics import coco_eval, coco_gt_from_dataset, dota_eval

    det = Detector(DEFAULT_MODEL, overlap=0.2, batch=8, conf=conf)
    t0 = time.perf_counter()
    r = det(SAMPLE_IMAGE)[0]
    secs = time.perf_counter() - t0
    h, w = r.shape
    boxes, names, _ = read_labels_for_image(SAMPLE_IMAGE.with_suffix(".txt"), SAMPLE_IMAGE, (w, h))
    labels = np.array([det.classes.index(n) for n in names], np.int64)
    ds = Dataset(det.classes, [ImageRecord(SAMPLE_IMAGE, w, h, boxes, labels, np.zeros_like(labels), image_id=1)])
    preds = r.to_coco(1)
    coco = coco_eval(coco_gt_from_dataset(ds), preds, max_dets=len(preds) or 100)   # dense: no 100 cap
    if annotated is not None:
        write_image(annotated, r.plot(min_score=0.3))
    return {"model": DEFAULT_MODEL.name, "image": SAMPLE_IMAGE.name, "objects": int(len(labels)),
            "detections": int((r.scores >= 0.3).sum()), "seconds": round(secs, 2), "tiles": det.tiled.stats["tiles"],
            "AP": coco["AP"], "AP50": coco["AP50"], "APs": coco["APs"], "mAP50_dota": dota_eval(ds, preds)["mAP50"]}


def evaluate_obb_model(annotated: Path | None = None, conf: float = 0.001) -> dict:
    """The embedded oriented model on the sample scene, against its DOTA polygons: Task1 mAP50 (VOC07, the
    devkit's rules) and the COCO-style rotated mAP .50:.95."""
    import numpy as np

    from fss.detector import Detector
    from fss_core.fileio import write_image
    from fss_deploy.detect import OBB_MODEL, SAMPLE_IMAGE
    from fss_train.data.dota import read_dota_lines
    from fss_train.data.records import Dataset, ImageRecord
    from fss_train.obb_metrics import rotated_coco_map, task1_eval

    det = Detector(OBB_MODEL, overlap=0.2, batch=8, conf=conf)
    t0 = time.perf_counter()
    r = det(SAMPLE_IMAGE)[0]
    secs = time.perf_counter() - t0
    h, w = r.shape
    rows = read_dota_lines(SAMPLE_IMAGE.with_suffix(".txt"), (w, h), det.classes, False, [])
    rec = ImageRecord(SAMPLE_IMAGE, w, h, np.array([x[0] for x in rows], np.float32),
                      np.array([x[1] for x in rows], np.int64), np.array([x[2] for x in rows], np.int64),
                      polygons=np.array([x[3] for x in rows], np.float32), image_id=1)
    ds = Dataset(det.classes, [rec])
    dets = [{"image_id": 1, "class": int(c), "score": float(s), "poly": p.reshape(-1).tolist()}
            for c, s, p in zip(r.class_ids, r.scores, r.polygons)]
    if annotated is not None:
        write_image(annotated, r.plot(min_score=0.3))
    return {"model": OBB_MODEL.name, "image": SAMPLE_IMAGE.name, "objects": len(rows),
            "detections": int((r.scores >= 0.3).sum()), "seconds": round(secs, 2), "tiles": det.tiled.stats["tiles"],
            "task1_mAP50": task1_eval(ds, dets)["mAP50"], "rotated_AP": rotated_coco_map(ds, dets)["mAP"]}


def _plot_curves(runs: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for a, r in runs.items():
        ep = [row["epoch"] for row in r["rows"]]
        axes[0].plot(ep, [row["loss"] for row in r["rows"]], marker="o", label=a)
        axes[1].plot(ep, [row["pos_per_gt"] for row in r["rows"]], marker="o", label=a)
        axes[2].plot(ep, [row["rank_consistency"] for row in r["rows"]], marker="o", label=a)
    for ax, title in zip(axes, ("training loss", "positives per GT", "rank consistency cls↔IoU (Spearman)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def _report_md(r: dict, budget: DemoBudget) -> str:
    t, d, b, c = r["train"], r["detect"], r["bench"], r["compare"]

    def f(v):
        return "n/a" if v is None or (isinstance(v, float) and v != v) else f"{v:.3f}"

    lines = [
        "# fss demo report", "",
        f"Budget: {'quick (test)' if r['quick'] else 'full'} — {budget.card}, {budget.train_images} synthetic "
        f"training images of {budget.size} px, {budget.epochs} epochs, batch {budget.batch}, CPU. One seed, one run: "
        "a smoke test of the pipeline, not a comparison of assigners (see benchmarks/ablation.py for that).", "",
        "## Accuracy", "",
        "| assigner | val AP | val AP50 | val APs | pos/GT (last epoch) | rank consistency | scene AP50 "
        "| scene DOTA mAP50 |",
        "|---|---|---|---|---|---|---|---|"]
    for a in ("fss", "simota"):
        lines.append(f"| {a} | {f(t[a]['AP'])} | {f(t[a]['AP50'])} | {f(t[a]['APs'])} | {f(t[a]['pos_per_gt'])} | "
                     f"{f(t[a]['rank_consistency'])} | {f(d[a]['AP50'])} | {f(d[a]['mAP50_dota'])} |")
    lines += [""] + [f"- `{a}` ran with " + ", ".join(f"{k}={v}" for k, v in (t[a].get("params") or {}).items())
                     for a in ("fss", "simota")]
    lines += ["", "## Zero inference overhead", "",
              f"- graph fingerprints: **{'IDENTICAL' if c['identical'] else 'DIFFERENT'}** "
              f"(`{c['fingerprint'][:16]}…`)",
              f"- params {c['params']:,}, {c['flops'] / 1e9:.2f} GFLOPs at {budget.tile} px (both)",
              f"- latency FSS / SimOTA: {b['ratio_a_over_b']:.3f} (95% bootstrap CI {b['ratio_ci95'][0]:.3f}–"
              f"{b['ratio_ci95'][1]:.3f}; medians {b['median_ms']['fss']:.2f} / {b['median_ms']['simota']:.2f} ms, "
              f"interleaved, batch 1 FP32, onnxruntime CPU)", "",
              "## Tiled detection", "",
              f"{budget.scene}×{budget.scene} scene, {budget.tile} px tiles: "
              + ", ".join(f"{a} {d[a]['detections']} detections in {d[a]['seconds']} s ({d[a]['tiles']} tiles)"
                          for a in ("fss", "simota")), "",
              "![FSS detections](scene_fss.jpg)", ""]
    if "default_model" in r:
        dm = r["default_model"]
        lines += ["## The embedded default", "",
                  f"The bundled `{dm['model']}` on `{dm['image']}` (4000×4000, {dm['objects']} labelled objects, "
                  f"held out from its training data): AP {dm['AP']:.3f}, AP50 {dm['AP50']:.3f}, AP_small "
                  f"{dm['APs']:.3f}, DOTA mAP50 {dm['mAP50_dota']:.3f}; {dm['detections']} detections at score ≥ 0.3 "
                  f"in {dm['seconds']} s ({dm['tiles']} tiles, torch CPU).", "",
                  "![default](default_model_sample.jpg)", ""]
    if "oriented_model" in r:
        om = r["oriented_model"]
        lines += ["## The embedded oriented model", "",
                  f"The bundled `{om['model']}` (oriented boxes, trained with FSS) on `{om['image']}` "
                  f"({om['objects']} labelled polygons): DOTA Task1 mAP50 {om['task1_mAP50']:.3f}, rotated mAP "
                  f".50:.95 {om['rotated_AP']:.3f}; {om['detections']} oriented detections at score ≥ 0.3 in "
                  f"{om['seconds']} s ({om['tiles']} tiles, torch CPU).", "",
                  "![oriented](oriented_model_sample.jpg)", ""]
    lines += ["## FSS assignment (paper Fig. 3)", "",
              "![assignment](assignment_fss_vs_simota.png)", "", "## Training curves", "",
              "![curves](training_curves.png)", "", "## Stage times (s)", ""]
    lines += [f"- {k}: {v}" for k, v in r["timings_s"].items()]
    return "\n".join(lines) + "\n"

"""``fss eval``: a checkpoint, or saved predictions, scored on a dataset — COCO metrics (pycocotools' COCOeval or
faster-coco-eval) or the DOTA devkit's VOC07 mAP50 — and, with ``out``, the record and its plots.

    python -m fss eval runs/train/best.pt data.yaml                  # the CLI; fss.evaluate(...) from Python
"""

from __future__ import annotations

import json
from pathlib import Path

from fss_core.defaults import CONF, IOU
from fss_train.config import TrainConfig


def evaluate_dataset(model: str | Path | None, data: str, *, predictions: str | Path | None = None,
                     metric: str = "coco", split: str = "val", imgsz: int | None = None, batch: int = 8,
                     device: str = "cpu", max_dets: int = 100, alignment: bool = False, out: str | Path | None = None,
                     conf: float = CONF, iou: float = IOU, coco_engine: str = "auto", dota_ap: str = "voc07",
                     progress=None) -> dict:
    """The work of :func:`fss.evaluate` (its docstring says what each setting does); ``device`` already resolved."""
    from fss_core.checkpoint import load_model
    from fss_train.metrics import detection_cap_advice
    from fss_train.obb_metrics import AP_KINDS
    from fss_train.predictions import read_predictions

    _check_settings(model, data, predictions, metric, max_dets, alignment, coco_engine)
    if dota_ap not in AP_KINDS:
        raise ValueError(f"dota_ap must be one of {AP_KINDS}, got {dota_ap!r}")
    ds = _ground_truth_dataset(data, split)
    if predictions is not None and is_task1_folder(predictions):
        if metric != "dota":
            raise ValueError(f"{predictions}: DOTA Task1 (oriented) detections are scored with --metric dota")
        return evaluate_task1(ds, Path(predictions), dota_ap, out)
    loaded = load_model(model) if predictions is None else None         # read once, whichever task
    shrunk = scale_advice(ds, imgsz or loaded[1]["input_size"][0]) if loaded else None
    if loaded is not None and loaded[0].card.task == "obb":   # oriented models: Task1 whatever --metric says
        if alignment:
            raise ValueError(f"{model}: task alignment (--alignment) is measured for horizontal models only")
        dets, _, _, unreadable = predict_dataset(model, ds, imgsz, batch, device, False, progress, loaded)
        return task1_record(ds.without(unreadable), dets, [], dota_ap, out) | {"scale_advice": shrunk}
    unreadable: list[int] = []
    if predictions is not None:
        preds, mapping = read_predictions(predictions, ds)
        align = None
    else:
        preds, mapping, align, unreadable = predict_dataset(model, ds, imgsz, batch, device, alignment, progress,
                                                            loaded)
    skipped = [str(r.path) for r in ds.records if r.image_id in set(unreadable)]
    ds = ds.without(unreadable)          # images the model could not see are neither scored nor counted as missed
    gt = _coco_ground_truth(ds, unreadable)
    result, per_class, details = _score(metric, gt, preds, ds, max_dets, coco_engine)
    record = {"metric": metric, "result": result, "per_class": per_class, "num_predictions": len(preds),
              "classes_note": mapping.note(), "alignment": align, "unreadable_images": skipped or None,
              "coco_engine": details["engine"] if details else None,
              "max_dets": max_dets if metric == "coco" else None,      # "AR100" is the recall at this cap
              "max_dets_advice": detection_cap_advice(gt, max_dets) if metric == "coco" else None,
              "scale_advice": shrunk}
    if out is not None:
        record["out"] = str(_write_eval(Path(out), record, gt, preds, details, conf, iou, coco_engine))
    return record


def task1_dir(path: str | Path) -> Path:
    """Where the Task1 files of ``path`` are: the folder itself, or an fss detect folder's dota/."""
    p = Path(path)
    return p / "dota" if (p / "dota").is_dir() else p


def is_task1_folder(path: str | Path) -> bool:
    """A folder of DOTA Task1 files (oriented detections), or an fss detect folder holding one under dota/."""
    return Path(path).is_dir() and any(task1_dir(path).glob("Task1_*.txt"))


def evaluate_task1(ds, folder: Path, ap: str, out: str | Path | None) -> dict:
    """DOTA Task1 of oriented detections against an oriented dataset (fss_train/obb_metrics.py), and the
    COCO-style rotated mAP beside it; with ``out`` its metrics.json."""
    from fss_train.obb_metrics import read_dota_task1

    dets, problems = read_dota_task1(task1_dir(folder), ds)
    return task1_record(ds, dets, problems, ap, out)


def scale_advice(ds, side: int, limit: float = 2.0) -> str | None:
    """A warning when the model sees whole images shrunk more than ``limit``× to its ``side`` px input (large
    aerial scenes: objects of 20 px become 4 px), with the tiled way to score them. None when every image fits."""
    ratios = [max(r.width, r.height) / side for r in ds.records]
    big = [x for x in ratios if x > limit]
    if not big:
        return None
    return (f"{len(big)} of {len(ratios)} images are larger than the model's {side} px input (up to {max(big):.1f}×) "
            "and are scored whole, shrunk to fit, their objects with them; for large scenes score tiled detections "
            "instead: `fss detect MODEL IMAGES --out DIR`, then `fss eval --predictions DIR`, or evaluate tiles "
            "cut by `fss data split`")


def task1_record(ds, dets: list[dict], problems: list, ap: str, out: str | Path | None) -> dict:
    """The record of oriented detections (Task1 records) scored on ``ds``: DOTA Task1 and the rotated mAP."""
    from fss_core.fileio import atomic_write
    from fss_train.obb_metrics import rotated_coco_map, task1_eval

    result = task1_eval(ds, dets, ap=ap)
    rotated = rotated_coco_map(ds, dets)
    result["rotated_coco"] = {k: v for k, v in rotated.items() if k != "per_class"}
    per_class = {name: {"AP50": v, "AP": rotated["per_class"][name]} for name, v in result["per_class"].items()}
    record = {"metric": "dota", "task": "Task1", "result": result, "per_class": per_class,
              "num_predictions": len(dets), "problems": [str(p) for p in problems] or None, "alignment": None}
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write(Path(out) / "metrics.json", json.dumps({k: v for k, v in record.items() if v is not None},
                                                            indent=2))
        record["out"] = str(out)
    return record


def _check_settings(model, data, predictions, metric: str, max_dets: int, alignment: bool, coco_engine: str) -> None:
    from fss_train.metrics import coco_engine as coco_engine_check

    if metric not in ("coco", "dota"):
        raise ValueError(f"metric must be coco or dota, got {metric!r}")
    if max_dets < 1:
        raise ValueError(f"--max-dets must be at least 1, got {max_dets}")
    coco_engine_check(coco_engine)
    if (model is None) == (predictions is None):
        raise ValueError("give a model checkpoint or predictions, not both")
    if not data:
        raise ValueError("data (the ground truth) is required")
    if alignment and model is None:
        raise ValueError("alignment needs a model checkpoint (it looks at every candidate point, not at saved "
                         "detections)")


def _ground_truth_dataset(data: str, split: str):
    """The dataset to score on: a data.yaml's ``split``, never the training images unless asked."""
    from fss_train.data import read_dataset

    try:
        return read_dataset(data, split)
    except ValueError as exc:
        if f"no '{split}' split" in str(exc):
            raise ValueError(f"{exc}; evaluating on the training images needs split='train' (--split train)") from None
        raise


def _coco_ground_truth(ds, unreadable: list[int]) -> dict:
    """A COCO json is its own ground truth (its ids, its areas); every other format through the dataset."""
    from fss_train.metrics import coco_gt_from_dataset

    if ds.category_ids is not None:
        return _without_images(json.loads(Path(ds.source).read_text()), unreadable)
    return coco_gt_from_dataset(ds)


def _score(metric: str, gt: dict, preds: list[dict], ds, max_dets: int, coco_engine: str):
    """(result, per-class figures, COCOeval details or None for the DOTA metric)."""
    from fss_train.metrics import coco_eval_details, dota_eval

    if metric == "coco":
        result, details = coco_eval_details(gt, preds, max_dets=max_dets, engine=coco_engine)
        return result, details["per_class"], details
    result = dota_eval(ds, _dataset_ids(preds, ds))
    return result, {k: {"AP50": v} for k, v in result["per_class"].items()}, None


def _without_images(gt: dict, image_ids: list[int]) -> dict:
    """A COCO ground truth less these images and their annotations."""
    drop = set(image_ids)
    if not drop:
        return gt
    return {**gt, "images": [im for im in gt["images"] if im["id"] not in drop],
            "annotations": [a for a in gt.get("annotations") or [] if a["image_id"] not in drop]}


def _dataset_ids(preds: list[dict], ds) -> list[dict]:
    """Predictions in a COCO json's own category ids -> class index + 1 (what dota_eval counts in)."""
    if ds.category_ids is None:
        return preds
    index = {cid: i + 1 for i, cid in enumerate(ds.category_ids)}
    return [{**p, "category_id": index[p["category_id"]]} for p in preds]


def _write_eval(out: Path, record: dict, gt: dict, preds: list[dict], details: dict | None, conf: float,
                iou: float, coco_engine: str = "auto") -> Path:
    from fss_core.fileio import atomic_write
    from fss_train.metrics import coco_eval_details
    from fss_train.valplots import write_val_plots

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "metrics.json", json.dumps({k: v for k, v in record.items() if v is not None}, indent=2))
    atomic_write(out / "predictions.json", json.dumps(preds))
    if details is None:                                       # DOTA metric: the curves come from COCOeval
        details = coco_eval_details(gt, preds, max_dets=max(100, len(preds)), engine=coco_engine)[1]
    write_val_plots(out, gt, preds, details, conf, iou)
    return out


def predict_dataset(model_path: str | Path, ds, imgsz: int | None = None, batch: int = 8, device: str = "auto",
                    alignment: bool = False, progress=None,
                    loaded: tuple | None = None) -> tuple[list[dict], object, dict | None, list[int]]:
    """COCO predictions of a checkpoint over a dataset (whole images, letterboxed, the training-time
    thresholds of config.py) in the ground truth's ids (classes mapped by name), the class mapping, with
    ``alignment`` the task alignment from the same pass's model (it needs the same classes, in order), and the
    ids of the images that could not be read (reported as they are met; they get no predictions). ``loaded``:
    ``load_model(model_path)`` when the caller has it already."""
    import torch

    from fss_core.checkpoint import load_model
    from fss_train.alignment import task_alignment
    from fss_train.data.loader import DetectionDataset, make_loader
    from fss_train.evaluation import predict
    from fss_train.predictions import map_classes, remap

    model, ckpt = loaded or load_model(model_path)
    mapping = map_classes(ckpt["class_names"], ds, str(model_path))
    if alignment and ckpt["class_names"] != ds.classes:
        raise ValueError(f"{model_path}: alignment needs the dataset's classes in the model's order; the model has "
                         f"{ckpt['class_names']}, the dataset {ds.classes}")
    dev = torch.device(device)
    model = model.to(dev)
    loader = make_loader(DetectionDataset(ds, imgsz or ckpt["input_size"][0]), batch, shuffle=False, workers=0)
    settings = TrainConfig()
    done = iter(range(1, len(loader) + 1))
    unreadable: list[int] = []
    preds = predict(model, loader, dev, conf=settings.eval_conf, iou=settings.eval_iou, max_det=settings.max_det,
                    on_batch=(lambda: progress(next(done), len(loader))) if progress else None, unreadable=unreadable)
    if model.card.task == "obb":            # Task1 records: class indices into the dataset's classes, by name
        index = {name: ds.classes.index(name) for name in mapping.to_gt}
        preds = [{**p, "class": index[ckpt["class_names"][p["class"]]]} for p in preds
                 if ckpt["class_names"][p["class"]] in index]
    else:
        preds = remap(preds, ckpt["class_names"], mapping)
    return preds, mapping, task_alignment(model, loader, dev) if alignment else None, unreadable

"""The bundled demonstration model on real DOTA images (issue #18): how little a synthetic-only model finds.

    python benchmarks/default_model_dota.py     # -> docs/results/default_model_dota.json

Every labelled DOTA image of ../shared/data (both devkit folders), tiled at the model's 512 px with 102 px
overlap, conf 0.001; the model's 5 classes are mapped to DOTA's by name, the other DOTA classes count as
missed. DOTA devkit VOC07 mAP50 over the classes the model knows and over all 16, and COCO AP / AP50.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fss.detector import Detector  # noqa: E402
from fss_core.fileio import atomic_write  # noqa: E402
from fss_deploy.detect import DEFAULT_MODEL  # noqa: E402
from fss_train.data import read_dataset  # noqa: E402
from fss_train.metrics import coco_eval, coco_gt_from_dataset, dota_eval  # noqa: E402

SHARED = ROOT.parent / "shared/data"


def main() -> None:
    det = Detector(DEFAULT_MODEL, overlap=0.2, conf=0.001, device="cpu")
    rows = {}
    for folder in (SHARED / "dota_devkit_example", SHARED / "dota_devkit_yolo_demo/DOTA_demo"):
        ds = read_dataset(folder)
        preds = []
        for rec in ds.records:
            r = det(rec.path)[0]
            keep = [i for i, n in enumerate(r.names) if n in ds.classes]
            for i in keep:
                x1, y1, x2, y2 = (float(v) for v in r.boxes[i])
                preds.append({"image_id": rec.image_id, "category_id": ds.classes.index(r.names[i]) + 1,
                              "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(r.scores[i])})
        dota = dota_eval(ds, preds)
        known = [c for c in det.classes if c in dota["per_class"]]
        present = {ds.classes[int(c)] for rec in ds.records for c in rec.labels}
        coco = coco_eval(coco_gt_from_dataset(ds), preds, max_dets=max(100, len(preds)))
        rows[folder.name] = {"images": len(ds.records), "objects": sum(len(r.labels) for r in ds.records),
                             "mAP50_all_classes": dota["mAP50"],
                             "mAP50_model_classes_present": sum(dota["per_class"][c] for c in known if c in present)
                             / max(1, len([c for c in known if c in present])),
                             "per_class": {c: dota["per_class"][c] for c in sorted(present)},
                             "AP": coco["AP"], "AP50": coco["AP50"]}
        print(folder.name, json.dumps(rows[folder.name]), flush=True)
    atomic_write(ROOT / "docs/results/default_model_dota.json", json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

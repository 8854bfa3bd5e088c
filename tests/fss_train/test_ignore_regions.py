"""Ignore regions (issues #31, #35): objects whose difficult flag reaches ``ignore_from`` — the splitter's slivers
(2), DOTA's hard objects (1) — are assigned to nobody and their points leave every background loss."""

import math

import numpy as np
import torch

from fss_core.nn import make_points
from fss_train.assigners import build_assigner
from fss_train.data.loader import IGNORE_LABEL, DetectionDataset, collate
from fss_train.data.records import Dataset, ImageRecord
from fss_train.engine import ignore_regions
from fss_train.losses import criterion


def one_image_dataset(tmp_path) -> Dataset:
    import cv2

    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.full((128, 128, 3), 90, np.uint8))
    rec = ImageRecord(path=path, width=128, height=128, boxes=np.array([[10, 10, 40, 30], [60, 60, 100, 90]],
                                                                        np.float32),
                      labels=np.array([0, 1]), difficult=np.array([0, 2]), image_id=1)
    return Dataset(records=[rec], classes=["car", "ship"], source=str(tmp_path))


def test_flagged_objects_become_ignore_regions_only_when_asked(tmp_path):
    ds = one_image_dataset(tmp_path)
    _, _, labels, mask, _ = collate([DetectionDataset(ds, 128)[0]])
    assert labels.tolist() == [[0, 1]] and mask.tolist() == [[True, True]]
    _, boxes, labels, mask, _ = collate([DetectionDataset(ds, 128, ignore_from=2)[0]])
    assert labels.tolist() == [[0, IGNORE_LABEL]] and mask.tolist() == [[True, False]]
    assert boxes[0, 1].tolist() == [60, 60, 100, 90]                    # the region keeps its box


def test_points_inside_an_ignore_region_along_its_own_axes():
    points, _ = make_points(128, 128, (8, 16, 32))
    boxes = torch.tensor([[[64.0, 64, 60, 12, math.pi / 2], [20, 20, 10, 10, 0]]])      # a standing sliver
    labels = torch.tensor([[IGNORE_LABEL, 0]])
    inside = ignore_regions(boxes, labels, points)[0]
    hit = points[inside]
    assert len(hit) > 0 and (hit[:, 0] - 64).abs().max() < 6 and (hit[:, 1] - 64).abs().max() < 30
    assert ignore_regions(boxes, torch.tensor([[0, 1]]), points) is None


def test_ignored_points_leave_the_objectness_and_tal_class_losses():
    points, strides = make_points(64, 64, (8, 16, 32))
    A = len(points)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, A, 2, generator=g)
    obj = torch.randn(1, A, generator=g)
    pred = torch.cat((points - 6, points + 6), 1)[None]
    gt = torch.tensor([[[4.0, 4, 20, 20], [30, 30, 60, 60]]])
    labels = torch.tensor([[0, IGNORE_LABEL]])
    mask = labels >= 0
    for name in ("fss", "tal"):
        assigner = build_assigner(name)
        res = assigner(logits.sigmoid(), obj.sigmoid(), pred, points, strides, labels.clamp(min=0), gt, mask)
        plain = criterion(pred, obj, logits, res, assigner.loss_recipe)
        inside = ignore_regions(gt, labels, points)
        res.ignore_mask = res.ignore_mask | (inside & ~res.fg_mask)
        assert res.ignore_mask.sum() > 10
        ignored = criterion(pred, obj, logits, res, assigner.loss_recipe)
        assert ignored["obj"] < plain["obj"]
        if name == "tal":
            assert ignored["cls"] < plain["cls"]
        assert (res.gt_index != 1).all()                                # nobody is assigned to the region

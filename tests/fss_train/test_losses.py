"""losses.criterion by hand: the two recipes on a 1-image, 3-point batch whose values can be worked out."""

import pytest
import torch
import torch.nn.functional as F

from fss_train.assigners import build_assigner
from fss_train.assigners.base import empty_result
from fss_train.losses import criterion, iou_loss


def _batch():
    # 3 points, 2 classes; point 0 is a positive of class 1 with weight 2, the others are background
    res = empty_result(1, 3, 2, "cpu")
    res.fg_mask[0, 0] = True
    res.gt_index[0, 0] = 0
    res.target_labels[0, 0] = 1
    res.target_boxes[0, 0] = torch.tensor([0.0, 0.0, 10.0, 10.0])
    res.target_scores[0, 0] = torch.tensor([0.0, 0.8])
    res.weights[0, 0] = 2.0
    res.num_fg = 1
    pred_boxes = torch.tensor([[[0.0, 0.0, 10.0, 5.0], [0, 0, 1, 1], [0, 0, 1, 1]]])   # IoU 0.5 with the target
    obj = torch.tensor([[0.0, 1.0, -1.0]])
    cls = torch.tensor([[[0.5, -0.5], [0.0, 0.0], [0.0, 0.0]]])
    return pred_boxes, obj, cls, res


def test_iou_loss_kinds():
    a, b = torch.tensor([[0.0, 0, 10, 5]]), torch.tensor([[0.0, 0, 10, 10]])
    assert iou_loss(a, b).item() == pytest.approx(1 - 0.5 ** 2)
    assert iou_loss(a, b, "giou").item() == pytest.approx(0.5)          # enclosing box = union: GIoU = IoU
    with pytest.raises(ValueError, match="iou2"):
        iou_loss(a, b, "l1")


def test_yolox_recipe_by_hand():
    pred_boxes, obj, cls, res = _batch()
    out = criterion(pred_boxes, obj, cls, res, recipe="yolox", box_weight=5.0)
    bce_cls = (F.binary_cross_entropy_with_logits(torch.tensor([0.5, -0.5]), torch.tensor([0.0, 0.8]),
                                                  reduction="sum"))
    assert out["cls"].item() == pytest.approx(2.0 * bce_cls.item(), rel=1e-5)          # weight 2, one positive
    assert out["box"].item() == pytest.approx(2.0 * (1 - 0.25), rel=1e-5)
    obj_bce = sum(F.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(t)).item()
                  for x, t in ((0.0, 1.0), (1.0, 0.0), (-1.0, 0.0)))
    assert out["obj"].item() == pytest.approx(obj_bce, rel=1e-5)
    assert out["loss"].item() == pytest.approx(out["cls"].item() + 5 * out["box"].item() + out["obj"].item(),
                                               rel=1e-5)


def test_grey_zone_points_leave_the_objectness_loss():
    pred_boxes, obj, cls, res = _batch()
    res.ignore_mask[0, 1] = True
    out = criterion(pred_boxes, obj, cls, res)
    expected = sum(F.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(t)).item()
                   for x, t in ((0.0, 1.0), (-1.0, 0.0)))
    assert out["obj"].item() == pytest.approx(expected, rel=1e-5)


def test_tal_recipe_divides_by_the_target_sum_and_weights_boxes_by_it():
    pred_boxes, obj, cls, res = _batch()
    out = criterion(pred_boxes, obj, cls, res, recipe="tal")
    all_cls = F.binary_cross_entropy_with_logits(cls, res.target_scores, reduction="sum").item()
    assert out["cls"].item() == pytest.approx(all_cls / 1.0, rel=1e-5)       # target sum 0.8 -> clamped to 1
    assert out["box"].item() == pytest.approx(0.75 * 0.8 / 1.0, rel=1e-5)
    with pytest.raises(ValueError, match="recipe"):
        criterion(pred_boxes, obj, cls, res, recipe="focal")


def test_each_assigner_carries_its_loss_recipe():
    recipes = {n: build_assigner(n).loss_recipe for n in ("fss", "simota", "atss", "maxiou", "tal")}
    assert recipes == {"fss": "yolox", "simota": "yolox", "atss": "yolox", "maxiou": "yolox", "tal": "tal"}

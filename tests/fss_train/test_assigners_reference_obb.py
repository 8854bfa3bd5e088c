"""Our rotated TAL against Ultralytics 8.4.190's RotatedTaskAlignedAssigner (fixtures from
benchmarks/reference_obb_fixtures.py; what the reference does: benchmarks/reference_obb_fixtures.md).

Seeded rotated scenes (16 classes, 6–120 px long sides, 10 / 200 / 1,000 GTs per image at 640 and 1024 px,
GTs placed with widened edges through grid points): the same positive points (Jaccard ≥ 0.99), on the shared
positives the same GT (≥ 0.99), and the normalised targets within 1e-3.
"""

from pathlib import Path

import pytest
import torch

from fss_train.assigners import TALAssigner

FIXTURES = sorted((Path(__file__).resolve().parents[1] / "fixtures/assigners_obb").glob("*.pt"))


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_rotated_tal_matches_ultralytics(fixture):
    data = torch.load(fixture, weights_only=True)
    inp, expected = data["inputs"], data["expected"]["tal_obb"]
    ours = TALAssigner()(inp["cls_logits"].float().sigmoid(), None, inp["pred_boxes"], inp["points"],
                         inp["strides"], inp["gt_labels"], inp["gt_boxes"], inp["gt_mask"])
    a, e = ours.fg_mask, expected["fg_mask"]
    jaccard = float((a & e).sum()) / max(1, int((a | e).sum()))
    both = a & e
    same_gt = float((ours.gt_index[both] == expected["gt_index"][both]).float().mean())
    print(f"{fixture.stem}: {int(e.sum())} positives, Jaccard {jaccard:.5f}, same GT {same_gt:.5f}")
    assert int(e.sum()) > 50
    assert jaccard >= 0.99 and same_gt >= 0.99, (jaccard, same_gt)
    if torch.equal(a, e):
        assert torch.allclose(ours.target_scores[a], expected["target_scores_fg"], atol=1e-3)


def test_fixtures_exist():
    assert len(FIXTURES) == 3

"""Our SimOTA and TAL against the reference code's selections (fixtures from benchmarks/reference_fixtures.py).

Fixtures: seeded random scenes (16 classes, 6–120 px objects, 10 / 200 / 2,000 GTs per image at 640 and
1024 px), run through Ultralytics 8.4.190's TaskAlignedAssigner, YOLOX 0.3.0's get_assignments and
YOLOX main's (2023) get_assignments. We require the same positive points (Jaccard ≥ 0.99) and, on the
shared positives, the same matched GT (≥ 0.99).
"""

from pathlib import Path

import pytest
import torch

from fss_train.assigners import ATSSAssigner, SimOTAAssigner, TALAssigner

FIXTURES = sorted((Path(__file__).resolve().parents[1] / "fixtures/assigners").glob("*.pt"))
OURS = {"tal": TALAssigner(), "simota": SimOTAAssigner(), "atss": ATSSAssigner(),
        "simota_centre": SimOTAAssigner(region="centre", center_radius=1.5, penalty=1e6)}


def agreement(ours, expected) -> tuple[float, float]:
    a, e = ours.fg_mask, expected["fg_mask"]
    jaccard = float((a & e).sum()) / max(1, int((a | e).sum()))
    both = a & e
    same_gt = float((ours.gt_index[both] == expected["gt_index"][both]).float().mean()) if both.any() else 1.0
    return jaccard, same_gt


def run(name: str, inputs: dict):
    scores = inputs["cls_logits"].float().sigmoid()
    obj = inputs["obj_logits"].float().sigmoid() if name.startswith("simota") else None
    return OURS[name](scores, obj, inputs["pred_boxes"], inputs["points"], inputs["strides"], inputs["gt_labels"],
                      inputs["gt_boxes"], inputs["gt_mask"])


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
@pytest.mark.parametrize("name", sorted(OURS))
def test_matches_reference(fixture, name):
    data = torch.load(fixture, weights_only=True)
    if name not in data["expected"]:
        pytest.skip(f"{fixture.name} has no {name} reference")
    jaccard, same_gt = agreement(run(name, data["inputs"]), data["expected"][name])
    print(f"{fixture.stem} {name}: Jaccard {jaccard:.5f}, same GT {same_gt:.5f}")
    assert jaccard >= 0.99 and same_gt >= 0.99, (jaccard, same_gt)


def test_fixtures_exist():
    assert len(FIXTURES) == 3

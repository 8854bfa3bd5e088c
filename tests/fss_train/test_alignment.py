import json

import torch
from typer.testing import CliRunner

from fss.cli import app
from fss_core.checkpoint import make_checkpoint, save_checkpoint
from fss_core.nn import build_model, load_card
from fss_train.alignment import candidates, per_gt
from fss_train.data import read_dataset
from fss_train.data.synth import SynthConfig, synthesize

runner = CliRunner()


def test_per_gt_by_hand():
    iou = torch.tensor([[0.1, 0.5, 0.3, 0.9, 0.0],       # score ranks as IoU
                        [0.1, 0.5, 0.3, 0.9, 0.0],       # score ranks reversed
                        [0.2, 0.4, 0.6, 0.8, 0.1]])      # only 2 candidates: dropped
    score = torch.tensor([[0.2, 0.6, 0.4, 0.7, 0.1],
                          [0.8, 0.3, 0.5, 0.1, 0.9],
                          [0.9, 0.1, 0.2, 0.3, 0.4]])
    cand = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    out = per_gt(score, iou, cand)
    assert out["spearman"].tolist() == [1.0, -1.0]
    assert out["agree"].tolist() == [1.0, 0.0]
    # second GT: highest score 0.8 is the candidate with IoU 0.1 (candidate 5 is excluded)
    assert torch.allclose(out["top1_iou"], torch.tensor([0.9, 0.1], dtype=torch.float64))
    assert torch.allclose(out["best_iou"], torch.tensor([0.9, 0.9], dtype=torch.float64))


def test_candidates_inside_box_or_near_centre():
    points = torch.tensor([[4.0, 4.0], [36.0, 4.0], [60.0, 60.0], [100.0, 100.0], [48.0, 48.0]])
    strides = torch.tensor([8.0, 8.0, 8.0, 8.0, 32.0])
    gt = torch.tensor([[0.0, 0.0, 70.0, 70.0],           # big: every point inside it but (100, 100)
                       [30.0, 0.0, 40.0, 8.0]])          # centre (35, 4): 2.5 strides = 20 px at P3, 80 at P5
    c = candidates(gt, points, strides, radius=2.5)
    assert c.tolist() == [[True, True, True, False, True], [False, True, False, False, True]]


def _untrained(tmp_path, classes):
    model = build_model(load_card("fss-n").with_classes(len(classes)))
    return save_checkpoint(make_checkpoint(model, classes, input_size=(256, 256)), tmp_path / "m.pt")


def test_eval_alignment_cli(tmp_path):
    synthesize(tmp_path / "d", SynthConfig(num_images=2, size=256, objects=8, min_size=10, max_size=30, seed=3))
    ds = read_dataset(str(tmp_path / "d"))
    ckpt = _untrained(tmp_path, ds.classes)
    result = runner.invoke(app, ["eval", str(ckpt), "--data", str(tmp_path / "d"), "--alignment", "--json",
                                 str(tmp_path / "m.json"), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert "top-1 agreement" in result.output
    a = json.loads((tmp_path / "m.json").read_text())["alignment"]
    assert a["num_gt"] == sum(len(r.boxes) for r in ds.records) > 0
    assert -1 <= a["rank_consistency"] <= 1 and 0 <= a["top1_agreement"] <= 1
    assert 0 <= a["top1_iou"] <= a["best_iou"] <= 1

    result = runner.invoke(app, ["eval", "--predictions", str(tmp_path / "m.json"), "--data", str(tmp_path / "d"),
                                 "--alignment"])
    assert result.exit_code == 1 and "alignment needs a model checkpoint" in result.output


def test_training_rank_consistency_shares_the_spearman():
    from fss_train.engine import rank_consistency

    scores = torch.tensor([0.1, 0.2, 0.3, 0.9, 0.8, 0.7, 0.5, 0.5])
    ious = torch.tensor([0.2, 0.4, 0.6, 0.1, 0.2, 0.3, 0.4, 0.9])
    seg = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])          # GT 2 has 2 positives: not counted
    total, count = rank_consistency(scores, ious, seg)
    assert count == 2 and abs(total - 0.0) < 1e-6        # +1 (GT 0) and -1 (GT 1)

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import ablation  # noqa: E402


def _fake_run(folder: Path, epochs: int, ap: float, rc: float):
    folder.mkdir(parents=True)
    rows = [{"epoch": e + 1, "AP": ap, "AP50": ap + 0.2, "AP75": ap - 0.05, "APs": ap - 0.1, "seconds": 10.0 + e,
             "pos_per_gt": 3.0, "rank_consistency": rc * (e + 1) / epochs} for e in range(epochs)]
    (folder / "results.json").write_text(json.dumps(rows))


def test_report_aggregates_seeds_and_marks_missing_runs(tmp_path):
    b = ablation.Budget(train=8, val=4, size=128, objects=10, epochs=2, batch=4, seeds=(0, 1))
    out = tmp_path / "study"
    _fake_run(out / "runs/main-fss-s0", 2, 0.30, 0.5)
    _fake_run(out / "runs/main-fss-s1", 2, 0.20, 0.4)
    _fake_run(out / "runs/main-maxiou-s0", 2, 0.10, 0.1)
    _fake_run(out / "runs/t3-fss-gamma0-s0", 1, 0.25, 0.3)      # incomplete: 1 of 2 epochs
    report = tmp_path / "ablation.md"
    ablation.write_report(report, out, b, "smoke")
    text = report.read_text()
    assert "| fss | 2 | 0.2500 ± 0.0707 |" in text
    assert "| simota | 0 |" in text
    assert "| Max-IoU | 0.1000 |" in text and "| + suboptimal selection (FSS, γ = 0) | not run yet |" in text
    assert (tmp_path / "ablation_rank_consistency.png").is_file()


@pytest.mark.slow
def test_smoke_budget_end_to_end(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/ablation.py"), "--budget", "smoke", "--only",
                          "main,table3", "--out", str(tmp_path), "--report", str(tmp_path / "r.md")], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| fss | 1 |" in (tmp_path / "r.md").read_text()


def test_report_keeps_hand_written_notes_and_lists_every_run(tmp_path):
    b = ablation.Budget(train=8, val=4, size=128, objects=10, epochs=2, batch=4, seeds=(0,))
    out = tmp_path / "study"
    _fake_run(out / "runs/main-fss-s0", 2, 0.30, 0.5)
    _fake_run(out / "runs/sens-rho=0.5-s0", 1, 0.25, 0.3)       # incomplete
    (out / "runs/main-fss-s0/ablation_meta.json").write_text(json.dumps({"load5_at_end": 2.4, "cores": 2}))
    (out / "runs/main-fss-s0/alignment.json").write_text(json.dumps({"alignment": {
        "rank_consistency": 0.45, "top1_agreement": 0.18, "top1_iou": 0.43, "best_iou": 0.6, "num_gt": 10}}))
    report = tmp_path / "ablation.md"
    ablation.write_report(report, out, b, "smoke")
    report.write_text(report.read_text() + "\nFSS loses here because of the prior.\n")
    _fake_run(out / "runs/main-tal-s0", 2, 0.40, 0.6)
    ablation.write_report(report, out, b, "smoke")
    text = report.read_text()
    assert text.count("FSS loses here because of the prior.") == 1
    assert "| tal | 1 | 0.4000 |" in text
    assert "| main-fss-s0 | 2/2 | 0.3000 |" in text and text.split("| main-fss-s0 |")[1].split("\n")[0].endswith(
        "| 2.4 |")
    assert "| fss | 3.0000 | 0.5000 | 0.4500 | 0.1800 | 0.4300 |" in text      # alignment of the final model
    assert "| tal | 3.0000 | 0.6000 | n/a | n/a | n/a |" in text                   # none measured
    assert "| sens-rho=0.5-s0 | 1/2 |" in text and "| rho | 0.5 | not run yet |" in text

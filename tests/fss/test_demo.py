import json

import cv2
from typer.testing import CliRunner

from fss.cli import app

runner = CliRunner()


def test_quick_demo_writes_every_report_file(tmp_path):
    out = tmp_path / "demo"
    r = runner.invoke(app, ["demo", "--quick", "--out", str(out)])
    assert r.exit_code == 0, r.output
    for name in ("report.md", "results.json", "scene_fss.jpg", "scene_simota.jpg", "assignment_fss_vs_simota.png",
                 "training_curves.png", "fss.onnx", "simota.onnx", "bench/report.md", "train_fss/last.pt",
                 "train_simota/results.csv"):
        assert (out / name).is_file(), name
    for png in ("assignment_fss_vs_simota.png", "training_curves.png", "scene_fss.jpg"):
        assert cv2.imread(str(out / png)) is not None, png
    results = json.loads((out / "results.json").read_text())
    assert results["compare"]["identical"] and results["bench"]["identical_graph"]
    assert set(results["train"]) == {"fss", "simota"} and set(results["detect"]) == {"fss", "simota"}
    dm = results["default_model"]          # the bundled model on its 4000 x 4000 sample scene (README figures)
    assert dm["objects"] == 1500 and dm["AP50"] > 0.5, dm
    report = (out / "report.md").read_text()
    assert "IDENTICAL" in report and "| fss |" in report and "| simota |" in report


def test_demo_failure_names_the_stage(tmp_path, monkeypatch):
    import fss_train.data.synth as synth

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(synth, "synthesize", broken)
    r = runner.invoke(app, ["demo", "--quick", "--out", str(tmp_path / "d")])
    assert r.exit_code == 1
    assert "stage 'synthetic aerial data' failed: OSError: disk full" in r.output

"""Reports carry the expected fields; no test asserts an absolute time."""

import json

import cv2
import pytest
import torch
from typer.testing import CliRunner

from fss.cli import app
from fss_core.checkpoint import make_checkpoint, save_checkpoint
from fss_core.nn import build_model, load_card
from fss_deploy.bench import bootstrap_ratio, summarize
from fss_deploy.export import export_onnx

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    (root / "pico.yaml").write_text("name: pico\nbackbone: cspdarknet\ndepth: 0.33\nwidth: 0.125\n")
    paths = []
    for seed, assigner in ((0, "fss"), (1, "simota")):
        torch.manual_seed(seed)
        model = build_model(load_card(str(root / "pico.yaml")).with_classes(3))
        paths.append(save_checkpoint(make_checkpoint(model, ["a", "b", "c"], assigner={"name": assigner,
                                     "params": {}}, input_size=(128, 128)), root / f"{assigner}.pt"))
    onnx_path = export_onnx(paths[0], root / "fss.onnx").path
    return root, paths, onnx_path


def test_latency_report_fields(tiny, tmp_path):
    _, (ckpt, _), onnx_path = tiny
    for model in (ckpt, onnx_path):
        out = tmp_path / model.suffix[1:]
        r = runner.invoke(app, ["bench", str(model), "--warmup", "2", "--iters", "10", "--out", str(out)])
        assert r.exit_code == 0, r.output
        report = json.loads((out / "report.json").read_text())
        for stage in ("preprocess", "inference", "postprocess", "total"):
            assert set(report["stages"][stage]) >= {"median_ms", "p90_ms", "p99_ms", "mean_ms"}
            assert report["stages"][stage]["n"] == 10
        env = report["environment"]
        assert {"cpu", "threads", "torch", "onnxruntime", "precision", "tf32", "backend"} <= set(env)
        assert env["precision"] == "fp32" and env["tf32"] is False and report["input"] == "1x3x128x128"
        assert report["fps"] > 0 and len(report["samples_ms"]) == 10
        assert "| inference |" in (out / "report.md").read_text()
        assert cv2.imread(str(out / "latency.png")) is not None


def test_overhead_report_identical_and_self_ratio(tiny, tmp_path):
    _, (a, b), onnx_path = tiny
    r = runner.invoke(app, ["bench", "overhead", str(a), str(b), "--warmup", "5", "--iters", "20", "--out",
                            str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "o/report.json").read_text())
    assert report["identical_graph"]
    assert report["a"]["trained_with"] == "fss" and report["b"]["trained_with"] == "simota"
    assert "IDENTICAL GRAPH" in (tmp_path / "o/report.md").read_text()
    # a model against itself: the report's ratio is the ratio of its two medians, inside its interval (how near 1
    # it lands is a timing, which depends on the machine's load: a benchmark, not a pass/fail test)
    r = runner.invoke(app, ["bench", "overhead", str(onnx_path), str(onnx_path), "--warmup", "2", "--iters", "20",
                            "--out", str(tmp_path / "self")])
    assert r.exit_code == 0, r.output
    self_report = json.loads((tmp_path / "self/report.json").read_text())
    medians = self_report["latency_a"]["median_ms"] / self_report["latency_b"]["median_ms"]
    assert self_report["ratio_a_over_b"] == pytest.approx(medians, rel=1e-9)
    lo, hi = self_report["ratio_ci95"]
    assert 0 < lo <= self_report["ratio_a_over_b"] <= hi


def test_overhead_of_different_cards_exits_nonzero(tiny, tmp_path):
    root, (a, _), _ = tiny
    torch.manual_seed(0)
    other = save_checkpoint(make_checkpoint(build_model(load_card("fss-n").with_classes(3)), ["a", "b", "c"],
                                            input_size=(128, 128)), root / "n.pt")
    r = runner.invoke(app, ["bench", "overhead", str(a), str(other), "--warmup", "1", "--iters", "4", "--out",
                            str(tmp_path / "d")])
    assert r.exit_code == 1 and "DIFFERENT" in r.output


def test_tiled_report(tiny, tmp_path):
    _, _, onnx_path = tiny
    img = tmp_path / "big.png"
    cv2.imwrite(str(img), (torch.rand(300, 420, 3) * 255).byte().numpy())
    r = runner.invoke(app, ["bench", "tiled", str(img), "--model", str(onnx_path), "--overlap", "32",
                            "--out", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "t/report.json").read_text())
    assert report["tiles"] > 1 and report["tiles_per_s"] > 0 and "outside_model_fraction" in report


def test_statistics_helpers():
    s = summarize([0.001, 0.002, 0.003, 0.004])
    assert s["median_ms"] == pytest.approx(2.5) and s["n"] == 4
    ratio, lo, hi = bootstrap_ratio([1.0] * 50, [2.0] * 50)
    assert ratio == lo == hi == 0.5


def test_progress_callbacks_of_bench_and_verify(tiny, tmp_path):
    """What the CLI's bars follow: one call per run (warm-up included), per A/B pair, per verified image."""
    import fss

    _, (ckpt, other), _ = tiny
    calls = []
    fss.benchmark(ckpt, warmup=2, iters=3, device="cpu", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 5) for i in range(1, 6)]
    calls.clear()
    fss.benchmark_overhead(ckpt, other, warmup=1, iters=2, device="cpu", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    calls.clear()
    fss.export(ckpt, out=tmp_path / "v.onnx", verify=True, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (1, 1)


def test_reports_never_replace_another_silently(tiny, tmp_path, monkeypatch):
    """The default runs/bench moves on to runs/bench2; a named --out holding a report is written into only with
    --exist-ok, and then nothing of the earlier report survives (an overhead report beside a stale latency.png)."""
    _, (a, b), _ = tiny
    monkeypatch.chdir(tmp_path)
    quick = ["--warmup", "1", "--iters", "4"]
    for _ in range(2):
        assert runner.invoke(app, ["bench", str(a), *quick]).exit_code == 0
    assert (tmp_path / "runs/bench/latency.png").is_file() and (tmp_path / "runs/bench2/latency.png").is_file()
    out = tmp_path / "runs/bench"
    before = (out / "report.json").read_bytes()
    r = runner.invoke(app, ["bench", "overhead", str(a), str(b), *quick, "--out", str(out)])
    assert r.exit_code == 1 and "holds files" in r.output and "--exist-ok" in r.output
    assert (out / "report.json").read_bytes() == before
    r = runner.invoke(app, ["bench", "overhead", str(a), str(b), *quick, "--out", str(out), "--exist-ok"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]
    assert "identical_graph" in json.loads((out / "report.json").read_text())

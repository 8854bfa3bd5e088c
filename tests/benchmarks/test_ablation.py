import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import ablation  # noqa: E402

B = ablation.Budget(train=8, val=4, size=128, objects=10, epochs=2, batch=4, seeds=(0, 1))


def _summary(store: Path, name: str, ap: float, rc: float = 0.5, epochs: int = 2, alignment=None, params=None):
    variant = name.rsplit("-s", 1)[0].split("-", 1)[1]
    assigner, overrides = ablation.VARIANTS.get(variant, ("fss", {}))
    rows = [{"epoch": e + 1, "AP": ap, "AP50": 2 * ap, "AP75": ap - 0.05, "APs": ap - 0.1, "seconds": 10.0 + e,
             "pos_per_gt": 3.0, "rank_consistency": rc * (e + 1) / epochs} for e in range(epochs)]
    ablation.write_json_atomic(store / f"{name}.json", {
        "config": {"assigner": assigner, "params": params or overrides}, "rows": rows, "alignment": alignment,
        "assigner_params": {"rho": 0.5} if assigner == "fss" else {"topk": 10},
        "meta": {"commit": "abc1234", "device": "test CPU", "cores": 2, "load5_at_end": 2.4, "wall_s": 600.0,
                 "finished": "2026-11-26 12:00"}})


def test_report_pairs_by_seed_and_prints_parameters(tmp_path):
    store = tmp_path / "store"
    _summary(store, "main-fss-s0", 0.30)
    _summary(store, "main-fss-s1", 0.20)
    _summary(store, "main-tal-s0", 0.40, alignment={"rank_consistency": 0.45, "top1_agreement": 0.18,
                                                    "top1_iou": 0.43})
    _summary(store, "dota-simota-s0", 0.05)
    report = tmp_path / "ablation.md"
    ablation.write_report(report, store, B, "smoke")
    text = report.read_text()
    assert "| fss | 2 | 0.2500 ± 0.0707 |" in text
    assert "| 0.1000 (+0.1000) | 0.2000 (+0.2000) |" in text      # tal − fss, AP and AP50, on seed 0 only
    assert "| simota | 0 |" in text.split("## DOTA")[0]
    assert "| tal | 3.0000 | 0.5000 | 0.4500 | 0.1800 | 0.4300 |" in text
    assert '- `fss`: {"rho": 0.5}' in text and '- `tal`: {"topk": 10}' in text
    assert "| main-tal-s0 | 2 | 0.4000 |" in text and "| abc1234 | test CPU |" in text
    assert (tmp_path / "ablation_rank_consistency.png").is_file()


def test_report_keeps_hand_written_notes(tmp_path):
    store = tmp_path / "store"
    _summary(store, "main-fss-s0", 0.30)
    report = tmp_path / "ablation.md"
    ablation.write_report(report, store, B, "smoke")
    report.write_text(report.read_text() + "\nFSS loses here because of the prior.\n")
    _summary(store, "main-tal-s0", 0.40)
    ablation.write_report(report, store, B, "smoke")
    text = report.read_text()
    assert text.count("FSS loses here because of the prior.") == 1 and "| tal | 1 | 0.4000 |" in text


def test_stored_summary_is_reused_only_for_the_same_configuration(tmp_path):
    spec = ablation.Spec("main-fss-s0", "synthetic", "fss", "fss", {}, 0, 2)
    cfg = spec.config(B, "smoke")
    ablation.write_json_atomic(tmp_path / "main-fss-s0.json", {"config": cfg, "rows": []})
    assert ablation.load_summary(tmp_path, spec, cfg) is not None
    other = ablation.Spec("main-fss-s0", "synthetic", "fss", "fss", {"rho": 0.25}, 0, 2)
    assert ablation.load_summary(tmp_path, other, other.config(B, "smoke")) is None
    longer = ablation.Spec("main-fss-s0", "synthetic", "fss", "fss", {}, 0, 3)
    assert ablation.load_summary(tmp_path, longer, longer.config(B, "smoke")) is None


def test_plan_is_seed_major_with_fss_first():
    specs = ablation.plan(ablation.BUDGETS["decide"], Path("/nonexistent"), {"main"}, {"synthetic", "dota"})
    names = [s.name for s in specs]
    assert names[:2] == ["main-fss-s0", "main-fss-rho0.25-s0"]
    assert names.index("dotaft-tal-s0") < names.index("main-fss-s1")
    assert len(names) == 2 * 6 * 3
    dota = next(s for s in specs if s.name == "dotaft-fss-s0")
    assert dota.init == "models/fss-n-aerial.pt:backbone+neck" and dota.config(B, "x")["init"] == dota.init
    assert "init" not in specs[0].config(B, "x")              # the synthetic arm's stored configs stay valid
    assert next(s for s in specs if s.name == "main-fss-rho0.25-s0").params == {"rho": 0.25}
    picked = [s.name for s in ablation.select(specs, "dotaft-*-s0,main-*-s1,dotaft-*")]
    assert picked[:6] == [f"dotaft-{v}-s0" for v in ablation.ORDER]                 # the patterns' order first
    assert picked[6:12] == [f"main-{v}-s1" for v in ablation.ORDER]
    assert picked[12:] == [f"dotaft-{v}-s{k}" for k in (1, 2) for v in ablation.ORDER]   # plan order within


@pytest.mark.slow
def test_smoke_budget_end_to_end_two_at_once(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/ablation.py"), "--budget", "smoke", "--datasets",
                          "synthetic", "--parallel", "2", "--out", str(tmp_path), "--store", str(tmp_path / "store"),
                          "--report", str(tmp_path / "r.md")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| fss | 1 |" in (tmp_path / "r.md").read_text()
    assert len(list((tmp_path / "store").glob("main-*.json"))) == 6


class _FakeRunner:
    """Runner stand-in for the scheduler: each 'training' is a short sleep in a real child process."""

    def __init__(self, store, seconds=0.3):
        self.store, self.b, self.budget_name, self.seconds = store, B, "smoke", seconds
        self.started, self.finished, self.live, self.peak = [], [], 0, 0

    def start(self, spec):
        self.started.append(spec.name)
        self.live += 1
        self.peak = max(self.peak, self.live)
        return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({self.seconds})"])

    def trained(self, spec, returncode):
        self.live -= 1
        self.returncodes = getattr(self, "returncodes", {}) | {spec.name: returncode}
        return None if returncode == 0 else False

    def finish(self, spec, wall_s):
        self.finished.append((spec.name, self.returncodes[spec.name]))


def test_scheduler_runs_several_at_once_and_respects_the_deadline(tmp_path):
    specs = [ablation.Spec(f"main-fss-s{i}", "synthetic", "fss", "fss", {}, i, 2) for i in range(5)]
    runner = _FakeRunner(tmp_path)
    ablation.execute(specs, runner, parallel=2, deadline=float("inf"), on_done=lambda: None)
    assert runner.peak == 2 and sorted(n for n, _ in runner.finished) == sorted(s.name for s in specs)
    late = _FakeRunner(tmp_path)
    ablation.execute(specs, late, parallel=2, deadline=0.0, on_done=lambda: None)
    assert late.started == []                                    # nothing starts after the deadline
    done = tmp_path / "main-fss-s0.json"                         # a stored run with the same config is skipped
    ablation.write_json_atomic(done, {"config": specs[0].config(B, "smoke")})
    again = _FakeRunner(tmp_path)
    ablation.execute(specs, again, parallel=3, deadline=float("inf"), on_done=lambda: None)
    assert "main-fss-s0" not in again.started and len(again.started) == 4


def test_scheduler_launches_nothing_that_cannot_finish_before_the_deadline(tmp_path):
    """Once a run of a dataset has taken T seconds, no run of that dataset starts with less than 1.1 T left;
    a run still going at the deadline is stopped and not stored."""
    specs = [ablation.Spec(f"main-fss-s{i}", "synthetic", "fss", "fss", {}, i, 2) for i in range(3)]
    runner = _FakeRunner(tmp_path, seconds=1.5)
    ablation.execute(specs, runner, parallel=1, deadline=3.0, on_done=lambda: None)
    assert runner.started == ["main-fss-s0"] and [n for n, _ in runner.finished] == ["main-fss-s0"]
    slow = _FakeRunner(tmp_path / "slow", seconds=30)
    t0 = time.monotonic()
    ablation.execute(specs[:1], slow, parallel=1, deadline=1.0, on_done=lambda: None)
    assert time.monotonic() - t0 < 10 and slow.finished == []     # stopped at the deadline, nothing stored


def test_robustness_section_averages_the_last_two_evaluations(tmp_path):
    store = tmp_path / "store"
    for seed, (ap, peak) in enumerate([(0.30, 0.40), (0.31, 0.42)]):
        _summary(store, f"main-fss-s{seed}", ap)
        _summary(store, f"main-tal-s{seed}", ap)        # TAL equal to FSS at the last epoch …
        run = json.loads((store / f"main-tal-s{seed}.json").read_text())
        run["rows"][0]["AP"] = peak                      # … after peaking one evaluation before it
        ablation.write_json_atomic(store / f"main-tal-s{seed}.json", run)
    assert ablation.late(json.loads((store / "main-tal-s0.json").read_text()))["AP"] == pytest.approx(0.35)
    report = tmp_path / "ablation.md"
    ablation.write_report(report, store, B, "smoke")
    main, _, robust = report.read_text().partition("## Robustness")
    tal_main = next(x for x in main.splitlines() if x.startswith("- tal − fss"))
    tal_late = next(x for x in robust.splitlines() if x.startswith("- tal − fss"))
    assert "AP +0.0000" in tal_main and "not separated" in tal_main
    assert "AP +0.0525, 95 % interval +0.0207 … +0.0843 (2 seeds): above FSS" in tal_late
    assert "| tal | 2 | 0.3575 ± 0.0106 |" in robust


def test_table3_runs_every_seed_and_pairs_each_step_with_the_one_before(tmp_path):
    names = [s.name for s in ablation.plan(B, tmp_path, {"table3"}, {"synthetic"})]
    assert names == ["t3-fss-gamma0-s0", "t3-fss-gamma0-s1"]
    store = tmp_path / "store"
    for seed, (maxiou, gamma0, fss) in enumerate([(0.20, 0.30, 0.31), (0.22, 0.33, 0.33)]):
        _summary(store, f"main-maxiou-s{seed}", maxiou)
        _summary(store, f"t3-fss-gamma0-s{seed}", gamma0)
        _summary(store, f"main-fss-s{seed}", fss)
    report = tmp_path / "ablation.md"
    ablation.write_report(report, store, B, "smoke")
    t3 = report.read_text().partition("## Table 3 shape")[2].partition("\n## ")[0]
    assert "| + suboptimal selection (FSS, γ = 0) | 2 | 0.3150 ± 0.0212 |" in t3
    assert "- suboptimal selection (FSS, γ = 0) − the step before, paired by seed: AP +0.1050" in t3
    assert "above the step before; AP50" in t3
    assert "- transformation (full FSS, γ = 1) − the step before, paired by seed: AP +0.0050" in t3
    assert "not separated from the step before" in t3


def test_verdict_says_separated_only_when_the_interval_excludes_zero():
    assert ablation.verdict([]) == "no paired run yet"
    assert "1 seed: no interval" in ablation.verdict([0.05])
    # mean +0.02, sample std 0.001, 3 seeds: half-width 4.303 · 0.001 / √3 = 0.0025
    assert ablation.verdict([0.019, 0.020, 0.021]).endswith("+0.0175 … +0.0225 (3 seeds): above FSS")
    assert ablation.verdict([-0.03, -0.02, -0.025]).endswith("below FSS")
    assert ablation.verdict([0.03, -0.01, 0.01]).endswith("not separated from FSS")


def test_level_study_pairs_the_revision_with_fss_and_atss_on_both_arms(tmp_path):
    names = [s.name for s in ablation.plan(B, tmp_path, {"level"}, {"synthetic", "dota_vehicles"})]
    assert names == ["lvl-fss-s0", "lvlref-fss-s0", "lvldota-fss-s0", "lvl-fss-s1", "lvlref-fss-s1",
                     "lvldota-fss-s1"]
    spec = ablation.plan(B, tmp_path, {"level"}, {"dota_vehicles"})[0]
    assert spec.params == {"prior_level": "star"} and spec.settings == ablation.PROTOCOL
    store = tmp_path / "store"
    for seed, (lvl, fss, atss) in enumerate([(0.30, 0.31, 0.35), (0.33, 0.33, 0.36)]):
        _summary(store, f"lvl-fss-s{seed}", lvl)
        _summary(store, f"main-fss-s{seed}", fss)
        _summary(store, f"main-atss-s{seed}", atss)
        _summary(store, f"lvldota-fss-s{seed}", lvl / 3, epochs=6)
        _summary(store, f"dotaprot-fss-s{seed}", fss / 3, epochs=6)
        _summary(store, f"dotaprot-atss-s{seed}", atss / 3, epochs=6)
    _summary(store, "lvlref-fss-s0", 0.305)
    report = tmp_path / "ablation.md"
    ablation.write_report(report, store, B, "smoke")
    sec = report.read_text().partition("## FSS with the prior on i*'s own level")[2].partition("\n## ")[0]
    assert "- synthetic: level − FSS: AP -0.0050" in sec and "- synthetic: level − ATSS: AP -0.0400" in sec
    assert "- DOTA, corrected protocol: level − FSS: AP -0.0017" in sec
    assert "code drift: main-fss-s0 retrained at abc1234: AP 0.3050 against the committed 0.3100" in sec
    assert "- synthetic: level − FSS at the same commit: AP -0.0050 (1 seed" in sec

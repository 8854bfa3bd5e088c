"""The assignment study's oriented arm (issue #31): FSS and the four baselines training oriented detectors.

    python benchmarks/obb_study.py                         # CPU, run by run, resumable (~15–20 min a run here)
    python benchmarks/obb_study.py --runs 'obb-*-s0'       # one seed of every assigner first
    python benchmarks/obb_study.py --only loss             # the box-loss choice: FSS with probiou, KLD, exact IoU
    python benchmarks/obb_study.py --device cuda --parallel 10 --deadline 480    # one GPU lease
    python benchmarks/obb_study.py --report-only

The same synthetic scenes as the horizontal study's ``decide`` budget (``benchmarks/ablation.py``: 600 train /
180 validation images of 384 px, ~60 objects of 6–40 px, occlusion ≤ 0.4, 24 epochs, fss-n, batch 16, lr 0.08
per 64 images, seeds 0–2), read as oriented boxes: each object's drawn rectangle (its DOTA polygon). Every
assigner on rotated geometry (``fss_train/assigners/geometry.py``), its own loss recipe, the rotated box loss
``probiou`` unless the run says otherwise; ``rot90`` 0.5 augments. Metrics of the EMA model on the validation
images at the last epoch: DOTA Task1 mAP50 (VOC07, the devkit's rules) and the COCO-style rotated mAP .50:.95
(``fss_train/obb_metrics.py``). Runs of one seed share initial weights, data order and augmentation: differences
are paired by seed (Student's t over the seeds).

Runs and the store work as in the horizontal study (one summary file per finished run in
``docs/results/obb_study/``, skipped when its configuration is unchanged, an interrupted run resumes); the report
is ``docs/results/obb_study.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from ablation import (  # noqa: E402
    BUDGETS,
    NOTES_MARK,
    Runner,
    Spec,
    ensure_data,
    execute,
    final,
    load_store,
    mean_std,
    select,
    verdict,
)

from fss_core.fileio import atomic_write  # noqa: E402

BUDGET = "decide"
ORDER = ["fss", "maxiou", "atss", "simota", "tal"]
LOSSES = ["probiou", "kld", "riou"]
COMMON = ("task=obb", "rot90=0.5")


def plan(seeds: tuple[int, ...], studies: set[str], epochs: int) -> list[Spec]:
    """Seed-major: every assigner of seed 0 first, then the loss arm's runs of that seed."""
    specs = []
    for seed in seeds:
        if "main" in studies:
            specs += [Spec(f"obb-{v}-s{seed}", "synthetic", v, v, {}, seed, epochs, settings=COMMON) for v in ORDER]
        if "loss" in studies:                 # probiou is the main arm's FSS run itself
            specs += [Spec(f"obbloss-{loss}-s{seed}", "synthetic", f"fss-{loss}", "fss", {}, seed, epochs,
                           settings=(*COMMON, f"rbox_loss={loss}")) for loss in LOSSES[1:]]
    return specs


def oriented_final(s: dict) -> dict:
    last = s["rows"][-1]
    return {**final(s), "task1": last.get("mAP50_dota")}


def _paired(runs: dict, name: str, ref: str, seeds, key: str) -> list[float]:
    out = []
    for seed in seeds:
        a, f = runs.get(f"{name}-s{seed}"), runs.get(f"{ref}-s{seed}")
        if a and f and oriented_final(a)[key] is not None and oriented_final(f)[key] is not None:
            out.append(oriented_final(a)[key] - oriented_final(f)[key])
    return out


def write_report(path: Path, store: Path, seeds: tuple[int, ...]) -> None:
    runs = load_store(store)
    machines = sorted({r["meta"]["device"] for r in runs.values()}) or ["(no run finished yet)"]
    lines = ["# Oriented boxes: the assignment study's synthetic arm", "",
             f"Machines: {'; '.join(machines)}. What runs and how it is measured: `benchmarks/obb_study.py` "
             "(its docstring). Task1 = DOTA Task1 mAP50 (VOC07); rotated AP = COCO-style mAP .50:.95 on polygon "
             "IoU; both of the EMA model at the last epoch.", "", f"Finished runs: {len(runs)}.", "",
             "## Every assigner (box loss probiou; mean ± sample std over seeds)", "",
             "| assigner | runs | Task1 mAP50 | rotated AP | rotated AP50 | pos/GT | s / epoch |",
             "|---|---|---|---|---|---|---|"]
    for v in ORDER:
        fin = [oriented_final(runs[f"obb-{v}-s{s}"]) for s in seeds if f"obb-{v}-s{s}" in runs]
        lines.append(f"| {v} | {len(fin)} | " + " | ".join(mean_std([f[k] for f in fin]) for k in
                     ("task1", "AP", "AP50", "pos_per_gt", "sec_per_epoch")) + " |")
    lines += ["", "Each assigner against FSS, paired by seed (an interval that holds 0 decides nothing):", ""]
    for v in ORDER[1:]:
        lines.append(f"- {v} − fss: Task1 {verdict(_paired(runs, f'obb-{v}', 'obb-fss', seeds, 'task1'))}; "
                     f"rotated AP {verdict(_paired(runs, f'obb-{v}', 'obb-fss', seeds, 'AP'))}")
    lines += ["", "## The box loss (FSS)", "", "| loss | runs | Task1 mAP50 | rotated AP |", "|---|---|---|---|"]
    for loss in LOSSES:
        prefix = "obb-fss" if loss == "probiou" else f"obbloss-{loss}"
        fin = [oriented_final(runs[f"{prefix}-s{s}"]) for s in seeds if f"{prefix}-s{s}" in runs]
        lines.append(f"| {loss} | {len(fin)} | {mean_std([f['task1'] for f in fin])} | "
                     f"{mean_std([f['AP'] for f in fin])} |")
    lines += [""] + [f"- {loss} − probiou: rotated AP "
                     f"{verdict(_paired(runs, f'obbloss-{loss}', 'obb-fss', seeds, 'AP'), 'probiou')}"
                     for loss in LOSSES[1:]]
    lines += ["", "## Every finished run", "", "| run | epochs | Task1 | rotated AP | wall | load | commit | machine |",
              "|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        f, m = oriented_final(r), r["meta"]
        lines.append(f"| {name} | {r['rows'][-1]['epoch']} | {mean_std([f['task1']])} | {mean_std([f['AP']])} | "
                     f"{m['wall_s'] / 60:.0f} min | {m['load5_at_end']:.1f} | {m['commit']} | {m['device']} |")
    notes = path.read_text().partition(NOTES_MARK)[2] if path.is_file() else ""
    atomic_write(path, "\n".join(lines) + "\n\n" + NOTES_MARK + (notes or "\n"))
    print(f"wrote {path}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "runs/ablation"), help="data and run folders (shared with "
                   "benchmarks/ablation.py: the same synthetic scenes)")
    p.add_argument("--store", default=str(ROOT / "docs/results/obb_study"))
    p.add_argument("--report", default=str(ROOT / "docs/results/obb_study.md"))
    p.add_argument("--only", default="main,loss", help="studies: main,loss")
    p.add_argument("--runs", default="*", help="only runs matching these comma-separated patterns, in order")
    p.add_argument("--budget", default=BUDGET, choices=sorted(BUDGETS), help="data and epochs (smoke: a dry run)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--deadline", type=float, default=float("inf"))
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    b = BUDGETS[args.budget]
    store, report = Path(args.store), Path(args.report)
    if args.report_only:
        write_report(report, store, b.seeds)
        return
    t0 = time.monotonic()
    out = Path(args.out) / args.budget
    sets = ensure_data(out, b, {"synthetic"})
    print(f"data ready in {time.monotonic() - t0:.0f} s", flush=True)
    specs = select(plan(b.seeds, set(args.only.split(",")), b.epochs), args.runs)
    runner = Runner(out, store, sets, b, args.budget, args.device, args.workers, max(1, args.parallel))
    execute(specs, runner, max(1, args.parallel), args.deadline, lambda: write_report(report, store, b.seeds))
    write_report(report, store, b.seeds)


if __name__ == "__main__":
    main()

"""Does FSS help? The assignment study (issues #10, #14): resumable, on CPU or on one GPU.

    python benchmarks/ablation.py --budget decide                 # CPU, run by run, resumable
    python benchmarks/ablation.py --budget decide --device cuda --parallel 12 --deadline 480 --store OUT/store \\
        --report OUT/ablation.md                                  # one GPU, several trainings at once
    python benchmarks/ablation.py --budget decide --only table3     # does each step of FSS add? (γ = 0, every seed)
    python benchmarks/ablation.py --budget small --only main,table3,sens   # the earlier small study
    python benchmarks/ablation.py --only protocol --datasets dota_vehicles   # #35 item 3 (a): the DOTA protocol
    python benchmarks/ablation.py --only level --datasets synthetic,dota_vehicles   # #35 item 3 (b)

Variants (one ``fss train`` each, same recipe): FSS with the revised prior (ρ 0.5, FSS-SPEC of
2026-11-26), FSS with the old prior (ρ 0.25), SimOTA, TAL, ATSS, Max-IoU — on two datasets:

* synthetic — dense synthetic aerial scenes (``fss data synth``: 6–40 px objects, occlusion),
  separate train and validation images (different generator seeds);
* dota — the labelled DOTA images of ../shared/data cut into tiles; the tiles of P0003, P0004,
  P0706 and P1478 train, the tiles of P0005 and P1888 validate (never the same image on both sides).

Every finished run leaves one summary file in the store (default ``docs/results/ablation/<budget>/``,
committed): its configuration, per-epoch metrics, the task alignment of the final model
(``fss eval --alignment``), the resolved assigner parameters, the commit and machine it ran on.
A run whose summary exists with the same configuration is skipped (so the study continues across
sittings and machines); a changed configuration runs again. An interrupted run resumes from its
``last.pt``. The report is rewritten from the store after every run.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from fss_core.fileio import atomic_write  # noqa: E402
from fss_core.nn.card import MODELS_DIR  # noqa: E402


@dataclass(frozen=True)
class Budget:
    train: int
    val: int
    size: int
    objects: int
    epochs: int
    batch: int
    seeds: tuple[int, ...]
    dota_epochs: int = 0         # 0: as many image visits as a synthetic run


BUDGETS = {
    "smoke": Budget(train=8, val=4, size=128, objects=10, epochs=2, batch=4, seeds=(0,)),
    "small": Budget(train=240, val=60, size=384, objects=60, epochs=12, batch=16, seeds=(0, 1, 2)),
    # sized to separate ~1 AP: 2.5x the images and 2x the epochs of `small`, 3x the validation images
    "decide": Budget(train=600, val=180, size=384, objects=60, epochs=24, batch=16, seeds=(0, 1, 2), dota_epochs=60),
}
NOTES_MARK = "<!-- hand-written reading below; kept when the tables above are rewritten -->"
# label -> (assigner, parameter overrides); "fss" is the spec default (ρ 0.5 since 2026-11-26)
VARIANTS = {"fss": ("fss", {}), "fss-rho0.25": ("fss", {"rho": 0.25}), "simota": ("simota", {}),
            "tal": ("tal", {}), "atss": ("atss", {}), "maxiou": ("maxiou", {}),
            "fss-level": ("fss", {"prior_level": "star"})}       # #35 item 3 (b); not in ORDER: its own section
# the order runs are launched in within a seed: FSS first, then the baselines
ORDER = ["fss", "fss-rho0.25", "maxiou", "atss", "simota", "tal"]
SENSITIVITY = {"alpha": [0.5, 2.0], "beta": [3.0, 9.0], "rho": [0.125, 0.25, 1.0], "gamma": [0.5, 2.0],
               "dynamic_k": ["iou"]}
# The DOTA arm starts every assigner from the same pretrained body: the backbone and neck of the bundled model
# (trained on the synthetic scenes, with FSS), the head freshly initialised. From scratch, 63 tiles could not
# rank assigners (every run AP <= 0.078, session 4, GPU); fine-tuned, the same budget reaches AP50 ~0.2
# (benchmarks/finetune.py). Paired by seed, every assigner gets the identical start; that the body was
# trained under FSS is a possible bias in FSS's favour, stated in the report.
# the start of the DOTA arm: the bundled model's body. Recorded in each run's configuration by the path it had when
# the study began ("models/…"); the file itself is read from the package data (MODELS_DIR).
DOTA_INIT = ("models/fss-n-aerial.pt", "backbone+neck")
DOTA_TRAIN = ("P0003", "P0004", "P0706", "P1478__1__853___962")
DOTA_VAL = ("P0005", "P1888")
# the protocol of #35 item 3 (a): the validation images hold large and small vehicles only, so training on the
# vehicle images alone (without P0706's 531 ships) trains exactly the classes that are scored
DOTA_VEHICLES_TRAIN = ("P0003", "P0004", "P1478__1__853___962")
PROTOCOL = ("ignore_from=2", "eval_interval=2")     # slivers as ignore regions; evaluated every 2 epochs


@dataclass(frozen=True)
class Spec:
    name: str
    dataset: str                 # synthetic | dota
    variant: str
    assigner: str
    params: dict = field(default_factory=dict)
    seed: int = 0
    epochs: int = 1
    init: str = ""               # "" = from scratch; else DOTA_INIT (a pretrained body, a fresh head)
    settings: tuple[str, ...] = ()   # further `--set key=value` of this run (the oriented study's task, box loss)

    def config(self, b: Budget, budget_name: str) -> dict:
        """What the result depends on; a stored summary is reused only when this matches."""
        cfg = {"budget": budget_name, "dataset": self.dataset, "assigner": self.assigner, "params": self.params,
               "seed": self.seed, "epochs": self.epochs, "batch": b.batch, "imgsz": b.size, "model": "fss-n",
               "data": asdict(b) | {"seeds": None}}
        return cfg | ({"init": self.init} if self.init else {}) | ({"settings": list(self.settings)}
                                                                   if self.settings else {})


def fss_cmd() -> list[str]:
    return [sys.executable, "-m", "fss"]


def _sh(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def ensure_data(out: Path, b: Budget,
                datasets: set[str] = frozenset({"synthetic", "dota"})) -> dict[str, tuple[Path, Path]]:
    """{dataset: (train, val)} — generated once per budget folder."""
    data = out / "data"
    sets = {}
    common = ["--size", str(b.size), "--objects", str(b.objects), "--min-size", "6", "--max-size", "40",
              "--occlusion", "0.4", "--truncation", "0.05"]
    if "synthetic" in datasets:
        for split, n, seed in (("train", b.train, 100), ("val", b.val, 200)):
            if not (data / split / "annotations.json").is_file():
                _sh(fss_cmd() + ["data", "synth", str(data / split), "--num-images", str(n), "--seed", str(seed),
                                 *common])
        sets["synthetic"] = (data / "train", data / "val")
    for name, train_stems in (("dota", DOTA_TRAIN), ("dota_vehicles", DOTA_VEHICLES_TRAIN)):
        if name in datasets:
            tiles = _dota_tiles(data, b, name, train_stems)
            if tiles:
                sets[name] = tiles
    return sets


def _dota_tiles(data: Path, b: Budget, name: str, train_stems: tuple[str, ...]) -> tuple[Path, Path] | None:
    """(train, val) annotation files of the DOTA images' tiles: ``train_stems`` train, DOTA_VAL validates (the
    validation tiles are the same for every DOTA dataset)."""
    tiles = {"train": data / f"{name}_train_tiles", "val": data / "dota_val_tiles"}
    for split, stems in (("train", train_stems), ("val", DOTA_VAL)):
        if (tiles[split] / "annotations.json").is_file():
            continue
        src = data / f"{name if split == 'train' else 'dota'}_{split}_src"
        found = 0
        for stem in stems:
            for folder in SHARED.glob("dota_devkit*/**/images"):
                img, lab = folder / f"{stem}.png", folder.parent / "labelTxt" / f"{stem}.txt"
                if img.is_file() and lab.is_file():
                    for sub, f in (("images", img), ("labelTxt", lab)):
                        (src / sub).mkdir(parents=True, exist_ok=True)
                        link = src / sub / f.name
                        if not link.exists():
                            link.symlink_to(f.resolve())
                    found += 1
                    break
        if found == len(stems):
            _sh(fss_cmd() + ["data", "split", str(src), "--out", str(tiles[split]), "--tile", str(b.size),
                             "--gap", str(b.size // 5)])
    if all((t / "annotations.json").is_file() for t in tiles.values()):
        return tiles["train"] / "annotations.json", tiles["val"] / "annotations.json"
    return None


def dota_epochs(b: Budget, out: Path) -> int:
    if b.dota_epochs:
        return b.dota_epochs
    tiles = out / "data/dota_train_tiles/annotations.json"
    n = len(json.loads(tiles.read_text())["images"]) if tiles.is_file() else b.train
    return b.epochs * max(1, round(b.train / max(n, 1)))


def plan(b: Budget, out: Path, studies: set[str], datasets: set[str]) -> list[Spec]:
    """Seed-major order: every variant of seed 0 first, so paired comparisons exist as early as possible."""
    specs: list[Spec] = []
    for seed in b.seeds:
        if "main" in studies:
            for ds in ("synthetic", "dota"):
                if ds in datasets:
                    epochs = b.epochs if ds == "synthetic" else dota_epochs(b, out)
                    prefix = "main" if ds == "synthetic" else "dotaft"
                    init = "" if ds == "synthetic" else ":".join(DOTA_INIT)
                    specs += [Spec(f"{prefix}-{v}-s{seed}", ds, v, *VARIANTS[v], seed=seed, epochs=epochs,
                                   init=init) for v in ORDER]
        if "table3" in studies:               # every seed of both arms: the paired steps need them
            specs.append(Spec(f"t3-fss-gamma0-s{seed}", "synthetic", "fss-gamma0", "fss", {"gamma": 0.0}, seed,
                              b.epochs))
            if "dota" in datasets:
                specs.append(Spec(f"t3dota-fss-gamma0-s{seed}", "dota", "fss-gamma0", "fss", {"gamma": 0.0}, seed,
                                  dota_epochs(b, out), init=":".join(DOTA_INIT)))
        if "protocol" in studies and "dota_vehicles" in datasets:      # #35 item 3 (a), every assigner
            specs += [Spec(f"dotaprot-{v}-s{seed}", "dota_vehicles", v, *VARIANTS[v], seed=seed,
                           epochs=dota_epochs(b, out), init=":".join(DOTA_INIT), settings=PROTOCOL)
                      for v in ORDER if v != "fss-rho0.25"]
        if "level" in studies:          # #35 item 3 (b): FSS's prior on i*'s own level, both arms
            if "synthetic" in datasets:
                specs.append(Spec(f"lvl-fss-s{seed}", "synthetic", "fss-level", *VARIANTS["fss-level"], seed=seed,
                                  epochs=b.epochs))
                # main-fss again at this commit: the code drift since the main study, and a same-commit FSS
                specs.append(Spec(f"lvlref-fss-s{seed}", "synthetic", "fss", "fss", {}, seed, b.epochs))
            if "dota_vehicles" in datasets:
                specs.append(Spec(f"lvldota-fss-s{seed}", "dota_vehicles", "fss-level", *VARIANTS["fss-level"],
                                  seed=seed, epochs=dota_epochs(b, out), init=":".join(DOTA_INIT),
                                  settings=PROTOCOL))
        if seed == b.seeds[0] and "sens" in studies:
            specs += [Spec(f"sens-{p}={v}-s{seed}", "synthetic", f"fss-{p}={v}", "fss", {p: v}, seed, b.epochs)
                      for p, values in SENSITIVITY.items() for v in values]
    return specs


def resolved_params(spec: Spec) -> dict:
    from fss_train.assigners import build_assigner
    return build_assigner(spec.assigner, **spec.params).params()


def git_commit() -> str:
    if os.environ.get("FSS_COMMIT"):        # a copy of the tree without .git (the GPU machine): told by the caller
        return os.environ["FSS_COMMIT"]
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return (r.stdout.strip() or "unknown") + ("+dirty" if dirty else "")


def load_summary(store: Path, spec: Spec, cfg: dict) -> dict | None:
    f = store / f"{spec.name}.json"
    if not f.is_file():
        return None
    s = json.loads(f.read_text())
    return s if s.get("config") == cfg else None


def write_json_atomic(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=1))


def select(specs: list[Spec], patterns: str) -> list[Spec]:
    """The runs matching any of the comma-separated ``patterns``, grouped by the first pattern each matches (in
    the patterns' order: 'dotaft-*,main-*' runs the DOTA arm first), plan order within a group."""
    pats = patterns.split(",")
    first = {s.name: next((i for i, p in enumerate(pats) if fnmatch.fnmatch(s.name, p)), None) for s in specs}
    return sorted((s for s in specs if first[s.name] is not None), key=lambda s: first[s.name])


class Runner:
    """Launches ``fss train`` for a spec and, when it finishes, measures alignment and stores the summary."""

    def __init__(self, out: Path, store: Path, sets: dict, b: Budget, budget_name: str, device: str, workers: int,
                 parallel: int = 1):
        self.out, self.store, self.sets, self.b, self.budget_name = out, store, sets, b, budget_name
        self.device, self.workers, self.parallel = device, workers, parallel

    def folder(self, spec: Spec) -> Path:
        return self.out / "runs" / spec.name

    def start(self, spec: Spec) -> subprocess.Popen:
        train, val = self.sets[spec.dataset]
        folder = self.folder(spec)
        b = self.b
        cmd = fss_cmd() + ["train", "--data", str(train), "--val", str(val), "--model", "fss-n", "--assigner",
                           spec.assigner, "--epochs", str(spec.epochs), "--batch", str(b.batch), "--imgsz",
                           str(b.size), "--out", str(folder), "--workers", str(self.workers), "--device",
                           self.device, "--set", f"seed={spec.seed}", "--set", "lr_per_64=0.08", "--set",
                           f"eval_interval={max(1, spec.epochs // 4)}", "--set", "no_mosaic_epochs=2",
                           "--set", "cache=ram"]
        for k, v in spec.params.items():
            cmd += ["--set", f"assigner_params.{k}={v}"]
        for setting in spec.settings:
            cmd += ["--set", setting]
        if spec.init:
            weights, parts = spec.init.split(":")
            cmd += ["--weights", str(MODELS_DIR / Path(weights).name), "--set", f"weights_parts={parts}"]
        if (folder / "last.pt").is_file():
            cmd.append("--resume")
        folder.mkdir(parents=True, exist_ok=True)
        print(f"== {spec.name} ({self.device})", flush=True)
        log = open(folder / "train.log", "a")
        return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=self._env())

    def trained(self, spec: Spec, returncode: int) -> subprocess.Popen | None | bool:
        """Training ended: False when it failed or was cut short; else the alignment measurement
        (``fss eval --alignment``) as a process of its own, or None when it exists already."""
        folder = self.folder(spec)
        results = folder / "results.json"
        rows = json.loads(results.read_text()) if results.is_file() else []
        if returncode != 0 or not rows or rows[-1]["epoch"] < spec.epochs:
            print(f"   {spec.name} failed or was interrupted (see {folder}/train.log); rerun to resume", flush=True)
            return False
        align = folder / "alignment.json"
        if align.is_file() or "task=obb" in spec.settings:     # alignment is measured for horizontal models only
            return None
        return subprocess.Popen(fss_cmd() + ["eval", str(folder / "last.pt"), "--data", str(self.sets[spec.dataset][1]),
                                             "--alignment", "--device", self.device, "--json", str(align)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, env=self._env())

    def _env(self) -> dict:
        env = dict(os.environ)
        if self.parallel > 1:       # several trainings share the cores: no thread oversubscription
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // (2 * self.parallel))))
        return env

    def finish(self, spec: Spec, wall_s: float) -> dict:
        folder = self.folder(spec)
        rows = json.loads((folder / "results.json").read_text())
        align = folder / "alignment.json"
        alignment = json.loads(align.read_text()).get("alignment") if align.is_file() else None
        summary = {"config": spec.config(self.b, self.budget_name), "rows": rows, "alignment": alignment,
                   "assigner_params": resolved_params(spec),
                   "meta": {"commit": git_commit(), "device": device_name(self.device), "cores": os.cpu_count(),
                            "parallel": self.parallel, "load5_at_end": os.getloadavg()[1],
                            "wall_s": round(wall_s, 1), "finished": time.strftime("%Y-%m-%d %H:%M")}}
        write_json_atomic(self.store / f"{spec.name}.json", summary)
        print(f"   {spec.name} done in {wall_s:.0f} s: AP {rows[-1].get('AP')}", flush=True)
        return summary


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cuda (unavailable)"
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def execute(specs: list[Spec], runner: Runner, parallel: int, deadline: float, on_done) -> None:
    """Run ``specs`` with at most ``parallel`` at once. ``deadline`` (seconds from now) is a hard end: whatever
    still runs then is stopped (it resumes from its last.pt next time on the same machine), and once a run of a
    dataset has finished, no run of that dataset is launched that would not finish before it (expected time:
    the longest finished run of that dataset so far, plus 10 %)."""
    t0 = time.monotonic()
    todo = [s for s in specs if load_summary(runner.store, s, s.config(runner.b, runner.budget_name)) is None]
    running: dict[str, list] = {}          # name -> [spec, process, started, phase]
    took: dict[str, float] = {}            # dataset -> longest finished run (s)
    skipped = 0
    while todo or running:
        now = time.monotonic() - t0
        while todo and len(running) < parallel and now < deadline:
            spec = todo.pop(0)
            if spec.dataset in took and now + 1.1 * took[spec.dataset] > deadline:
                skipped += 1
                continue
            running[spec.name] = [spec, runner.start(spec), time.monotonic(), "train"]
        if not running:
            break
        time.sleep(1.0)
        for name, entry in list(running.items()):
            spec, proc, started, phase = entry
            if proc.poll() is None and time.monotonic() - t0 > deadline:
                proc.terminate()
                proc.wait()
            if proc.poll() is None:
                continue
            if phase == "train":
                nxt = runner.trained(spec, proc.returncode)
                if isinstance(nxt, subprocess.Popen) and time.monotonic() - t0 < deadline:
                    entry[1], entry[3] = nxt, "align"
                    continue
                if nxt is False:
                    del running[name]
                    continue
            del running[name]
            wall = time.monotonic() - started
            took[spec.dataset] = max(took.get(spec.dataset, 0.0), wall)
            runner.finish(spec, wall)
            on_done()
    left = len(todo) + skipped
    if left:
        print(f"{left} runs not started before the deadline; rerun to continue", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=sorted(BUDGETS), default="decide")
    p.add_argument("--out", default=str(ROOT / "runs/ablation"), help="data and run folders (not committed)")
    p.add_argument("--store", default="", help="run summaries (default docs/results/ablation/<budget>)")
    p.add_argument("--only", default="main", help="studies: main,table3,sens,protocol,level")
    p.add_argument("--datasets", default="synthetic,dota")
    p.add_argument("--runs", default="*", help="only runs whose names match one of these comma-separated "
                   "patterns, in the patterns' order (plan order within one), e.g. 'main-*-s0,dotaft-*' (a GPU "
                   "lease too short for the whole study)")
    p.add_argument("--report", default="", help="default docs/results/ablation.md (decide) or ablation-<budget>.md")
    p.add_argument("--device", default="cpu")
    p.add_argument("--parallel", type=int, default=1, help="trainings at once (GPU: several share one card)")
    p.add_argument("--workers", type=int, default=1, help="data loader workers per training")
    p.add_argument("--deadline", type=float, default=float("inf"),
                   help="hard end, in seconds after the data is ready: runs still going then are stopped, and none "
                   "is launched that would not finish before it")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from the store and exit")
    p.add_argument("--prepare-only", action="store_true", help="make the datasets under --out and exit")
    args = p.parse_args()
    b = BUDGETS[args.budget]
    out = Path(args.out) / args.budget
    store = Path(args.store) if args.store else ROOT / "docs/results/ablation" / args.budget
    report = Path(args.report) if args.report else ROOT / "docs/results" / (
        "ablation.md" if args.budget == "decide" else f"ablation-{args.budget}.md")
    if args.report_only:
        write_report(report, store, b, args.budget)
        return
    t0 = time.monotonic()
    sets = ensure_data(out, b, set(args.datasets.split(",")))
    print(f"data ready in {time.monotonic() - t0:.0f} s: {', '.join(sorted(sets))}", flush=True)
    if args.prepare_only:
        return
    datasets = set(sets)
    specs = select(plan(b, out, set(args.only.split(",")), datasets), args.runs)
    runner = Runner(out, store, sets, b, args.budget, args.device, args.workers, max(1, args.parallel))
    execute(specs, runner, max(1, args.parallel), args.deadline, lambda: write_report(report, store, b, args.budget))
    write_report(report, store, b, args.budget)


# ---------------------------------------------------------------------------------- report
def final(s: dict) -> dict:
    last = s["rows"][-1]
    secs = [r["seconds"] for r in s["rows"] if r.get("seconds")]
    al = s.get("alignment") or {}
    return {"AP": last.get("AP"), "AP50": last.get("AP50"), "AP75": last.get("AP75"), "APs": last.get("APs"),
            "sec_per_epoch": float(np.median(secs)) if secs else float("nan"),
            "pos_per_gt": last.get("pos_per_gt"), "rank_consistency": last.get("rank_consistency"),
            "val_rank_consistency": al.get("rank_consistency"), "top1_agreement": al.get("top1_agreement"),
            "top1_iou": al.get("top1_iou")}


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def mean_std(values: list[float]) -> str:
    v = [x for x in values if x is not None and x == x]
    if not v:
        return "n/a"
    return f"{np.mean(v):.4f} ± {np.std(v, ddof=1):.4f}" if len(v) > 1 else f"{v[0]:.4f}"


def load_store(store: Path) -> dict[str, dict]:
    return {f.stem: json.loads(f.read_text()) for f in sorted(store.glob("*.json"))} if store.is_dir() else {}


def _table(runs: dict, prefix: str, seeds: tuple[int, ...]) -> tuple[list[str], list[str]]:
    """Main-table and alignment rows for runs named ``<prefix>-<variant>-s<seed>``."""
    main, align = [], []
    for v in ORDER:
        fin = {seed: final(runs[f"{prefix}-{v}-s{seed}"]) for seed in seeds if f"{prefix}-{v}-s{seed}" in runs}
        if not fin:
            main.append(f"| {v} | 0 | – | – | – | – | – | – | – |")
            align.append(f"| {v} | – | – | – | – | – |")
            continue
        ref = {seed: final(runs[f"{prefix}-fss-s{seed}"]) for seed in seeds if f"{prefix}-fss-s{seed}" in runs}
        deltas = []
        for key in ("AP", "AP50"):
            paired = [fin[s][key] - ref[s][key] for s in fin if s in ref]
            per_seed = ", ".join(f"{d:+.4f}" for d in paired)
            deltas.append("–" if v == "fss" else (f"{mean_std(paired)} ({per_seed})" if paired else "–"))
        f = list(fin.values())
        main.append(f"| {v} | {len(f)} | " + " | ".join(mean_std([x[k] for x in f]) for k in
                    ("AP", "AP50", "AP75", "APs", "sec_per_epoch")) + f" | {' | '.join(deltas)} |")
        align.append(f"| {v} | " + " | ".join(mean_std([x[k] for x in f]) for k in
                     ("pos_per_gt", "rank_consistency", "val_rank_consistency", "top1_agreement", "top1_iou")) + " |")
    return main, align


# Student's t, 0.975 quantile, by degrees of freedom (seeds − 1): the two-sided 95 % interval of a paired mean
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def verdict(paired: list[float], ref: str = "FSS") -> str:
    """What the seed-paired differences (assigner − FSS) say: the mean with its 95 % t-interval, and whether the
    interval excludes 0. One seed has no interval."""
    n = len(paired)
    if n == 0:
        return "no paired run yet"
    m = float(np.mean(paired))
    if n == 1:
        return f"{m:+.4f} (1 seed: no interval, undecided)"
    half = T975.get(n - 1, 1.96) * float(np.std(paired, ddof=1)) / np.sqrt(n)
    word = f"above {ref}" if m - half > 0 else f"below {ref}" if m + half < 0 else f"not separated from {ref}"
    return f"{m:+.4f}, 95 % interval {m - half:+.4f} … {m + half:+.4f} ({n} seeds): {word}"


def late(s: dict, n: int = 2) -> dict:
    """AP and AP50 averaged over the run's last ``n`` evaluations (a robustness reading, not the study's metric)."""
    evals = [r for r in s["rows"] if r.get("AP") is not None and r["AP"] == r["AP"]][-n:]
    return {k: float(np.mean([r[k] for r in evals])) if len(evals) == n else None for k in ("AP", "AP50")}


def last3(s: dict) -> dict:
    """The primary figure of the runs evaluated every 2 epochs (#35): the mean of the last three evaluations."""
    return late(s, 3)


def _verdicts(runs: dict, prefix: str, seeds: tuple[int, ...], measure=final) -> list[str]:
    lines = []
    for v in ORDER[1:]:
        if not any(f"{prefix}-{v}-s{seed}" in runs for seed in seeds):
            continue                    # a variant this arm does not run (the protocol arm has no ρ 0.25)
        pairs = {k: [] for k in ("AP", "AP50")}
        for seed in seeds:
            a, f = runs.get(f"{prefix}-{v}-s{seed}"), runs.get(f"{prefix}-fss-s{seed}")
            if a and f:
                ma, mf = measure(a), measure(f)
                for k in pairs:
                    if ma[k] is not None and mf[k] is not None:
                        pairs[k].append(ma[k] - mf[k])
        lines.append(f"- {v} − fss: AP {verdict(pairs['AP'])}; AP50 {verdict(pairs['AP50'])}")
    return lines


def _late_section(runs: dict, arms: list[tuple[str, str]], seeds: tuple[int, ...]) -> list[str]:
    """The verdicts again with each run's last two evaluations averaged: does the reading hang on the last one?"""
    lines = ["## Robustness: the last two evaluations averaged (post hoc; not the study's metric)", "",
             "Several runs move by 0.02–0.03 AP between their last two evaluations. The study's metric is the "
             "last epoch, fixed before the runs; this section was added after them and only asks whether the "
             "verdicts above change when each run's last two evaluations are averaged.", ""]
    for title, prefix in arms:
        lines += [f"{title.split(',')[0].split(' (')[0]}:", "", "| assigner | runs | AP (last two averaged) | "
                  "AP50 (last two averaged) |", "|---|---|---|---|"]
        for v in ORDER:
            vals = [late(runs[n]) for seed in seeds if (n := f"{prefix}-{v}-s{seed}") in runs]
            lines.append(f"| {v} | {len(vals)} | {mean_std([x['AP'] for x in vals])} | "
                         f"{mean_std([x['AP50'] for x in vals])} |")
        lines += ["", *_verdicts(runs, prefix, seeds, late), ""]
    return lines


def _protocol_section(runs: dict, seeds: tuple[int, ...]) -> list[str]:
    """#35 item 3 (a): the DOTA arm under the corrected protocol. Primary figure (fixed before the runs): the mean
    of each run's last three evaluations (every 2 epochs); the last epoch beside it."""
    if not any(n.startswith("dotaprot-") for n in runs):
        return []
    lines = ["## DOTA, corrected protocol (#35 item 3 a: slivers as ignore regions, vehicle images only)", "",
             "Train: the tiles of " + ", ".join(DOTA_VEHICLES_TRAIN) + "; validate: the tiles of "
             + ", ".join(DOTA_VAL) + f"; `--set {' '.join(PROTOCOL)}`; every assigner from the bundled model's "
             "body. Primary figure: the mean of the last three evaluations.", "",
             "| assigner | runs | AP (last 3) | AP50 (last 3) | AP (last epoch) |", "|---|---|---|---|---|"]
    for v in ORDER:
        got = [runs[n] for seed in seeds if (n := f"dotaprot-{v}-s{seed}") in runs]
        if got:
            lines.append(f"| {v} | {len(got)} | {mean_std([last3(r)['AP'] for r in got])} | "
                         f"{mean_std([last3(r)['AP50'] for r in got])} | {mean_std([final(r)['AP'] for r in got])} |")
    return lines + ["", *_verdicts(runs, "dotaprot", seeds, last3), ""]


LEVEL_ARMS = (("synthetic (the main study's recipe; last epoch)", "lvl-fss", "main", final),
              ("DOTA, corrected protocol (mean of the last three evaluations)", "lvldota-fss", "dotaprot", last3))


def _level_section(runs: dict, seeds: tuple[int, ...]) -> list[str]:
    """#35 item 3 (b): FSS with its prior, dynamic k and selection on i*'s pyramid level (``prior_level=star``)
    against FSS and ATSS of the same arm, paired by seed."""
    if not any(n.startswith(("lvl-", "lvldota-")) for n in runs):
        return []
    lines = ["## FSS with the prior on i*'s own level (#35 item 3 b)", "",
             "| arm | runs | AP | AP50 | pos/GT |", "|---|---|---|---|---|"]
    verdicts = []
    for title, name, ref, measure in LEVEL_ARMS:
        got = [runs[n] for seed in seeds if (n := f"{name}-s{seed}") in runs]
        if not got:
            continue
        lines.append(f"| {title} | {len(got)} | {mean_std([measure(r)['AP'] for r in got])} | "
                     f"{mean_std([measure(r)['AP50'] for r in got])} | "
                     f"{mean_std([final(r)['pos_per_gt'] for r in got])} |")
        refs = [(f"{ref}-fss", "FSS"), (f"{ref}-atss", "ATSS")]
        if name == "lvl-fss":
            refs.append(("lvlref-fss", "FSS at the same commit"))
        for other, ref_name in refs:
            paired = {k: [measure(runs[f"{name}-s{seed}"])[k] - measure(runs[f"{other}-s{seed}"])[k]
                          for seed in seeds if f"{name}-s{seed}" in runs and f"{other}-s{seed}" in runs]
                      for k in ("AP", "AP50")}
            verdicts.append(f"- {title.split(' (')[0]}: level − {ref_name}: AP {verdict(paired['AP'], ref_name)}; "
                            f"AP50 {verdict(paired['AP50'], ref_name)}")
    for seed in seeds:
        if f"lvlref-fss-s{seed}" in runs and f"main-fss-s{seed}" in runs:
            a, m = final(runs[f"lvlref-fss-s{seed}"]), final(runs[f"main-fss-s{seed}"])
            verdicts.append(f"- code drift: main-fss-s{seed} retrained at "
                            f"{runs[f'lvlref-fss-s{seed}']['meta']['commit']}: AP {a['AP']:.4f} against the "
                            f"committed {m['AP']:.4f} ({runs[f'main-fss-s{seed}']['meta']['commit']})")
    return lines + ["", *verdicts, ""]


TABLE3_ARMS = (("synthetic", "main", "t3"), ("DOTA tiles, fine-tuned", "dotaft", "t3dota"))


def _table3(runs: dict, seeds: tuple[int, ...]) -> list[str]:
    """The paper's Table 3 steps on each arm: Max-IoU -> + suboptimal selection (FSS with uniform weights, γ = 0)
    -> + transformation (full FSS), mean ± std over seeds and each step paired by seed."""
    lines: list[str] = []
    for title, prefix, t3 in TABLE3_ARMS:
        steps = [("Max-IoU", f"{prefix}-maxiou"), ("+ suboptimal selection (FSS, γ = 0)", f"{t3}-fss-gamma0"),
                 ("+ transformation (full FSS, γ = 1)", f"{prefix}-fss")]
        if any(f"{t3}-fss-gamma0-s{seed}" in runs for seed in seeds):
            lines += _table3_arm(runs, seeds, title, steps)
    return lines


def _table3_arm(runs: dict, seeds: tuple[int, ...], title: str, steps: list[tuple[str, str]]) -> list[str]:
    lines = [f"## Table 3 shape ({title}): what each step of FSS adds", "",
             "| step | runs | AP | AP50 | APs | pos/GT | top-1 agreement |", "|---|---|---|---|---|---|---|"]
    for label, prefix in steps:
        fin = [final(runs[f"{prefix}-s{seed}"]) for seed in seeds if f"{prefix}-s{seed}" in runs]
        lines.append(f"| {label} | {len(fin)} | " + " | ".join(mean_std([f[k] for f in fin]) for k in
                     ("AP", "AP50", "APs", "pos_per_gt", "top1_agreement")) + " |")
    lines.append("")
    for (_, lo), (label, hi) in zip(steps, steps[1:]):
        paired = {k: [final(runs[f"{hi}-s{seed}"])[k] - final(runs[f"{lo}-s{seed}"])[k] for seed in seeds
                      if f"{hi}-s{seed}" in runs and f"{lo}-s{seed}" in runs] for k in ("AP", "AP50")}
        ref = "the step before"
        lines.append(f"- {label.lstrip('+ ')} − the step before, paired by seed: AP {verdict(paired['AP'], ref)}; "
                     f"AP50 {verdict(paired['AP50'], ref)}")
    return lines + [""]


def write_report(path: Path, store: Path, b: Budget, budget_name: str) -> None:
    runs = load_store(store)
    machines = sorted({r["meta"]["device"] for r in runs.values()}) or ["(no run finished yet)"]
    params = {}
    for r in runs.values():
        params.setdefault(r["config"]["assigner"] + str(r["config"]["params"] or ""), r["assigner_params"])
    header = ["| assigner | runs | AP | AP50 | AP75 | AP_small | s / epoch | AP − FSS AP, paired by seed (per seed) "
              "| AP50 − FSS AP50, paired |", "|---|---|---|---|---|---|---|---|---|"]
    align_header = ["| assigner | pos/GT | rank consistency (own positives) | rank consistency (candidates) | "
                    "top-1 agreement | top-1 IoU |", "|---|---|---|---|---|---|"]
    lines = [f"# Assignment study — budget `{budget_name}`", "",
             f"Machines: {'; '.join(machines)}. Budget `{budget_name}`: fss-n, batch {b.batch}, {b.size} px, "
             f"lr 0.08 per 64 images, seeds {list(b.seeds)}. Synthetic: {b.train} train / {b.val} val dense "
             f"aerial images (~{b.objects} objects of 6–40 px each, occlusion ≤ 0.4), {b.epochs} epochs. "
             f"DOTA: tiles of {', '.join(DOTA_TRAIN)} train, tiles of {', '.join(DOTA_VAL)} validate, "
             f"{b.dota_epochs or 'matched'} epochs, every assigner starting from the backbone and neck of the "
             "bundled model (trained on the synthetic scenes with FSS; the head fresh). Metrics: COCO AP "
             "(pycocotools) of the EMA model on the validation images at the last epoch. Runs with the same seed "
             "share initial weights, data order and augmentation, so the last two columns compare each assigner "
             "with FSS (ρ 0.5) seed by seed. "
             "s / epoch is wall-clock and comparable only between runs on the same machine at the same load.",
             "", f"Finished runs: {len(runs)} (listed at the end with commit, machine and load).", ""]
    arms = [("Synthetic dense aerial scenes", "main"),
            ("DOTA tiles (held-out images), every assigner from the bundled model's backbone + neck (trained on "
             "the synthetic scenes with FSS), head fresh", "dotaft")]
    if any(n.startswith("dota-") for n in runs):          # the earlier from-scratch arm, kept as measured
        arms.append(("DOTA tiles from scratch (the earlier arm: too little data to rank assigners)", "dota"))
    for title, prefix in arms:
        main, align = _table(runs, prefix, b.seeds)
        lines += [f"## {title} (mean ± sample std over seeds)", "", *header, *main, "",
                  "What each assigner teaches: pos/GT and rank consistency over each GT's own positives are "
                  "training-time figures of the last epoch; the last three are measured on the validation set "
                  "with the final model over one assigner-independent candidate set per GT (`fss eval "
                  "--alignment`).", "", *align_header, *align, "",
                  "Each assigner against FSS (ρ 0.5), paired by seed (Student's t; an interval that holds 0 "
                  "decides nothing):", "", *_verdicts(runs, prefix, b.seeds), ""]
    lines += _late_section(runs, [a for a in arms if a[1] != "dota"], b.seeds)
    lines += _table3(runs, b.seeds)
    lines += _protocol_section(runs, b.seeds)
    lines += _level_section(runs, b.seeds)
    sens = [n for n in runs if n.startswith("sens-")]
    if sens:
        lines += ["## Sensitivity (FSS, seed 0)", "", "| run | AP | AP50 | pos/GT | top-1 agreement |",
                  "|---|---|---|---|---|"]
        lines += [f"| {n} | " + " | ".join(_fmt(final(runs[n])[k]) for k in ("AP", "AP50", "pos_per_gt",
                                                                               "top1_agreement")) + " |" for n in sens]
        lines.append("")
    lines += ["## Parameters each assigner ran with", ""]
    lines += [f"- `{k}`: {json.dumps(v, sort_keys=True)}" for k, v in sorted(params.items())]
    lines += ["", "## Every finished run", "", "| run | epochs | AP | AP50 | APs | s / epoch | wall | load | commit | "
              "machine | finished |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        f, m = final(r), r["meta"]
        lines.append(f"| {name} | {r['rows'][-1]['epoch']} | {_fmt(f['AP'])} | {_fmt(f['AP50'])} | {_fmt(f['APs'])} | "
                     f"{f['sec_per_epoch']:.1f} | {m['wall_s'] / 60:.0f} min | {m['load5_at_end']:.1f} | "
                     f"{m['commit']} | {m['device']} | {m['finished']} |")
    png = path.with_name(path.stem + "_rank_consistency.png")
    if _curves(runs, png):
        lines += ["", "## Rank consistency over training (synthetic)", "", f"![curves]({png.name})", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    notes = path.read_text().partition(NOTES_MARK)[2] if path.is_file() else ""
    atomic_write(path, "\n".join(lines) + "\n" + NOTES_MARK + (notes or "\n"))
    print(f"wrote {path}", flush=True)


def _curves(runs: dict, png: Path) -> bool:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for v in ORDER:      # mean over the finished seeds, band = min..max
        curves = [[np.nan if x.get("rank_consistency") is None else x["rank_consistency"] for x in r["rows"]]
                  for n, r in runs.items() if n.startswith(f"main-{v}-s")]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        y = np.array([c[:n] for c in curves], dtype=float)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)     # an epoch where no seed had a value
            mean = np.nanmean(y, 0)
        label = f"{v} ({len(curves)} seed{'s' if len(curves) > 1 else ''})"
        line, = ax.plot(np.arange(1, n + 1), mean, marker="o", label=label)
        if len(curves) > 1:
            ax.fill_between(np.arange(1, n + 1), np.nanmin(y, 0), np.nanmax(y, 0), color=line.get_color(), alpha=0.15)
    drew = bool(ax.lines)
    if drew:
        ax.set_xlabel("epoch")
        ax.set_ylabel("Spearman(cls score, IoU) over each GT's positives")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png, dpi=80)
    plt.close(fig)
    return drew


if __name__ == "__main__":
    main()

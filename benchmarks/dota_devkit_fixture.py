"""Parity fixture for DOTA Task1 (oriented-box) evaluation, made by running the official DOTA devkit.

    python benchmarks/dota_devkit_fixture.py --setup --devkit-repo /path/to/DOTA_devkit   # side venv, then runs there
    python benchmarks/dota_devkit_fixture.py --devkit runs/dota_devkit/DOTA_devkit       # in an env with it built

``--devkit-repo`` is a clone (bare or not) of https://github.com/CAPTAIN-WHU/DOTA_devkit, or that URL itself
(then ``git clone`` runs); the default is the URL.

Reference (run here, never copied into this repository): ``voc_eval`` and ``parse_gt`` of
``dota_evaluation_task1.py`` and ``iou_poly`` of ``polyiou.cpp``, CAPTAIN-WHU/DOTA_devkit at commit
99388551054be9a6dabb01c8bb2a7eb562d57b4f (2019-07-05, "rm cpp", the head of its master branch), unmodified.
How it is run:

* ``--setup`` makes the venv ``runs/dota_devkit`` (``python -m venv`` of the interpreter running this script,
  CPython 3.11 here: the devkit's ``setup.py`` imports ``distutils``, gone in 3.12) with numpy 1.23.5 (the
  last release that still has the ``np.bool`` alias that ``voc_eval`` uses: no shim, no patch), matplotlib
  3.9.4 (``dota_evaluation_task1`` imports ``matplotlib.pyplot`` at import; backend Agg, nothing is drawn),
  swig 4.3.1 from PyPI (the devkit's readme says ``apt-get install swig``) and shapely 2.0.7 (only for the
  cross-check below, never for expected values).
* it unpacks the files it needs of that commit (``git archive``, DEVKIT_FILES) into
  ``runs/dota_devkit/DOTA_devkit`` and builds polyiou as the devkit's readme says: ``swig -c++ -python
  polyiou.i`` (this regenerates ``polyiou.py`` and writes ``polyiou_wrap.cxx``), then ``python setup.py
  build_ext --inplace`` (the devkit's own setup.py; the system g++, 12.2 here, with sysconfig's flags).
* it reruns itself with that venv's python and ``--devkit``: the devkit folder goes first on ``sys.path`` and
  ``dota_evaluation_task1`` is imported as is. ``voc_eval`` prints its tp/fp arrays; that output is discarded.

Inputs, seeded (``random.Random``, so independent of numpy's version): 8 images of 1024 x 1024 with 10-40
objects of 5 DOTA classes (rotated rectangles 8-150 px, some general convex quadrilaterals, a few non-convex
simple ones; both vertex orders; coordinates to 0.1 px; difficult 0, some 1, two 2; two lines without the
difficult field; header lines on some files) and a ninth image with only header lines. Detections: jittered,
rotated, scaled copies of GTs whose IoU is put in buckets (well matched, just above 0.5, just below 0.5, poor)
with every detection/GT IoU of the same image and class at least 1e-3 away from 0.5 by the devkit's own
``iou_poly``; duplicates, detections on difficult GTs, two deliberate overlapping-GT traps (a duplicate whose
best GT is taken while a second GT also overlaps > 0.5; a detection whose best GT is difficult while a
non-difficult GT also overlaps > 0.5), false positives (also in images with no GT of the class), distinct
scores with 4-6 decimals, shuffled lines. The non-difficult counts (30, 40, 24, 30, 20) are mostly multiples
of 10 on purpose: recall then hits 0.3 / 0.6 / 0.7 exactly, where the devkit's 11-point thresholds
(``np.arange(0., 1.1, 0.1)``: 0.30000000000000004, 0.6000000000000001, 0.7000000000000001) are slightly above;
the AP07 of small-vehicle and storage-tank depends on it (the report prints AP07 with exact k/10 beside it).

Checks printed: the AP table, the probes, and ``iou_poly`` against shapely for every pair and every fixture
detection/GT pair of the same image and class (max |difference| about 1e-13 near 1024 px, 1e-10 near 5000 px).

Written to ``tests/fixtures/dota_task1/``: ``labelTxt/*.txt``, ``Task1_<class>.txt``, ``imagesetfile.txt``,
``expected.json`` (per class and metric the devkit's AP, final recall/precision and npos, the full
recall/precision curves, and the outcome of small probes of the devkit's edge behaviour) and
``polyiou_pairs.json`` (quadrilateral pairs with the devkit's ``iou_poly``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import random
import subprocess
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests/fixtures/dota_task1"
DEVKIT_URL = "https://github.com/CAPTAIN-WHU/DOTA_devkit"
DEVKIT_COMMIT = "99388551054be9a6dabb01c8bb2a7eb562d57b4f"
# only what the evaluation needs (the repository's example images are large, and absent from some mirrors)
DEVKIT_FILES = ["dota_evaluation_task1.py", "polyiou.cpp", "polyiou.h", "polyiou.i", "polyiou.py", "setup.py"]
PINS = ["numpy==1.23.5", "matplotlib==3.9.4", "swig==4.3.1", "shapely==2.0.7"]
SEED = 20190705
SIZE = 1024.0
IMAGES = [f"P9{i:03d}" for i in range(9)]          # the last one has header lines only
# class: (non-difficult GTs, difficult GTs, long side range px, short/long aspect range)
CLASSES = {"plane": (30, 3, (40, 150), (0.7, 1.0)),
           "small-vehicle": (40, 5, (8, 30), (0.4, 0.6)),
           "large-vehicle": (24, 3, (20, 70), (0.3, 0.5)),
           "ship": (30, 4, (10, 90), (0.2, 0.5)),
           "storage-tank": (20, 2, (15, 110), (0.85, 1.0))}
DIFFICULT_2 = ("small-vehicle", "large-vehicle")   # one difficult GT of each is flagged 2 instead of 1
MARGIN = 1e-3                                       # every det/GT IoU stays this far from the threshold


# ---------------------------------------------------------------------------------- side environment
def setup(env: Path, repo: str) -> tuple[Path, Path]:
    """The venv with the pinned packages and the devkit at DEVKIT_COMMIT, polyiou built. Returns (python, devkit)."""
    py = env / "bin/python"
    if not py.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PINS], check=True)
    devkit = env / "DOTA_devkit"
    if not (devkit / "COMMIT").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            git_dir = repo
            if not Path(repo).is_dir():
                git_dir = str(Path(tmp) / "devkit.git")
                subprocess.run(["git", "clone", "-q", "--bare", repo, git_dir], check=True)
            tar = Path(tmp) / "devkit.tar"
            subprocess.run(["git", "-C", git_dir, "archive", "-o", str(tar), DEVKIT_COMMIT, "--", *DEVKIT_FILES],
                           check=True)
            devkit.mkdir(parents=True, exist_ok=True)
            with tarfile.open(tar) as t:
                t.extractall(devkit, filter="data")
        swig = env / "bin/swig"
        subprocess.run([str(swig), "-c++", "-python", "polyiou.i"], cwd=devkit, check=True)
        subprocess.run([str(py), "setup.py", "-q", "build_ext", "--inplace"], cwd=devkit, check=True)
        (devkit / "COMMIT").write_text(DEVKIT_COMMIT + "\n")
    return py, devkit


def load_devkit(devkit: Path):
    """``dota_evaluation_task1`` and ``polyiou`` of the unpacked, built devkit (imported, not modified)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.path.insert(0, str(devkit))
    warnings.filterwarnings("ignore", message=".*np.bool.*", category=DeprecationWarning)
    import dota_evaluation_task1 as dk
    import polyiou

    return dk, polyiou


def versions(devkit: Path) -> dict:
    import numpy

    swig = subprocess.run([str(Path(sys.prefix) / "bin/swig"), "-version"], capture_output=True, text=True).stdout
    gxx = subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout
    return {"devkit_commit": (devkit / "COMMIT").read_text().strip(), "python": platform.python_version(),
            "numpy": numpy.__version__,
            "swig": next((ln.split()[-1] for ln in swig.splitlines() if ln.startswith("SWIG Version")), "?"),
            "gxx": gxx.splitlines()[0] if gxx else "?"}


# ---------------------------------------------------------------------------------- geometry (ours)
Pt = tuple[float, float]


def rect(cx: float, cy: float, w: float, h: float, theta: float) -> list[Pt]:
    c, s = math.cos(theta), math.sin(theta)
    return [(cx + c * dx - s * dy, cy + s * dx + c * dy)
            for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))]


def signed_area(p: list[Pt]) -> float:
    return sum(p[i][0] * p[(i + 1) % 4][1] - p[(i + 1) % 4][0] * p[i][1] for i in range(4)) / 2


def cross(o: Pt, a: Pt, b: Pt) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def is_convex(p: list[Pt]) -> bool:
    s = [cross(p[i], p[(i + 1) % 4], p[(i + 2) % 4]) for i in range(4)]
    return all(v > 0 for v in s) or all(v < 0 for v in s)


def segments_meet(a: Pt, b: Pt, c: Pt, d: Pt) -> bool:
    d1, d2, d3, d4 = cross(c, d, a), cross(c, d, b), cross(a, b, c), cross(a, b, d)
    if ((d1 > 0) != (d2 > 0)) and ((d3 > 0) != (d4 > 0)) and d1 and d2 and d3 and d4:
        return True

    def on(o: Pt, e: Pt, q: Pt) -> bool:
        return cross(o, e, q) == 0 and min(o[0], e[0]) <= q[0] <= max(o[0], e[0]) \
            and min(o[1], e[1]) <= q[1] <= max(o[1], e[1])

    return on(c, d, a) or on(c, d, b) or on(a, b, c) or on(a, b, d)


def is_simple(p: list[Pt]) -> bool:
    """No repeated vertex, no three consecutive collinear vertices, opposite edges do not meet."""
    if len(set(p)) < 4 or any(cross(p[i], p[(i + 1) % 4], p[(i + 2) % 4]) == 0 for i in range(4)):
        return False
    return not segments_meet(p[0], p[1], p[2], p[3]) and not segments_meet(p[1], p[2], p[3], p[0])


def rnd(p: list[Pt], nd: int = 1) -> list[Pt]:
    return [(round(x, nd) + 0.0, round(y, nd) + 0.0) for x, y in p]


def reorder(p: list[Pt], start: int, reverse: bool) -> list[Pt]:
    q = p[start:] + p[:start]
    return [q[0]] + q[1:][::-1] if reverse else q


def inside_image(p: list[Pt]) -> bool:
    return all(0.5 <= x <= SIZE - 0.5 and 0.5 <= y <= SIZE - 0.5 for x, y in p)


def hbb(p: list[Pt], pad: float = 0.0) -> tuple[float, float, float, float]:
    xs, ys = [x for x, _ in p], [y for _, y in p]
    return min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad


def hbb_meet(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def flat(p: list[Pt]) -> list[float]:
    return [v for xy in p for v in xy]


def fmt(v: float) -> str:
    return f"{v:.1f}"


class Scene:
    """Seeded GT and detections; IoUs by the devkit's ``iou_poly`` (the reference decides the buckets)."""

    def __init__(self, polyiou, seed: int):
        self.iou_fn = polyiou
        self.rng = random.Random(seed)
        self.gts: dict[str, list[dict]] = {im: [] for im in IMAGES}
        self.dets: dict[str, list[dict]] = {c: [] for c in CLASSES}
        self.scores: dict[str, set[float]] = {c: set() for c in CLASSES}
        self.traps: list[tuple] = []

    def iou(self, p: list[Pt], q: list[Pt]) -> float:
        m = self.iou_fn
        return m.iou_poly(m.VectorDouble(flat(p)), m.VectorDouble(flat(q)))

    # ------------------------------------------------------------------ GT
    def shape(self, cls: str, kind: str) -> list[Pt]:
        """A polygon of the class's size at the origin, rounded later; kind rect / convex / nonconvex."""
        r = self.rng
        _, _, (lo, hi), (alo, ahi) = CLASSES[cls]
        while True:
            long = math.exp(r.uniform(math.log(lo), math.log(hi)))
            short = max(8.0, long * r.uniform(alo, ahi))
            long = max(long, short)
            p = rect(0.0, 0.0, long, short, r.uniform(0, math.pi))
            if kind == "convex":
                p = [(x + r.uniform(-0.2, 0.2) * short, y + r.uniform(-0.2, 0.2) * short) for x, y in p]
            elif kind == "nonconvex":                 # a dart: one vertex pushed past the diagonal
                k = r.randrange(4)
                f = r.uniform(1.3, 1.7)
                x, y = p[k]
                p[k] = (x * (1 - f), y * (1 - f))      # the centre is the origin
            q = rnd(p)
            if is_simple(q) and (is_convex(q) != (kind == "nonconvex")) and abs(signed_area(q)) > 30:
                return p

    def place(self, image: str, p: list[Pt], at: Pt | None = None) -> list[Pt] | None:
        r = self.rng
        for _ in range(500):
            cx, cy = at if at else (r.uniform(0, SIZE), r.uniform(0, SIZE))
            q = rnd([(x + cx, y + cy) for x, y in p])
            if at or (inside_image(q) and is_simple(q)
                      and not any(hbb_meet(hbb(q, 3), hbb(g["poly"])) for g in self.gts[image])):
                return q
        return None

    def add_gt(self, image: str, cls: str, poly: list[Pt], difficult: int, special: str = "") -> dict:
        g = {"image": image, "cls": cls, "poly": reorder(poly, self.rng.randrange(4), self.rng.random() < 0.5),
             "difficult": difficult, "nine_fields": False, "special": special}
        self.gts[image].append(g)
        return g

    def make_gts(self) -> None:
        r = self.rng
        real = IMAGES[:-1]
        # the two traps first, so nothing random lands on them; their detections are made here, from the
        # unrounded shapes, and scored in make_dets
        lv = rect(300.0, 300.0, 60.0, 24.0, r.uniform(0, math.pi))
        ax = ((lv[1][0] - lv[0][0]) / 60, (lv[1][1] - lv[0][1]) / 60)     # unit vector along the long side
        ga = self.add_gt(real[0], "large-vehicle", rnd(lv), 0, "taken_a")
        gb = self.add_gt(real[0], "large-vehicle", rnd([(x + 9 * ax[0], y + 9 * ax[1]) for x, y in lv]), 0, "taken_b")
        first = rnd([(x + 0.5 * ax[1], y - 0.5 * ax[0]) for x, y in lv])  # 0.5 px sideways: best a, b > 0.5 too
        second = rnd([(x + 3 * ax[0], y + 3 * ax[1]) for x, y in lv])    # 3 px towards b: best a (taken), b > 0.5
        sh = rect(600.0, 500.0, 70.0, 20.0, r.uniform(0, math.pi))
        ax = ((sh[1][0] - sh[0][0]) / 70, (sh[1][1] - sh[0][1]) / 70)
        gd = self.add_gt(real[2], "ship", rnd(sh), 1, "difficult_best")
        gn = self.add_gt(real[2], "ship", rnd([(x + 8 * ax[0], y + 8 * ax[1]) for x, y in sh]), 0,
                         "nondifficult_second")
        towards_d = rnd([(x - 2 * ax[0], y - 2 * ax[1]) for x, y in sh])  # best the difficult one, other > 0.5
        self.traps = [(ga, gb, first, "trap_taken_first", (0.9, 0.999)),
                      (ga, gb, second, "trap_taken_second", (0.5, 0.85)),
                      (gd, gn, towards_d, "trap_difficult_best", (0.6, 0.95))]
        plan: list[tuple[str, str, int]] = []
        for cls, (n_easy, n_diff, _, _) in CLASSES.items():
            images = r.sample(real, r.randint(5, 7))
            if cls == "large-vehicle" and real[0] not in images:
                images[0] = real[0]
            if cls == "ship" and real[2] not in images:
                images[0] = real[2]
            n_easy -= 2 if cls == "large-vehicle" else 1 if cls == "ship" else 0
            n_diff -= 1 if cls == "ship" else 0
            for i in range(n_easy):
                plan.append((images[i % len(images)] if i < len(images) else r.choice(images), cls, 0))
            for i in range(n_diff):
                plan.append((r.choice(images), cls, 2 if (cls in DIFFICULT_2 and i == 0) else 1))
        r.shuffle(plan)
        for image, cls, difficult in plan:
            u = r.random()
            kind = "rect" if u < 0.8 else "convex" if u < 0.93 else "nonconvex"
            while (q := self.place(image, self.shape(cls, kind))) is None:
                pass
            self.add_gt(image, cls, q, difficult)
        plain = [g for im in real for g in self.gts[im] if g["difficult"] == 0 and not g["special"]]
        for g in r.sample(plain, 2):
            g["nine_fields"] = True

    # ------------------------------------------------------------------ detections
    def score(self, cls: str, lo: float, hi: float) -> str:
        while True:
            nd = self.rng.choice((4, 5, 6))
            s = f"{self.rng.uniform(lo, hi):.{nd}f}"
            if float(s) > 0 and float(s) not in self.scores[cls]:
                self.scores[cls].add(float(s))
                return s

    def same_class(self, image: str, cls: str) -> list[dict]:
        return [g for g in self.gts[image] if g["cls"] == cls]

    def clear_of_threshold(self, image: str, cls: str, d: list[Pt]) -> list[float]:
        """IoUs with every GT of the class in the image, or [] if one is within MARGIN of 0.5."""
        ious = [self.iou(g["poly"], d) for g in self.same_class(image, cls)]
        return [] if any(abs(v - 0.5) < MARGIN for v in ious) else ious or [0.0]

    def perturb(self, g: dict, lo: float, hi: float) -> list[Pt] | None:
        """A detection made from GT g with IoU(g) in [lo, hi], g its best GT, clear of the threshold."""
        r = self.rng
        p = g["poly"]
        cx, cy = sum(x for x, _ in p) / 4, sum(y for _, y in p) / 4
        for attempt in range(400):
            damp = 1.0 / (1 + attempt // 50)
            rot = r.gauss(0, math.radians(4)) * damp
            sx, sy = math.exp(r.gauss(0, 0.06) * damp), math.exp(r.gauss(0, 0.06) * damp)
            short = min(math.dist(p[0], p[1]), math.dist(p[1], p[2]))
            jit = [(r.gauss(0, 0.03), r.gauss(0, 0.03)) for _ in range(4)]
            phi = r.uniform(0, 2 * math.pi)
            c, s = math.cos(rot), math.sin(rot)

            def make(t: float, c=c, s=s, sx=sx, sy=sy, jit=jit, phi=phi, short=short, damp=damp) -> list[Pt]:
                out = []
                for (x, y), (jx, jy) in zip(p, jit):
                    dx, dy = (x - cx) * sx, (y - cy) * sy
                    out.append((cx + c * dx - s * dy + jx * short * damp + t * math.cos(phi),
                                cy + s * dx + c * dy + jy * short * damp + t * math.sin(phi)))
                return out

            target = r.uniform(lo, hi)
            if self.iou(p, make(0.0)) < target:
                continue
            a, b = 0.0, 2.0 * max(math.dist(p[0], p[2]), math.dist(p[1], p[3]))
            for _ in range(60):
                m = (a + b) / 2
                a, b = (m, b) if self.iou(p, make(m)) > target else (a, m)
            d = rnd(make((a + b) / 2))
            if not (inside_image(d) and is_simple(d)):
                continue
            ious = self.clear_of_threshold(g["image"], g["cls"], d)
            own = self.iou(p, d)
            if ious and lo <= own <= hi and max(ious) == own:
                return reorder(d, r.randrange(4), r.random() < 0.5)
        return None

    def add_det(self, image: str, cls: str, poly: list[Pt], score: str, kind: str) -> None:
        self.dets[cls].append({"image": image, "score": score, "poly": poly, "kind": kind})

    def det_from(self, g: dict, lo: float, hi: float, slo: float, shi: float, kind: str) -> bool:
        d = self.perturb(g, lo, hi)
        if d is not None:
            self.add_det(g["image"], g["cls"], d, self.score(g["cls"], slo, shi), kind)
        return d is not None

    def make_dets(self) -> None:
        r = self.rng
        for image in IMAGES:
            for g in self.gts[image]:
                if g["special"]:
                    continue
                cls = g["cls"]
                if g["difficult"]:
                    if r.random() < 0.7:
                        self.det_from(g, 0.55, 0.95, 0.1, 0.95, "on_difficult")
                        if r.random() < 0.35:
                            self.det_from(g, 0.55, 0.95, 0.05, 0.9, "on_difficult_dup")
                    continue
                u = r.random()
                ok = False                                  # a matching detection exists (then maybe a duplicate)
                if u < 0.62:
                    ok = self.det_from(g, 0.6, 0.97, 0.35, 0.999, "tp")
                elif u < 0.72:
                    ok = self.det_from(g, 0.5 + MARGIN, 0.53, 0.2, 0.95, "just_above")
                elif u < 0.82:
                    self.det_from(g, 0.47, 0.5 - MARGIN, 0.2, 0.95, "just_below")
                elif u < 0.88:
                    self.det_from(g, 0.1, 0.45, 0.05, 0.7, "poor")
                if ok and r.random() < 0.14:
                    self.det_from(g, 0.55, 0.95, 0.05, 0.95, "duplicate")
        # the traps: a duplicate whose best GT is taken (second GT > 0.5 too), a det whose best GT is difficult
        for best, other, d, kind, (slo, shi) in self.traps:
            ib, io = self.iou(best["poly"], d), self.iou(other["poly"], d)
            assert ib > io > 0.5 + MARGIN, (kind, ib, io)
            self.add_det(best["image"], best["cls"], reorder(d, r.randrange(4), r.random() < 0.5),
                         self.score(best["cls"], slo, shi), kind)
        # false positives: anywhere (also images without the class, and the empty image), clear of every GT
        for cls in CLASSES:
            absent = [im for im in IMAGES if not self.same_class(im, cls)]
            n = r.randint(10, 16)
            for i in range(n):
                image = absent[i % len(absent)] if i < 4 else r.choice(IMAGES)
                while True:
                    cx, cy = r.uniform(0, SIZE), r.uniform(0, SIZE)
                    q = rnd([(x + cx, y + cy) for x, y in self.shape(cls, "rect")])
                    if inside_image(q) and is_simple(q) and (ious := self.clear_of_threshold(image, cls, q)) \
                            and max(ious) < 0.3:
                        break
                self.add_det(image, cls, reorder(q, r.randrange(4), r.random() < 0.5),
                             self.score(cls, 0.001, 0.75), "fp_absent" if i < 4 else "fp")

    # ------------------------------------------------------------------ files
    def write(self, out: Path) -> None:
        (out / "labelTxt").mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(IMAGES):
            head = [["imagesource:GoogleEarth", "gsd:0.5"], ["imagesource:GoogleEarth", "gsd:0.146343590398"],
                    []][i % 3] if image != IMAGES[-1] else ["imagesource:GoogleEarth", "gsd:null"]
            lines = list(head)
            for g in self.gts[image]:
                tail = [g["cls"]] + ([] if g["nine_fields"] else [str(g["difficult"])])
                lines.append(" ".join([fmt(v) for v in flat(g["poly"])] + tail))
            (out / "labelTxt" / f"{image}.txt").write_text("".join(ln + "\n" for ln in lines))
        (out / "imagesetfile.txt").write_text("".join(im + "\n" for im in IMAGES))
        for cls, dets in self.dets.items():
            dets = list(dets)
            self.rng.shuffle(dets)
            (out / f"Task1_{cls}.txt").write_text(
                "".join(" ".join([d["image"], d["score"]] + [fmt(v) for v in flat(d["poly"])]) + "\n" for d in dets))


# ---------------------------------------------------------------------------------- polyiou pairs
def make_pairs(polyiou, seed: int) -> list[dict]:
    r = random.Random(seed)

    def iou(p, q):
        return polyiou.iou_poly(polyiou.VectorDouble(flat(p)), polyiou.VectorDouble(flat(q)))

    def rrect(cx, cy, lo=8.0, hi=150.0):
        w, h = (math.exp(r.uniform(math.log(lo), math.log(hi))) for _ in range(2))
        return rect(cx, cy, w, h, r.uniform(0, math.pi)), w, h

    def convex(cx, cy):
        while True:
            p, w, h = rrect(cx, cy, 20, 150)
            q = [(x + r.uniform(-0.25, 0.25) * min(w, h), y + r.uniform(-0.25, 0.25) * min(w, h)) for x, y in p]
            if is_convex(rnd(q)) and is_simple(rnd(q)):
                return q

    def dart(cx, cy):
        while True:
            p, _, _ = rrect(0, 0, 20, 150)
            k = r.randrange(4)
            f = r.uniform(1.2, 1.8)
            p[k] = (p[k][0] * (1 - f), p[k][1] * (1 - f))
            q = rnd([(x + cx, y + cy) for x, y in p])
            if is_simple(q) and not is_convex(q):
                return q

    def shift(p, dx, dy):
        return [(x + dx, y + dy) for x, y in p]

    def near(p, frac=0.5):
        xs, ys = [x for x, _ in p], [y for _, y in p]
        return (r.uniform(min(xs), max(xs)) + r.uniform(-frac, frac) * (max(xs) - min(xs)),
                r.uniform(min(ys), max(ys)) + r.uniform(-frac, frac) * (max(ys) - min(ys)))

    def orient(p):
        return reorder(p, r.randrange(4), r.random() < 0.5)

    out: list[dict] = []

    def add(kind, p, q, keep_order=False):
        p, q = rnd(p), rnd(q)
        if not keep_order:
            p, q = orient(p), orient(q)
        assert is_simple(p) and is_simple(q), (kind, p, q)
        out.append({"kind": kind, "p": flat(p), "q": flat(q), "iou": iou(p, q)})

    c0 = (512.0, 512.0)
    for _ in range(90):                                                   # rotated rects, any overlap
        p, _, _ = rrect(*c0)
        q, _, _ = rrect(*near(p, 0.3))
        add("rotated_rects", p, q)
    for _ in range(15):                                                   # identical, any vertex order
        p, _, _ = rrect(*c0)
        add("identical", p, list(p))
    for _ in range(15):                                                   # sharing an edge (adjacent)
        p, w, h = rrect(*c0, 10, 120)
        p = rnd(p)
        e = (p[1][0] - p[0][0], p[1][1] - p[0][1])
        q = [p[1], (p[1][0] + e[0], p[1][1] + e[1]), (p[2][0] + e[0], p[2][1] + e[1]), p[2]]
        add("shared_edge", p, q)
    for _ in range(10):                                                   # part of an edge shared, axis-aligned
        x0, y0, w, h = r.randint(0, 900), r.randint(0, 900), r.randint(8, 120), r.randint(8, 120)
        dy = r.randint(-h + 1, h - 1)
        add("shared_edge_part", [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)],
            [(x0 + w, y0 + dy), (x0 + 2 * w, y0 + dy), (x0 + 2 * w, y0 + dy + h), (x0 + w, y0 + dy + h)])
    for _ in range(15):                                                   # parallel edges, rotated
        p, w, h = rrect(*c0, 10, 150)
        t = r.uniform(0, math.pi)
        q = rect(c0[0] + r.uniform(-0.6, 0.6) * w, c0[1] + r.uniform(-0.6, 0.6) * h, w * r.uniform(0.5, 1.5),
                 h * r.uniform(0.5, 1.5), t)
        p = rect(c0[0], c0[1], w, h, t)
        add("parallel_rotated", p, q)
    for _ in range(15):                                                   # axis-aligned, some collinear edges
        x0, y0, w, h = r.randint(0, 900), r.randint(0, 900), r.randint(8, 120), r.randint(8, 120)
        dx = r.choice([0, r.randint(-w + 1, w - 1)])
        dy = r.choice([0, r.randint(-h + 1, h - 1)]) if dx else r.randint(-h + 1, h - 1)
        w2, h2 = r.choice([w, r.randint(8, 120)]), r.choice([h, r.randint(8, 120)])
        add("axis_aligned", [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)],
            [(x0 + dx, y0 + dy), (x0 + dx + w2, y0 + dy), (x0 + dx + w2, y0 + dy + h2), (x0 + dx, y0 + dy + h2)])
    for _ in range(10):                                                   # touching at a corner
        p, w, h = rrect(*c0, 10, 120)
        p = rnd(p)
        k = r.randrange(4)
        v, a, b = p[k], p[(k + 1) % 4], p[(k - 1) % 4]
        out_dir = (2 * v[0] - a[0] - b[0], 2 * v[1] - a[1] - b[1])        # away from p, along its diagonal
        n = math.hypot(*out_dir)
        s = r.uniform(10, 80)
        c = (v[0] + out_dir[0] / n * s / math.sqrt(2), v[1] + out_dir[1] / n * s / math.sqrt(2))
        q = [v, (c[0] + (c[1] - v[1]), c[1] - (c[0] - v[0])), (2 * c[0] - v[0], 2 * c[1] - v[1]),
             (c[0] - (c[1] - v[1]), c[1] + (c[0] - v[0]))]
        add("corner_touch", p, [v] + rnd(q[1:]))
    for _ in range(10):                                                   # disjoint, far apart
        p, _, _ = rrect(*c0)
        q, _, _ = rrect(c0[0] + r.choice([-1, 1]) * r.uniform(200, 400), c0[1] + r.uniform(-300, 300))
        add("disjoint", p, q)
    for _ in range(10):                                                   # disjoint, overlapping bounding boxes
        t = math.pi / 4 + r.uniform(-0.3, 0.3)
        w, h = r.uniform(80, 150), r.uniform(8, 20)
        gap = h + r.uniform(2, 15)
        p = rect(c0[0], c0[1], w, h, t)
        q = rect(c0[0] - math.sin(t) * gap, c0[1] + math.cos(t) * gap, w, h, t)
        add("disjoint_hbb_overlap", p, q)
    for _ in range(12):                                                   # one inside the other
        p, w, h = rrect(*c0, 60, 150)
        q, _, _ = rrect(c0[0] + r.uniform(-5, 5), c0[1] + r.uniform(-5, 5), 8, min(w, h) / 2.5)
        add("contained", p, q)
    for _ in range(35):                                                   # convex, non-rectangular
        p = convex(*c0)
        q = convex(*near(p, 0.3)) if r.random() < 0.6 else rrect(*near(p, 0.3))[0]
        add("convex", p, q)
    for _ in range(35):                                                   # non-convex simple
        p = dart(*c0)
        u = r.random()
        q = dart(*near(p, 0.3)) if u < 0.4 else convex(*near(p, 0.3)) if u < 0.7 else rrect(*near(p, 0.3))[0]
        add("nonconvex", p, q)
    for _ in range(5):                                                    # a dart and its own convex hull
        p, _, _ = rrect(*c0, 30, 150)
        p = rnd(p)
        q = list(p)
        q[0] = (round(p[0][0] * 0.5 + p[2][0] * 0.5 + (p[2][0] - p[0][0]) * 0.2, 1),
                round(p[0][1] * 0.5 + p[2][1] * 0.5 + (p[2][1] - p[0][1]) * 0.2, 1))
        add("nonconvex_in_hull", p, q)
    for _ in range(15):                                                   # mixed orientation, stated
        p, _, _ = rrect(*c0)
        q = convex(*near(p, 0.3))
        p, q = rnd(p), rnd(q)
        p = p if signed_area(p) > 0 else p[::-1]
        q = q if signed_area(q) < 0 else q[::-1]
        add("mixed_orientation", reorder(p, r.randrange(4), False), reorder(q, r.randrange(4), False), True)
    for _ in range(30):                                                   # large coordinates, ~5000 px
        c = (r.uniform(4500, 5500), r.uniform(4500, 5500))
        u = r.random()
        p = rrect(*c)[0] if u < 0.5 else convex(*c) if u < 0.8 else dart(*c)
        q = rrect(*near(p, 0.3))[0] if r.random() < 0.6 else convex(*near(p, 0.3))
        add("large_coords", p, q)
    for _ in range(5):
        p, _, _ = rrect(r.uniform(4500, 5500), r.uniform(4500, 5500))
        add("large_coords_identical", p, list(p))
    return out


# ---------------------------------------------------------------------------------- running the devkit
def quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def evaluate(dk, folder: Path, classes, metric07: bool) -> dict:
    """``voc_eval`` per class (paths relative to ``folder``); returns AP, last rec/prec, curves."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        res = {}
        for cls in classes:
            rec, prec, ap = quiet(dk.voc_eval, "Task1_{:s}.txt", "labelTxt/{:s}.txt", "imagesetfile.txt", cls,
                                  ovthresh=0.5, use_07_metric=metric07)
            res[cls] = {"ap": float(ap), "rec": [float(v) for v in rec], "prec": [float(v) for v in prec]}
        return res
    finally:
        os.chdir(cwd)


def npos_of(dk, folder: Path, cls: str) -> tuple[int, int]:
    """(npos, difficult) from the devkit's parse_gt, counted the way voc_eval counts (bool(difficult))."""
    names = [x.strip() for x in (folder / "imagesetfile.txt").read_text().splitlines()]
    objs = [o for n in names for o in dk.parse_gt(str(folder / "labelTxt" / f"{n}.txt")) if o["name"] == cls]
    return sum(not bool(o["difficult"]) for o in objs), sum(bool(o["difficult"]) for o in objs)


def ap07_exact_thresholds(rec, prec) -> float:
    """11-point AP with thresholds k/10 exactly (NOT the devkit's): shows where np.arange's 0.30000000000000004
    matters."""
    ap = 0.0
    for k in range(11):
        ps = [p for rv, p in zip(rec, prec) if rv >= k / 10]
        ap += (max(ps) if ps else 0.0) / 11
    return ap


def probes(dk) -> dict:
    """Small cases run through the devkit in a scratch folder: what an independent evaluator must reproduce."""

    def run(gt: dict[str, str], dets: str, cls: str = "plane", imageset: str | None = None) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            (t / "labelTxt").mkdir()
            for name, text in gt.items():
                (t / "labelTxt" / f"{name}.txt").write_text(text)
            (t / "imagesetfile.txt").write_text(imageset if imageset is not None else "".join(n + "\n" for n in gt))
            (t / f"Task1_{cls}.txt").write_text(dets)
            out = {}
            for key, m07 in (("voc07", True), ("voc12", False)):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        r = evaluate(dk, t, [cls], m07)[cls]
                    out[key] = {"ap": r["ap"] if math.isfinite(r["ap"]) else repr(r["ap"]),
                                "rec": [v if math.isfinite(v) else repr(v) for v in r["rec"]],
                                "prec": r["prec"]}
                except Exception as e:                  # how the reference fails is the point
                    out[key] = {"error": type(e).__name__}
            return out

    sq = "0 0 10 0 10 10 0 10"
    far = "500 500 510 500 510 510 500 510"
    res = {}
    res["iou_exactly_half_is_fp"] = run({"a": f"{sq} plane 0\n"}, "a 0.9 0 0 10 0 10 5 0 5\n")
    res["iou_just_above_half_is_tp"] = run({"a": f"{sq} plane 0\n"}, "a 0.9 0 0 10 0 10 5.1 0 5.1\n")
    res["difficult_2_is_ignored"] = run({"a": f"{sq} plane 2\n20 0 30 0 30 10 20 10 plane 0\n"},
                                        f"a 0.9 {sq}\na 0.8 {far}\na 0.7 20 0 30 0 30 10 20 10\n")
    res["difficult_absorbs_many"] = run({"a": f"{sq} plane 1\n20 0 30 0 30 10 20 10 plane 0\n"},
                                        f"a 0.9 {sq}\na 0.85 0 0 10 0 10 9 0 9\na 0.7 20 0 30 0 30 10 20 10\n")
    res["nine_field_line_is_not_difficult"] = run({"a": f"{sq} plane\n"}, f"a 0.9 {sq}\n")
    res["header_and_short_lines_skipped"] = run(
        {"a": f"imagesource:GoogleEarth\ngsd:0.5\n0 0 10 0 10 10 0\n{sq} plane 0\n"}, f"a 0.9 {sq}\n")
    res["tab_separated_gt_line_skipped"] = run({"a": "\t".join(sq.split()) + "\tplane\t0\n"}, f"a 0.9 {sq}\n")
    res["eleven_field_gt_line"] = run({"a": f"{sq} plane 0 extra\n"}, f"a 0.9 {sq}\n")
    res["no_positives_no_gt"] = run({"a": "imagesource:GoogleEarth\n"}, f"a 0.9 {sq}\n")
    res["no_positives_only_difficult"] = run({"a": f"{sq} plane 1\n"}, f"a 0.9 {sq}\na 0.8 {far}\n")
    res["det_image_not_in_imageset"] = run({"a": f"{sq} plane 0\n"}, f"a 0.9 {sq}\nb 0.8 {sq}\n")
    res["empty_detection_file"] = run({"a": f"{sq} plane 0\n"}, "")
    res["blank_line_in_detection_file"] = run({"a": f"{sq} plane 0\n"}, f"a 0.9 {sq}\n\n")
    res["image_listed_twice_in_imageset"] = run({"a": f"{sq} plane 0\n"}, f"a 0.9 {sq}\n", imageset="a\na\n")
    res["best_gt_taken_no_fallback"] = run({"a": f"{sq} plane 0\n1 0 11 0 11 10 1 10 plane 0\n"},
                                           f"a 0.9 {sq}\na 0.8 0.4 0 10.4 0 10.4 10 0.4 10\n")
    tens = "".join(f"{20 * i} 0 {20 * i + 10} 0 {20 * i + 10} 10 {20 * i} 10 plane 0\n" for i in range(10))
    # 3 TPs (recall exactly 0.3, precision 1), 3 FPs, a 4th TP: the devkit's AP07 takes 4/7 at its "0.3"
    hits = [f"a {s} {20 * i} 0 {20 * i + 10} 0 {20 * i + 10} 10 {20 * i} 10\n"
            for i, s in enumerate(("0.99", "0.98", "0.97", "0.5"))]
    fps = [f"a 0.{80 - i} {far}\n" for i in range(3)]
    res["voc07_recall_exactly_0.3"] = run({"a": tens}, "".join(hits + fps))
    res["blank_line_in_imageset"] = run({"a": f"{sq} plane 0\n"}, f"a 0.9 {sq}\n", imageset="a\n\n")
    return res


def shapely_iou(p: list[float], q: list[float]) -> float:
    from shapely.geometry import Polygon

    a, b = Polygon(list(zip(p[0::2], p[1::2]))), Polygon(list(zip(q[0::2], q[1::2])))
    assert a.is_valid and b.is_valid
    inter = a.intersection(b).area
    return inter / (a.area + b.area - inter)


def generate(devkit: Path) -> None:
    dk, polyiou = load_devkit(devkit)
    env = versions(devkit)
    OUT.mkdir(parents=True, exist_ok=True)
    for f in list(OUT.glob("labelTxt/*.txt")) + list(OUT.glob("Task1_*.txt")):
        f.unlink()
    scene = Scene(polyiou, SEED)
    scene.make_gts()
    scene.make_dets()
    scene.write(OUT)

    classes = list(CLASSES)
    how = (f"dota_evaluation_task1.voc_eval(detpath='Task1_{{:s}}.txt', annopath='labelTxt/{{:s}}.txt', "
           f"imagesetfile='imagesetfile.txt', classname, ovthresh=0.5, use_07_metric=True|False), run in this "
           f"folder, of CAPTAIN-WHU/DOTA_devkit@{env['devkit_commit']} unmodified; polyiou built by swig "
           f"{env['swig']} (PyPI) -c++ -python polyiou.i + setup.py build_ext --inplace ({env['gxx']}); numpy "
           f"{env['numpy']} (has np.bool, no shim), Python {env['python']}; map = mean AP over the 5 classes; "
           f"npos/difficult recounted from the devkit's parse_gt; made by benchmarks/dota_devkit_fixture.py")
    expected: dict = {"devkit_commit": env["devkit_commit"], "how": how, "env": env, "classes": classes}
    counts = {c: npos_of(dk, OUT, c) for c in classes}
    curves = {}
    for key, m07 in (("voc07", True), ("voc12", False)):
        res = evaluate(dk, OUT, classes, m07)
        block = {"ap": {c: res[c]["ap"] for c in classes},
                 "map": sum(res[c]["ap"] for c in classes) / len(classes),
                 "rec_last": {c: res[c]["rec"][-1] for c in classes},
                 "prec_last": {c: res[c]["prec"][-1] for c in classes},
                 "npos": {c: counts[c][0] for c in classes}}
        expected[key] = block
        curves = {c: {"rec": res[c]["rec"], "prec": res[c]["prec"]} for c in classes}
    expected["curves"] = curves                       # rec / prec do not depend on the metric
    expected["difficult"] = {c: counts[c][1] for c in classes}
    expected["detections"] = {c: len(scene.dets[c]) for c in classes}
    expected["probes"] = probes(dk)
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")

    pairs = make_pairs(polyiou, SEED + 1)
    doc = {"devkit_commit": env["devkit_commit"],
           "how": "polyiou.iou_poly(polyiou.VectorDouble(p), polyiou.VectorDouble(q)), p and q as x1 y1 ... x4 y4",
           "pairs": pairs}
    text = json.dumps(doc, separators=(",", ":"))
    text = text.replace(',{"kind"', ',\n{"kind"').replace('"pairs":[{', '"pairs":[\n{')
    (OUT / "polyiou_pairs.json").write_text(text + "\n")

    # ---- report
    n_gt = sum(len(v) for v in scene.gts.values())
    n_diff = sum(g["difficult"] > 0 for v in scene.gts.values() for g in v)
    shapes = [g["poly"] for v in scene.gts.values() for g in v]
    print(f"devkit {env['devkit_commit']}  {how}\n")
    print(f"GT objects {n_gt} (difficult {n_diff}, of which flag 2: "
          f"{sum(g['difficult'] == 2 for v in scene.gts.values() for g in v)}; non-convex "
          f"{sum(not is_convex(p) for p in shapes)}; per image "
          f"{[len(scene.gts[im]) for im in IMAGES]})")
    kinds: dict[str, dict[str, int]] = {}
    for c, ds in scene.dets.items():
        for d in ds:
            kinds.setdefault(c, {}).setdefault(d["kind"], 0)
            kinds[c][d["kind"]] += 1
    print(f"{'class':<15}{'npos':>6}{'diff':>6}{'dets':>6}{'AP07':>11}{'AP12':>11}{'AP07 k/10':>11}"
          "  rec_last prec_last")
    for c in classes:
        alt = ap07_exact_thresholds(curves[c]["rec"], curves[c]["prec"])
        print(f"{c:<15}{counts[c][0]:>6}{counts[c][1]:>6}{len(scene.dets[c]):>6}"
              f"{expected['voc07']['ap'][c]:>11.6f}{expected['voc12']['ap'][c]:>11.6f}{alt:>11.6f}"
              f"  {curves[c]['rec'][-1]:.6f} {curves[c]['prec'][-1]:.6f}")
    print(f"{'mAP':<33}{expected['voc07']['map']:>11.6f}{expected['voc12']['map']:>11.6f}")
    for c in classes:
        print(f"  {c}: {kinds[c]}")
    print("\nprobes:")
    for k, v in expected["probes"].items():
        print(f"  {k}: " + "; ".join(f"{m}: {r.get('error') or r['ap']}" for m, r in v.items()))
    diffs: dict[str, float] = {}
    for pr in pairs:
        d = abs(pr["iou"] - shapely_iou(pr["p"], pr["q"]))
        diffs[pr["kind"]] = max(diffs.get(pr["kind"], 0.0), d)
    print(f"\npolyiou pairs {len(pairs)}; max |iou_poly - shapely| overall {max(diffs.values()):.3e}")
    for k, v in diffs.items():
        print(f"  {k:<24}{sum(p['kind'] == k for p in pairs):>4}  {v:.3e}")
    gt_diff = 0.0
    for im in IMAGES:
        for cls, ds in scene.dets.items():
            for d in ds:
                if d["image"] != im:
                    continue
                for g in scene.same_class(im, cls):
                    gt_diff = max(gt_diff, abs(scene.iou(g["poly"], d["poly"]) - shapely_iou(flat(g["poly"]),
                                                                                             flat(d["poly"]))))
    print(f"fixture det/GT pairs: max |iou_poly - shapely| {gt_diff:.3e}")
    sizes = {p.name: p.stat().st_size for p in (OUT / "expected.json", OUT / "polyiou_pairs.json")}
    print(f"json sizes {sizes}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setup", action="store_true", help="make the side venv (runs/dota_devkit) and run there")
    p.add_argument("--env", default=str(ROOT / "runs/dota_devkit"))
    p.add_argument("--devkit-repo", default=DEVKIT_URL, help="a clone (bare or not) of the devkit, or its URL")
    p.add_argument("--devkit", default="", help="an unpacked devkit with polyiou built (what --setup makes)")
    args = p.parse_args()
    if args.setup:
        py, devkit = setup(Path(args.env), args.devkit_repo)
        sys.exit(subprocess.run([str(py), __file__, "--devkit", str(devkit)]).returncode)
    generate(Path(args.devkit or Path(args.env) / "DOTA_devkit"))


if __name__ == "__main__":
    main()

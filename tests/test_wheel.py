"""A real wheel: built from the tree, installed outside the checkout, run from another folder.

The model cards, the bundled model and its sample scene are package data (``fss_core/models``), so an installed
wheel finds them wherever it runs; this is what a user of `pip install fss-*.whl` gets. The test environment's
dependencies are reused (``--no-deps --target``): what is checked is the wheel's own contents.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what pyproject.toml builds from; nothing else of the checkout travels
SOURCES = ("pyproject.toml", "README.md", "fss", "fss_core", "fss_train", "fss_deploy")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder holding the installed wheel, the wheel's file names)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(root / "dist"), str(src)], check=True, capture_output=True, text=True)
    wheel = next((root / "dist").glob("fss-*.whl"))
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True)
    import zipfile
    return site, zipfile.ZipFile(wheel).namelist()


def _fss(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m fss ARGS` with the installed wheel first on the path, from ``cwd`` (not the checkout)."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "fss", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_wheel_carries_the_model_cards_the_bundled_model_and_the_sample(installed):
    _, names = installed
    for name in ("fss_core/models/fss-s.yaml", "fss_core/models/fss-r101.yaml", "fss_core/models/fss-n-aerial.pt",
                 "fss_core/models/fss-n-obb.pt",
                 "fss_core/models/sample-scene.jpg", "fss_core/models/sample-scene.txt", "fss/cli.py",
                 "fss_deploy/detect.py", "fss_train/assigners/fss.py"):
        assert name in names, name
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


def test_installed_wheel_runs_info_detect_and_the_quick_demo_from_another_folder(installed, tmp_path):
    site, _ = installed
    where = _fss(site, tmp_path, "info", "--help")
    probe = subprocess.run([sys.executable, "-c", "import fss, fss_core; print(fss.__file__, fss_core.__file__)"],
                           cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True)
    assert where.returncode == 0 and all(Path(p).is_relative_to(site) for p in probe.stdout.split()), probe
    r = _fss(site, tmp_path, "info", "fss-s")
    assert r.returncode == 0 and "CSPDarkNet" in r.stdout, r.stdout + r.stderr
    r = _fss(site, tmp_path, "detect")                       # the bundled model on the bundled sample scene
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((tmp_path / "runs/detect/summary.json").read_text())
    assert summary["processed"] == 1 and summary["failed"] == []
    r = _fss(site, tmp_path, "demo", "--quick", "--out", "demo")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert (tmp_path / "demo/report.md").is_file() and (tmp_path / "demo/results.json").is_file()


def test_the_checkout_entry_cli_py_runs_the_cli():
    """The card's top-level `python cli.py …` (README; also `torchrun … cli.py detect`, tested in test_detect)."""
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "--help"], capture_output=True, text=True,
                       cwd=ROOT.parent)
    assert r.returncode == 0 and "detect" in r.stdout and "Usage: fss" in r.stdout, r.stdout + r.stderr

"""The zero-overhead claim made structural: deployment code cannot reach training-only code."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the graph, the checkpoint, box ops, the one atomic file writer and the raster reader (the same pixels at training
# and inference; no training logic in any of them)
ALLOWED_FROM_TRAIN = ("fss_train.nn", "fss_train.checkpoint", "fss_train.boxes", "fss_train.fileio", "fss_train.geo")


def _imports(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, node.lineno, alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, node.lineno, node.module
                for alias in node.names:
                    yield path, node.lineno, f"{node.module}.{alias.name}"


def test_deploy_imports_only_graph_checkpoint_and_box_ops():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {name}" for p, line, name in _imports("fss_deploy")
           if (name == "fss_train" or name.startswith("fss_train."))
           and not any(name == a or name.startswith(a + ".") for a in ALLOWED_FROM_TRAIN)
           and name not in ("fss_train",) + tuple(a.rsplit(".", 1)[0] for a in ALLOWED_FROM_TRAIN)]
    assert bad == []


def test_deploy_does_not_import_fss_train_package_names_outside_the_rule():
    # `from fss_train import assigners` would slip through a prefix check: catch it explicitly
    bad = [f"{p.relative_to(ROOT)}:{line} imports {name}" for p, line, name in _imports("fss_deploy")
           if name.startswith("fss_train.") and name.count(".") == 1
           and name not in ALLOWED_FROM_TRAIN and name != "fss_train.__version__"]
    assert bad == []


def test_train_never_imports_deploy():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {name}" for p, line, name in _imports("fss_train")
           if name == "fss_deploy" or name.startswith("fss_deploy.")]
    assert bad == []


def test_rule_checker_catches_a_violation(tmp_path, monkeypatch):
    pkg = tmp_path / "fss_deploy"
    pkg.mkdir()
    (pkg / "bad.py").write_text("from fss_train.assigners import fss\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    found = [name for _, _, name in _imports("fss_deploy")]
    assert "fss_train.assigners" in found


def test_no_file_writer_besides_the_atomic_one():
    """One owner: every file the packages write goes through fss_train.fileio (temp + fsync + rename)."""
    import re

    pattern = re.compile(r"\.write_text\(|\.write_bytes\(|cv2\.imwrite\(|\.savefig\(|os\.replace\(")
    bad = [f"{p.relative_to(ROOT)}:{i}" for pkg in ("fss_train", "fss_deploy", "fss")
           for p in sorted((ROOT / pkg).rglob("*.py")) if p.name != "fileio.py"
           for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert bad == []


def _training_code_loaded(module: str, extra_path: Path | None = None) -> list[str]:
    """Import ``module`` in a fresh interpreter; the fss_train modules it loaded that the rule does not allow.
    A module that cannot be imported is an error, not an empty list."""
    import json
    import os
    import subprocess
    import sys

    code = ("import importlib, json, sys\nimportlib.import_module(sys.argv[1])\n"
            "print(json.dumps(sorted(k for k in sys.modules if k.startswith('fss_train'))))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (extra_path, ROOT) if p)}
    r = subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, f"importing {module} failed: {r.stderr[-2000:]}"
    return [k for k in json.loads(r.stdout) if k != "fss_train"
            and not any(k == a or k.startswith(a + ".") for a in ALLOWED_FROM_TRAIN)]


def test_importing_any_deploy_module_loads_no_training_code():
    """Indirect imports count too: after importing each deploy module (each in a fresh interpreter), sys.modules
    holds nothing of fss_train outside the rule — no assigners, losses, data or engine."""
    modules = sorted(f"fss_deploy.{p.stem}" for p in (ROOT / "fss_deploy").glob("*.py") if p.stem != "__init__")
    assert len(modules) >= 6
    bad = {m: found for m in modules if (found := _training_code_loaded(m))}
    assert bad == {}


def test_import_check_catches_a_planted_violation(tmp_path):
    """The check above can fail: a module that reaches training code through a deploy import is caught, and a
    module name that does not exist is an error."""
    import pytest

    (tmp_path / "planted_deploy.py").write_text("import fss_deploy.tiling\nimport fss_train.assigners\n")
    assert "fss_train.assigners" in _training_code_loaded("planted_deploy", tmp_path)
    assert _training_code_loaded("fss_deploy.tiling") == []
    with pytest.raises(AssertionError, match="importing fss_deploy.no_such_module failed"):
        _training_code_loaded("fss_deploy.no_such_module")


def test_the_core_imports_neither_side():
    """fss_core (what both sides share) imports nothing of fss, fss_train or fss_deploy."""
    bad = [f"{p.relative_to(ROOT)}:{line} imports {name}" for p, line, name in _imports("fss_core")
           if name.split(".")[0] in ("fss", "fss_train", "fss_deploy")]
    assert bad == [] and list((ROOT / "fss_core").glob("*.py"))

"""The shape, enforced: ``fss`` (API + CLI) -> {``fss_train``, ``fss_deploy``} -> ``fss_core``. The core imports
neither side and the two sides never import each other, so deployment cannot reach training code (the zero-overhead
claim made structural) and training never depends on an exporter."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"fss_core": ("fss", "fss_train", "fss_deploy"),      # package -> the top-level packages it may not import
             "fss_train": ("fss", "fss_deploy"),
             "fss_deploy": ("fss", "fss_train")}


def _imports(package: str, root: Path | None = None):
    """(file, line, imported module) of every absolute import under ``package`` (``from a import b`` also as a.b)."""
    for path in sorted(((root or ROOT) / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, node.lineno, alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, node.lineno, node.module


def _violations(package: str, root: Path | None = None) -> list[str]:
    return [f"{p.relative_to(root or ROOT)}:{line} imports {name}" for p, line, name in _imports(package, root)
            if name.split(".")[0] in FORBIDDEN[package]]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_crosses_the_rule(package):
    assert _violations(package) == []


def test_the_static_check_catches_a_planted_violation(tmp_path):
    for package, line in (("fss_deploy", "from fss_train.assigners import fss\n"),
                          ("fss_train", "import fss_deploy.export as e\n"), ("fss_core", "from fss import api\n")):
        (tmp_path / package).mkdir()
        (tmp_path / package / "bad.py").write_text(line)
        assert len(_violations(package, tmp_path)) == 1, package


def test_no_file_writer_besides_the_atomic_one():
    """One owner: every file the packages write goes through fss_core.fileio (temp + fsync + rename)."""
    import re

    pattern = re.compile(r"\.write_text\(|\.write_bytes\(|cv2\.imwrite\(|\.savefig\(|os\.replace\(")
    bad = [f"{p.relative_to(ROOT)}:{i}" for pkg in ("fss_train", "fss_deploy", "fss")
           for p in sorted((ROOT / pkg).rglob("*.py")) if p.name != "fileio.py"
           for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert bad == []


def _loaded_across_the_rule(package: str, modules: list[str] | None = None, extra_path: Path | None = None
                            ) -> list[str]:
    """Import every module of ``package`` in one fresh interpreter; the modules of the packages it may not import
    that got loaded (indirect imports count: a union, so none loaded means none by any single module). A module
    that cannot be imported is an error, not an empty list."""
    import json
    import os
    import subprocess
    import sys

    modules = modules or sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                                for p in (ROOT / package).rglob("*.py"))
    code = ("import importlib, json, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (extra_path, ROOT) if p)}
    r = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, f"importing {package} failed: {r.stderr[-2000:]}"
    return [k for k in json.loads(r.stdout) if k.split(".")[0] in FORBIDDEN[package]]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_every_module_loads_nothing_across_the_rule(package):
    """After importing each module of the package (a fresh interpreter), sys.modules holds nothing of the packages
    it may not use: no assigners, losses, data or engine under deployment; no exporter under training."""
    assert _loaded_across_the_rule(package) == []


def test_the_import_check_catches_a_planted_violation(tmp_path):
    """The check above can fail: a module judged by the deploy rule that reaches training code through another
    import is caught, and a module that does not import is an error."""
    (tmp_path / "planted.py").write_text("import fss_core.tiles\nimport fss_train.assigners\n")
    assert "fss_train.assigners" in _loaded_across_the_rule("fss_deploy", ["fss_deploy.tiling", "planted"], tmp_path)
    with pytest.raises(AssertionError, match="importing fss_deploy failed"):
        _loaded_across_the_rule("fss_deploy", ["fss_deploy.no_such_module"])

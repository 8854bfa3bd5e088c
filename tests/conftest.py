import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test starts with 2 torch threads, whatever the one before it set (`--threads`): a 4-image overfit
    test trained at 1 thread lands elsewhere (TAL AP50 0.40 at 1 thread, 0.92 at 2: float summation order in a
    chaotic 80-epoch run). The API itself restores the caller's threads (test_api)."""
    yield
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip("../shared/data is not beside the checkout")
    return path


def train_pico(root: Path, size: int, objects: int, min_size: float, max_size: float, epochs: int) -> Path:
    """Synthesize 4 images and train a tiny (pico) model on them through the CLI; returns last.pt."""
    from typer.testing import CliRunner

    from fss.cli import app
    from fss_train.data.synth import SynthConfig, synthesize

    synthesize(root / "data", SynthConfig(num_images=4, size=size, objects=objects, min_size=min_size,
                                          max_size=max_size, seed=5))
    (root / "pico.yaml").write_text("name: pico\nbackbone: cspdarknet\ndepth: 0.33\nwidth: 0.125\n")
    r = CliRunner().invoke(app, ["train", "--data", str(root / "data"), "--model", str(root / "pico.yaml"),
                                 "--epochs", str(epochs), "--batch", "4", "--imgsz", str(size), "--out",
                                 str(root / "run"), "--workers", "0", "--set", "lr_per_64=0.64", "--set", "mosaic=0",
                                 "--set", f"eval_interval={epochs}"])
    assert r.exit_code == 0, r.output
    return root / "run/last.pt"

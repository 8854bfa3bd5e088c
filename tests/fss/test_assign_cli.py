import cv2
from typer.testing import CliRunner

from fss.cli import app
from fss_core.checkpoint import make_checkpoint, save_checkpoint
from fss_core.nn import build_model, load_card
from fss_train.data import DOTA_CLASSES

runner = CliRunner()


def test_assign_figure_with_untrained_card(shared_data, tmp_path):
    ex = shared_data / "dota_devkit_example"
    out = tmp_path / "fig.png"
    result = runner.invoke(app, ["assign", str(ex / "images/P1888.png"), "--model", "fss-n", "--gt",
                                 str(ex / "labelTxt/P1888.txt"), "--out", str(out), "--imgsz", "512", "--vs", "tal"])
    assert result.exit_code == 0, result.output
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] > 500 and img.shape[1] > 1000
    assert result.output.count("GT ") == 3 and "tal" in result.output


def test_assign_figure_with_checkpoint_and_coco_labels(shared_data, tmp_path):
    ex = shared_data / "dota_devkit_example"
    model = build_model(load_card("fss-n").with_classes(len(DOTA_CLASSES[:15])))
    ckpt = save_checkpoint(make_checkpoint(model, DOTA_CLASSES[:15], assigner={"name": "fss",
                           "params": {"gamma": 2.0}}, input_size=(320, 320)), tmp_path / "m.pt")
    out = tmp_path / "fig.png"
    result = runner.invoke(app, ["assign", str(ex / "images/P1888.png"), "--model", str(ckpt), "--gt",
                                 str(ex / "coco_hbb.json"), "--out", str(out), "--num-gts", "2"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and result.output.count("GT ") == 2


def test_assign_errors_are_clear(shared_data, tmp_path):
    ex = shared_data / "dota_devkit_example"
    model = build_model(load_card("fss-n").with_classes(2))
    ckpt = save_checkpoint(make_checkpoint(model, ["cat", "dog"]), tmp_path / "m.pt")
    result = runner.invoke(app, ["assign", str(ex / "images/P1888.png"), "--model", str(ckpt), "--gt",
                                 str(ex / "labelTxt/P1888.txt"), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "not among the checkpoint" in result.output
    result = runner.invoke(app, ["assign", str(tmp_path / "nope.png"), "--model", "fss-n", "--gt",
                                 str(ex / "labelTxt/P1888.txt")])
    assert result.exit_code == 1 and "nope.png" in result.output
    assert not (tmp_path / "x.png").exists()


def test_assign_never_replaces_a_figure_unasked(shared_data, tmp_path, monkeypatch):
    """The default output is runs/assign/<image>.png, then <image>-2.png; an existing --out needs --exist-ok."""
    ex = shared_data / "dota_devkit_example"
    monkeypatch.chdir(tmp_path)
    args = ["assign", str(ex / "images/P1888.png"), "--model", "fss-n", "--gt", str(ex / "labelTxt/P1888.txt"),
            "--imgsz", "320", "--num-gts", "1"]
    for _ in range(2):
        assert runner.invoke(app, args).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "runs/assign").iterdir()) == ["P1888-2.png", "P1888.png"]
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"keep")
    r = runner.invoke(app, [*args, "--out", str(mine)])
    assert r.exit_code == 1 and "exists" in r.output and mine.read_bytes() == b"keep"
    r = runner.invoke(app, [*args, "--out", str(mine), "--exist-ok"])
    assert r.exit_code == 0 and cv2.imread(str(mine)) is not None

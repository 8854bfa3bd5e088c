"""Hostile names and folders (issue #34): nothing fss writes leaves its output folder, and --exist-ok replaces only
what an earlier fss run wrote. One case a line where a table fits; the real CLI on real checkpoint/ONNX files."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import grid_checkpoint
from typer.testing import CliRunner

from fss.cli import app
from fss_core.fileio import PathEscapeError, atomic_write, safe_name
from fss_deploy.export import export_onnx

runner = CliRunner()
HOSTILE_CLASSES = ("../../../../victim", "a/b\nc")


def invoke(args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name,kept", [
    ("small-vehicle", True), ("potted plant", True), ("été", True), ("a_b", True),
    ("../../../../victim", False), ("a/b", False), ("a\\b", False), ("a\nb", False), ("", False), (".hidden", False),
    ("..", False), ("x" * 300, False), ("CON ", False), ("name:stream", False),
])
def test_safe_name_keeps_harmless_names_and_makes_the_rest_one_component(name, kept):
    safe = safe_name(name)
    assert (safe == name) is kept
    assert "/" not in safe and "\\" not in safe and "\n" not in safe and not safe.startswith(".")
    assert 0 < len(safe.encode()) <= 120 and safe_name(safe) == safe


def test_safe_names_of_different_names_differ():
    names = ["a/b", "a_b", "a\\b", "a\nb", "../b", "..b", "x" * 300, "x" * 301]
    assert len({safe_name(n) for n in names}) == len(names)


def test_a_write_outside_its_folder_is_refused(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(PathEscapeError, match="refusing to write outside the output folder"):
        atomic_write(out / "dota" / "../../victim.txt", "x", within=out)
    (tmp_path / "elsewhere").mkdir()
    out.mkdir()
    os.symlink(tmp_path / "elsewhere", out / "link")                  # a link planted inside the folder
    with pytest.raises(PathEscapeError):
        atomic_write(out / "link" / "x.txt", "x", within=out)
    assert not (tmp_path / "victim.txt").exists() and not (tmp_path / "elsewhere/x.txt").exists()
    assert atomic_write(out / "dota" / "ok.txt", "x", within=out).read_text() == "x"


@pytest.mark.parametrize("kind", ["pt", "onnx"])
def test_class_names_that_are_paths_stay_inside_the_output_folder(tmp_path, kind):
    """A class name such as ``../../../../victim`` (ONNX metadata, or a COCO category carried into a checkpoint)
    named the DOTA file `dota/Task2_<class>.txt`, and the writer created the folders: a file anywhere. Now every
    class's file is inside --out under a safe name, and the lines are all there."""
    work = tmp_path / "a/b/c/d"
    work.mkdir(parents=True)
    model = grid_checkpoint(work / "hostile.pt", classes=HOSTILE_CLASSES)
    if kind == "onnx":
        model = export_onnx(model, work / "hostile.onnx", dynamic=True).path
    image = work / "img.png"
    cv2.imwrite(str(image), np.full((256, 256, 3), 90, np.uint8))
    before = files_under(tmp_path)
    out = work / "out"
    r = invoke(["detect", image, "--model", model, "--out", out, "--conf", "0.01"])
    assert r.exit_code == 0, r.output
    assert all(p.is_relative_to(out) for p in files_under(tmp_path) - before)
    task2 = sorted(p.name for p in (out / "dota").iterdir())
    assert task2 == sorted(f"Task2_{safe_name(c)}.txt" for c in HOSTILE_CLASSES)
    lines = sum(len(p.read_text().splitlines()) for p in (out / "dota").iterdir())
    assert lines == json.loads((out / "summary.json").read_text())["detections"] == 64 + 256


def test_exist_ok_never_replaces_what_fss_did_not_write(tmp_path):
    """--exist-ok into a folder that is not an fss detect output (no run.json) deleted DIR/images — here the very
    images being detected — and replaced the user's predictions.json. Now it is refused, with or without --exist-ok,
    and nothing in the folder changes."""
    model = grid_checkpoint(tmp_path / "grid.pt")
    folder = tmp_path / "project"
    (folder / "images").mkdir(parents=True)
    cv2.imwrite(str(folder / "images/a.png"), np.full((256, 256, 3), 90, np.uint8))
    (folder / "predictions.json").write_text("[\"mine\"]")
    (folder / "summary.json").write_text("{\"mine\": 1}")
    snapshot = {p: p.read_bytes() for p in files_under(folder)}
    for extra in ([], ["--exist-ok"]):
        r = invoke(["detect", folder / "images", "--model", model, "--out", folder, *extra])
        assert r.exit_code != 0 and "not the output folder of an fss detect run" in r.output, r.output
        assert "pass --exist-ok" not in r.output
        assert {p: p.read_bytes() for p in files_under(folder)} == snapshot
    out = tmp_path / "out"                           # an fss run's own folder: --exist-ok replaces its results
    assert invoke(["detect", folder / "images", "--model", model, "--out", out]).exit_code == 0
    r = invoke(["detect", folder / "images", "--model", model, "--out", out, "--conf", "0.7", "--exist-ok"])
    assert r.exit_code == 0 and json.loads((out / "summary.json").read_text())["detections"] == 64


def test_a_very_long_image_name_is_detected_and_named_safely(tmp_path):
    """A 234-character image name aborted the run (ENAMETOOLONG for `<name>-<hash>.geojson` and the temp file), with
    "free space and rerun" advice; now its outputs carry a shortened safe name."""
    model = grid_checkpoint(tmp_path / "grid.pt")
    image = tmp_path / ("n" * 230 + ".png")
    cv2.imwrite(str(image), np.full((256, 256, 3), 90, np.uint8))
    r = invoke(["detect", image, "--model", model, "--out", tmp_path / "out", "--save-images"])
    assert r.exit_code == 0, r.output
    (yolo,) = (tmp_path / "out/yolo").iterdir()
    assert yolo.name == f"{safe_name(image.stem)}.txt" and len(yolo.read_text().splitlines()) == 64 + 256


def test_an_out_inside_the_input_folder_is_not_read_as_input(tmp_path):
    """--out inside the input folder: each rerun detected its own saved images (4 -> 8 -> 12 inputs)."""
    model = grid_checkpoint(tmp_path / "grid.pt")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        cv2.imwrite(str(images / f"i{i}.png"), np.full((256, 256, 3), 90, np.uint8))
    for _ in range(2):
        r = invoke(["detect", images, "--model", model, "--out", images / "out", "--save-images"])
        assert r.exit_code == 0, r.output
        summary = json.loads((images / "out/summary.json").read_text())
        assert summary["images"] == 2, summary
    assert summary["skipped_done"] == 2


# ------------------------------------------------------------------------------------------ eval
def test_eval_json_never_replaces_an_existing_file(tmp_path, shared_data):
    """`fss eval --json FILE` replaced any file (a ground-truth json in the report)."""
    gt = tmp_path / "gt.json"
    gt.write_text('{"images": [], "annotations": [], "categories": []}')
    before = gt.read_bytes()
    r = invoke(["eval", "--data", shared_data / "dota_devkit_example", "--predictions", tmp_path / "none.json",
                "--json", gt, "--out", tmp_path / "e"])
    assert r.exit_code != 0 and f"--json {gt} exists" in r.output and gt.read_bytes() == before



# ------------------------------------------------------------------------------------------ data convert
def test_convert_to_dota_keeps_every_object_of_names_with_whitespace(tmp_path, shared_data):
    """coco8's `potted plant` made its DOTA line unparsable (13 objects became 12, "0 problems"); a newline in a
    name turned 5 classes into 6. Whitespace is written as '_' (said on stderr), and every object reads back."""
    from fss_train.data import read_dataset

    src = shared_data / "coco8/annotations/instances_train.json"
    r = invoke(["data", "convert", src, "--to", "dota", "--out", tmp_path / "d"])
    assert r.exit_code == 0 and "'traffic light' -> 'traffic_light'" in r.output, r.output
    before, after = read_dataset(src), read_dataset(tmp_path / "d")
    assert after.num_objects == before.num_objects == 13 and not after.problems
    assert after.classes == ["_".join(c.split()) for c in before.classes]         # the same 80, in order


def test_convert_refuses_names_that_dota_lines_would_merge(tmp_path):
    from fss_train.data.dota import dota_class_tokens

    assert dota_class_tokens(["a b", "a\nc"]) == {"a b": "a_b", "a\nc": "a_c"}
    with pytest.raises(ValueError, match="'a b' and 'a_b' would both be written as 'a_b'"):
        dota_class_tokens(["a b", "a_b"])
    with pytest.raises(ValueError, match="has no characters"):
        dota_class_tokens([" \n"])


# ------------------------------------------------------------------------------------------ data split
def test_split_into_its_own_source_is_refused_and_changes_nothing(tmp_path, shared_data):
    """`fss data split SRC --out SRC` mixed tiles into the source's images/ (then trained as negatives)."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(shared_data / "dota_devkit_example", src)
    before = {p: p.stat().st_mtime_ns for p in files_under(src)}
    for out in (src, src / "images"):
        r = invoke(["data", "split", src, "--out", out, "--tile", "512"])
        assert r.exit_code != 0 and "--out holds the images being split" in r.output, r.output
    assert {p: p.stat().st_mtime_ns for p in files_under(src)} == before
    assert invoke(["data", "split", src, "--out", src / "tiles", "--tile", "512"]).exit_code in (0, 1)


# ------------------------------------------------------------------------------------------ concurrency
def test_a_second_process_writing_into_a_held_folder_is_refused(tmp_path):
    """Two `fss train` into one --out both exited 0 and left a folder mixing both runs. A folder held by one fss
    process (here a real second process holds it) is refused to the next, with the holder named."""
    import subprocess
    import sys

    from fss_core.fileio import FolderBusy, exclusive

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from fss_core.fileio import exclusive\n"
                               f"with exclusive({str(out)!r}, 'fss train'):\n print('held', flush=True)\n"
                               " sys.stdin.readline()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusy, match=rf"another fss process is writing into it \(pid {holder.pid}: fss train"):
            with exclusive(out, "fss train"):
                pass
        r = invoke(["train", "--data", tmp_path / "none", "--out", out])
        assert r.exit_code != 0
        grid = grid_checkpoint(tmp_path / "grid.pt")
        image = tmp_path / "i.png"
        cv2.imwrite(str(image), np.full((256, 256, 3), 90, np.uint8))
        r = invoke(["detect", image, "--model", grid, "--out", out])
        assert r.exit_code != 0 and "another fss process is writing into it" in r.output, r.output
    finally:
        holder.communicate("\n", timeout=30)
    with exclusive(out, "fss train"):                      # free again once the holder ended
        pass
    assert not out.exists()                                # and nothing was left behind in it


def test_train_refuses_a_folder_another_training_holds(tmp_path, monkeypatch):
    import fss.api
    from fss_core.fileio import exclusive

    with exclusive(tmp_path / "run", "fss train"):
        # within one process the advisory lock is per open file: a second open sees it held as well
        with pytest.raises(Exception, match="another fss process is writing into it"):
            fss.api.train(str(Path(__file__).resolve().parents[2].parent / "shared/data/dota_devkit_example"),
                          epochs=1, imgsz=64, batch=2, workers=0, out=tmp_path / "run")


@pytest.mark.parametrize("to", ["dota", "yolo", "coco"])
def test_an_interrupted_conversion_does_not_read_as_a_dataset(tmp_path, shared_data, monkeypatch, to):
    """`fss data convert` killed mid-way left a partial folder that read as a smaller, complete-looking dataset.
    Now it is refused with the way out, and the rerun with --exist-ok completes it."""
    import fss_train.data.formats as formats
    from fss_train.data import read_dataset

    src = shared_data / "dota_devkit_example"
    real, calls = formats.link_or_copy, []

    def killed_after_one(a, b):
        calls.append(b)
        if len(calls) > 1:                      # the second of the example's two images
            raise KeyboardInterrupt
        return real(a, b)

    monkeypatch.setattr(formats, "link_or_copy", killed_after_one)
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        formats.convert_dataset(read_dataset(src), to, out)
    monkeypatch.setattr(formats, "link_or_copy", real)
    target = {"dota": out, "yolo": out / "data.yaml", "coco": out / "annotations.json"}[to]
    if target.exists():
        with pytest.raises(ValueError, match=f"an interrupted conversion to {to}"):
            read_dataset(target)
    r = invoke(["data", "convert", src, "--to", to, "--out", out, "--exist-ok"])
    assert r.exit_code == 0, r.output
    assert read_dataset(target).num_objects == read_dataset(src).num_objects


# ------------------------------------------------------------------------------------------ inputs that are not files
def test_a_named_pipe_among_the_images_is_skipped_not_waited_on(tmp_path):
    """A FIFO named like an image hung `fss detect` and `fss data check` with no output. In a subprocess with a
    timeout, so a regression fails instead of hanging the suite."""
    import subprocess
    import sys

    model = grid_checkpoint(tmp_path / "grid.pt")
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((256, 256, 3), 90, np.uint8))
    os.mkfifo(folder / "b.png")
    run = [sys.executable, "-m", "fss", "detect"]
    r = subprocess.run([*run, folder, "--model", model, "--out", tmp_path / "o"], capture_output=True, text=True,
                       timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0 and json.loads((tmp_path / "o/summary.json").read_text())["images"] == 1, r.stderr
    r = subprocess.run([*run, folder / "b.png", "--model", model, "--out", tmp_path / "p"], capture_output=True,
                       text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 1 and "b.png: not a regular file" in r.stderr + r.stdout


def test_paths_with_brackets_print_as_they_are(tmp_path):
    """Messages are printed with rich; `[red]x[/red]` in a path was taken as markup and vanished from them."""
    model = grid_checkpoint(tmp_path / "grid.pt")
    folder = tmp_path / "[red]x[" / "red]"
    folder.mkdir(parents=True)
    image = folder / "[bold]img.png"
    cv2.imwrite(str(image), np.full((256, 256, 3), 90, np.uint8))
    out = tmp_path / "o[b]"
    r = invoke(["detect", image, "--model", model, "--out", out])
    assert r.exit_code == 0 and str(out) in r.output and "[bold]img.png" in r.output, r.output
    (tmp_path / "bad[red]x[red].png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    r = invoke(["detect", tmp_path / "bad[red]x[red].png", "--model", model, "--out", tmp_path / "q"])
    assert r.exit_code == 1 and "bad[red]x[red].png" in r.output, r.output


def test_a_write_error_that_is_not_a_full_disk_does_not_say_free_space(tmp_path, monkeypatch):
    import errno

    import fss_deploy.folder_run as det

    model = grid_checkpoint(tmp_path / "grid.pt")
    image = tmp_path / "i.png"
    cv2.imwrite(str(image), np.full((256, 256, 3), 90, np.uint8))
    real = det.atomic_write

    def gone(path, data, **kw):
        if path.parent.name == ".per_image":
            raise OSError(errno.ENOENT, "No such file or directory", str(path))
        return real(path, data, **kw)

    monkeypatch.setattr(det, "atomic_write", gone)
    r = invoke(["detect", image, "--model", model, "--out", tmp_path / "o"])
    assert r.exit_code != 0 and "rerun the same command to resume" in r.output and "free space" not in r.output


def test_the_stale_file_clean_up_leaves_another_writers_temp_file(tmp_path):
    """Rebuilding yolo/ removes files of inputs this run does not have, but never a writer's temp file in flight."""
    model = grid_checkpoint(tmp_path / "grid.pt")
    image, other = tmp_path / "i.png", tmp_path / "other.png"
    for p in (image, other):
        cv2.imwrite(str(p), np.full((256, 256, 3), 90, np.uint8))
    assert invoke(["detect", image, other, "--model", model, "--out", tmp_path / "o"]).exit_code == 0
    in_flight, stale = tmp_path / "o/yolo/.other.txt.k3j2.tmp", tmp_path / "o/yolo/other.txt"
    in_flight.write_text("half")
    assert stale.is_file()
    r = invoke(["detect", image, "--model", model, "--out", tmp_path / "o"])        # the same run, one input less
    assert r.exit_code == 0, r.output
    assert in_flight.exists() and not stale.exists() and (tmp_path / "o/yolo/i.txt").is_file()


def test_resume_names_a_last_pt_that_belongs_to_another_run(tmp_path):
    """A last.pt copied from elsewhere: --resume said only that the other run's data folder did not exist."""
    import shutil

    from fss_deploy.detect import DEFAULT_MODEL

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: my/data.yaml\nepochs: 3\n")
    shutil.copy(DEFAULT_MODEL, run / "last.pt")
    r = invoke(["train", "--resume", "--out", run])
    assert r.exit_code != 0 and "is not this folder's run" in r.output and "my/data.yaml" in r.output, r.output

"""Feedback while work runs: the training bar stays readable at 80 columns and tells the time left for the run."""

import io
import time

from rich.console import Console

from fss.progress import TrainProgress, step_counter


def _render(progress) -> str:
    console = progress.console
    console.file.seek(0)
    console.file.truncate()
    console.print(progress.get_renderable())
    return console.file.getvalue()


def test_train_bar_fits_80_columns_with_the_run_eta():
    console = Console(file=io.StringIO(), width=80, force_terminal=False, color_system=None)
    tp = TrainProgress(console)
    stats = {"loss": 3.14159, "pos_per_gt": 1.93, "images_per_s": 123.4}
    task = tp.start_epoch(2, 30, 250)
    time.sleep(0.05)
    tp.step(task, 119, stats)
    line = _render(tp.progress).strip()
    assert "epoch 3/30" in line and "120/250" in line and "loss 3.142" in line and "pos/GT 1.93" in line
    assert "run ETA 0:00:" in line and "…" not in line and len(line) <= 80
    # later epochs are estimated from the last whole epoch (its evaluation included)
    tp.end_epoch(task, {"epoch": 3, "loss": 3.1, "cls": 1.0, "box": 1.0, "obj": 1.0, "pos_per_gt": 1.9,
                        "rank_consistency": float("nan"), "images_per_s": 120.0, "AP": float("nan")})
    tp._last_epoch_s = 600.0
    task = tp.start_epoch(3, 30, 250)
    tp.step(task, 0, stats)
    assert "run ETA 4:2" in _render(tp.progress)            # 26 epochs × 600 s + the rest of this one ≈ 4:20


def test_tile_counter_shows_only_big_images():
    from rich.progress import Progress

    progress = Progress(console=Console(file=io.StringIO(), width=80))
    on_tiles = step_counter(progress, "tiles", min_total=64)
    on_tiles(8, 9)                                           # a small image: no second bar
    assert len(progress.tasks) == 0
    on_tiles(8, 9216)
    assert len(progress.tasks) == 1 and progress.tasks[0].completed == 8
    on_tiles(9216, 9216)                                     # done: removed
    assert len(progress.tasks) == 0


def test_an_image_of_many_tiles_is_given_its_expected_duration_once():
    """A 100,000² GeoTIFF is ~100,000 tiles: one line says how many and how long at the rate so far (a bar is not seen
    in a log file); a smaller image gets no line, and the next big image gets its own."""
    from rich.progress import Progress

    from fss.progress import tile_counter

    console = Console(file=io.StringIO(), width=200)
    on_tiles = tile_counter(Progress(console=console, disable=False), large=10_000, after_s=0.01)
    for done in (8, 16, 24):
        on_tiles(done, 9_999)
        time.sleep(0.02)
    on_tiles(9_999, 9_999)
    assert "tiles in this image" not in console.file.getvalue()
    for total in (20_000, 30_000):
        for done in (8, 16, 24, total):
            on_tiles(done, total)
            time.sleep(0.02)
    lines = [line for line in console.file.getvalue().splitlines() if "tiles in this image" in line]
    assert [line.split()[0] for line in lines] == ["20,000", "30,000"], lines
    assert "tiles/s" in lines[0] and "more at" in lines[0]

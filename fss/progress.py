"""What the CLI and the demo show while work runs: rich progress bars on stderr (stdout stays for results)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

err = Console(stderr=True, soft_wrap=True)


class TrainProgress:
    """A bar per epoch (short figures and the time left for the whole run, readable at 80 columns); a line per
    finished epoch with the full losses."""

    def __init__(self, console: Console | None = None):
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=14), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}", markup=False), TextColumn("{task.fields[eta]}"),
                                 console=console or err)
        self._epoch_start = self._last_epoch_s = None
        self._left = 0

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int, steps: int):
        self._epoch_start, self._left, self._steps = time.perf_counter(), epochs - epoch - 1, steps
        return self.progress.add_task(f"epoch {epoch + 1}/{epochs}", total=steps, info="", eta="")

    def step(self, task, i: int, s: dict) -> None:
        spent = time.perf_counter() - self._epoch_start
        per_step = spent / (i + 1)
        # the rest of this epoch, then every later epoch as long as the last whole one took (its evaluation
        # included), or as this epoch's steps until one has finished
        left = (self._steps - i - 1) * per_step + self._left * (self._last_epoch_s or self._steps * per_step)
        self.progress.update(task, completed=i + 1, eta=f"run ETA {_clock(left)}",
                             info=f"loss {s['loss']:.3f} pos/GT {s['pos_per_gt']:.2f} {s['images_per_s']:.1f} img/s")

    def end_epoch(self, task, row: dict) -> None:
        self._last_epoch_s = time.perf_counter() - self._epoch_start
        self.progress.remove_task(task)
        ap = row.get("AP")
        ap_txt = f" AP {ap:.4f} AP50 {row.get('AP50', float('nan')):.4f}" if ap == ap else ""
        rc = row["rank_consistency"]
        rc_txt = f" rank-consistency {rc:.3f}" if rc == rc else ""       # nan: no GT had two positives
        self.progress.console.print(f"epoch {row['epoch']}: loss {row['loss']:.4f} (cls {row['cls']:.3f} box "
                                    f"{row['box']:.3f} obj {row['obj']:.3f}) pos/GT {row['pos_per_gt']:.2f}"
                                    f"{rc_txt}{ap_txt} ({row['images_per_s']:.1f} img/s)", highlight=False)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def counter(total: int, label: str, rank: int = 0):
    """(progress, advance(info="")) for a loop over ``total`` items; silent when there is nothing to count
    or on ranks other than 0."""
    progress = Progress("[bold]" + label, BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}", markup=False),       # file names: printed as they are
                        TimeElapsedColumn(), TimeRemainingColumn(), console=err, disable=total == 0 or rank != 0)
    task = progress.add_task(label, total=total, info="")
    return progress, lambda info="": progress.update(task, advance=1, info=info)


def step_counter(progress: Progress, label: str, min_total: int = 0):
    """callback(done, total) that shows a bar in ``progress`` for work whose size is known only once it starts
    (eval batches, benchmark runs, verified images, the tiles of a big image), removed when done; nothing for
    fewer than ``min_total`` (detect's tile bar: 64, so only images that take a while get one)."""
    state = {"task": None}

    def update(done: int, total: int) -> None:
        if total < min_total or progress.disable:
            return
        if state["task"] is None:
            state["task"] = progress.add_task(label, total=total, info="")
        progress.update(state["task"], completed=done)
        if done >= total:
            progress.remove_task(state["task"])
            state["task"] = None

    return update


LARGE_IMAGE_TILES = 10_000     # an image of this many tiles gets one line with its expected duration
ESTIMATE_AFTER_S = 10.0        # measured over its first seconds (the bar's time left is not seen in a log file)


def tile_counter(progress: Progress, min_total: int = 64, large: int = LARGE_IMAGE_TILES,
                 after_s: float = ESTIMATE_AFTER_S):
    """detect's ``on_tiles(done, total)``: the tile bar of :func:`step_counter`, and for an image of ``large`` tiles
    or more one line, once ``after_s`` seconds of it have run, with its tile count and the time it will take at the
    rate so far (a sparse 100,000² GeoTIFF is 103,041 tiles of 512 px: hours, and a bar is not shown in a log)."""
    bar = step_counter(progress, "tiles", min_total)
    state: dict = {"start": None, "told": False}

    def update(done: int, total: int) -> None:
        bar(done, total)
        now = time.perf_counter()
        if state["start"] is None:
            state["start"] = (now, done)
        t0, done0 = state["start"]
        if total >= large and not state["told"] and now - t0 >= after_s and done > done0:
            rate = (done - done0) / (now - t0)
            progress.console.print(f"{total:,} tiles in this image: about {_clock((total - done) / rate)} more at "
                                   f"{rate:.1f} tiles/s (an interrupted image is detected again from its start)",
                                   highlight=False, markup=False)
            state["told"] = True
        if done >= total:
            state.update(start=None, told=False)

    return update


def work_bar(label: str):
    """(progress, callback(done, total)): a transient bar on stderr for one piece of work (eval, bench, verify)."""
    progress = Progress("[bold]" + label, BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=err, transient=True)
    return progress, step_counter(progress, label)

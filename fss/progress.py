"""What the CLI and the demo show while work runs: rich progress bars on stderr (stdout stays for results)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

err = Console(stderr=True, soft_wrap=True)


class TrainProgress:
    """A bar per epoch: losses, positives per GT, images/s; a line per finished epoch."""

    def __init__(self):
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err)

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int, steps: int):
        return self.progress.add_task(f"epoch {epoch + 1}/{epochs}", total=steps, info="")

    def step(self, task, i: int, s: dict) -> None:
        self.progress.update(task, completed=i + 1, info=f"loss {s['loss']:.3f} (cls {s['cls']:.3f} box {s['box']:.3f}"
                             f" obj {s['obj']:.3f}) pos/GT {s['pos_per_gt']:.2f} {s['images_per_s']:.1f} img/s")

    def end_epoch(self, task, row: dict) -> None:
        self.progress.remove_task(task)
        ap = row.get("AP")
        ap_txt = f" AP {ap:.4f} AP50 {row.get('AP50', float('nan')):.4f}" if ap == ap else ""
        rc = row["rank_consistency"]
        rc_txt = f" rank-consistency {rc:.3f}" if rc == rc else ""       # nan: no GT had two positives
        self.progress.console.print(f"epoch {row['epoch']}: loss {row['loss']:.4f} pos/GT {row['pos_per_gt']:.2f}"
                                    f"{rc_txt}{ap_txt} ({row['images_per_s']:.1f} img/s)", highlight=False)


def counter(total: int, label: str, rank: int = 0):
    """(progress, advance(info="")) for a loop over ``total`` items; silent when there is nothing to count
    or on ranks other than 0."""
    progress = Progress("[bold]" + label, BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=err, disable=total == 0 or rank != 0)
    task = progress.add_task(label, total=total, info="")
    return progress, lambda info="": progress.update(task, advance=1, info=info)


def tile_counter(progress: Progress, min_tiles: int = 64):
    """on_tiles(done, total) for a detector: a second bar with the tiles of an image large enough to take a while
    (``min_tiles`` or more: a GeoTIFF of 30,000 px has ~9,000 at 512 px), removed when the image is done."""
    state = {"task": None}

    def on_tiles(done: int, total: int) -> None:
        if total < min_tiles or progress.disable:
            return
        if state["task"] is None:
            state["task"] = progress.add_task("tiles", total=total, info="")
        progress.update(state["task"], completed=done)
        if done >= total:
            progress.remove_task(state["task"])
            state["task"] = None

    return on_tiles

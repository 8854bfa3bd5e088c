"""What ``fss detect`` reads: files, folders (recursively), globs and .txt lists resolved to image paths, and the
decode thread that opens the next images (a GeoTIFF for window reads, anything else decoded) while the current one
runs through the backend."""

from __future__ import annotations

import glob
import queue
import threading
from pathlib import Path

from fss_core import defaults
from fss_core.fileio import read_text
from fss_core.imageio import IMAGE_SUFFIXES, read_image
from fss_core.raster import GEO_SUFFIXES, MISSING, Raster, is_geotiff


def resolve_sources(sources: list[str]) -> list[Path]:
    """Files, folders (recursively), globs and .txt lists of paths -> image paths, in order, once each."""
    found: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():          # regular files only: a named pipe (FIFO) would block the run on open
            found += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
        elif p.suffix == ".txt" and p.is_file():
            base = p.parent
            for n, line in enumerate(read_text(p).splitlines(), start=1):
                if line.strip():
                    q = Path(line.strip())
                    q = q if q.is_absolute() else base / q
                    if q.is_dir() or q.suffix == ".txt":    # expanded once here, again when resolved a second time
                        raise ValueError(f"{p}:{n}: {q} is a folder or a list; a list names image files only")
                    found.append(q)
        elif any(ch in s for ch in "*?[") and not p.exists():        # an existing `a[1].png` is a file, not a glob
            found += sorted(Path(q) for q in glob.glob(s, recursive=True)
                            if Path(q).suffix.lower() in IMAGE_SUFFIXES and Path(q).is_file())
        else:
            found.append(p)           # a missing file is reported per image, not here
    seen, unique = set(), []
    for p in found:
        key = str(p.resolve()) if p.exists() else str(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def open_image(path: Path, max_pixels: int | None = None, bands: tuple[int, ...] | None = None,
               stretch: tuple[float, float] = defaults.DEFAULT_STRETCH):
    """A GeoTIFF opened for window reads (rasterio installed: nothing decoded yet), else the decoded BGR array.
    Raises ValueError naming the file when it cannot be read."""
    if is_geotiff(path):
        return Raster(path, bands, stretch)
    if bands:
        raise ValueError(f"{path}: --bands applies to GeoTIFFs (.tif) read with rasterio ({MISSING})"
                         if Path(path).suffix.lower() in GEO_SUFFIXES else f"{path}: --bands applies to GeoTIFFs only")
    return read_image(path, max_pixels)


def decode_ahead(paths: list[Path], q: queue.Queue, stop: threading.Event, max_pixels: int | None = None,
                 bands=None, stretch=defaults.DEFAULT_STRETCH) -> None:
    """Put (index, path, opened image or None, error or None) on ``q`` for each path, then None; stops early when
    ``stop`` is set (the consumer failed)."""
    for i, p in enumerate(paths):
        if stop.is_set():
            break
        try:
            q.put((i, p, open_image(p, max_pixels, bands, stretch), None))
        except ValueError as exc:
            q.put((i, p, None, str(exc)))
    q.put(None)

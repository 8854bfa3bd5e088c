"""The one way fss writes a file: atomically (temp file in the same folder, fsync, rename).

A reader never sees half a file, and a crash or a full disk leaves the previous version intact.
Training and deployment code both use it (the dependency rule allows ``fss_core.fileio``: it holds
no training logic).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def default_file_mode() -> int:
    """0666 minus the process umask (what ``open()`` would have given)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# bytes of a safe name, its hash included: with a suffix and a prefix (``Task2_``, the writer's ``.tmp``) far below
# the 255 bytes a file name may have
NAME_BYTES = 120
UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')      # separators, control characters, Windows' reserved


def _safe_chars(text: str, limit: int) -> str:
    """``text`` with its unsafe characters made ``_``, cut to at most ``limit`` UTF-8 bytes (never inside a
    character), without leading dots; ``_`` when nothing is left."""
    return UNSAFE_CHARS.sub("_", text).encode()[:limit].decode(errors="ignore").lstrip(".") or "_"


def safe_name(name: str) -> str:
    """``name`` as one harmless file-name component, for every name that becomes part of a file name (class names,
    image stems, dataset names). A name that is one already (no separator, control or reserved character, not
    starting with a dot, not ending with a space or dot, at most NAME_BYTES bytes) is kept as it is — so
    ``small-vehicle`` and ``potted plant`` stay readable; any other gets its safe characters plus 8 hex of its
    SHA-1, so that two names never share a file: ``../../victim`` -> ``_.._victim-<hex>``."""
    name = str(name)
    if name and not UNSAFE_CHARS.search(name) and not name.startswith(".") and not name.endswith((" ", ".")) \
            and len(name.encode()) <= NAME_BYTES:
        return name
    import hashlib

    kept = _safe_chars(name, NAME_BYTES - 9).rstrip(" .") or "_"
    return f"{kept}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"          # at most NAME_BYTES: safe as it is


class PathEscapeError(ValueError):
    """A write that would land outside the folder it belongs to (e.g. a name holding ``../``)."""


def check_within(path: Path, folder: Path) -> None:
    """Refuse ``path`` unless it lies inside ``folder`` (both resolved: ``..`` and symbolic links followed)."""
    if not Path(path).resolve().is_relative_to(Path(folder).resolve()):
        raise PathEscapeError(f"{path}: refusing to write outside the output folder {folder}")


def atomic_write(path: str | Path, data: str | bytes | Callable[[BinaryIO], object], *,
                 within: str | Path | None = None) -> Path:
    """Write ``data`` (text as UTF-8, bytes, or a function that writes into the open binary file) to ``path``:
    the parent folder is created; the file appears complete or not at all. ``within``: the output folder the
    file must lie in (:class:`PathEscapeError` otherwise, before anything is created). Returns the path."""
    path = Path(path)
    if within is not None:
        check_within(path, Path(within))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())          # mkstemp makes 0600; these are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_text(path: str | Path) -> str:
    """A text file we read (lists, data.yaml, classes.txt) as UTF-8 (a BOM allowed); a ValueError naming the file
    otherwise (a UTF-16 list said only "'utf-8' codec can't decode byte 0xff in position 0")."""
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def is_temp(path: Path) -> bool:
    """One of the writers' own temporary files (``.<name>.<random>.tmp``), perhaps another process's, mid-write: a
    clean-up of stale outputs never removes it (a concurrent run's clean-up deleted one, and that run failed)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def link_or_copy(src: str | Path, dst: str | Path) -> Path:
    """``dst`` becomes ``src``: a hard link, else a copy, put in place by one rename (a different file already
    at ``dst`` is replaced; ``dst`` already being ``src`` is left as it is)."""
    import shutil

    src, dst = Path(src), Path(dst)
    if dst.exists() and os.path.samefile(src, dst):
        return dst
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def write_image(path: str | Path, image, params: tuple[int, ...] = ()) -> Path:
    """Encode ``image`` (H, W, 3 uint8 BGR) by the file's suffix (.png, .jpg, …) and write it atomically."""
    import cv2

    path = Path(path)
    ok, buf = cv2.imencode(path.suffix, image, list(params))
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot encode a {path.suffix} image")
    return atomic_write(path, buf.tobytes())


def save_figure(fig, path: str | Path, dpi: int = 80) -> Path:
    """Render a matplotlib figure into ``path`` (format by suffix) atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        return atomic_write(path, lambda f: fig.savefig(f, dpi=dpi, format=path.suffix.lstrip(".") or "png"))
    finally:
        plt.close(fig)


def path_key(path: Path) -> str:
    """A file-system-safe name unique to the file: its stem (safe characters, at most NAME_BYTES bytes) plus 8 hex
    of its absolute path's SHA-1."""
    import hashlib

    kept = _safe_chars(path.stem, NAME_BYTES)
    return f"{kept}-{hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:8]}"


def unique_stems(paths: list[Path]) -> list[str]:
    """One output name per input path: its stem, or :func:`path_key` where stems collide (case-insensitively),
    so ``a/x.png``, ``b/x.png`` and ``x.jpg`` in one run never write the same output file."""
    from collections import Counter

    count = Counter(Path(p).stem.lower() for p in paths)
    return [safe_name(Path(p).stem) if count[Path(p).stem.lower()] == 1 else path_key(Path(p)) for p in paths]


def first_free(path: str | Path, usable: Callable[[Path], bool], file: bool = False) -> Path:
    """``path``, else the first of path2, path3, … (``file``: stem-2, stem-3, … before the suffix) that ``usable``
    accepts — the one "next free output" rule behind every verb's default folder or file (Ultralytics' habit:
    runs/train, runs/train2, …)."""
    path, n, candidate = Path(path), 2, Path(path)
    while not usable(candidate):
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}" if file else f"{path.name}{n}")
        n += 1
    return candidate


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def input_fingerprint(path: Path) -> dict:
    """What tells a changed input file from the one a result was made of: its size and modification time."""
    st = Path(path).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


LOCK_NAME = ".fss.lock"      # inside a folder one fss process writes into; not a result (emptiness checks skip it)


class FolderBusy(RuntimeError):
    """Another fss process is writing into the same output folder."""


@contextmanager
def exclusive(folder: str | Path, what: str) -> Iterator[Path]:
    """Hold ``folder`` for this process while the block runs: a second fss process that asks for it gets
    :class:`FolderBusy` naming the holder, at once, instead of mixing its files with the first's (two `fss train`
    into one --out left the config of one beside the last.pt of the other). An advisory lock (flock) on
    ``folder/.fss.lock``, which exists only while held: the kernel releases the lock when the process ends, however
    it ends, so it is never stale; a folder this call made and nothing was written into is removed again."""
    import fcntl

    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, default_file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderBusy(f"{folder}: another fss process is writing into it ({holder}); wait for it to finish, "
                             "or choose another --out") from None
        try:                        # the file may have been removed by the holder that just let go: lock anew
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)                           # a killed holder leaves its file: say who holds it now
        os.write(fd, f"pid {os.getpid()}: {what}".encode())
        yield folder
    finally:
        path.unlink(missing_ok=True)                # while still held, so no one can lock the removed file
        os.close(fd)
        if created and not any(folder.iterdir()):    # nothing was written: leave nothing behind
            folder.rmdir()

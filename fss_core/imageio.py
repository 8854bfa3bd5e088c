"""Image files: what folders are searched for, header sizes and the pixel limit checked before decoding, the EXIF
turn, truncation, and decoding to BGR uint8 (a GeoTIFF through :mod:`fss_core.raster`)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

from fss_core.preprocess import to_bgr3
from fss_core.raster import Raster, is_geotiff, raster_size

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")   # what folders are searched for


# Decoded pixels a PNG/JPEG may have before it is refused (a 875 KB PNG can hold 30,000² px = 2.7 GB BGR):
# 20,000² px = 1.2 GB decoded. `fss detect --max-pixels` raises it; FSS_MAX_PIXELS sets it for every reader.
def _max_pixels_from_env() -> int:
    text = os.environ.get("FSS_MAX_PIXELS", "")
    try:
        value = int(text) if text else 20_000 * 20_000
    except ValueError:
        value = 0
    if value < 1:                     # a bare int() raised at import: every command ended in a traceback
        raise SystemExit(f"error: FSS_MAX_PIXELS must be a positive number of pixels, got {text!r}")
    return value


MAX_PIXELS = _max_pixels_from_env()
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header held in ``data`` (the file's first bytes); None when the
    format is another or the header lies beyond ``data``."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:2] != b"\xff\xd8":
        return _other_header_size(data)
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (seg_len,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _SOF:
            if i + 9 > len(data):
                return None
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return int(w), int(h)
        i += 2 + seg_len
    return None


def exif_orientation(path) -> int:
    """The EXIF Orientation (1 = upright … 8) of a JPEG, PNG, WebP or TIFF file, read from its header; 1 when it has
    none. 5–8 swap width and height (:func:`image_size` turns the header size with it)."""
    from PIL import Image, UnidentifiedImageError

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None     # the header only: ours judges the size
    try:
        with Image.open(path) as im:
            if im.format == "PNG" and "exif" not in im.info:     # getexif() would decode a whole PNG to look further
                return 1
            value = im.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error):
        return 1
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _other_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of any other format Pillow knows (BMP, GIF, TIFF, WebP…) from its header alone: a 1 KB RLE BMP
    named .png declared 30,000² px and was decoded (2.5 GB) because only PNG and JPEG headers were read."""
    import io

    from PIL import Image, UnidentifiedImageError

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None     # the size is wanted: ours judges it
    try:
        with Image.open(io.BytesIO(data)) as im:                 # lazy: reads the header, decodes nothing
            return int(im.width), int(im.height)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error):
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def read_image(path, max_pixels: int | None = None) -> np.ndarray:
    """Decode any image file to BGR uint8 (3 channels), upright: turned by its EXIF orientation as every viewer,
    annotation tool, OpenCV's ``imread`` and Ultralytics show it (a phone JPEG with Orientation 6 was detected
    lying on its side). A TIFF read through rasterio stays as stored, as GDAL and QGIS show it. Raises ValueError
    naming the file if unreadable or larger than ``max_pixels`` (default ``MAX_PIXELS``; checked from the header,
    before decoding).
    A GeoTIFF goes through rasterio when it is installed (bands and 8-bit rule of ``fss_core.raster``, the same
    pixels ``fss detect`` tiles)."""
    if Path(path).exists() and not Path(path).is_file():      # a named pipe would block on open, a folder fail
        raise ValueError(f"{path}: not a regular file")
    if is_geotiff(path):
        with Raster(path) as raster:
            limit = MAX_PIXELS if max_pixels is None else max_pixels
            if raster.width * raster.height > limit:
                raise ValueError(f"{path}: {raster.width} × {raster.height} px exceeds the {limit:,}-pixel limit "
                                 "for decoded images; tile it first (fss data split) or use fss detect, which "
                                 "reads GeoTIFFs window by window")
            return raster.read_all()
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read image file: {exc.strerror}") from None
    size = header_size(data[:1 << 18].tobytes())
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if size and size[0] * size[1] > limit:
        raise ValueError(f"{path}: {size[0]} × {size[1]} px exceeds the {limit:,}-pixel limit for decoded images "
                         f"({size[0] * size[1] * 3 / 2**30:.1f} GB); raise it with --max-pixels if you mean it")
    if is_truncated(data):
        raise ValueError(f"{path}: truncated image file (no end marker)")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None     # turned by its EXIF orientation
    if image is None:
        raise ValueError(f"{path}: not a readable image (corrupt or unknown format)")
    return to_bgr3(image)


def is_truncated(data: np.ndarray) -> bool:
    """PNG without its IEND chunk or JPEG without its EOI marker (decoders would return a partial image)."""
    raw = data[:8].tobytes()
    if raw.startswith(b"\x89PNG"):
        return b"IEND" not in data[-16:].tobytes()
    if raw.startswith(b"\xff\xd8"):
        return b"\xff\xd9" not in data[-64:].tobytes()
    return False


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as the image is shown (turned by its EXIF orientation, as :func:`read_image` decodes it), from
    the file header (PNG, JPEG; a GeoTIFF's through rasterio), else by decoding; None if unreadable."""
    if not Path(path).is_file():           # missing, a folder, or a named pipe (open would block)
        return None
    if is_geotiff(path):
        return raster_size(path)
    try:
        with open(path, "rb") as f:
            size = header_size(f.read(1 << 18))
    except OSError:
        return None
    if size:
        return size[::-1] if exif_orientation(path) >= 5 else size
    try:
        img = read_image(path)
    except ValueError:
        return None
    return int(img.shape[1]), int(img.shape[0])

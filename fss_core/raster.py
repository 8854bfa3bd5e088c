"""GeoTIFFs read window by window, their bands scaled to 8 bit, and pixels <-> map coordinates.

Used at training time (``fss data split``, the loader) and at inference (``fss detect``), so the pixels a
model is trained on and the pixels it later sees go through the same rule. Needs rasterio (the ``geo``
extra: ``pip install 'fss[geo]'``); without it, .tif files are decoded whole by OpenCV as any other image.

The 8-bit rule (stated once, here): uint8 bands are used as they are; any other type (uint16, int16,
float) is stretched per band linearly from its ``stretch`` percentiles (default 2 and 98) to 0 and 255,
clipped. The percentiles are computed from the smallest overview of at least 256 px when the file has
overviews, else from a grid of 64 small windows spread over the image — never by reading the whole image
— and nodata pixels are left out of them.

Boxes are xyxy pixels of the full raster; map coordinates follow the file's affine transform
(x = c + a·col + b·row, y = f + d·col + e·row), which may be rotated.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from fss_core.defaults import DEFAULT_STRETCH
from fss_core.preprocess import PAD_VALUE

GEO_SUFFIXES = (".tif", ".tiff")
SAMPLE_GRID = 8                          # stretch statistics without overviews: SAMPLE_GRID² windows …
SAMPLE_WINDOW = 64                       # … of this many pixels a side
OVERVIEW_MIN_SIDE = 256                  # smallest overview side used for the statistics
# GDAL's block cache (its default, 5 % of RAM, grows with the image): 64 MB holds the blocks of neighbouring
# tiles in a row; a block row of a wide image does not fit, so some blocks are decoded twice — measured on a
# 30,000 px deflate GeoTIFF, reading costs 0.2 % of model time either way, and memory stays flat
GDAL_CACHE_MB = 64
MISSING = "GeoTIFF support needs rasterio: pip install 'fss[geo]' (or pip install rasterio)"


def have_rasterio() -> bool:
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


class RasterReadError(ValueError):
    """A block of a raster that cannot be read (a truncated or lying GeoTIFF); the message names the file."""


def raster_errors() -> tuple[type[Exception], ...]:
    """The exceptions a window read of a damaged file raises."""
    try:
        from rasterio.errors import RasterioError
    except ImportError:
        return (RasterReadError,)
    return (RasterReadError, RasterioError)


def is_geotiff(path: str | Path) -> bool:
    """A .tif/.tiff that this installation reads window by window (rasterio present)."""
    return Path(path).suffix.lower() in GEO_SUFFIXES and have_rasterio()


def parse_bands(text: str | tuple[int, ...] | None) -> tuple[int, ...] | None:
    """``"3,2,1"`` (or ``(3, 2, 1)``) -> (3, 2, 1): 1-based band numbers read as red, green, blue (one band:
    grey)."""
    if text is None or str(text).strip() == "":
        return None
    try:
        bands = tuple(int(b) for b in (text if isinstance(text, (tuple, list)) else str(text).split(",")))
    except ValueError:
        raise ValueError(f"--bands must be 1-based band numbers like 3,2,1, got {text!r}") from None
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise ValueError(f"--bands takes one band (grey) or three (red,green,blue), numbered from 1, got {text!r}")
    return bands


def parse_stretch(text) -> tuple[float, float]:
    """``"2,98"`` -> (2.0, 98.0): the low and high percentiles mapped to 0 and 255."""
    if isinstance(text, (tuple, list)):
        lo, hi = (float(v) for v in text)
    else:
        try:
            lo, hi = (float(v) for v in str(text).split(","))
        except ValueError:
            raise ValueError(f"--stretch must be two percentiles like 2,98, got {text!r}") from None
    if not 0 <= lo < hi <= 100:
        raise ValueError(f"--stretch percentiles must satisfy 0 <= low < high <= 100, got {lo},{hi}")
    return lo, hi


@dataclass(frozen=True)
class Georef:
    """Where an image lies on the map: the affine transform (a, b, c, d, e, f) of its pixel grid and its CRS
    (WKT; ``epsg`` when it has a code). ``crs`` None: no georeference (pixel coordinates)."""

    transform: tuple[float, float, float, float, float, float]
    crs: str | None = None
    epsg: int | None = None

    def to_dict(self) -> dict:
        return {"transform": list(self.transform), "crs": self.crs, "epsg": self.epsg}

    @classmethod
    def from_dict(cls, d: dict | None) -> Georef | None:
        return cls(tuple(d["transform"]), d.get("crs"), d.get("epsg")) if d else None

    def to_map(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel (col, row) -> map (x, y), in the CRS's units."""
        a, b, c, d, e, f = self.transform
        return c + a * cols + b * rows, f + d * cols + e * rows

    def to_pixel(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map (x, y) -> pixel (col, row): the inverse of :meth:`to_map`."""
        a, b, c, d, e, f = self.transform
        det = a * e - b * d
        if det == 0:
            raise ValueError(f"the raster's transform {self.transform} cannot be inverted")
        dx, dy = np.asarray(xs, np.float64) - c, np.asarray(ys, np.float64) - f
        return (e * dx - b * dy) / det, (a * dy - d * dx) / det


def to_wgs84(crs: str, xs, ys) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates in ``crs`` (WKT or "EPSG:n") -> (longitude, latitude) in degrees."""
    from rasterio.warp import transform

    lon, lat = transform(crs, "EPSG:4326", list(map(float, xs)), list(map(float, ys)))
    return np.asarray(lon), np.asarray(lat)


class Raster:
    """A GeoTIFF (any size, 1–n bands, 8/16 bit or float) opened for window reads; nothing is decoded until
    :meth:`read` asks for a window. ``bands`` picks red, green, blue (1-based; default: the first three
    colour bands, or the first band as grey); ``stretch`` the percentiles for non-uint8 data (module doc)."""

    def __init__(self, path: str | Path, bands: tuple[int, ...] | None = None,
                 stretch: tuple[float, float] = DEFAULT_STRETCH):
        os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))     # read by GDAL at its first block read
        try:
            import rasterio
        except ImportError:
            raise ImportError(MISSING) from None
        self.path = Path(path)
        try:
            with warnings.catch_warnings():     # a plain TIFF (no georeference) is an image, not a mistake
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self._ds = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as exc:
            raise ValueError(f"{path}: not a readable raster ({exc})") from None
        ds = self._ds
        self.width, self.height, self.count = ds.width, ds.height, ds.count
        self.bands = self._pick_bands(bands)
        self.dtype = np.dtype(ds.dtypes[self.bands[0] - 1])
        self.nodata = ds.nodata
        # a mask is worth reading only when some band has one (a nodata value, a mask band or alpha)
        from rasterio.enums import MaskFlags

        self.has_mask = any(MaskFlags.all_valid not in ds.mask_flag_enums[b - 1] for b in self.bands)
        georeferenced = ds.crs is not None or not ds.transform.is_identity
        a, b, _, d, e, _ = tuple(ds.transform)[:6]
        if georeferenced and a * e - b * d == 0:      # every pixel at one map point: no usable georeference
            logging.getLogger("fss").warning(
                "%s: its transform %s maps every pixel to one point; treated as not georeferenced (pixel "
                "coordinates, no GeoJSON)", path, tuple(ds.transform)[:6])
            georeferenced = False
        self.georef = Georef(tuple(ds.transform)[:6], ds.crs.to_wkt() if ds.crs else None,
                             ds.crs.to_epsg() if ds.crs else None) if georeferenced else None
        self.block_shapes = ds.block_shapes
        self.stretch = parse_stretch(stretch)

    @cached_property
    def scale(self) -> np.ndarray | None:
        """(bands, 2) low and high value per band for the 8-bit rule; None for uint8. Computed at the first read
        (opening a raster for its size and georeference, as the dataset reader does, samples nothing)."""
        return None if self.dtype == np.uint8 else self._percentiles()

    # -------------------------------------------------------------------------- set-up
    def _pick_bands(self, bands):
        from rasterio.enums import ColorInterp

        if bands:
            bad = [b for b in bands if not 1 <= b <= self.count]
            if bad:
                raise ValueError(f"{self.path}: --bands {','.join(map(str, bands))} asks for band(s) {bad}, but the "
                                 f"file has {self.count} band(s)")
            return tuple(bands)
        colour = [i + 1 for i, ci in enumerate(self._ds.colorinterp) if ci != ColorInterp.alpha]
        if not colour:
            raise ValueError(f"{self.path}: no colour bands (only alpha)")
        return tuple(colour[:3]) if len(colour) >= 3 else (colour[0],)

    def _percentiles(self) -> np.ndarray:
        """(len(bands), 2) float64: the stretch's low and high value per band (module doc)."""
        ds, lo_p, hi_p = self._ds, *self.stretch
        overviews = ds.overviews(self.bands[0])
        if overviews:
            usable = [f for f in overviews if min(self.width, self.height) // f >= OVERVIEW_MIN_SIDE] or overviews[:1]
            f = usable[-1]
            sample = self._checked(ds.read, self.bands, out_shape=(len(self.bands), max(1, self.height // f),
                                                                    max(1, self.width // f)), masked=True)
            samples = [sample]
        else:
            from rasterio.windows import Window

            side = SAMPLE_WINDOW
            xs = np.linspace(0, max(0, self.width - side), SAMPLE_GRID).astype(int)
            ys = np.linspace(0, max(0, self.height - side), SAMPLE_GRID).astype(int)
            samples = [self._checked(ds.read, self.bands, window=Window(int(x), int(y), min(side, self.width),
                                                                         min(side, self.height)), masked=True)
                       for y in np.unique(ys) for x in np.unique(xs)]
        out = np.zeros((len(self.bands), 2))
        for i in range(len(self.bands)):
            values = np.concatenate([s[i].compressed() for s in samples]).astype(np.float64)
            values = values[np.isfinite(values)]
            if values.size:
                out[i] = np.percentile(values, [lo_p, hi_p])
            if out[i, 1] <= out[i, 0]:
                out[i, 1] = out[i, 0] + 1.0
        return out

    def describe(self) -> dict:
        """What the summary records about the raster and the 8-bit rule applied to it."""
        return {"width": self.width, "height": self.height, "bands": list(self.bands), "dtype": str(self.dtype),
                "stretch": None if self.scale is None else {"percentiles": list(self.stretch),
                                                             "values": np.round(self.scale, 4).tolist()},
                "block_shape": list(self.block_shapes[0]), "nodata": self.nodata,
                "georeferenced": self.georef is not None, "epsg": self.georef.epsg if self.georef else None}

    # -------------------------------------------------------------------------- reading
    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, 3

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """(h, w, 3) uint8 BGR of the window at column ``x``, row ``y`` (the network's channel order); nodata
        pixels get the letterbox padding grey (what the network saw outside images in training)."""
        from rasterio.windows import Window


        window = Window(x, y, w, h)
        data = self._checked(self._ds.read, self.bands, window=window)        # (n, h, w) in the file's dtype
        bgr = self._to_bgr(data)
        if self.has_mask:
            bgr[self._checked(self._ds.dataset_mask, window=window) == 0] = PAD_VALUE
        return bgr

    def _checked(self, read, *args, **kwargs):
        """``read(*args, **kwargs)`` with rasterio's error for a damaged block as a :class:`RasterReadError` (a
        ValueError), so that every verb reports it as bad input (only detect caught it: a traceback in
        split, check, train, eval, bench and assign)."""
        from rasterio.errors import RasterioError

        try:
            return read(*args, **kwargs)
        except RasterioError as exc:
            where = kwargs.get("window")
            at = f" in the window at column {where.col_off}, row {where.row_off}" if where is not None else ""
            raise RasterReadError(f"{self.path}: unreadable raster data{at} ({_gdal_reason(exc)}); the file is "
                                  "truncated or damaged") from None

    def has_data(self, x: int, y: int, w: int, h: int) -> bool:
        """False when every pixel of the window is nodata (or masked)."""
        if not self.has_mask:
            return True
        from rasterio.windows import Window

        return bool(self._checked(self._ds.dataset_mask, window=Window(x, y, w, h)).any())

    def read_all(self) -> np.ndarray:
        """The whole raster as (H, W, 3) uint8 BGR (for images small enough to decode)."""
        return self.read(0, 0, self.width, self.height)

    def thumbnail(self, max_side: int) -> tuple[np.ndarray, float]:
        """The raster scaled to at most ``max_side`` px a side (overviews used when present) and the scale."""
        from rasterio.enums import Resampling

        s = min(1.0, max_side / max(self.width, self.height))
        h, w = max(1, round(self.height * s)), max(1, round(self.width * s))
        data = self._checked(self._ds.read, self.bands, out_shape=(len(self.bands), h, w),
                             resampling=Resampling.average)
        return self._to_bgr(data), s

    def _to_bgr(self, data: np.ndarray) -> np.ndarray:
        if self.scale is not None:
            lo, hi = self.scale[:, 0, None, None], self.scale[:, 1, None, None]
            data = np.nan_to_num((data.astype(np.float32) - lo) * (255.0 / (hi - lo)), nan=0.0)
            data = np.clip(data, 0, 255).astype(np.uint8)
        if data.shape[0] == 1:
            data = np.repeat(data, 3, axis=0)
        return np.ascontiguousarray(data[::-1].transpose(1, 2, 0))            # RGB planes -> BGR pixels

    def close(self) -> None:
        self._ds.close()

    def __enter__(self) -> Raster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _gdal_reason(exc: Exception) -> str:
    """GDAL's own words for a failed read: rasterio says only "Read failed. See previous exception for details." and
    keeps GDAL's error (which band, which block) as the cause."""
    cause = exc.__cause__ or exc.__context__
    return str(cause) if cause is not None and str(cause) else str(exc)


def raster_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) of a raster from its header; None when unreadable."""
    try:
        import rasterio

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                return ds.width, ds.height
    except Exception:           # noqa: BLE001 — any failure to open is "unreadable" to the caller
        return None

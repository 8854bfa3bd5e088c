"""Vector labels of a GeoTIFF for training: the polygons of a GeoJSON or shapefile in the raster's pixels, their
classes from a named attribute, every unusable feature reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fss_core.raster import Georef

VECTOR_SUFFIXES = (".geojson", ".json", ".shp")
CLASS_FIELDS = ("class", "name", "label", "category", "type")


def read_vector_labels(path: str | Path, georef: Georef | None, class_field: str | None = None
                       ) -> list[tuple[int, str | None, np.ndarray | None, str | None]]:
    """The polygons of a GeoJSON or shapefile as (feature number, class name, (N, 2) pixel vertices,
    problem). Coordinates are map coordinates in the raster's CRS (GeoJSON: the file's ``crs`` member,
    else longitude/latitude per RFC 7946, reprojected; shapefile: its .prj, else the raster's CRS).
    ``problem`` names what is wrong with a feature that cannot be used (the caller reports and skips it)."""
    path = Path(path)
    if path.suffix.lower() == ".shp":
        shapes, src_crs = _read_shapefile(path)
    else:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as exc:
            raise ValueError(f"{path}: not a readable GeoJSON file ({exc})") from None
        if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
            kind = data.get("type") if isinstance(data, dict) else f"a JSON {type(data).__name__}"
            raise ValueError(f"{path}: expected a GeoJSON FeatureCollection, got {kind!r:.40}")
        if not isinstance(data.get("features", []), list):
            raise ValueError(f"{path}: its 'features' must be a list, got a {type(data['features']).__name__}")
        src_crs = _geojson_crs(data, path)
        shapes = [_feature_parts(f) for f in data.get("features", [])]
    out = []
    for i, (geom, props) in enumerate(shapes, start=1):
        name = _class_of(props, class_field)
        if name is None:
            want = class_field or " / ".join(CLASS_FIELDS)
            out.append((i, None, None, f"no class property ({want}) in {sorted(props)}"))
            continue
        coords = _exterior_vertices(geom)
        if coords is None:
            kind = geom.get("type")
            out.append((i, name, None, f"its {kind} geometry has no usable ring (3 or more finite points)"
                        if kind in ("Polygon", "MultiPolygon") else f"geometry {kind!r} is not a Polygon/MultiPolygon"))
            continue
        xs, ys = coords[:, 0], coords[:, 1]
        if georef is None:
            out.append((i, name, coords, None))        # an image without georeference: pixel coordinates
            continue
        if src_crs and georef.crs and not _same_crs(src_crs, georef.crs):
            from rasterio.warp import transform

            xs, ys = (np.asarray(v) for v in transform(src_crs, georef.crs, list(xs), list(ys)))
        cols, rows = georef.to_pixel(xs, ys)
        out.append((i, name, np.stack([cols, rows], 1), None))
    return out


def _feature_parts(feature) -> tuple[dict, dict]:
    """(geometry, properties) of one GeoJSON feature. A feature that is no object gets a stand-in geometry whose
    type says so (and a placeholder class, so that the geometry check is the one that reports and skips it);
    properties that are no object count as none."""
    if not isinstance(feature, dict):
        return {"type": f"a {type(feature).__name__}, not a Feature object"}, {"class": "?"}
    geom, props = feature.get("geometry"), feature.get("properties")
    return (geom if isinstance(geom, dict) else {"type": geom}), (props if isinstance(props, dict) else {})


def _class_of(props: dict, field: str | None) -> str | None:
    keys = (field,) if field else CLASS_FIELDS
    for k in keys:
        if k in props and props[k] not in (None, ""):
            return str(props[k])
    return None


def _exterior_vertices(geom: dict) -> np.ndarray | None:
    """(N, 2) float64 vertices of a Polygon's exterior ring (a MultiPolygon: all exterior rings)."""
    kind, coords = geom.get("type"), geom.get("coordinates")
    try:
        if kind == "Polygon":
            rings = [coords[0]]
        elif kind == "MultiPolygon":
            rings = [poly[0] for poly in coords]
        else:
            return None
        pts = np.array([p[:2] for ring in rings for p in ring], np.float64)
    except (TypeError, IndexError, ValueError, OverflowError):
        return None
    return pts if pts.ndim == 2 and len(pts) >= 3 and np.isfinite(pts).all() else None


def _geojson_crs(data: dict, path: Path) -> str:
    crs = data.get("crs") or {}
    props = crs.get("properties") if isinstance(crs, dict) else None
    name = (props or {}).get("name") if isinstance(props or {}, dict) else None
    if not isinstance(crs, dict) or not isinstance(props or {}, dict) or not isinstance(name, (str, type(None))):
        raise ValueError(f"{path}: its 'crs' member is not a named CRS object ({{\"type\": \"name\", \"properties\": "
                         f"{{\"name\": \"EPSG:…\"}}}}): {json.dumps(crs)[:80]}")
    if not name:
        return "EPSG:4326"                                 # RFC 7946: longitude/latitude
    if "CRS84" in name:
        return "OGC:CRS84"
    code = name.rsplit(":", 1)[-1]
    return f"EPSG:{code}" if code.isdigit() else name


def _same_crs(a: str, b: str) -> bool:
    from rasterio.crs import CRS

    try:
        return CRS.from_user_input(a) == CRS.from_user_input(b)
    except Exception:           # noqa: BLE001 — unknown to PROJ: reproject and let it say so
        return False


def _read_shapefile(path: Path) -> tuple[list[tuple[dict, dict]], str | None]:
    try:
        import shapefile  # pyshp
    except ImportError:
        raise ImportError("reading shapefiles needs pyshp: pip install 'fss[geo]' (or pip install pyshp)") from None
    import struct

    try:                       # pyshp raises many kinds for a damaged file, some lazily while reading records
        with shapefile.Reader(str(path)) as reader:
            fields = [f[0] for f in reader.fields[1:]]
            shapes = [(_shape_geometry(sr.shape), dict(zip(fields, sr.record))) for sr in reader.iterShapeRecords()]
    except (OSError, shapefile.ShapefileException, struct.error, KeyError, IndexError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable shapefile (truncated, or its .shx/.dbf missing or damaged: "
                         f"{type(exc).__name__} {exc})") from None
    prj = path.with_suffix(".prj")
    return shapes, prj.read_text() if prj.is_file() else None


def _shape_geometry(shape) -> dict:
    """A shapefile record's geometry as GeoJSON; a null shape becomes a geometry the feature check reports."""
    try:
        return shape.__geo_interface__
    except Exception:          # noqa: BLE001 — pyshp's GeoJSON_Error for a null or unsupported shape
        return {"type": f"shape type {getattr(shape, 'shapeTypeName', '?')}"}


def polygon_box(vertices: np.ndarray) -> list[float]:
    """The xyxy pixel box around a polygon's vertices."""
    return [float(vertices[:, 0].min()), float(vertices[:, 1].min()),
            float(vertices[:, 0].max()), float(vertices[:, 1].max())]

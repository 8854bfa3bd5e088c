"""Detections as GeoJSON: box rings in pixels, map coordinates or longitude/latitude (RFC 7946), streamed as text
for scenes of 10^5 objects, and the FeatureCollection that names its CRS (QGIS and GDAL read it).

A detection array is (K, 6) ``x1 y1 x2 y2 score class`` or, oriented, (K, 7) ``cx cy w h θ score class``
(fss_core.rbox's convention); an oriented box goes through the raster's affine transform corner by corner, so on
a map whose pixels are not square or not north-up it becomes the parallelogram it really covers."""

from __future__ import annotations

import json

import numpy as np

from fss_core.boxes import box_corners
from fss_core.raster import Georef, to_wgs84


def detection_polygons(dets: np.ndarray) -> np.ndarray:
    """(K, 8) pixel corners of (K, 6) box or (K, 7) oriented detections."""
    if dets.shape[1] == 7:
        from fss_core.rdetections import rdetection_polygons

        return rdetection_polygons(dets)
    return box_corners(dets[:, :4])


def box_rings(dets: np.ndarray, georef: Georef | None, wgs84: bool = False) -> np.ndarray:
    """(K, 5, 2) closed, counter-clockwise rings of the detections (boxes or oriented): pixels when ``georef`` is
    None, else map coordinates in the raster's CRS, or longitude/latitude with ``wgs84``."""
    corners = detection_polygons(dets)
    cols = np.concatenate([corners[:, 0::2], corners[:, :1]], 1)              # (K, 5)
    rows = np.concatenate([corners[:, 1::2], corners[:, 1:2]], 1)
    if georef is None:
        xs, ys = cols, rows
    else:
        xs, ys = georef.to_map(cols, rows)
        if wgs84 and len(xs):
            lon, lat = to_wgs84(georef.crs, xs.ravel(), ys.ravel())
            xs, ys = lon.reshape(xs.shape), lat.reshape(ys.shape)
    ring = np.stack([xs, ys], 2)                                               # (K, 5, 2)
    signed = np.sum(ring[:, :-1, 0] * ring[:, 1:, 1] - ring[:, 1:, 0] * ring[:, :-1, 1], axis=1)
    ring[signed < 0] = ring[signed < 0, ::-1]                                  # RFC 7946: exterior rings CCW
    return ring


def geojson_features(dets: np.ndarray, class_names: list[str], georef: Georef | None, wgs84: bool = False,
                     image: str | None = None) -> list[dict]:
    """One GeoJSON Feature (Polygon) per detection; properties score, class (index), name, image."""
    return list(iter_features(dets, class_names, georef, wgs84, image))


def iter_features(dets: np.ndarray, class_names: list[str], georef: Georef | None, wgs84: bool = False,
                  image: str | None = None):
    """The features of :func:`geojson_features` one at a time (a 30,000 px scene has ~10^5: as Python objects
    all at once they would take hundreds of MB)."""
    rings = box_rings(dets, georef, wgs84)
    for ring, d in zip(rings, dets):
        props = {"score": round(float(d[-2]), 5), "class": int(d[-1]), "name": class_names[int(d[-1])]}
        if len(d) == 7:
            props["angle_deg"] = round(float(np.degrees(d[4])), 3)     # in pixels (fss_core.rbox), not on the map
        if image is not None:
            props["image"] = image
        yield {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring.tolist()]},
               "properties": props}


def features_json(dets: np.ndarray, class_names: list[str], georef: Georef | None, wgs84: bool = False,
                  image: str | None = None) -> str:
    """The features as JSON text without the enclosing brackets (for :func:`collection_json`)."""
    return ", ".join(json.dumps(f) for f in iter_features(dets, class_names, georef, wgs84, image))


def collection_json(features: list[str], georef: Georef | None, wgs84: bool = False) -> str:
    """A FeatureCollection (as :func:`feature_collection`) from pieces made by :func:`features_json`."""
    head = json.dumps(feature_collection([], georef, wgs84))[:-len("[]}")]
    return head + "[" + ", ".join(f for f in features if f) + "]}"


def feature_collection(features: list[dict], georef: Georef | None, wgs84: bool = False) -> dict:
    """A FeatureCollection that names its CRS: none (RFC 7946 longitude/latitude) with ``wgs84``; the legacy
    ``crs`` member (read by GDAL/QGIS) for an EPSG code; the WKT under ``fss:crs_wkt`` otherwise; and
    ``fss:crs`` "image pixels" (y downwards) for an image without georeference."""
    fc: dict = {"type": "FeatureCollection"}
    if georef is None:
        fc["fss:crs"] = "image pixels (x right, y down)"
    elif not wgs84:
        if georef.epsg:
            fc["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{georef.epsg}"}}
        fc["fss:crs_wkt"] = georef.crs
    fc["features"] = features
    return fc

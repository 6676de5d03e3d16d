"""The footprint of a tile's valid pixels as a WGS84 GeoJSON geometry, and its bbox.

The valid mask is reduced, polygonised, grown and simplified until the polygon fits in
:data:`FOOTPRINT_MAX_VERTICES` coordinates, then reprojected by GDAL, which splits it at
the antimeridian (RFC 7946: then the bbox has west > east).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio.warp
import shapely
from affine import Affine
from shapely.geometry import box, shape

from darts_export.formats._gdal import local_gdal_env, polygonize

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from darts_export.tile import TileView

__all__ = ["FOOTPRINT_MAX_VERTICES", "footprint", "footprint_bbox"]

logger = logging.getLogger(__name__)

FOOTPRINT_MAX_VERTICES = 200
"""At most this many coordinates in an item's geometry."""

_FOOTPRINT_GRID = 1024  # the valid mask is reduced to at most this many cells per side
_COORD_GRID = 1e-7  # degrees (~1 cm): precision of the footprint coordinates


def _valid_cells(view: TileView, factor: int) -> NDArray[np.bool_] | None:
    """Block-any of the valid-pixel mask over ``factor`` × ``factor`` blocks, or ``None`` if unknown."""
    if "extent" in view:
        data = view.array("extent")
        if factor > 1 and (data.dtype == np.bool_ or np.issubdtype(data.dtype, np.unsignedinteger)):
            return _block_any(data, factor)  # > 0 is != 0 here: no full-size boolean temporary
        valid = data if data.dtype == np.bool_ else np.greater(data, 0)
    elif "probabilities" in view:
        data = view.array("probabilities")
        if not np.issubdtype(data.dtype, np.floating):
            return None
        valid = ~np.isnan(data)
    else:
        return None
    if factor == 1:
        return np.asarray(valid, dtype=np.bool_)
    return _block_any(np.asarray(valid, dtype=np.bool_), factor)


def _block_any(mask: NDArray[Any], factor: int) -> NDArray[np.bool_]:
    """Whether any pixel is set (non-zero) in each ``factor`` × ``factor`` block (edge blocks may be smaller).

    ``any`` over a reshaped middle axis runs vectorised along the rows, unlike
    ``logical_or.reduceat`` (bench/results/HISTORY.md).
    """
    height, width = mask.shape
    n, m = height // factor, width // factor
    rows = np.empty((-(-height // factor), width), dtype=np.bool_)
    np.any(mask[: n * factor].reshape(n, factor, width), axis=1, out=rows[:n])
    if n * factor < height:
        np.any(mask[n * factor :], axis=0, out=rows[n])
    cells = np.empty((rows.shape[0], -(-width // factor)), dtype=np.bool_)
    np.any(rows[:, : m * factor].reshape(rows.shape[0], m, factor), axis=2, out=cells[:, :m])
    if m * factor < width:
        np.any(rows[:, m * factor :], axis=1, out=cells[:, m])
    return cells


def _geojson(geom: shapely.Geometry) -> dict[str, Any]:
    """``geom`` as a GeoJSON geometry mapping."""
    data: dict[str, Any] = json.loads(shapely.to_geojson(geom))
    return data


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """Only the (multi)polygon parts of ``geom``, valid."""
    parts = [p for p in shapely.get_parts(shapely.make_valid(geom)) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def footprint(view: TileView, *, max_vertices: int = FOOTPRINT_MAX_VERTICES) -> dict[str, Any]:
    """The footprint of the tile's valid pixels as a GeoJSON geometry in WGS84.

    Valid pixels are ``extent > 0`` if the tile has ``extent``, else the non-NaN
    ``probabilities``; without either, the whole tile. The mask is reduced (block-any) to
    at most 1024 cells per side and polygonised, then grown and simplified by the same
    tolerance — so the footprint contains every valid pixel and stays inside the tile —
    with the tolerance doubled until, densified for reprojection, it has at most
    ``max_vertices`` coordinates. GDAL reprojects it and splits it at the antimeridian.
    Coordinates are rounded to 1e-7° and rings oriented counter-clockwise (RFC 7946).
    """
    with local_gdal_env():
        return _footprint(view, max_vertices)


def _footprint(view: TileView, max_vertices: int) -> dict[str, Any]:
    georef = view.georef
    factor = max(1, math.ceil(max(georef.shape) / _FOOTPRINT_GRID))
    tile_box = box(*georef.bounds)
    cells = _valid_cells(view, factor)
    valid: shapely.Geometry = tile_box
    if cells is not None:
        coarse = georef.transform @ Affine.scale(factor)
        polygons, _ = polygonize(cells.astype(np.uint8), mask=cells, transform=coarse)
        valid = shapely.union_all(polygons) if polygons else tile_box
        if not polygons:
            logger.warning("tile has no valid pixels; its footprint is the whole tile")
    left, bottom, right, top = georef.bounds
    segment = max(right - left, top - bottom) / 8
    tolerance = factor * max(abs(georef.transform.a), abs(georef.transform.e))
    for _ in range(24):
        grown = shapely.simplify(
            shapely.buffer(valid, tolerance, join_style="mitre"), tolerance, preserve_topology=True
        )
        candidate = shapely.segmentize(shapely.intersection(_polygonal(grown), tile_box), segment)
        if shapely.get_num_coordinates(candidate) <= max_vertices:
            break
        tolerance *= 2
    else:  # pragma: no cover - 2**24 times a cell covers any tile
        candidate = shapely.segmentize(tile_box, segment)
    wgs84 = rasterio.warp.transform_geom(georef.crs, "EPSG:4326", _geojson(_polygonal(candidate)))
    result = shapely.orient_polygons(shapely.set_precision(_polygonal(shape(wgs84)), _COORD_GRID), exterior_cw=False)
    return _geojson(result)


def footprint_bbox(geometry: Mapping[str, Any]) -> list[float]:
    """``[west, south, east, north]`` of a WGS84 geometry; west > east when it is split at ±180°."""
    parts = shapely.get_parts(shape(dict(geometry)))
    bounds = np.array([p.bounds for p in parts], dtype=np.float64).reshape(-1, 4)
    south, north = float(bounds[:, 1].min()), float(bounds[:, 3].max())
    west, east = float(bounds[:, 0].min()), float(bounds[:, 2].max())
    eastern = (bounds[:, 0] + bounds[:, 2]) / 2 > 0
    crosses = (
        len(bounds) > 1
        and bool((bounds[eastern, 2] >= 180 - _COORD_GRID).any())
        and bool((bounds[~eastern, 0] <= -180 + _COORD_GRID).any())
        and bool((bounds[:, 2] - bounds[:, 0] < 180).all())
    )
    if crosses:
        west, east = float(bounds[eastern, 0].min()), float(bounds[~eastern, 2].max())
    return [west, south, east, north]

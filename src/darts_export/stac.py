"""The STAC Item of an export: one GeoJSON Feature describing the tile and every artifact.

:func:`build_item` turns a draft :class:`~darts_export.manifest.Manifest` (every artifact
written so far) and the tile into a :class:`pystac.Item`; :func:`encode_item` serialises
it. Both are pure: no paths, buckets or credentials.

The item has the same shape for every tile, so catalog loaders (pgstac, stac-geoparquet)
can ingest many of them:

* ``id`` is the manifest's tile id; ``geometry`` is the footprint of the valid pixels in
  WGS84 (at most :data:`FOOTPRINT_MAX_VERTICES` vertices, split at ±180° when the tile
  crosses the antimeridian; then ``bbox`` has west > east, as RFC 7946 prescribes).
* ``datetime`` is the acquisition time from the first of :data:`DATETIME_KEYS` found in
  the metadata (an ISO 8601 string; without a UTC offset it is read as UTC), else the
  export time ``manifest.created``; ``created`` is always the export time.
* Every metadata entry becomes the string property ``darts:<key>``: strings as they are,
  anything else as JSON text — the same strings as the GeoTIFF tags.
* Projection v2.0.0 fields (``proj:code``, ``proj:shape``, ``proj:transform``,
  ``proj:bbox``) describe the raster grid. ``proj:code`` is ``"EPSG:…"``; only for a CRS
  without any authority code is it ``null`` and ``proj:wkt2`` given instead.
* One asset per artifact under the key :func:`asset_key` gives, with an href relative to the
  item (``./probabilities.tif``), the manifest's media type and roles, ``file:size`` and
  ``file:checksum`` (the manifest's multihash; left out for directory artifacts such as the
  Zarr debug store, whose checksum is a darts-export definition, not a file's), and for
  COGs ``raster:bands`` (raster v1.1.0, the version pystac implements; each band also
  carries its ``name``, the GeoTIFF band description). Undefined statistics (an empty
  band) are left out, never written as NaN; a NaN nodata is ``"nan"`` as the schema asks.
* A ``describedby`` link points at ``./manifest.json``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pystac
import rasterio.features
import rasterio.warp
import shapely
from affine import Affine
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterExtension, Statistics
from pystac.extensions.raster import RasterBand as StacBand
from pystac.utils import datetime_to_str
from shapely.geometry import box, shape

from darts_export.cog import local_gdal_env
from darts_export.errors import InvalidTileError
from darts_export.products import ITEM_NAME

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from darts_export.cog import RasterBand
    from darts_export.manifest import Artifact, Manifest
    from darts_export.tile import TileView

__all__ = [
    "DATETIME_KEYS",
    "FOOTPRINT_MAX_VERTICES",
    "ITEM_NAME",
    "METADATA_PREFIX",
    "acquisition_datetime",
    "asset_key",
    "build_item",
    "encode_item",
    "footprint",
    "footprint_bbox",
]

logger = logging.getLogger(__name__)

DATETIME_KEYS = ("datetime", "acquisition_time", "acquisition_datetime", "sensing_time", "sensing_datetime")
"""Metadata keys read, in this order, for the item's acquisition ``datetime``."""

METADATA_PREFIX = "darts:"
"""Prefix of the item properties that hold the export metadata."""

FOOTPRINT_MAX_VERTICES = 200
"""Upper bound on the coordinates of the footprint geometry."""

_FOOTPRINT_GRID = 1024  # the valid mask is reduced to at most this many cells per side
_COORD_GRID = 1e-7  # degrees (~1 cm): precision of the footprint coordinates
_FORMAT_SUFFIXED = frozenset({"parquet", "gpkg"})  # formats written in pairs with one stem
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_FORMAT_NAMES = {
    "image/tiff; application=geotiff; profile=cloud-optimized": "COG",
    "application/vnd.apache.parquet": "GeoParquet",
    "application/geopackage+sqlite3": "GeoPackage",
    "image/jpeg": "JPEG",
    "application/json": "JSON",
    "application/vnd+zarr": "Zarr",
}
_MANIFEST_HREF = "./manifest.json"


def acquisition_datetime(metadata: Mapping[str, Any]) -> datetime | None:
    """The acquisition time named in ``metadata`` (see :data:`DATETIME_KEYS`), as an aware UTC datetime.

    Returns ``None`` when no key is present. Call it before exporting to reject a bad value early.

    Raises:
        InvalidTileError: the value is not an ISO 8601 date or date-time.
    """
    for key in DATETIME_KEYS:
        value = metadata.get(key)
        if value is None or value == "":
            continue
        return _parse_time(value, f"metadata[{key!r}]")
    return None


def _parse_time(value: object, what: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidTileError(
                f"{what} = {value!r} is not an ISO 8601 date-time; use e.g. '2023-06-15T10:30:00Z'."
            ) from exc
    else:
        raise InvalidTileError(f"{what} must be an ISO 8601 string, got {type(value).__name__} {value!r}.")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def asset_key(path: str) -> str:
    """The item's asset key for the artifact at ``path``.

    The file name without its extension (``probabilities-with_tcvis.tif`` →
    ``probabilities-with_tcvis``, ``darts_inference_debug.zarr`` → ``darts_inference_debug``),
    except for the vector formats written in pairs under one stem, which keep their format:
    ``prediction_segments.parquet`` → ``prediction_segments-parquet``,
    ``prediction_segments.gpkg`` → ``prediction_segments-gpkg``. Characters other than
    letters, digits, ``_`` and ``-`` become ``_``.
    """
    stem, dot, ext = path.rpartition(".")
    if not dot or "/" in ext:
        stem, ext = path, ""
    key = f"{stem}-{ext}" if ext in _FORMAT_SUFFIXED else stem
    return _UNSAFE_KEY_CHARS.sub("_", key)


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

    ``any`` over a reshaped middle axis runs vectorised along the rows: 0.025 s for 10980²,
    where ``logical_or.reduceat`` took 0.3 s.
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
        polygons = [
            shape(geom) for geom, _ in rasterio.features.shapes(cells.astype(np.uint8), mask=cells, transform=coarse)
        ]
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


def _metadata_properties(metadata: Mapping[str, Any]) -> dict[str, str]:
    """``darts:<key>`` → string, in key order; non-strings as JSON text (as the GeoTIFF tags)."""
    return {
        f"{METADATA_PREFIX}{key}": value if isinstance(value, str) else json.dumps(value)
        for key, value in sorted(metadata.items(), key=lambda kv: str(kv[0]))
    }


def _stac_band(band: RasterBand) -> StacBand:
    values = set(DataType)
    data_type = DataType(band.data_type) if band.data_type in values else DataType.OTHER
    nodata: float | str | None = None
    if band.nodata is not None:
        nodata = float(band.nodata)
        if math.isnan(nodata):
            nodata = "nan"
        elif math.isinf(nodata):
            nodata = "inf" if nodata > 0 else "-inf"
    statistics = None
    if band.statistics is not None:
        s = band.statistics
        finite = {
            name: float(value)
            for name, value in (
                ("minimum", s.minimum),
                ("maximum", s.maximum),
                ("mean", s.mean),
                ("stddev", s.stddev),
                ("valid_percent", s.valid_percent),
            )
            if math.isfinite(value)
        }
        statistics = Statistics.create(**finite)
    stac_band = StacBand.create(
        nodata=nodata,  # type: ignore[arg-type]  # pystac types "nan" as a NoDataStrings member
        data_type=data_type,
        statistics=statistics,
        unit=band.unit,
        scale=None if band.scale is None else float(band.scale),
        offset=None if band.offset is None else float(band.offset),
    )
    return StacBand({"name": band.name, **stac_band.to_dict()})


def _asset(artifact: Artifact) -> pystac.Asset:
    fmt = _FORMAT_NAMES.get(artifact.media_type)
    title = artifact.product + (f" ({artifact.subset})" if artifact.subset else "") + (f", {fmt}" if fmt else "")
    extra: dict[str, Any] = {"darts:product": artifact.product}
    if artifact.subset:
        extra["darts:subset"] = artifact.subset
    return pystac.Asset(
        href=f"./{artifact.path}",
        title=title,
        media_type=artifact.media_type,
        roles=list(artifact.roles),
        extra_fields=extra,
    )


def build_item(
    manifest: Manifest,
    view: TileView,
    *,
    metadata: Mapping[str, Any],
    raster_bands: Mapping[str, Sequence[RasterBand]],
    geometry: Mapping[str, Any] | None = None,
) -> pystac.Item:
    """The STAC Item of one export (see the module documentation for its shape).

    Args:
        manifest: The draft manifest: every artifact written so far (not the item itself).
        view: The exported tile.
        metadata: The export metadata (as written to the GeoTIFF tags); not modified.
        raster_bands: Per COG path (``"probabilities.tif"``), what each of its bands holds.
        geometry: The item's geometry if already computed as ``footprint(view)`` (e.g. on
            another thread while the products were encoded); computed here when ``None``.

    Raises:
        InvalidTileError: an acquisition time in ``metadata`` or ``manifest.created`` is not
            ISO 8601, or two artifacts map to the same asset key.
    """
    georef = view.georef
    created = _parse_time(manifest.created, "manifest.created")
    geometry = dict(geometry) if geometry is not None else footprint(view)
    item = pystac.Item(
        id=manifest.tile_id,
        geometry=geometry,
        bbox=footprint_bbox(geometry),
        datetime=acquisition_datetime(metadata) or created,
        properties={"datetime": None, "created": datetime_to_str(created)},
    )
    epsg = georef.epsg
    authority = (("EPSG", str(epsg)) if epsg is not None else None) or georef.crs.to_authority()
    ProjectionExtension.ext(item, add_if_missing=True).apply(
        code=":".join(authority) if authority else None,
        wkt2=None if authority else georef.crs.to_wkt(version="WKT2_2019"),
        shape=[int(georef.height), int(georef.width)],
        transform=[float(v) for v in tuple(georef.transform)[:6]],
        bbox=[float(v) for v in georef.bounds],
    )
    if not authority:
        item.properties["proj:code"] = None  # keep the key: the same property keys for every tile
    item.properties.update(_metadata_properties(metadata))

    keys: dict[str, str] = {}
    for artifact in manifest.artifacts:
        key = asset_key(artifact.path)
        if key in keys:
            raise InvalidTileError(
                f"Artifacts {keys[key]!r} and {artifact.path!r} would share the STAC asset key {key!r}; rename a band."
            )
        keys[key] = artifact.path
        asset = _asset(artifact)
        item.add_asset(key, asset)
        if artifact.type == "file":
            FileExtension.ext(asset, add_if_missing=True).apply(size=int(artifact.size), checksum=artifact.checksum)
        bands = raster_bands.get(artifact.path)
        if bands:
            RasterExtension.ext(asset, add_if_missing=True).apply([_stac_band(b) for b in bands])
    unknown = sorted(set(raster_bands) - set(keys.values()))
    if unknown:
        logger.warning("raster band info for %s ignored: not in the manifest", unknown)
    item.add_link(
        pystac.Link(rel="describedby", target=_MANIFEST_HREF, media_type="application/json", title="manifest")
    )
    return item


def encode_item(item: pystac.Item) -> bytes:
    """UTF-8 JSON of ``item`` with hrefs exactly as built (relative) and no self link; never NaN."""
    data = item.to_dict(include_self_link=False, transform_hrefs=False)
    return (json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()

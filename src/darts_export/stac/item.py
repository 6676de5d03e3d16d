"""The STAC Item of an export: one GeoJSON Feature describing the tile and every artifact.

:func:`build_item` turns a draft :class:`~darts_export.manifest.Manifest` (every artifact
written so far) and the tile into a :class:`pystac.Item`; :func:`encode_item` serialises
it. Both are pure: no paths, buckets or credentials.

The item has the same shape for every tile, so catalog loaders (pgstac, stac-geoparquet)
can ingest many of them:

* ``id`` is the manifest's tile id; ``geometry`` is the footprint of the valid pixels in
  WGS84 (at most :data:`FOOTPRINT_MAX_VERTICES` vertices, split at ±180° when the tile
  crosses the antimeridian; then ``bbox`` has west > east, as RFC 7946 prescribes).
* ``datetime`` is the acquisition time decided by :mod:`darts_export.metadata` (the metadata's
  ``datetime`` and the other :data:`DATETIME_KEYS`, else the tile's ``attrs``), with
  ``start_datetime``/``end_datetime`` when the source gives an interval; without any, the
  export time. ``created`` is always the export time.
* Every metadata entry becomes the string property ``darts:<key>``: strings as they are,
  anything else as JSON text — the same strings as the GeoTIFF tags.
* The source scene's STAC properties that describe the acquisition (``platform``,
  ``constellation``, ``instruments``, ``eo:cloud_cover``, ``view:*``, ``s2:*``) keep their
  own names; the eo (v1.1.0) and view (v1.0.0) extensions are declared when their fields are
  present. ``s2:*`` fields are carried as they are, without declaring the sentinel-2 extension
  (whose schema requires fields a tile need not carry).
* Projection v2.0.0 fields (``proj:code``, ``proj:shape``, ``proj:transform``,
  ``proj:bbox``) describe the raster grid. ``proj:code`` is ``"EPSG:…"`` when the CRS is
  exactly an EPSG (or other authority) CRS; otherwise it is ``null`` and the CRS is given in
  full as ``proj:wkt2`` and ``proj:projjson``.
* One asset per artifact under the key :func:`asset_key` gives its href (see
  :class:`ItemPlacement`), the manifest's media type and roles, ``file:size`` and
  ``file:checksum`` (the manifest's multihash; left out for directory artifacts such as the
  Zarr debug store, whose checksum is a darts-export definition, not a file's).
* Every band of a COG is described three times, once per generation of STAC clients: STAC 1.1
  ``bands`` (``name``, ``data_type``, ``nodata``, ``unit``, ``statistics``), raster v1.1.0
  ``raster:bands`` (the same values; stackstac, titiler and pystac's ``RasterExtension`` read
  these) and eo v1.1.0 ``eo:bands`` (``name``, plus ``common_name`` for ``red``, ``green``,
  ``blue``, ``nir`` ...; odc-stac resolves ``bands=["red"]`` through these). Undefined
  statistics (an empty band) are left out, never written as NaN; a NaN nodata is ``"nan"``
  as the schema asks. No band declares a ``scale``: every client reads the number stored in
  the COG (probabilities in percent, ``unit`` ``"%"``).
* Links: ``collection``, ``root`` and ``parent`` point at the collection document
  (``../collection.json``, the layout ``darts-export stac`` writes), unless the item belongs
  to no collection; ``describedby`` points at the manifest; with an ``href_base`` a ``self``
  link gives the item's own URL.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyproj
import pystac
from pystac.extensions.eo import Band as EoBand
from pystac.extensions.eo import EOExtension
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterExtension, Statistics
from pystac.extensions.raster import RasterBand as StacBand
from pystac.extensions.view import ViewExtension
from pystac.utils import datetime_to_str

from darts_export.errors import InvalidTileError
from darts_export.metadata import DATETIME_KEYS, ExportMetadata, acquisition_datetime, decide_metadata, parse_time
from darts_export.products import ITEM_NAME, MediaType, asset_key
from darts_export.stac.footprint import footprint, footprint_bbox
from darts_export.stac.placement import COLLECTION_NAME, DEFAULT_COLLECTION, ItemPlacement

if TYPE_CHECKING:
    from darts_export.formats.cog import RasterBand
    from darts_export.manifest import Artifact, Manifest
    from darts_export.tile import TileView

__all__ = [
    "COLLECTION_NAME",
    "DATETIME_KEYS",
    "DEFAULT_COLLECTION",
    "ITEM_NAME",
    "METADATA_PREFIX",
    "ItemPlacement",
    "acquisition_datetime",
    "asset_key",
    "build_item",
    "encode_item",
]

logger = logging.getLogger(__name__)

METADATA_PREFIX = "darts:"
"""Prefix of the item properties that hold the export metadata."""

_FORMAT_NAMES = {
    "image/tiff; application=geotiff; profile=cloud-optimized": "COG",
    "application/vnd.apache.parquet": "GeoParquet",
    "application/geopackage+sqlite3": "GeoPackage",
    "image/jpeg": "JPEG",
    "application/json": "JSON",
    "application/vnd.zarr": "Zarr",
}
_MANIFEST_NAME = "manifest.json"

EO_COMMON_NAMES = frozenset(
    {"coastal", "blue", "green", "red", "yellow", "pan", "rededge", "nir", "nir08", "nir09", "cirrus"}
    | {"swir16", "swir22", "lwir", "lwir11", "lwir12"}
)
"""Band names that are also eo ``common_name`` values (the optical product's red, green, blue, nir)."""


def _metadata_properties(tags: Mapping[str, str]) -> dict[str, str]:
    """``darts:<key>`` → the GeoTIFF tag's string, in key order."""
    return {f"{METADATA_PREFIX}{key}": value for key, value in sorted(tags.items())}


def _source_properties(item: pystac.Item, properties: Mapping[str, Any]) -> None:
    """The source scene's acquisition properties under their own names, declaring eo/view when used."""
    item.properties.update(properties)
    if "eo:cloud_cover" in properties:
        EOExtension.add_to(item)
    if any(key.startswith("view:") for key in properties):
        ViewExtension.add_to(item)


def _nodata(value: float | None) -> float | str | None:
    """A nodata value as the raster schemas want it: ``"nan"``/``"inf"``/``"-inf"`` as strings."""
    if value is None:
        return None
    nodata = float(value)
    if math.isnan(nodata):
        return "nan"
    if math.isinf(nodata):
        return "inf" if nodata > 0 else "-inf"
    return nodata


def _statistics(band: RasterBand) -> dict[str, float] | None:
    if band.statistics is None:
        return None
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
    return finite or None


def _raster_band(band: RasterBand) -> StacBand:
    """The raster v1.1.0 ``raster:bands`` entry (with the band's ``name``, which that version lacks)."""
    data_type = DataType(band.data_type) if band.data_type in set(DataType) else DataType.OTHER
    statistics = _statistics(band)
    stac_band = StacBand.create(
        nodata=_nodata(band.nodata),  # type: ignore[arg-type]  # pystac types "nan" as a NoDataStrings member
        data_type=data_type,
        statistics=Statistics.create(**statistics) if statistics else None,
        unit=band.unit,
        scale=None if band.scale is None else float(band.scale),
        offset=None if band.offset is None else float(band.offset),
    )
    return StacBand({"name": band.name, **stac_band.to_dict()})


def _common_band(band: RasterBand) -> dict[str, Any]:
    """The STAC 1.1 ``bands`` entry: the common-metadata fields only (a scale would need raster v2)."""
    fields = {
        "name": band.name,
        "data_type": band.data_type if band.data_type in set(DataType) else DataType.OTHER.value,
        "nodata": _nodata(band.nodata),
        "unit": band.unit,
        "statistics": _statistics(band),
    }
    return {key: value for key, value in fields.items() if value is not None}


def _eo_band(band: RasterBand) -> EoBand:
    return EoBand.create(name=band.name, common_name=band.name if band.name in EO_COMMON_NAMES else None)


def _asset(artifact: Artifact, placement: ItemPlacement) -> pystac.Asset:
    fmt = _FORMAT_NAMES.get(artifact.media_type)
    title = artifact.product + (f" ({artifact.subset})" if artifact.subset else "") + (f", {fmt}" if fmt else "")
    extra: dict[str, Any] = {"darts:product": artifact.product}
    if artifact.subset:
        extra["darts:subset"] = artifact.subset
    return pystac.Asset(
        href=placement.href(artifact.path),
        title=title,
        media_type=artifact.media_type,
        roles=list(artifact.roles),
        extra_fields=extra,
    )


_RELATIVE = ItemPlacement()


def build_item(
    manifest: Manifest,
    view: TileView,
    *,
    metadata: ExportMetadata | Mapping[str, Any],
    raster_bands: Mapping[str, Sequence[RasterBand]],
    geometry: Mapping[str, Any] | None = None,
    placement: ItemPlacement = _RELATIVE,
) -> pystac.Item:
    """The STAC Item of one export (see the module documentation for its shape).

    Args:
        manifest: The draft manifest: every artifact written so far (not the item itself).
        view: The exported tile.
        metadata: The export's decided metadata; a plain mapping is decided here from its own
            entries alone (no tile attributes) and is not modified.
        raster_bands: Per COG path (``"probabilities.tif"``), what each of its bands holds.
        geometry: The item's geometry if already computed as ``footprint(view)`` (e.g. on
            another thread while the products were encoded); computed here when ``None``.
        placement: The item's collection and the base of its hrefs; by default collection
            :data:`DEFAULT_COLLECTION` and relative hrefs.

    Raises:
        InvalidTileError: an acquisition time in ``metadata`` or ``manifest.created`` is not
            ISO 8601, or two artifacts map to the same asset key.
    """
    georef = view.georef
    created = parse_time(manifest.created, "manifest.created")
    if isinstance(metadata, ExportMetadata):
        decided = metadata
        tags = decided.tags
    else:
        decided = decide_metadata(metadata, {}, georef, environ={}, now=created)
        tags = {key: value for key, value in decided.tags.items() if key in metadata}
    acquisition = decided.acquisition
    geometry = dict(geometry) if geometry is not None else footprint(view)
    item = pystac.Item(
        id=manifest.tile_id,
        geometry=geometry,
        bbox=footprint_bbox(geometry),
        datetime=acquisition.instant if acquisition is not None else created,
        start_datetime=acquisition.start if acquisition is not None else None,
        end_datetime=acquisition.end if acquisition is not None else None,
        properties={"datetime": None, "created": datetime_to_str(created)},
    )
    authority = georef.authority
    ProjectionExtension.ext(item, add_if_missing=True).apply(
        code=":".join(authority) if authority else None,
        wkt2=None if authority else georef.crs.to_wkt(version="WKT2_2019"),
        projjson=None if authority else pyproj.CRS.from_user_input(georef.crs.to_wkt()).to_json_dict(),
        shape=[int(georef.height), int(georef.width)],
        transform=[float(v) for v in tuple(georef.transform)[:6]],
        bbox=[float(v) for v in georef.bounds],
    )
    if not authority:
        item.properties["proj:code"] = None  # keep the key: the same property keys for every tile
    item.properties.update(_metadata_properties(tags))
    _source_properties(item, decided.source_properties)

    keys: dict[str, str] = {}
    for artifact in manifest.artifacts:
        key = asset_key(artifact.path)
        if key in keys:  # plan_products already refuses such plans; this guards hand-made manifests
            raise InvalidTileError(
                f"Artifacts {keys[key]!r} and {artifact.path!r} would share the STAC asset key {key!r}; rename a band."
            )
        keys[key] = artifact.path
        asset = _asset(artifact, placement)
        item.add_asset(key, asset)
        if artifact.type == "file":
            FileExtension.ext(asset, add_if_missing=True).apply(size=int(artifact.size), checksum=artifact.checksum)
        bands = raster_bands.get(artifact.path)
        if bands:
            asset.extra_fields["bands"] = [_common_band(b) for b in bands]
            RasterExtension.ext(asset, add_if_missing=True).apply([_raster_band(b) for b in bands])
            EOExtension.ext(asset, add_if_missing=True).apply(bands=[_eo_band(b) for b in bands])
    unknown = sorted(set(raster_bands) - set(keys.values()))
    if unknown:
        logger.warning("raster band info for %s ignored: not in the manifest", unknown)
    _add_links(item, placement)
    return item


def _add_links(item: pystac.Item, placement: ItemPlacement) -> None:
    if placement.collection is not None:
        item.collection_id = placement.collection
        for rel in (pystac.RelType.COLLECTION, pystac.RelType.ROOT, pystac.RelType.PARENT):
            item.add_link(pystac.Link(rel=rel, target=placement.collection_href, media_type=MediaType.JSON))
    if placement.href_base is not None:
        item.add_link(
            pystac.Link(rel=pystac.RelType.SELF, target=placement.href(ITEM_NAME), media_type=MediaType.GEOJSON)
        )
    item.add_link(
        pystac.Link(
            rel="describedby", target=placement.href(_MANIFEST_NAME), media_type=MediaType.JSON, title="manifest"
        )
    )


def encode_item(item: pystac.Item) -> bytes:
    """UTF-8 JSON of ``item`` with hrefs exactly as built; never NaN."""
    data = item.to_dict(include_self_link=True, transform_hrefs=False)
    return (json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()

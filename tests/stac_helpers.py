"""STAC test helpers: an offline schema validator and items built from hand-made manifests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import pystac
import xarray as xr
from pystac.validation import JsonSchemaSTACValidator

from darts_export.formats.cog import BandStatistics, RasterBand
from darts_export.manifest import Artifact, Manifest
from darts_export.products import MediaType
from darts_export.stac.item import build_item
from darts_export.tile import TileView
from helpers import SCHEMAS

# --- offline validation -------------------------------------------------------------------------

_EXTENSION_SCHEMAS = {
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json": "projection_v2.0.0.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json": "raster_v1.1.0.json",
    "https://stac-extensions.github.io/raster/v2.0.0/schema.json": "raster_v2.0.0.json",
    "https://stac-extensions.github.io/file/v2.1.0/schema.json": "file_v2.1.0.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json": "eo_v1.1.0.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json": "view_v1.0.0.json",
}
_PROJJSON_URI = "https://proj.org/schemas/v0.7/projjson.schema.json"


class SchemaFetchError(AssertionError):
    """Validation needed a schema that is not in the offline cache (it would have been downloaded)."""


class OfflineValidator(JsonSchemaSTACValidator):
    """pystac's validator with every schema pre-loaded; asking for any other schema fails the test.

    The cache holds the core schemas pystac bundles (item, collection, catalog, GeoJSON), the
    extension schemas in ``tests/data/schemas/stac/`` and the PROJJSON schema pyproj ships (the
    projection extension refers to it). pystac reads a schema through ``_get_schema`` (for the
    top-level schema and for every ``$ref`` the ``referencing`` registry cannot resolve), so
    refusing there means nothing is ever fetched.
    """

    def __init__(self) -> None:
        super().__init__()
        for uri, name in _EXTENSION_SCHEMAS.items():
            self.schema_cache[uri] = json.loads((SCHEMAS / "stac" / name).read_text())
        projjson = Path(pyproj.datadir.get_data_dir()) / "projjson.schema.json"
        self.schema_cache[_PROJJSON_URI] = json.loads(projjson.read_text())

    def _get_schema(self, schema_uri: str) -> dict[str, Any]:
        if schema_uri not in self.schema_cache:
            raise SchemaFetchError(f"validation would fetch {schema_uri!r}; add it to the offline schema cache")
        return super()._get_schema(schema_uri)


def validate_offline(obj: pystac.STACObject | Mapping[str, Any], validator: OfflineValidator) -> list[str]:
    """Validate a STAC object (or its JSON) against core + extension schemas; return the schema URIs used."""
    data = obj.to_dict(include_self_link=False, transform_hrefs=False) if isinstance(obj, pystac.STACObject) else obj
    return pystac.validation.validate_dict(dict(data), validator=validator)


# --- building items from hand-made manifests ----------------------------------------------------


def fake_checksum(text: str) -> str:
    return "1220" + hashlib.sha256(text.encode()).hexdigest()


def make_manifest(
    view: TileView, *, tile_id: str, created: str, sizes: tuple[int, ...] = (1000, 2000, 3000, 4000)
) -> Manifest:
    georef = view.georef
    artifacts = (
        Artifact(
            path="probabilities.tif",
            size=sizes[0],
            checksum=fake_checksum(f"{tile_id}p"),
            media_type=MediaType.COG,
            roles=("data",),
            product="probabilities",
        ),
        Artifact(
            path="prediction_segments.parquet",
            size=sizes[1],
            checksum=fake_checksum(f"{tile_id}s"),
            media_type=MediaType.GEOPARQUET,
            roles=("data",),
            product="polygonized",
        ),
        Artifact(
            path="prediction_segments.gpkg",
            size=sizes[2],
            checksum=fake_checksum(f"{tile_id}g"),
            media_type=MediaType.GEOPACKAGE,
            roles=("data",),
            product="polygonized",
        ),
        Artifact(
            path="thumbnail.jpg",
            size=sizes[3],
            checksum=fake_checksum(f"{tile_id}t"),
            media_type=MediaType.JPEG,
            roles=("thumbnail",),
            product="thumbnail",
        ),
        Artifact(
            path="darts_inference_debug.zarr",
            size=12345,
            checksum=fake_checksum(f"{tile_id}z"),
            media_type=MediaType.ZARR,
            roles=("debug",),
            product="debug",
            type="directory",
        ),
    )
    return Manifest(
        tile_id=tile_id,
        crs=georef.crs_code,
        crs_wkt=georef.crs.to_wkt(),
        shape=georef.shape,
        transform=tuple(georef.transform)[:6],
        bounds=georef.bounds,
        created=created,
        version="0.0.0",
        options={},
        artifacts=artifacts,
        location="memory://x",
    )


def band_statistics(values: np.ndarray, size: int) -> BandStatistics:
    return BandStatistics(
        minimum=float(values.min()),
        maximum=float(values.max()),
        mean=float(values.mean()),
        stddev=float(values.std()),
        valid_percent=100.0 * values.size / size,
    )


def raster_bands(view: TileView) -> dict[str, tuple[RasterBand, ...]]:
    prob = np.asarray(view.array("probabilities"), dtype=np.float64)
    percent = np.where(np.isnan(prob), 255, np.round(prob * 100)).astype(np.uint8)
    return {
        "probabilities.tif": (
            RasterBand(
                name="probabilities",
                data_type="uint8",
                nodata=255,
                unit="%",
                statistics=band_statistics(percent[percent != 255], percent.size),
            ),
        )
    }


def make_item(tile: xr.Dataset, *, tile_id: str = "T06WVS", metadata: Mapping[str, Any] | None = None) -> pystac.Item:
    view = TileView(tile)
    created = "2024-05-01T12:00:00Z"
    return build_item(
        make_manifest(view, tile_id=tile_id, created=created),
        view,
        metadata=metadata if metadata is not None else {"tile_id": tile_id},
        raster_bands=raster_bands(view),
    )


def antimeridian_tile() -> xr.Dataset:
    """A 64² tile in UTM zone 60N at ~70°N whose eastern part lies beyond 180°E."""
    size, pixel = 64, 1000.0
    x = 590_000 + pixel * (np.arange(size) + 0.5)
    y = 7_800_000 - pixel * (np.arange(size) + 0.5)
    prob = np.full((size, size), 0.2, dtype=np.float32)
    tile = xr.Dataset({"probabilities": (("y", "x"), prob)}, coords={"x": x, "y": y})
    with_crs: xr.Dataset = tile.rio.write_crs("EPSG:32660")
    return with_crs

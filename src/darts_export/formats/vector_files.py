"""The files of the vector products: a polygon frame as GeoParquet 1.1 bytes or a GeoPackage file.

Pure encoding; where the bytes or the staged file go is the storage layer's business.
GeoPackage is SQLite and needs random writes, so it is written to a local path (the export
stages it in a temporary folder and uploads it); it is made byte-reproducible by pinning the
timestamp GDAL would otherwise take from the wall clock.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

import pyogrio

from darts_export.errors import InvalidTileError
from darts_export.formats.polygons import GEOMETRY_TYPE

if TYPE_CHECKING:
    from pathlib import Path

    import geopandas as gpd

__all__ = ["GPKG_TIMESTAMP", "encode_geoparquet", "write_geopackage"]

GPKG_TIMESTAMP: Final = "2000-01-01T00:00:00Z"
"""The ``last_change`` written to ``gpkg_contents``, pinned so that equal frames give equal files."""

_GDAL_CONFIG_LOCK = threading.Lock()


def encode_geoparquet(frame: gpd.GeoDataFrame) -> bytes:
    """Encode ``frame`` as GeoParquet 1.1: WKB, PROJJSON CRS, ``bbox`` covering column, zstd.

    Raises:
        InvalidTileError: The frame has no CRS.
    """
    _require_crs(frame)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd", schema_version="1.1.0", write_covering_bbox=True)
    return buffer.getvalue()


def write_geopackage(frame: gpd.GeoDataFrame, path: Path, *, layer: str) -> None:
    """Write ``frame`` as layer ``layer`` of a new GeoPackage at the local ``path``.

    Any file at ``path`` is replaced. The layer is typed ``MultiPolygon`` (single
    polygons are promoted), has the frame's SRS and a spatial index, and the file is
    byte-for-byte the same for the same frame: ``gpkg_contents.last_change`` is pinned
    to :data:`GPKG_TIMESTAMP` instead of the wall clock.

    Raises:
        InvalidTileError: The frame has no CRS or ``layer`` is empty.
    """
    _require_crs(frame)
    if not layer:
        raise InvalidTileError("The GeoPackage layer name is empty; pass a name such as 'prediction_segments'.")
    path.unlink(missing_ok=True)  # GDAL would update an existing file in place, which is not reproducible
    with _gdal_config({"OGR_CURRENT_DATE": GPKG_TIMESTAMP}):
        pyogrio.write_dataframe(
            frame, path, layer=layer, driver="GPKG", geometry_type=GEOMETRY_TYPE, promote_to_multi=True
        )


def _require_crs(frame: gpd.GeoDataFrame) -> None:
    if frame.crs is None:
        raise InvalidTileError("The frame has no CRS; build it with polygonize_* or call frame.set_crs(...).")


@contextmanager
def _gdal_config(options: dict[str, str]) -> Iterator[None]:
    """Set pyogrio's GDAL config ``options`` for the block, then restore the previous values."""
    with _GDAL_CONFIG_LOCK:
        previous = {key: pyogrio.get_gdal_config_option(key) for key in options}
        pyogrio.set_gdal_config_options(options)
        try:
            yield
        finally:
            pyogrio.set_gdal_config_options(previous)

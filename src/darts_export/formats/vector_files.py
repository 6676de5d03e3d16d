"""The files of the vector products: a polygon frame as GeoParquet 1.1 bytes or a GeoPackage file.

Pure encoding; where the bytes or the staged file go is the storage layer's business.
GeoPackage is SQLite and needs random writes, so it is written to a local path (the export
stages it in a temporary folder and uploads it); it is made byte-reproducible by pinning the
timestamp GDAL would otherwise take from the wall clock. GeoPackages are version 1.2 by
default: GDAL < 3.7 (QGIS 3.22, Debian's LTS) warns on every open of a 1.4 file, and the
products use nothing that 1.3/1.4 added.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Final, Literal

import pyogrio

from darts_export.errors import InvalidTileError
from darts_export.formats._gdal import gdal_config
from darts_export.products import GEOMETRY_TYPE

if TYPE_CHECKING:
    from pathlib import Path

    import geopandas as gpd

__all__ = ["GPKG_TIMESTAMP", "GPKG_VERSION", "GeoPackageVersion", "encode_geoparquet", "write_geopackage"]

GPKG_TIMESTAMP: Final = "2000-01-01T00:00:00Z"
"""The ``last_change`` written to ``gpkg_contents``, pinned so that equal frames give equal files."""

GeoPackageVersion = Literal["1.2", "1.3", "1.4"]
GPKG_VERSION: Final[GeoPackageVersion] = "1.2"
"""The GeoPackage version written unless a caller asks for a newer one."""


def encode_geoparquet(frame: gpd.GeoDataFrame) -> bytes:
    """Encode ``frame`` as GeoParquet 1.1: WKB, PROJJSON CRS, ``bbox`` covering column, zstd.

    Raises:
        InvalidTileError: The frame has no CRS.
    """
    _require_crs(frame)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd", schema_version="1.1.0", write_covering_bbox=True)
    return buffer.getvalue()


def write_geopackage(
    frame: gpd.GeoDataFrame, path: Path, *, layer: str, version: GeoPackageVersion = GPKG_VERSION
) -> None:
    """Write ``frame`` as layer ``layer`` of a new GeoPackage of ``version`` at the local ``path``.

    Any file at ``path`` is replaced. The layer is typed ``MultiPolygon`` (single
    polygons are promoted), has the frame's SRS and a spatial index, and the file is
    byte-for-byte the same for the same frame: ``gpkg_contents.last_change`` is pinned
    to :data:`GPKG_TIMESTAMP` instead of the wall clock.

    Raises:
        InvalidTileError: The frame has no CRS, ``layer`` is empty or ``version`` is unknown.
    """
    _require_crs(frame)
    if not layer:
        raise InvalidTileError("The GeoPackage layer name is empty; pass a name such as 'prediction_segments'.")
    if version not in ("1.2", "1.3", "1.4"):
        raise InvalidTileError(f"GeoPackage version {version!r} is not supported; use '1.2', '1.3' or '1.4'.")
    path.unlink(missing_ok=True)  # GDAL would update an existing file in place, which is not reproducible
    with gdal_config({"OGR_CURRENT_DATE": GPKG_TIMESTAMP}):
        pyogrio.write_dataframe(
            frame,
            path,
            layer=layer,
            driver="GPKG",
            geometry_type=GEOMETRY_TYPE,
            promote_to_multi=True,
            dataset_options={"VERSION": version},
        )


def _require_crs(frame: gpd.GeoDataFrame) -> None:
    if frame.crs is None:
        raise InvalidTileError("The frame has no CRS; build it with polygonize_* or call frame.set_crs(...).")

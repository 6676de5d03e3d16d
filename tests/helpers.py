"""Small helpers shared by the tests: read artifacts back through independent clients."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import rasterio
from rasterio.io import MemoryFile

from conftest import Target


def read_back(target: Target, rel: str) -> bytes:
    """The bytes of ``rel`` as an independent fsspec client sees them."""
    return bytes(target.fs().cat_file(target.path(rel)))


def multihash(data: bytes) -> str:
    return "1220" + hashlib.sha256(data).hexdigest()


def read_raster(data: bytes) -> dict[str, Any]:
    """Open GeoTIFF bytes with rasterio and return what the tests compare."""
    with MemoryFile(data) as mf, mf.open() as ds:
        return {
            "array": ds.read(),
            "nodata": ds.nodata,
            "tags": ds.tags(),
            "descriptions": ds.descriptions,
            "crs": ds.crs,
            "transform": ds.transform,
            "overviews": ds.overviews(1),
            "blocks": ds.block_shapes,
            "compression": ds.compression,
            "dtype": ds.dtypes[0],
            "count": ds.count,
        }


def expected_percent(probabilities: np.ndarray) -> np.ndarray:
    """Reference rounding of probabilities to percent: nearest, halves up, NaN → 255."""
    p = np.asarray(probabilities, dtype=np.float64)
    out = np.floor(p * 100 + 0.5)
    out[np.isnan(p)] = 255
    return out.astype(np.uint8)


def open_with_gdal(data: bytes) -> rasterio.DatasetReader:
    return MemoryFile(data).open()

"""The GDAL environment of the encoders and their one warnings policy.

Every format module does its GDAL work inside :func:`local_gdal_env` and traces polygons
with :func:`polygonize`; GDAL configuration options that pyogrio reads are set through
:func:`gdal_config`. Nothing here touches a path outside GDAL's in-memory filesystems.

Warnings policy: no warning filter is set at import time or process-wide (the CLI
included), and the GDAL work sets none around a call either: ``warnings.catch_warnings``
swaps the process-wide filter list and is not thread-safe before Python 3.14, and the
export encodes on several threads, so a filter set around one call can vanish (or stay)
because of another thread. Instead, the encoders give rasterio no reason to warn:
rasterio's ``NotGeoreferencedWarning`` for its own temporary array datasets
(``rasterio.features.shapes`` on a NumPy array wraps it in a dataset without a transform
and hides the warning with ``catch_warnings``) is avoided by tracing from datasets that
are georeferenced from their creation.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pyogrio
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.session import DummySession

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["gdal_config", "local_gdal_env", "polygonize"]

_CONFIG_LOCK = threading.Lock()

# rasterio warns when a dataset's transform has unit pixels and a zero origin (it takes it
# for "no georeference"); such a grid is traced one row lower and moved back afterwards.
_UNIT_GRID_SHIFT = 1.0


@contextmanager
def local_gdal_env(**config: str) -> Iterator[None]:
    """A GDAL environment for in-memory work: no cloud session, whatever the process environment.

    ``config`` adds GDAL configuration options, for this thread only.

    The encoders only touch in-memory GDAL datasets; storage credentials are fsspec's business.
    Without an active environment rasterio opens one per call (``rasterio.open``, ``warp``,
    ...) and, whenever AWS credentials are in the process environment (always, in AWS Lambda),
    builds a boto3 session for each (bench/results/HISTORY.md). Environments are per thread.
    """
    # With its default options: an environment without any option is falsy to rasterio's
    # ensure_env, which would then still open a credentialled environment per call.
    with rasterio.Env(session=DummySession(), **(rasterio.Env.default_options() | config)):
        yield


@contextmanager
def gdal_config(options: Mapping[str, str]) -> Iterator[None]:
    """Set pyogrio's (process-wide) GDAL config ``options`` for the block, then restore them.

    Blocks run one at a time, so two threads never see each other's options.
    """
    with _CONFIG_LOCK:
        previous = {key: pyogrio.get_gdal_config_option(key) for key in options}
        pyogrio.set_gdal_config_options(dict(options))
        try:
            yield
        finally:
            pyogrio.set_gdal_config_options(previous)


def polygonize(
    raster: NDArray[Any], *, mask: NDArray[np.bool_], transform: Affine
) -> tuple[list[shapely.Polygon], list[int]]:
    """GDAL's 8-connected polygons of the integer ``raster`` where ``mask``, with their values.

    Coordinates are ``transform * (column, row)`` of the pixel corners. Call it inside
    :func:`local_gdal_env`: every call outside one costs a credentialled GDAL environment.
    """
    unit = [abs(v) for v in transform.to_gdal()] == [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    georef = Affine.translation(0.0, _UNIT_GRID_SHIFT) * transform if unit else transform
    height, width = raster.shape
    grid = {"driver": "MEM", "width": width, "height": height, "count": 1, "transform": georef}
    polygons: list[shapely.Polygon] = []
    values: list[int] = []
    with (
        rasterio.open("", "w", dtype=raster.dtype.name, **grid) as source,
        rasterio.open("", "w", dtype="uint8", **grid) as valid,
    ):
        source.write(raster, 1)
        valid.write(mask.view(np.uint8) if mask.dtype == np.bool_ else mask.astype(np.uint8), 1)
        shapes = rasterio.features.shapes(rasterio.band(source, 1), mask=rasterio.band(valid, 1), connectivity=8)
        for geojson, value in shapes:
            shell, *holes = (np.asarray(ring) for ring in geojson["coordinates"])
            polygons.append(shapely.Polygon(shell, holes))
            values.append(int(value))
    if unit and polygons:
        array = np.empty(len(polygons), dtype=object)
        array[:] = polygons
        polygons = list(shapely.transform(array, lambda xy: xy - (0.0, _UNIT_GRID_SHIFT)))
    return polygons, values

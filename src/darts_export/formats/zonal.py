"""Zonal statistics per object: min, max, mean, median and std of each object's pixel values.

The values are the bytes the probabilities COG stores (percent 0-100, one nodata value),
gathered at the object pixels that :func:`darts_export.formats.polygons.polygonize_objects`
reports; the orchestration hands over the percent array it already converted for the COG,
so the statistics and the raster can never disagree. Everything is a handful of
``bincount``/``lexsort`` passes over the object pixels: no per-object Python loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["STAT_COLUMNS", "zonal_statistics"]

STAT_COLUMNS: Final = ("min", "max", "mean", "median", "std")
"""The statistics of :func:`zonal_statistics`, in column order (``npixel`` follows them)."""


def zonal_statistics(
    values: NDArray[np.integer[Any]] | None, regions: NDArray[np.int64], count: int, *, nodata: int
) -> dict[str, NDArray[Any]]:
    """Statistics of ``values`` per region ``0 .. count - 1``.

    Args:
        values: The value of each pixel (e.g. the percent of ``probabilities.tif``), or ``None``
            when there are none (every statistic is then NaN).
        regions: The 0-based region of each pixel, same length as ``values``.
        count: The number of regions; regions without a pixel get NaN statistics and ``npixel`` 0.
        nodata: Pixels with this value count in ``npixel`` but in no statistic.

    Returns:
        float64 arrays of length ``count`` named :data:`STAT_COLUMNS` (``std`` is the
        population standard deviation; NaN where a region has no valid value) and the int64
        ``npixel``: all pixels of each region, nodata included.
    """
    npixel = np.bincount(regions, minlength=count).astype(np.int64)
    if values is None:
        nan = np.full(count, np.nan)
        return {**{name: nan.copy() for name in STAT_COLUMNS}, "npixel": npixel}
    if values.shape != regions.shape:
        raise ValueError(f"values has shape {values.shape} but regions has {regions.shape}")
    known = values != nodata
    owner, valid = regions[known], values[known].astype(np.float64)
    n = np.bincount(owner, minlength=count)
    has = n > 0
    mean = np.full(count, np.nan)
    np.divide(np.bincount(owner, valid, count), n, out=mean, where=has)
    variance = np.full(count, np.nan)
    deviation = valid - mean[owner]
    np.divide(np.bincount(owner, deviation * deviation, count), n, out=variance, where=has)
    ordered = valid[np.lexsort((valid, owner))]
    start = np.cumsum(n) - n

    def pick(index: NDArray[np.int64]) -> NDArray[np.float64]:
        picked = np.full(count, np.nan)
        picked[has] = ordered[index[has]]
        return picked

    return {
        "min": pick(start),
        "max": pick(start + n - 1),
        "mean": mean,
        "median": (pick(start + (n - 1) // 2) + pick(start + n // 2)) / 2.0,
        "std": np.sqrt(variance),
        "npixel": npixel,
    }

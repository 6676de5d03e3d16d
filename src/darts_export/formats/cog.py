"""Cloud-Optimized GeoTIFF encoding: 2-D arrays + georeference in, COG bytes out.

Pure: no paths, buckets or credentials. GDAL reads the arrays in place (a VRT over MEM
datasets on their buffers, :mod:`darts_export.formats._vrt`: no copy), the overview levels
are computed beforehand as GDAL would (AVERAGE by GDAL's own kernel, NEAREST by indexing),
and GDAL's COG driver writes 512 × 512 tiles with those levels as internal overviews into
``/vsimem/`` (``OVERVIEWS=FORCE_USE_EXISTING``: no temporary overview file compressed, read
back and compressed again). GDAL releases the GIL, so several rasters can be encoded on
several threads at once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.io import MemoryFile

from darts_export.formats._gdal import local_gdal_env
from darts_export.formats._vrt import MEM_OPEN, overview_levels, overview_shapes, vrt_document

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from darts_export.tile import GeoRef

__all__ = ["BandRows", "BandStatistics", "CogOptions", "EncodedCog", "RasterBand", "Resampling", "encode_cog"]

logger = logging.getLogger(__name__)

Compression = Literal["ZSTD", "DEFLATE", "LZW", "LERC_ZSTD", "NONE"]
Resampling = Literal["NEAREST", "MODE", "AVERAGE", "BILINEAR", "CUBIC"]

_WRITE_BLOCK_BYTES = 1 << 20  # a BandRows band is computed and written this much at a time (stays in L2)


class BandRows(Protocol):
    """A 2-D band computed a block of rows at a time, so that no full-size copy of it is made."""

    @property
    def shape(self) -> tuple[int, ...]:
        """(height, width)."""

    @property
    def dtype(self) -> np.dtype[Any]:
        """The dtype of every block."""

    def __getitem__(self, rows: slice, /) -> NDArray[Any]:
        """The band's ``rows`` (a slice with step 1) as an array."""


@dataclass(frozen=True, kw_only=True)
class CogOptions:
    """How to encode a COG.

    The defaults were chosen by measurement (``bench/bench_cog.py``; numbers in
    ``bench/results``): ZSTD with the horizontal-differencing predictor is smaller than the
    original's LZW strips and faster than DEFLATE; higher levels cost more CPU than the bytes
    they save. Floating-point bands use the floating-point predictor. GDAL's multi-threaded
    compression (``threads="ALL_CPUS"``) made COG creation *slower* (overview generation
    dominates and does not parallelise), so one thread per raster is the default and the
    export runs rasters side by side instead.
    """

    compression: Compression = "ZSTD"
    level: int | None = 1
    predictor: bool = True
    blocksize: int = 512
    threads: int | Literal["ALL_CPUS"] = 1

    def creation_options(self, dtype: np.dtype[np.generic], resampling: Resampling) -> dict[str, str]:
        """GDAL COG driver creation options for a raster of ``dtype``."""
        opts = {
            "BLOCKSIZE": str(self.blocksize),
            "COMPRESS": self.compression,
            "OVERVIEW_RESAMPLING": resampling,
            "OVERVIEWS": "AUTO",
            "NUM_THREADS": str(self.threads),
            "BIGTIFF": "IF_SAFER",
        }
        if self.predictor and self.compression in ("ZSTD", "DEFLATE", "LZW"):
            opts["PREDICTOR"] = "FLOATING_POINT" if np.issubdtype(dtype, np.floating) else "YES"
        if self.level is not None and self.compression in ("ZSTD", "DEFLATE"):
            opts["LEVEL"] = str(self.level)
        return opts


@dataclass(frozen=True, kw_only=True)
class BandStatistics:
    """Summary statistics of a band's valid pixels (as in STAC's ``raster:bands.statistics``)."""

    minimum: float
    maximum: float
    mean: float
    stddev: float
    valid_percent: float


@dataclass(frozen=True, kw_only=True)
class EncodedCog:
    """A COG's bytes and the exact statistics of each band's valid pixels."""

    data: bytes
    statistics: tuple[BandStatistics, ...]


@dataclass(frozen=True, kw_only=True)
class RasterBand:
    """What one band of an encoded raster holds; enough for STAC ``raster:bands``."""

    name: str
    data_type: str
    nodata: float | None
    scale: float | None = None
    offset: float | None = None
    unit: str | None = None
    statistics: BandStatistics | None = None


def encode_cog(
    bands: Sequence[NDArray[Any] | BandRows],
    georef: GeoRef,
    *,
    nodata: float | None,
    descriptions: Sequence[str] = (),
    tags: Mapping[str, str] | None = None,
    resampling: Resampling = "NEAREST",
    options: CogOptions | None = None,
) -> EncodedCog:
    """Encode same-shaped 2-D arrays as one multi-band Cloud-Optimized GeoTIFF.

    The exact statistics of every band (pixels equal to ``nodata`` and NaN excluded) are
    returned and also stored in the COG as the bands' ``STATISTICS_*`` metadata, which GIS
    clients use for their default stretch. The overviews, pixels and bytes are those GDAL's COG
    driver writes from the same arrays by itself. It still builds the overviews of other
    resamplings and of non-byte ``AVERAGE`` bands: its overview builder averages floats in
    float32, a resampled read in float64, and the two differ by one unit in the last place in
    some pixels (tests/test_cog.py).

    Args:
        bands: One north-up 2-D array (or :class:`BandRows`) per band, all of ``georef.shape``
            and one dtype.
        georef: CRS and transform of the arrays.
        nodata: The nodata value written to the file (``nan`` for float bands, or ``None``).
        descriptions: Band descriptions (GDAL ``DESCRIPTION``), one per band.
        tags: Dataset-level GDAL metadata (string keys and values).
        resampling: Overview resampling: ``NEAREST``/``MODE`` for masks, ``AVERAGE`` for continuous data.
        options: Codec and tiling; :class:`CogOptions` defaults when ``None``.

    Returns:
        The bytes of a valid COG and each band's statistics (NaN where a band has no valid pixel).
    """
    options = options or CogOptions()
    if not bands:
        raise ValueError("encode_cog needs at least one band")
    dtype = bands[0].dtype
    for band in bands:
        if band.shape != georef.shape or band.dtype != dtype:
            raise ValueError(
                f"every band must have shape {georef.shape} and dtype {dtype}; got {band.shape} {band.dtype}"
            )
    if descriptions and len(descriptions) != len(bands):
        raise ValueError(f"{len(descriptions)} descriptions for {len(bands)} bands")
    started = time.perf_counter()
    arrays = [_in_memory(band) for band in bands]
    creation = options.creation_options(np.dtype(dtype), resampling)
    with local_gdal_env(**MEM_OPEN):
        measured = [_statistics(array, nodata) for array in arrays]
        overviews = None
        if resampling == "NEAREST" or (resampling == "AVERAGE" and dtype == np.uint8):
            shapes = overview_shapes(georef.shape, options.blocksize)
            overviews = [overview_levels(array, shapes, resampling, nodata) for array in arrays]
            creation["OVERVIEWS"] = "FORCE_USE_EXISTING"
        document = vrt_document(
            arrays,
            overviews,
            georef,
            nodata=nodata,
            descriptions=descriptions,
            tags=tags,
            band_tags=[band_tags for _, band_tags in measured],
        )
        with rasterio.open(document) as source, MemoryFile(ext=".tif") as out:
            rasterio.shutil.copy(source, out.name, driver="COG", **creation)
            data = bytes(out.read())
    logger.debug(
        "encoded COG %dx%dx%d %s in %.3f s (%d bytes)",
        len(bands),
        georef.height,
        georef.width,
        dtype,
        time.perf_counter() - started,
        len(data),
    )
    return EncodedCog(data=data, statistics=tuple(statistics for statistics, _ in measured))


def _in_memory(band: NDArray[Any] | BandRows) -> NDArray[Any]:
    """``band`` as a C-contiguous array in native byte order (an array that is one already is not copied).

    A :class:`BandRows` is computed into one array a block of rows at a time, so that its
    temporaries stay small.
    """
    if isinstance(band, np.ndarray):
        return np.ascontiguousarray(band, dtype=band.dtype.newbyteorder("="))
    height, width = band.shape
    array = np.empty((height, width), dtype=band.dtype.newbyteorder("="))
    rows = max(1, _WRITE_BLOCK_BYTES // max(1, width * band.dtype.itemsize))
    for top in range(0, height, rows):
        array[top : top + rows] = band[top : top + rows]
    return array


def _statistics(array: NDArray[Any], nodata: float | None) -> tuple[BandStatistics, dict[str, str]]:
    """Exact statistics of ``array``'s valid pixels (``nodata`` and NaN excluded) and GDAL's ``STATISTICS_*`` tags.

    A byte band's come from its histogram (no full-size temporary; faster than GDAL's, which
    also leaves every block of the band in GDAL's block cache), other types' from GDAL on a
    dataset closed before the COG is written, so that its blocks leave the cache.
    """
    if array.dtype == np.uint8:
        return _byte_statistics(array, nodata)
    with rasterio.open(vrt_document([array], None, None, nodata=nodata)) as dataset:
        (stats,) = dataset.stats(indexes=[1], approx=False)
        band_tags = {k: v for k, v in dataset.tags(1).items() if k.startswith("STATISTICS_")}
    valid_percent = float(band_tags.get("STATISTICS_VALID_PERCENT", "nan"))
    if valid_percent == 0:  # GDAL reports zeros for a band without a valid pixel
        return _NO_STATISTICS, {"STATISTICS_VALID_PERCENT": "0"}
    values = (float(stats.min), float(stats.max), float(stats.mean), float(stats.std))
    return _band_statistics(*values, valid_percent), band_tags


_NO_STATISTICS = BandStatistics(minimum=math.nan, maximum=math.nan, mean=math.nan, stddev=math.nan, valid_percent=0.0)
_PAIRS_PER_BLOCK = 1 << 20  # uint16 pixel pairs counted at a time: bincount's temporaries stay a few MiB


def _byte_statistics(array: NDArray[np.uint8], nodata: float | None) -> tuple[BandStatistics, dict[str, str]]:
    """Statistics of a uint8 band from its histogram, counted two pixels at a time (half the bincount work)."""
    flat = array.reshape(-1)
    pairs = flat[: flat.size // 2 * 2].view(np.uint16)
    counts = np.zeros(1 << 16, dtype=np.int64)
    for start in range(0, pairs.size, _PAIRS_PER_BLOCK):
        counts += np.bincount(pairs[start : start + _PAIRS_PER_BLOCK], minlength=1 << 16)
    square = counts.reshape(256, 256)  # [first byte, second byte] in memory order, either endianness
    histogram = square.sum(axis=0) + square.sum(axis=1)
    if flat.size % 2:
        histogram[flat[-1]] += 1
    if nodata is not None and float(nodata).is_integer() and 0 <= nodata <= 255:
        histogram[int(nodata)] = 0
    values = np.flatnonzero(histogram)
    valid_percent = float(f"{100 * histogram.sum() / max(flat.size, 1):.4g}")  # as GDAL rounds it
    if values.size == 0:
        return _NO_STATISTICS, {"STATISTICS_VALID_PERCENT": "0"}
    n, total, squares = (int(v) for v in (histogram.sum(), histogram @ np.arange(256), histogram @ np.arange(256) ** 2))
    mean = total / n
    stddev = math.sqrt((n * squares - total * total) / (n * n))  # exact integers up to the last division
    stats = _band_statistics(float(values[0]), float(values[-1]), mean, stddev, valid_percent)
    return stats, {
        "STATISTICS_MAXIMUM": f"{stats.maximum:.14g}",
        "STATISTICS_MEAN": f"{stats.mean:.14g}",
        "STATISTICS_MINIMUM": f"{stats.minimum:.14g}",
        "STATISTICS_STDDEV": f"{stats.stddev:.14g}",
        "STATISTICS_VALID_PERCENT": f"{valid_percent:.4g}",
    }


def _band_statistics(minimum: float, maximum: float, mean: float, stddev: float, valid: float) -> BandStatistics:
    return BandStatistics(minimum=minimum, maximum=maximum, mean=mean, stddev=stddev, valid_percent=valid)

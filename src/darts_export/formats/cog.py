"""Cloud-Optimized GeoTIFF encoding: 2-D arrays + georeference in, COG bytes out.

Pure: no paths, buckets or credentials. The arrays go into a GDAL in-memory (MEM)
dataset, GDAL's COG driver writes 512 × 512 tiles with internal overviews into
``/vsimem/``, and the bytes come back. GDAL releases the GIL, so several rasters can be
encoded on several threads at once.
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
from rasterio.windows import Window

from darts_export.formats._gdal import local_gdal_env

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

    GDAL computes exact statistics of every band on the in-memory dataset (pixels equal to
    ``nodata`` and NaN excluded; SIMD code, faster than numpy's ``bincount`` and without its
    full-size temporary); they are also stored in the COG as the
    bands' ``STATISTICS_*`` metadata, which GIS clients use for their default stretch.

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
    profile = {
        "driver": "MEM",
        "width": georef.width,
        "height": georef.height,
        "count": len(bands),
        "dtype": dtype.name,
        "crs": georef.crs,
        "transform": georef.transform,
        "nodata": nodata,
    }
    with local_gdal_env(), rasterio.open("", "w", **profile) as mem:
        for index, band in enumerate(bands, start=1):
            if isinstance(band, np.ndarray):
                mem.write(np.ascontiguousarray(band), index)
            else:
                _write_rows(mem, band, index)
            if descriptions:
                mem.set_band_description(index, descriptions[index - 1])
        if tags:
            mem.update_tags(**tags)
        statistics = tuple(_gdal_statistics(mem, index) for index in range(1, len(bands) + 1))
        with MemoryFile(ext=".tif") as out:
            rasterio.shutil.copy(mem, out.name, driver="COG", **options.creation_options(np.dtype(dtype), resampling))
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
    return EncodedCog(data=data, statistics=statistics)


def _write_rows(dataset: rasterio.io.DatasetWriter, band: BandRows, index: int) -> None:
    """Write ``band`` into band ``index`` of ``dataset`` a block of rows at a time."""
    height, width = band.shape
    rows = max(1, _WRITE_BLOCK_BYTES // max(1, width * band.dtype.itemsize))
    for top in range(0, height, rows):
        block = np.ascontiguousarray(band[top : top + rows])
        dataset.write(block, index, window=Window(0, top, width, block.shape[0]))


def _gdal_statistics(dataset: rasterio.io.DatasetWriter, index: int) -> BandStatistics:
    """Exact statistics of band ``index`` as GDAL computes them (nodata and NaN excluded)."""
    (stats,) = dataset.stats(indexes=[index], approx=False)
    valid_percent = float(dataset.tags(index).get("STATISTICS_VALID_PERCENT", "nan"))
    if valid_percent == 0:  # GDAL reports zeros for a band without a valid pixel
        return BandStatistics(minimum=math.nan, maximum=math.nan, mean=math.nan, stddev=math.nan, valid_percent=0.0)
    return BandStatistics(
        minimum=float(stats.min),
        maximum=float(stats.max),
        mean=float(stats.mean),
        stddev=float(stats.std),
        valid_percent=valid_percent,
    )

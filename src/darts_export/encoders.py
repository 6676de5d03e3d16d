"""Product encoders: one planned product + the tile view in, the bytes of its artifacts out.

The orchestration of the formats: the format modules never import each other; this module
wires them together (raster content → COG; objects → zonal statistics → GeoParquet and
GeoPackage) and hands the percent array converted once for the probabilities COG to the
zonal statistics as well.

Pure with respect to storage: an encoder never sees a bucket or credentials. The one
exception to "bytes out" is the GeoPackage, which SQLite can only build in a real file:
it is built in the staging folder the caller provides and handed back as a path.
Encoders are independent of each other, so the export runs them on several threads.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from darts_export.errors import InvalidTileError
from darts_export.formats.cog import CogOptions, RasterBand, encode_cog
from darts_export.formats.polygons import polygonize_extent, polygonize_objects
from darts_export.formats.rasters import (
    RasterContent,
    band_raster,
    mask_raster,
    probabilities_to_percent,
    probability_raster,
)
from darts_export.formats.thumbnail import render_thumbnail
from darts_export.formats.vector_files import encode_geoparquet, write_geopackage
from darts_export.formats.zonal import STAT_COLUMNS, zonal_statistics
from darts_export.products import PROBABILITY_NODATA, Kind, OutputFile, PlannedProduct, Product
from darts_export.tile import TileView

if TYPE_CHECKING:
    import geopandas as gpd
    from numpy.typing import NDArray

    from darts_export.tile import GeoRef

__all__ = ["OBJECT_COLUMNS", "EncodeContext", "Encoded", "encode_product", "object_frame"]

logger = logging.getLogger(__name__)

OBJECT_COLUMNS: Final = ("Region_ID", *STAT_COLUMNS, "npixel", "geometry")
"""Columns of the objects' files (``prediction_segments*``), in order. Stats are in percent (0-100)."""


@dataclass(frozen=True, kw_only=True)
class EncodeContext:
    """What every encoder may use besides the product itself."""

    view: TileView
    tile_id: str
    metadata: Mapping[str, Any]
    tags: Mapping[str, str]
    cog_options: CogOptions | None
    staging: Path
    percent: Mapping[str, NDArray[np.uint8]] = field(default_factory=dict)
    """Probability variables already converted to percent (read-only), by variable name."""


@dataclass(frozen=True, kw_only=True)
class Encoded:
    """A product's artifacts: bytes to store, or a staged local file to upload (and delete)."""

    product: PlannedProduct
    payloads: tuple[tuple[OutputFile, bytes | Path], ...]
    raster_bands: Mapping[str, tuple[RasterBand, ...]]
    seconds: float


def encode_product(product: PlannedProduct, ctx: EncodeContext) -> Encoded:
    """Encode ``product``; debug stores are not encoded here (they are written straight to storage)."""
    started = time.perf_counter()
    payloads: tuple[tuple[OutputFile, bytes | Path], ...]
    bands: dict[str, tuple[RasterBand, ...]] = {}
    match product.kind:
        case Kind.PROBABILITY_RASTER | Kind.MASK_RASTER | Kind.BAND_RASTER:
            data, bands[product.outputs[0].path] = _encode_raster(product, ctx)
            payloads = ((product.outputs[0], data),)
        case Kind.VECTOR:
            payloads = _encode_vector(product, ctx)
        case Kind.THUMBNAIL:
            payloads = ((product.outputs[0], render_thumbnail(ctx.view, title=ctx.tile_id)),)
        case Kind.METADATA_JSON:
            payloads = ((product.outputs[0], (json.dumps(ctx.metadata, indent=2, ensure_ascii=False) + "\n").encode()),)
        case _:
            raise InvalidTileError(f"Product {product.product!r} ({product.kind}) is not encoded to bytes.")
    seconds = time.perf_counter() - started
    logger.debug("encoded %s in %.3f s", ", ".join(o.path for o, _ in payloads), seconds)
    return Encoded(product=product, payloads=payloads, raster_bands=bands, seconds=seconds)


# Codec per product where measurement found a better one than CogOptions()'s (bench/results/cog-10980.json,
# the noisy synthetic tile): ZSTD 3 writes smaller probabilities for the same CPU; masks shrink without
# the predictor. An explicit cog_options applies to every raster.
_PRODUCT_COG_OPTIONS = {
    Kind.PROBABILITY_RASTER: CogOptions(level=3),
    Kind.MASK_RASTER: CogOptions(level=3, predictor=False),
}


def _encode_raster(product: PlannedProduct, ctx: EncodeContext) -> tuple[bytes, tuple[RasterBand, ...]]:
    view = ctx.view
    variable = product.required[0]
    content: RasterContent
    if product.kind is Kind.PROBABILITY_RASTER:
        content = probability_raster(view, variable, percent=ctx.percent.get(variable))
    elif product.kind is Kind.MASK_RASTER:
        probabilities = _subset_variable("probabilities", product.subset)
        content = mask_raster(
            view,
            variable,
            extent="extent" if "extent" in view else None,
            probabilities=probabilities if probabilities in view else None,
        )
    else:
        content = band_raster(view, product.required)
    encoded = encode_cog(
        content.arrays,
        view.georef,
        nodata=content.nodata,
        descriptions=content.names,
        tags=ctx.tags,
        resampling=content.resampling,
        options=ctx.cog_options or _PRODUCT_COG_OPTIONS.get(product.kind),
    )
    units = content.units or (None,) * len(content.names)
    bands = tuple(
        RasterBand(
            name=name,
            data_type=content.arrays[0].dtype.name,
            nodata=content.nodata,
            scale=content.scale,
            offset=content.offset,
            unit=unit,
            statistics=statistics,
        )
        for name, unit, statistics in zip(content.names, units, encoded.statistics, strict=True)
    )
    return encoded.data, bands


def _subset_variable(name: str, subset: str | None) -> str:
    """The tile variable ``name`` of an ensemble subset (``name-subset``), or ``name`` itself."""
    return name if subset is None else f"{name}-{subset}"


def object_frame(
    mask: NDArray[Any],
    georef: GeoRef,
    probabilities: NDArray[np.floating[Any]] | None = None,
    *,
    percent: NDArray[np.uint8] | None = None,
) -> gpd.GeoDataFrame:
    """One row per 8-connected object of ``mask``, with zonal statistics of the probabilities.

    Args:
        mask: 2-D north-up mask of the tile (e.g. ``binarized_segmentation``); non-zero is set.
        georef: The tile's georeference; every array must have ``georef.shape``.
        probabilities: 2-D probabilities in [0, 1], NaN where unknown, or ``None``, in which
            case the statistics columns are all NaN (unless ``percent`` is given).
        percent: The same probabilities already converted by
            :func:`~darts_export.formats.rasters.probabilities_to_percent` (as for the
            probabilities COG); used instead of converting ``probabilities`` again.

    Returns:
        A frame with :data:`OBJECT_COLUMNS`: ``Region_ID`` (int64, 1..n in raster order of
        each object's first pixel), ``min``, ``max``, ``mean``, ``median`` and ``std``
        (population) over the object's valid pixels of the percent values that
        ``probabilities.tif`` stores (float64, NaN when there are none), ``npixel`` (int64,
        all pixels of the object) and the ``MultiPolygon`` geometry, with the tile's CRS.
        No object gives an empty frame with the same columns and dtypes.

    Raises:
        InvalidTileError: An array is not 2-D with the tile's shape, or ``probabilities``
            is not floating point.
    """
    if percent is not None and (percent.shape != georef.shape or percent.dtype != np.uint8):
        raise InvalidTileError(
            f"percent must be a uint8 array of shape {georef.shape}, got {percent.dtype} of shape {percent.shape}."
        )
    if percent is None and probabilities is not None:
        data = np.asarray(probabilities)
        if data.shape != georef.shape or not np.issubdtype(data.dtype, np.floating):
            raise InvalidTileError(
                f"probabilities must be a floating-point array of shape {georef.shape}, "
                f"got {data.dtype} of shape {data.shape}."
            )
    objects = polygonize_objects(mask, georef)
    values: NDArray[np.uint8] | None = None
    if percent is not None:
        values = np.asarray(percent).reshape(-1)[objects.pixels]
    elif probabilities is not None:  # only the object pixels are converted
        picked = np.asarray(probabilities)[np.unravel_index(objects.pixels, georef.shape)]
        values = probabilities_to_percent(picked.reshape(1, -1))[0]
    stats = zonal_statistics(values, objects.regions, objects.count, nodata=PROBABILITY_NODATA)
    frame = objects.frame
    for position, name in enumerate((*STAT_COLUMNS, "npixel"), start=1):
        frame.insert(position, name, stats[name])
    return frame


def _bool_view(mask: NDArray[Any]) -> NDArray[Any]:
    """A byte mask (checked to hold only 0 and 1 before encoding) as booleans without a copy; others unchanged.

    The polygon tracing takes ``mask != 0`` of anything but booleans: a full-size copy.
    """
    if mask.dtype in (np.uint8, np.int8):
        view: NDArray[np.bool_] = mask.view(np.bool_)
        return view
    return mask


def _encode_vector(product: PlannedProduct, ctx: EncodeContext) -> tuple[tuple[OutputFile, bytes | Path], ...]:
    mask = _bool_view(ctx.view.array(product.required[0]))  # non-zero is set; polygonize_* read it as such
    if product.product == Product.EXTENT:
        frame = polygonize_extent(mask, ctx.view.georef)
    else:
        optional = [v for v in product.optional if v in ctx.view]
        probabilities = ctx.view.array(optional[0]) if optional else None
        percent = ctx.percent.get(optional[0]) if optional else None
        frame = object_frame(mask, ctx.view.georef, probabilities, percent=percent)  # type: ignore[arg-type]
    parquet, gpkg = product.outputs
    staged = ctx.staging / gpkg.path
    try:
        write_geopackage(frame, staged, layer=Path(gpkg.path).stem)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return ((parquet, encode_geoparquet(frame)), (gpkg, staged))

"""Product encoders: one planned product + the tile view in, the bytes of its artifacts out.

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
from typing import TYPE_CHECKING, Any

import numpy as np

from darts_export.errors import InvalidTileError
from darts_export.formats.cog import CogOptions, RasterBand
from darts_export.formats.polygons import polygonize_extent, polygonize_objects
from darts_export.formats.rasters import (
    EncodedRaster,
    encode_band_raster,
    encode_mask_raster,
    encode_probability_raster,
)
from darts_export.formats.thumbnail import render_thumbnail
from darts_export.formats.vector_files import encode_geoparquet, write_geopackage
from darts_export.products import Kind, OutputFile, PlannedProduct, Product
from darts_export.tile import TileView

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["EncodeContext", "Encoded", "encode_product"]

logger = logging.getLogger(__name__)


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
            raster = _encode_raster(product, ctx)
            bands[product.outputs[0].path] = raster.bands
            payloads = ((product.outputs[0], raster.data),)
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


def _encode_raster(product: PlannedProduct, ctx: EncodeContext) -> EncodedRaster:
    if product.kind is Kind.PROBABILITY_RASTER:
        variable = product.required[0]
        return encode_probability_raster(
            ctx.view, variable, tags=ctx.tags, options=ctx.cog_options, percent=ctx.percent.get(variable)
        )
    if product.kind is Kind.MASK_RASTER:
        return encode_mask_raster(ctx.view, product.required[0], tags=ctx.tags, options=ctx.cog_options)
    return encode_band_raster(ctx.view, product.required, tags=ctx.tags, options=ctx.cog_options)


def _encode_vector(product: PlannedProduct, ctx: EncodeContext) -> tuple[tuple[OutputFile, bytes | Path], ...]:
    mask = ctx.view.array(product.required[0])  # non-zero is set; polygonize_* read it as such
    if product.product == Product.EXTENT:
        frame = polygonize_extent(mask, ctx.view.georef)
    else:
        optional = [v for v in product.optional if v in ctx.view]
        probabilities = ctx.view.array(optional[0]) if optional else None
        frame = polygonize_objects(mask, ctx.view.georef, probabilities)  # type: ignore[arg-type]
    parquet, gpkg = product.outputs
    staged = ctx.staging / gpkg.path
    try:
        write_geopackage(frame, staged, layer=Path(gpkg.path).stem)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return ((parquet, encode_geoparquet(frame)), (gpkg, staged))

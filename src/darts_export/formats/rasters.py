"""The raster products: turn tile variables into the arrays and nodata of their COGs.

* probabilities: float in [0, 1] (NaN = invalid) → uint8 percent, **rounded** to the nearest
  percent with halves rounded up (0.125 → 13, 0.994 → 99, 0.995 → 100), 255 = nodata;
  overviews averaged.
* binarized: bool → uint8 0/1 inside the valid extent, 255 (nodata) outside it; overviews
  nearest, so every overview pixel is one of the full-resolution pixels (0, 1 or 255).
* bands (optical, dem, tcvis, any named variable): the variables' own dtype (bool → uint8),
  band descriptions set, nodata from the variable's encoding (else NaN for floats); overviews
  averaged.

Pure NumPy: the COG encoding itself is :mod:`darts_export.formats.cog`'s, wired up by
:mod:`darts_export.encoders`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from darts_export.products import PROBABILITY_NODATA

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from darts_export.tile import TileView

__all__ = [
    "MaskBytes",
    "RasterContent",
    "band_raster",
    "mask_raster",
    "probabilities_to_percent",
    "probability_raster",
]

_BLOCK_PIXELS = 1 << 17  # 1 MiB of float64: fits in L2


@dataclass(frozen=True, kw_only=True)
class RasterContent:
    """What a raster product's COG holds: same-shaped 2-D bands of one dtype, and how to read them."""

    arrays: tuple[NDArray[Any] | MaskBytes, ...]
    """One 2-D band each; a :class:`MaskBytes` is computed a block of rows at a time."""
    names: tuple[str, ...]
    nodata: float | None
    resampling: Literal["NEAREST", "AVERAGE"]
    """Overview resampling: ``NEAREST`` for masks, ``AVERAGE`` for continuous data."""
    scale: float | None = None
    offset: float | None = None
    units: tuple[str | None, ...] = ()
    """One unit per band, or empty when no band has one."""


def probabilities_to_percent(
    probabilities: NDArray[np.floating[Any]], out: NDArray[np.uint8] | None = None
) -> NDArray[np.uint8]:
    """Probabilities in [0, 1] → uint8 percent 0-100, rounded to nearest (halves up); NaN → 255.

    ``out`` (same shape, uint8), when given, receives the result, so that several threads
    can each convert a band of rows of one array.

    Exact: a float32 times 100 needs at most 31 significant bits, so the product is computed
    in float64 without rounding. Works in blocks of a few rows that stay in the CPU cache, in
    place, so the temporaries are ~1 MiB whatever the tile size (faster than whole-array numpy
    expressions: bench/results/HISTORY.md). Values outside [0, 1] are clipped.
    """
    height = probabilities.shape[0]
    width = math.prod(probabilities.shape[1:])
    rows = max(1, _BLOCK_PIXELS // max(width, 1))
    if out is None:
        out = np.empty(probabilities.shape, dtype=np.uint8)
    elif out.shape != probabilities.shape or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 of shape {probabilities.shape}, got {out.dtype} {out.shape}")
    buffer = np.empty((rows, *probabilities.shape[1:]), dtype=np.float64)
    invalid = np.empty(buffer.shape, dtype=np.bool_)
    for start in range(0, height, rows):
        block = probabilities[start : start + rows]
        n = block.shape[0]
        values, nan = buffer[:n], invalid[:n]
        np.multiply(block, 100.0, out=values, dtype=np.float64)
        np.isnan(values, out=nan)
        np.add(values, 0.5, out=values)
        np.floor(values, out=values)
        np.clip(values, 0, 100, out=values)
        values[nan] = PROBABILITY_NODATA
        out[start : start + n] = values
    return out


def probability_raster(view: TileView, variable: str, *, percent: NDArray[np.uint8] | None = None) -> RasterContent:
    """The ``probabilities[-subset].tif`` content of ``variable``.

    ``percent`` is ``probabilities_to_percent`` of the variable if the caller already has it.
    """
    if percent is None:
        percent = probabilities_to_percent(view.array(variable))  # type: ignore[arg-type]
    return RasterContent(
        arrays=(percent,),
        names=(variable,),
        nodata=PROBABILITY_NODATA,
        resampling="AVERAGE",
        units=("%",),  # no scale: every client (GDAL, odc-stac, stackstac) reads the stored percent
    )


def mask_raster(
    view: TileView, variable: str, *, extent: str | None = None, probabilities: str | None = None
) -> RasterContent:
    """The ``binarized[-subset].tif`` content of the mask ``variable``: 0/1 where valid, nodata elsewhere.

    Valid pixels are ``extent > 0`` when ``extent`` names a variable, else the non-NaN pixels
    of the ``probabilities`` variable; without either, every pixel. Non-zero mask pixels are 1.
    """
    mask = view.array(variable)
    if extent is not None:
        data: NDArray[np.uint8] | MaskBytes = MaskBytes(mask, view.array(extent), _not_positive)
    elif probabilities is not None:
        data = MaskBytes(mask, view.array(probabilities), lambda block, out: np.isnan(block, out=out))
    else:
        data = _as_uint8_mask(mask)
    return RasterContent(arrays=(data,), names=(variable,), nodata=PROBABILITY_NODATA, resampling="NEAREST")


def _not_positive(block: NDArray[Any], out: NDArray[np.bool_]) -> None:
    np.greater(block, 0, out=out)  # NaN is not > 0, so a NaN extent is outside too
    np.logical_not(out, out=out)


class MaskBytes:
    """A mask as 0/1 bytes, :data:`PROBABILITY_NODATA` where ``invalid(source)``, a block of rows at a time.

    Computed as the COG encoder writes it, so the export holds no full-size copy of it
    (``encode_cog`` takes it as a ``BandRows``).
    """

    def __init__(
        self,
        mask: NDArray[Any],
        source: NDArray[Any],
        invalid: Callable[[NDArray[Any], NDArray[np.bool_]], object],
    ) -> None:
        if mask.shape != source.shape:
            raise ValueError(f"mask has shape {mask.shape} but the validity source has {source.shape}")
        self._mask, self._source, self._invalid = mask, source, invalid

    @property
    def shape(self) -> tuple[int, ...]:
        """(height, width)."""
        return tuple(self._mask.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        """Always uint8."""
        return np.dtype(np.uint8)

    def __getitem__(self, rows: slice, /) -> NDArray[np.uint8]:
        """The bytes of ``rows``."""
        mask = self._mask[rows]
        out = np.empty(mask.shape, dtype=np.uint8)
        np.not_equal(mask, 0, out=out, casting="unsafe")
        outside = np.empty(mask.shape, dtype=np.bool_)
        self._invalid(self._source[rows], outside)
        out[outside] = PROBABILITY_NODATA
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> NDArray[Any]:
        """The whole band (a full-size copy: for tests and debugging)."""
        return self[:] if dtype is None else self[:].astype(dtype)


def _as_uint8_mask(mask: NDArray[Any]) -> NDArray[np.uint8]:
    """0/1 bytes of ``mask``: a bool array is reinterpreted in place (no 1-byte-per-pixel copy)."""
    if mask.dtype == np.bool_:
        view: NDArray[np.uint8] = mask.view(np.uint8)
        return view
    nonzero: NDArray[np.uint8] = np.not_equal(mask, 0).astype(np.uint8)
    return nonzero


def _declared_nodata(view: TileView, variable: str) -> float | None:
    import rioxarray  # noqa: F401  (registers .rio; imported here: the default products need none)

    var = view.dataset[variable]
    for value in (var.rio.nodata, var.rio.encoded_nodata, var.attrs.get("_FillValue")):
        if value is not None:
            return float(value)
    return None


def band_raster(view: TileView, variables: Sequence[str]) -> RasterContent:
    """One multi-band content of ``variables`` (optical, dem, tcvis or any named variable).

    Bands are promoted to one common dtype (bool becomes uint8). The nodata value is the
    first variable's declared nodata, else NaN for float data, else none.
    """
    arrays = [view.array(v) for v in variables]
    dtype = np.result_type(*[np.uint8 if a.dtype == np.bool_ else a.dtype for a in arrays])
    nodata = _declared_nodata(view, variables[0])
    if nodata is None and np.issubdtype(dtype, np.floating):
        nodata = math.nan
    return RasterContent(
        arrays=tuple(a.astype(dtype, copy=False) for a in arrays),
        names=tuple(variables),
        nodata=nodata,
        resampling="AVERAGE",
        units=tuple(view.dataset[name].attrs.get("units") for name in variables),
    )

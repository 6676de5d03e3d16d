"""GDAL datasets over NumPy arrays without a copy, and the overview levels of a COG computed before GDAL's COG driver.

A VRT document (an XML string GDAL opens like a file name) whose bands read NumPy buffers through GDAL's
MEM driver (``MEM:::DATAPOINTER=...``) lets GDAL read the arrays in place: no MEM dataset copy. Its bands
can also declare ``<Overview>`` datasets, which the COG driver writes as they are with
``OVERVIEWS=FORCE_USE_EXISTING`` instead of building them itself (a temporary overview file, compressed,
read back and compressed again: most of the COG's CPU time; bench/results/HISTORY.md).

The overview levels have the sizes and values GDAL's COG driver gives them: each level halves the previous
one (rounding down) until it fits in one block, and each is computed from the previous level, AVERAGE by
GDAL's own averaging kernel (a resampled read of the previous level, nodata excluded), NEAREST by picking
the pixel GDAL's overview code picks. tests/test_cog.py compares them with the COG driver's own.

Opening a ``MEM:::`` name needs the GDAL configuration option ``GDAL_MEM_ENABLE_OPEN=YES`` (GDAL 3.10
disabled it by default, since a name from an untrusted source could point anywhere in memory): every
function here that opens one must run inside ``local_gdal_env(GDAL_MEM_ENABLE_OPEN="YES")``, which sets it
for the calling thread only; the names are only ever built here, from arrays the caller keeps alive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import rasterio
from rasterio.enums import Resampling

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from darts_export.tile import GeoRef

__all__ = ["MEM_OPEN", "gdal_type", "overview_levels", "overview_shapes", "vrt_document"]

MEM_OPEN = {"GDAL_MEM_ENABLE_OPEN": "YES"}
"""The GDAL configuration that lets the ``MEM:::`` names of :func:`vrt_document` be opened."""

_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "uint64": "UInt64",
    "int64": "Int64",
    "float32": "Float32",
    "float64": "Float64",
}
# Tab, newline and carriage return are kept by GDAL tags; as character references an XML parser keeps them too.
_XML_TEXT = {"\t": "&#9;", "\n": "&#10;", "\r": "&#13;", '"': "&quot;"}


def gdal_type(dtype: np.dtype[Any]) -> str:
    """GDAL's name of the data type of ``dtype``; ``ValueError`` for a type GDAL cannot store."""
    name = _GDAL_TYPES.get(np.dtype(dtype).name)
    if name is None:
        raise ValueError(f"a GeoTIFF band cannot hold {dtype}; use one of {', '.join(_GDAL_TYPES)}")
    return name


def overview_shapes(shape: tuple[int, int], blocksize: int) -> list[tuple[int, int]]:
    """The (height, width) of each overview level GDAL's COG driver makes for a raster of ``shape``."""
    height, width = shape
    shapes = []
    while max(height, width) > blocksize:
        height, width = max(1, height // 2), max(1, width // 2)
        shapes.append((height, width))
    return shapes


def overview_levels(
    array: NDArray[Any],
    shapes: Sequence[tuple[int, int]],
    resampling: Literal["AVERAGE", "NEAREST"],
    nodata: float | None,
) -> list[NDArray[Any]]:
    """The overview levels of ``array`` at ``shapes``, each from the previous one, as GDAL's COG driver computes them.

    Call inside ``local_gdal_env(**MEM_OPEN)`` (AVERAGE reads through GDAL).
    """
    levels: list[NDArray[Any]] = []
    source = array
    for shape in shapes:
        source = _average(source, shape, nodata) if resampling == "AVERAGE" else _nearest(source, shape)
        levels.append(source)
    return levels


def _nearest(source: NDArray[Any], shape: tuple[int, int]) -> NDArray[Any]:
    """GDAL's overview NEAREST: destination pixel ``i`` takes source pixel ``int(0.5 + i * ratio)`` on each axis."""
    picked = source
    for axis, (n, m) in enumerate(zip(source.shape, shape, strict=True)):
        if n == 2 * m:  # int(0.5 + 2 i) = 2 i: a strided view, copied once below
            picked = picked[::2] if axis == 0 else picked[:, ::2]
        else:
            picked = picked.take((0.5 + np.arange(m, dtype=np.float64) * (n / m)).astype(np.intp), axis=axis)
    return np.ascontiguousarray(picked)


def _average(source: NDArray[Any], shape: tuple[int, int], nodata: float | None) -> NDArray[Any]:
    """GDAL's AVERAGE of ``source`` at ``shape`` (nodata excluded, weighted where the ratio is not whole)."""
    document = vrt_document([source], None, None, nodata=nodata)
    with rasterio.open(document) as dataset:
        level: NDArray[Any] = dataset.read(1, out_shape=shape, resampling=Resampling.average)
    return level


def _mem_name(array: NDArray[Any]) -> str:
    """The GDAL name of a MEM dataset reading the C-contiguous 2-D ``array`` in place."""
    if array.ndim != 2 or not array.flags.c_contiguous or not array.dtype.isnative:
        raise ValueError("a MEM dataset needs a C-contiguous 2-D array in native byte order")
    height, width = array.shape
    return (
        f"MEM:::DATAPOINTER={array.ctypes.data},PIXELS={width},LINES={height},BANDS=1,DATATYPE={gdal_type(array.dtype)}"
    )


def _source(element: str, array: NDArray[Any]) -> str:
    # shared="0": every VRT opens its own MEM dataset, so threads encoding the same array share no GDAL dataset.
    return (
        f'<{element}><SourceFilename relativeToVRT="0" shared="0">{escape(_mem_name(array))}</SourceFilename>'
        f"<SourceBand>1</SourceBand></{element}>"
    )


def vrt_document(
    bands: Sequence[NDArray[Any]],
    overviews: Sequence[Sequence[NDArray[Any]]] | None,
    georef: GeoRef | None,
    *,
    nodata: float | None,
    descriptions: Sequence[str] = (),
    tags: Mapping[str, str] | None = None,
    band_tags: Sequence[Mapping[str, str]] = (),
) -> str:
    """A VRT over the 2-D ``bands`` (one dtype) as an XML string for ``rasterio.open``; the arrays must outlive it.

    ``overviews`` gives each band's overview arrays (largest first), ``georef`` the CRS and transform
    (``None``: a unit grid, for internal reads), ``tags`` the dataset's metadata and ``band_tags``
    each band's.
    """
    height, width = bands[0].shape
    kind = gdal_type(bands[0].dtype)
    parts = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">']
    if georef is not None:
        transform = ",".join(repr(float(v)) for v in georef.transform.to_gdal())
        parts.append(f"<SRS>{escape(georef.crs.to_wkt())}</SRS><GeoTransform>{transform}</GeoTransform>")
    else:
        parts.append(f"<GeoTransform>0,1,0,{height},0,-1</GeoTransform>")
    if tags:
        parts.append(_metadata(tags))
    for index, band in enumerate(bands):
        parts.append(f'<VRTRasterBand dataType="{kind}" band="{index + 1}">')
        if nodata is not None:
            parts.append(f"<NoDataValue>{float(nodata)!r}</NoDataValue>")
        if descriptions:
            parts.append(f"<Description>{escape(descriptions[index], _XML_TEXT)}</Description>")
        if band_tags and band_tags[index]:
            parts.append(_metadata(band_tags[index]))
        parts.append(_source("SimpleSource", band))
        parts.extend(_source("Overview", level) for level in (overviews[index] if overviews else ()))
        parts.append("</VRTRasterBand>")
    parts.append("</VRTDataset>")
    return "".join(parts)


def _metadata(items: Mapping[str, str]) -> str:
    entries = "".join(f"<MDI key={quoteattr(k)}>{escape(v, _XML_TEXT)}</MDI>" for k, v in items.items())
    return f"<Metadata>{entries}</Metadata>"

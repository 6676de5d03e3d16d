"""The debug store: the whole tile as a Zarr v3 store with consolidated metadata.

``export_tile(debug=True)`` writes ``darts_inference_debug.zarr`` next to the products
(the original wrote a NetCDF file). The store holds every data variable, coordinate and
attribute of the tile. Like every format module this one is pure: it encodes the tile into
a folder on local disk (the export's staging folder), and the export publishes that folder
object by object through :class:`~darts_export.storage.Storage` (retries, checksums on the
way out, no read-back). Lazy (dask-backed) tiles are rechunked to the store's chunks first,
so their own chunking never conflicts with the layout.

Layout and encoding:

* **Chunks** of at most 2048 × 2048 pixels over the spatial dimensions (one step along any
  other dimension). A float32 chunk is 16 MiB raw — inside zarr's recommended 1-100 MB —
  so a Sentinel-2 tile (10980²) is 36 chunks per variable, a few hundred objects for the
  whole tile: few enough PUTs to write quickly to object storage, small enough that
  reading back a window for debugging touches at most four chunks.
* **Compression**, lossless, chosen per dtype by measurement on noisy float bands
  (``bench/bench_debug_store.py``; results in ``bench/results/debug-store-*.md``): multi-byte
  dtypes use Blosc with LZ4 after a bit shuffle (the exponent and high mantissa bits of
  neighbouring floats line up, the noisy low bits stay raw), which is smaller than Zstandard and
  several times cheaper to encode and decode; one-byte dtypes (masks, uint8 bands) use plain
  Zstandard level 1, which beats any shuffle there. Both are core Zarr v3 codecs (``blosc``,
  ``zstd``), so any v3 reader opens the store. Every chunk is written, even one holding only
  the fill value: checking each chunk for that costs a pass over the whole tile, and a
  constant chunk compresses to a few bytes.
* **Georeference**: the grid-mapping coordinate (``spatial_ref`` with ``crs_wkt`` and,
  when the tile has it, ``GeoTransform``) is kept and each variable keeps its CF
  ``grid_mapping`` attribute; each variable also lists its non-dimension coordinates in
  ``coordinates``, so that a plain ``xr.open_zarr(url, consolidated=True)`` decodes
  ``spatial_ref`` as a coordinate and ``.rio.crs`` works without ``decode_coords="all"``.
* **Values**: written as they are. Opened with ``mask_and_scale=False`` the store gives
  back the tile's exact dtypes and values; with xarray's default decoding, variables whose
  attributes carry rioxarray's ``_FillValue`` (e.g. the TCVIS bands) come back as floats
  with NaN at that value, as for any CF store.

* **Quick-look**: when the tile has ``red``, ``green`` and ``blue`` and is larger than the
  thumbnail, the group ``quicklook`` also holds those bands at the pixels the export's
  thumbnail samples (1024² values each; the stored indices in its ``rows``/``cols``
  attributes). A plain open of the store does not see it (xarray opens the root group's
  arrays); :func:`darts_export.inputs.open_tile` does, so an export from this store renders the
  same thumbnail without reading the three bands (most of the bytes it would read otherwise).

The store is a directory of objects, so it cannot be published atomically: the export removes
an existing store first (no stale chunk survives) and lists the new one in the manifest with the
tree checksum of :func:`~darts_export.storage.tree_object`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zarr
from zarr.codecs import BloscCodec, ZstdCodec

if TYPE_CHECKING:
    import numpy as np
    import xarray as xr
    from numpy.typing import NDArray

__all__ = [
    "DEBUG_CHUNK_SIZE",
    "DEBUG_ZSTD_LEVEL",
    "QUICKLOOK_GROUP",
    "QUICKLOOK_SIZE",
    "QUICKLOOK_VARIABLES",
    "debug_compressors",
    "quicklook_pixels",
    "write_debug_store",
]

logger = logging.getLogger(__name__)

DEBUG_CHUNK_SIZE = 2048
"""Pixels per side of a chunk of the debug store."""

DEBUG_ZSTD_LEVEL = 1
"""Zstandard level of the debug store's one-byte chunks (masks, uint8 bands)."""

QUICKLOOK_GROUP = "quicklook"
"""The store's group holding the optical bands at the thumbnail's pixels."""
QUICKLOOK_VARIABLES = ("red", "green", "blue")
"""The bands the thumbnail samples, kept in :data:`QUICKLOOK_GROUP` when the tile has all three."""
QUICKLOOK_SIZE = 1024
"""Long side of the thumbnail whose pixels :data:`QUICKLOOK_GROUP` holds (the export's default)."""
_SCALE_KEYS = frozenset({"scale_factor", "add_offset"})

# CF/xarray encodings that change what the values mean; everything else in a variable's
# encoding (netCDF or GeoTIFF chunk sizes, compressors, source paths) describes the file it
# was read from and is dropped from the copy, so that only this module's layout applies.
_MEANINGFUL_ENCODINGS = frozenset(
    {"_FillValue", "missing_value", "scale_factor", "add_offset", "dtype", "units", "calendar", "grid_mapping"}
)


def write_debug_store(tile: xr.Dataset, folder: str | Path) -> Path:
    """Encode ``tile`` whole as a Zarr v3 store in the local, not yet existing, ``folder``.

    The caller's tile (its values, attributes and encodings) is not modified.

    Args:
        tile: The tile, in memory or lazy (dask-backed, e.g. opened from a Zarr store).
        folder: Where to create the store (the export's staging folder).

    Returns:
        ``folder``, holding the store's objects.

    Raises:
        ValueError: a variable cannot be encoded by Zarr (xarray's ``ValueError``/``TypeError``
            propagate unchanged).
        OSError: the local disk refused the write (full, read-only).
    """
    import rioxarray  # noqa: F401  (registers the .rio accessor; imported here: readers of the constants need none)

    started = time.perf_counter()
    dataset = _prepared_copy(tile)
    encoding = _layout(dataset)
    dataset = _rechunked(dataset, encoding)
    dataset.to_zarr(
        zarr.storage.LocalStore(str(folder)),
        mode="w-",
        zarr_format=3,
        consolidated=False,
        encoding=encoding,
        write_empty_chunks=True,
    )
    _write_quicklook(dataset, zarr.storage.LocalStore(str(folder)))
    _consolidate(Path(folder))
    logger.debug("encoded debug store in %s in %.3f s", folder, time.perf_counter() - started)
    return Path(folder)


def quicklook_pixels(size: int, *, flipped: bool) -> NDArray[np.intp]:
    """Stored indices, ascending, of the pixels a :data:`QUICKLOOK_SIZE` thumbnail samples along an axis of ``size``.

    The thumbnail (``formats/thumbnail.py``) samples the north-up tile at the centre of each of
    its pixels and never upscales; ``flipped`` axes (ascending y, descending x) are stored in the
    other order. Should the two ever differ, readers find no match and read the bands instead.
    """
    import numpy as np

    scale = min(1.0, QUICKLOOK_SIZE / size)
    n_out = max(1, round(size * scale))
    centres = np.minimum(((np.arange(n_out, dtype=np.float64) + 0.5) * (size / n_out)).astype(np.intp), size - 1)
    return np.unique(size - 1 - centres if flipped else centres)


def _write_quicklook(dataset: xr.Dataset, store: zarr.storage.LocalStore) -> None:
    """The optical bands at the thumbnail's pixels, in the group :data:`QUICKLOOK_GROUP` (see the module docstring)."""
    spatial = _spatial_dims(dataset)
    y_dim, x_dim = _yx(dataset)
    bands = [dataset[n] for n in QUICKLOOK_VARIABLES if n in dataset.data_vars]
    if (
        len(bands) != len(QUICKLOOK_VARIABLES)
        or any(b.dims != (y_dim, x_dim) or _SCALE_KEYS & {*b.attrs, *b.encoding} for b in bands)
        or max(dataset.sizes[d] for d in spatial) <= QUICKLOOK_SIZE  # the thumbnail reads every pixel anyway
    ):
        return
    transform = dataset.rio.transform(recalc=True)
    rows = quicklook_pixels(dataset.sizes[y_dim], flipped=transform.e > 0)
    cols = quicklook_pixels(dataset.sizes[x_dim], flipped=transform.a < 0)
    attributes = {
        "thumbnail_size": QUICKLOOK_SIZE,
        "dims": [str(y_dim), str(x_dim)],
        "rows": rows.tolist(),
        "cols": cols.tolist(),
    }
    group = zarr.open_group(store, mode="r+", zarr_format=3).create_group(QUICKLOOK_GROUP, attributes=attributes)
    for band in bands:
        values = band.variable[{y_dim: rows, x_dim: cols}].values
        group.create_array(
            str(band.name), data=values, chunks=values.shape, compressors=debug_compressors(values.dtype)
        )


def _yx(dataset: xr.Dataset) -> tuple[Hashable, Hashable]:
    try:
        return dataset.rio.y_dim, dataset.rio.x_dim
    except Exception:  # rioxarray raises its own error when it finds no spatial dimensions
        return "y", "x"


def _consolidate(folder: Path) -> None:
    """Inline every member's metadata into the root ``zarr.json``, as ``zarr.consolidate_metadata`` does.

    Done here rather than by zarr, which warns on every v3 consolidation that it is not yet in the
    specification; silencing that needs the process-wide warnings filters, which other encoder
    threads change concurrently. Readers (xarray, zarr-python) support it.
    """
    root = folder / "zarr.json"
    members = {
        path.parent.relative_to(folder).as_posix(): json.loads(path.read_text())
        for path in sorted(folder.rglob("zarr.json"))
        if path != root
    }
    for member in members.values():
        if member.get("node_type") == "group":  # a nested group's members are listed flat at the root
            member["consolidated_metadata"] = {"kind": "inline", "must_understand": False, "metadata": {}}
    group = json.loads(root.read_text())
    node_type = group.pop("node_type")
    group["consolidated_metadata"] = {"kind": "inline", "must_understand": False, "metadata": members}
    group["node_type"] = node_type
    root.write_text(json.dumps(group, indent=2))


def _rechunked(dataset: xr.Dataset, encoding: dict[Hashable, dict[str, Any]]) -> xr.Dataset:
    """Lazy variables rechunked to the store's chunks: a dask chunk spanning two zarr chunks cannot be written."""
    lazy = {name: var for name, var in dataset.data_vars.items() if var.chunks is not None}
    for name, variable in lazy.items():
        chunks = dict(zip(variable.dims, encoding[name]["chunks"], strict=True))
        dataset[name] = variable.chunk(chunks)
    return dataset


def _prepared_copy(tile: xr.Dataset) -> xr.Dataset:
    """A shallow copy of ``tile`` (no array is copied) whose encodings hold only what the values mean.

    Each data variable also lists its non-dimension coordinates (the grid mapping among them)
    in ``coordinates``, so xarray decodes ``spatial_ref`` as a coordinate on a plain open.
    """
    dataset = tile.copy(deep=False)
    for name, variable in dataset.variables.items():
        encoding: dict[str, Any] = {k: v for k, v in variable.encoding.items() if k in _MEANINGFUL_ENCODINGS}
        if name in dataset.data_vars:
            coords = sorted(str(c) for c in dataset[name].coords if c not in variable.dims)
            if coords and "coordinates" not in variable.attrs:
                encoding["coordinates"] = " ".join(coords)
        variable.encoding = encoding  # a new dict on the copy's own Variable: the tile keeps its own
    return dataset


def _layout(dataset: xr.Dataset) -> dict[Hashable, dict[str, Any]]:
    """Chunks and compressor of every data variable (see the module docstring)."""
    spatial = _spatial_dims(dataset)
    encoding: dict[Hashable, dict[str, Any]] = {}
    for name, variable in dataset.data_vars.items():
        if variable.ndim == 0:
            chunks: tuple[int, ...] = ()
        elif any(d in spatial for d in variable.dims):
            chunks = tuple(
                min(DEBUG_CHUNK_SIZE, size) if dim in spatial else 1
                for dim, size in zip(variable.dims, variable.shape, strict=True)
            )
        else:
            chunks = tuple(variable.shape)
        encoding[name] = {"chunks": tuple(max(c, 1) for c in chunks), "compressors": debug_compressors(variable.dtype)}
    return encoding


def debug_compressors(dtype: np.dtype[Any]) -> tuple[BloscCodec | ZstdCodec, ...]:
    """The debug store's compressor of a variable of ``dtype`` (see the module docstring)."""
    if dtype.kind not in "iufc" or dtype.itemsize == 1:  # masks, uint8 bands, and anything not numeric
        return (ZstdCodec(level=DEBUG_ZSTD_LEVEL),)
    return (BloscCodec(typesize=dtype.itemsize, cname="lz4", clevel=5, shuffle="bitshuffle"),)


def _spatial_dims(dataset: xr.Dataset) -> frozenset[Hashable]:
    """The names of the tile's x and y dimensions (rioxarray's, else ``x``/``y``)."""
    try:
        return frozenset({dataset.rio.x_dim, dataset.rio.y_dim})
    except Exception:  # rioxarray raises its own error when it finds no spatial dimensions
        return frozenset({"x", "y"})

"""The debug store: the whole tile as a Zarr v3 store with consolidated metadata.

``export_tile(debug=True)`` writes ``darts_inference_debug.zarr`` next to the products
(the original wrote a NetCDF file). The store holds every data variable, coordinate and
attribute of the tile and is written straight to the target through zarr's own stores:

* a local folder through :class:`zarr.storage.LocalStore`;
* any other fsspec filesystem (S3, ``memory://``, ...) through
  :class:`zarr.storage.FsspecStore` over an
  :class:`~fsspec.implementations.asyn_wrapper.AsyncFileSystemWrapper` around the
  :class:`~darts_export.storage.Storage`'s own filesystem instance. Wrapping the existing
  instance (rather than opening a second, ``asynchronous=True`` one) reuses its
  credentials, connection pool and event loop, leaves no client session to close, and
  keeps its listing cache coherent for :meth:`~darts_export.storage.Storage.describe_tree`.

Layout and encoding:

* **Chunks** of at most 2048 × 2048 pixels over the spatial dimensions (one step along any
  other dimension). A float32 chunk is 16 MiB raw — inside zarr's recommended 1-100 MB —
  so a Sentinel-2 tile (10980²) is 36 chunks per variable, a few hundred objects for the
  whole tile: few enough PUTs to write quickly to object storage, small enough that
  reading back a window for debugging touches at most four chunks.
* **Compression**: Zstandard (level 3) on every data variable.
* **Georeference**: the grid-mapping coordinate (``spatial_ref`` with ``crs_wkt`` and,
  when the tile has it, ``GeoTransform``) is kept and each variable keeps its CF
  ``grid_mapping`` attribute; each variable also lists its non-dimension coordinates in
  ``coordinates``, so that a plain ``xr.open_zarr(url, consolidated=True)`` decodes
  ``spatial_ref`` as a coordinate and ``.rio.crs`` works without ``decode_coords="all"``.
* **Values**: written as they are. Opened with ``mask_and_scale=False`` the store gives
  back the tile's exact dtypes and values; with xarray's default decoding, variables whose
  attributes carry rioxarray's ``_FillValue`` (e.g. the TCVIS bands) come back as floats
  with NaN at that value, as for any CF store.

The store is a directory of objects, so it cannot be published atomically: an existing
store is removed first (no stale chunk survives), then the new one is written, and its
:class:`~darts_export.storage.StoredObject` (see :meth:`Storage.describe_tree`) is
computed from what is actually stored.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import rioxarray  # noqa: F401  (registers the .rio accessor)
import zarr
from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
from zarr.codecs import ZstdCodec

from darts_export.errors import ExportError, StorageError

if TYPE_CHECKING:
    import xarray as xr

    from darts_export.storage import Storage, StoredObject

__all__ = ["DEBUG_CHUNK_SIZE", "DEBUG_ZSTD_LEVEL", "write_debug_store"]

logger = logging.getLogger(__name__)

DEBUG_CHUNK_SIZE = 2048
"""Pixels per side of a chunk of the debug store."""

DEBUG_ZSTD_LEVEL = 3
"""Zstandard level of the debug store's chunks (zstd's own default: fast, about LZ4 speed)."""

# CF/xarray encodings that change what the values mean; everything else in a variable's
# encoding (netCDF or GeoTIFF chunk sizes, compressors, source paths) describes the file it
# was read from and is dropped from the copy, so that only this module's layout applies.
_MEANINGFUL_ENCODINGS = frozenset(
    {"_FillValue", "missing_value", "scale_factor", "add_offset", "dtype", "units", "calendar", "grid_mapping"}
)

# zarr warns on every consolidation of a v3 store that consolidated metadata is not yet part
# of the v3 specification. The store is meant for xarray/zarr-python readers, which support
# it; this exact warning (and no other) is silenced around the write.
_CONSOLIDATED_V3_WARNING = r"Consolidated metadata is currently not part"


def write_debug_store(tile: xr.Dataset, storage: Storage, rel: str = "darts_inference_debug.zarr") -> StoredObject:
    """Write ``tile`` whole as a Zarr v3 store under ``rel``, replacing any store already there.

    The caller's tile (its values, attributes and encodings) is not modified.

    Args:
        tile: The tile, with every variable in memory (or lazily loadable by xarray).
        storage: Where the export goes.
        rel: Path of the store relative to the export root.

    Returns:
        The store's total size and its tree checksum, as :meth:`Storage.describe_tree` defines them.

    Raises:
        StorageError: Removing the old store, writing or listing the new one failed (the
            backend's exception is chained); :class:`~darts_export.errors.TargetUnreachableError`
            when the target cannot be reached at all. A partial store may remain.
        ValueError: ``rel`` is not a plain relative path, or a variable cannot be encoded
            by Zarr (xarray's ``ValueError``/``TypeError`` propagate unchanged).
    """
    target = storage.path(rel)  # validates rel before anything is touched
    started = time.perf_counter()
    dataset = _prepared_copy(tile)
    encoding = _layout(dataset)
    storage.remove(rel, recursive=True)
    try:
        with warnings.catch_warnings():
            # Not thread-safe on Python < 3.14 (global filter list); at worst the warning
            # is shown when another thread changes the filters concurrently.
            warnings.filterwarnings("ignore", message=_CONSOLIDATED_V3_WARNING, category=UserWarning)
            dataset.to_zarr(
                _zarr_store(storage, target),
                mode="w",
                zarr_format=3,
                consolidated=True,
                encoding=encoding,
            )
    except (ValueError, TypeError, ExportError):
        raise
    except Exception as exc:
        raise StorageError(f"Cannot write the debug store {storage.uri(rel)}: {type(exc).__name__}: {exc}") from exc
    finally:
        storage.fs.invalidate_cache(target)
    stored = storage.describe_tree(rel)
    logger.debug("wrote debug store %s (%d bytes) in %.3f s", rel, stored.size, time.perf_counter() - started)
    return stored


def _zarr_store(storage: Storage, target: str) -> zarr.storage.LocalStore | zarr.storage.FsspecStore:
    """A writable zarr store at ``target`` on the storage's own filesystem."""
    if storage.is_local:
        return zarr.storage.LocalStore(target)
    return zarr.storage.FsspecStore(AsyncFileSystemWrapper(storage.fs, asynchronous=True), path=target)


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
        encoding[name] = {
            "chunks": tuple(max(c, 1) for c in chunks),
            "compressors": (ZstdCodec(level=DEBUG_ZSTD_LEVEL),),
        }
    return encoding


def _spatial_dims(dataset: xr.Dataset) -> frozenset[Hashable]:
    """The names of the tile's x and y dimensions (rioxarray's, else ``x``/``y``)."""
    try:
        return frozenset({dataset.rio.x_dim, dataset.rio.y_dim})
    except Exception:  # rioxarray raises its own error when it finds no spatial dimensions
        return frozenset({"x", "y"})

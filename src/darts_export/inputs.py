"""Open an input tile: a Zarr store or a NetCDF-4 file, on a local disk or at any fsspec URL.

The CLI and the cloud handler both read their input through :func:`open_tile`, so a tile opens
the same way everywhere:

* lazily: nothing but metadata is read on opening; :func:`load_needed` (which ``export_tile``
  calls) then reads every variable an export needs once, all of them at the same time, each with
  the store's concurrent chunk reads, instead of once per product that uses it;
* values as stored: no CF masking, so an integer band with a ``_FillValue`` keeps its dtype and
  its nodata value; only variables with ``scale_factor``/``add_offset`` are decoded;
* with coordinates decoded (``decode_coords="all"``), so rioxarray finds the CRS (``tile.rio.crs``).

Every failure raises an :class:`InputReadError`; its subclasses say whether the input is missing,
unreadable as a tile, or (for a Zarr store) not completely written yet.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import fsspec
from fsspec.utils import get_protocol

from darts_export.errors import IncompleteStoreError, InputNotFoundError, InputReadError, InvalidInputError
from darts_export.products import Kind, PlannedProduct
from darts_export.storage import url_problem

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "NETCDF_SUFFIXES",
    "ZARR_SUFFIXES",
    "InputFormat",
    "input_format",
    "load_needed",
    "open_tile",
]

logger = logging.getLogger(__name__)

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5", ".hdf5")
"""Names ending in one of these (any case) are read as NetCDF-4/HDF5 files."""
ZARR_SUFFIXES = (".zarr",)
"""The conventional suffix of a Zarr store; any name that is not NetCDF is read as Zarr."""

InputFormat = Literal["zarr", "netcdf"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_NETCDF3_SIGNATURE = b"CDF"
_SCALE_ATTRS = frozenset({"scale_factor", "add_offset"})


def input_format(source: str | os.PathLike[str]) -> InputFormat:
    """``"netcdf"`` for a name ending in one of :data:`NETCDF_SUFFIXES`, else ``"zarr"``."""
    return "netcdf" if os.fspath(source).rstrip("/").lower().endswith(NETCDF_SUFFIXES) else "zarr"


def open_tile(
    source: str | os.PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    require_consolidated: bool = False,
) -> xr.Dataset:
    """Open a tile saved as Zarr or NetCDF-4, lazily, with values as stored and its CRS.

    Args:
        source: A local path, a ``file://`` URL or any fsspec URL (``s3://bucket/tile.zarr``,
            ``memory://tile.nc``). Names ending in one of :data:`NETCDF_SUFFIXES` are NetCDF files,
            anything else a Zarr store (v2 or v3, with or without consolidated metadata).
        storage_options: fsspec options for a URL (endpoint, credentials); ignored for local paths.
        require_consolidated: Only open a Zarr store that has consolidated metadata, the last thing
            its writer adds; raise :class:`IncompleteStoreError` for one without. Ignored for NetCDF.

    Returns:
        The tile; close it (or use it as a context manager) to release the files it holds open.

    Raises:
        InputNotFoundError: ``source`` does not exist.
        InvalidInputError: ``source`` looks like a mistyped URL, or exists but is not a readable Zarr
            store or NetCDF-4 file.
        IncompleteStoreError: ``require_consolidated`` is set and the store lacks consolidated metadata.
        InputReadError: reading failed (connection, permissions, a corrupt file).
    """
    name = os.fspath(source)
    if (problem := url_problem(name)) is not None:
        raise InvalidInputError(f"Cannot read the input {name!r}: {problem}")
    is_url = get_protocol(name) != "file"
    path = name if is_url else name.removeprefix("file://")
    options = dict(storage_options) if is_url and storage_options else None
    fmt = input_format(path)
    if not is_url and not Path(path).exists():
        raise InputNotFoundError(f"The input {name!r} does not exist; give the path of a Zarr store or NetCDF file.")
    try:
        if fmt == "netcdf":
            _check_netcdf_signature(name, path, options)
        tile = _open(path, fmt, options, mask_and_scale=False, require_consolidated=require_consolidated)
        scaled = {str(n) for n, v in tile.variables.items() if _SCALE_ATTRS & set(v.attrs)}
        if scaled:  # reopen, decoding only these (the first open read metadata only)
            tile.close()
            per_variable = {str(n): str(n) in scaled for n in tile.variables}
            tile = _open(path, fmt, options, mask_and_scale=per_variable, require_consolidated=require_consolidated)
    except InputReadError:
        raise
    except FileNotFoundError as exc:
        raise InputNotFoundError(f"The input {name!r} does not exist: {exc}") from exc
    except (KeyError, ValueError, TypeError) as exc:
        kind = "NetCDF file" if fmt == "netcdf" else "Zarr store"
        raise InvalidInputError(f"Cannot open {name!r} as a {kind}: {type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise InputReadError(f"Cannot read the input {name!r}: {type(exc).__name__}: {exc}") from exc
    if fmt == "zarr":
        tile = _with_quicklook(tile, path, options)
    logger.info("opened %s (%s): variables %s", name, fmt, list(tile.data_vars))
    return tile


def _with_quicklook(tile: xr.Dataset, path: str, options: dict[str, Any] | None) -> xr.Dataset:
    """``tile`` whose optical bands give the thumbnail's pixels from the store's quick-look, when it has one.

    The debug store keeps the bands the thumbnail samples at its pixels in a group of their own
    (``formats/zarr_store.py``); an export from such a store then reads 3 × 1024² values instead
    of three whole bands. Every other read of a band (whole, or other pixels) goes to the band.
    """
    from darts_export.formats.zarr_store import QUICKLOOK_GROUP, QUICKLOOK_VARIABLES

    if not all(n in tile.data_vars for n in QUICKLOOK_VARIABLES):
        return tile
    import zarr

    try:
        # v3 only (the debug store's format): no probing for v2 metadata, one GET of the root's zarr.json.
        root = zarr.open_group(path, mode="r", storage_options=options, zarr_format=3, use_consolidated=True)
        group = root.get(QUICKLOOK_GROUP)
    except Exception as exc:  # an optimisation: whatever stops it, the bands themselves are read
        logger.debug("no quick-look in %s: %s: %s", path, type(exc).__name__, exc)
        return tile
    if not isinstance(group, zarr.Group):
        return tile
    import numpy as np
    import xarray as xr
    from xarray.core import indexing

    rows, cols = (np.asarray(group.attrs.get(k, ()), dtype=np.intp) for k in ("rows", "cols"))
    tile = tile.copy(deep=False)
    for name in QUICKLOOK_VARIABLES:
        band, quick = tile[name].variable, group.get(name)
        if (
            isinstance(quick, zarr.Array)
            and list(band.dims) == group.attrs.get("dims")
            and quick.shape == (rows.size, cols.size)
            and quick.dtype == band.dtype
        ):
            lazy = indexing.LazilyIndexedArray(_quicklooked()(band, rows, cols, quick))
            tile[name] = xr.Variable(band.dims, lazy, band.attrs, band.encoding)
    return tile


def _open(
    path: str,
    fmt: InputFormat,
    options: dict[str, Any] | None,
    *,
    mask_and_scale: bool | dict[str, bool],
    require_consolidated: bool,
) -> xr.Dataset:
    import xarray as xr

    common: dict[str, Any] = {"decode_coords": "all", "mask_and_scale": mask_and_scale, "storage_options": options}
    if fmt == "netcdf":
        return xr.open_dataset(path, engine="h5netcdf", **common)
    try:
        return xr.open_dataset(path, engine="zarr", chunks=None, consolidated=True, **common)
    except (KeyError, ValueError) as exc:  # no consolidated metadata, or no store at all
        if not _zarr_root_exists(path, options):
            raise InputNotFoundError(
                f"The input store {path!r} does not exist (no zarr.json or .zgroup at its root)."
            ) from exc
        if require_consolidated:
            raise IncompleteStoreError(
                f"The Zarr store {path!r} has no consolidated metadata yet: it is still being written, "
                "or its writer did not consolidate it."
            ) from exc
        logger.debug("%s has no consolidated metadata (%s); reading the metadata of each array", path, exc)
        return xr.open_dataset(path, engine="zarr", chunks=None, consolidated=False, **common)


def _zarr_root_exists(path: str, options: dict[str, Any] | None) -> bool:
    fs, root = fsspec.core.url_to_fs(path, **(options or {}))
    return any(fs.exists(f"{root.rstrip('/')}/{marker}") for marker in ("zarr.json", ".zgroup"))


def _check_netcdf_signature(name: str, path: str, options: dict[str, Any] | None) -> None:
    """Fail with a clear message unless the file starts with the HDF5 signature (NetCDF-4 is HDF5)."""
    with fsspec.open(path, "rb", **(options or {})) as handle:
        head = handle.read(len(_HDF5_SIGNATURE))
    if head.startswith(_NETCDF3_SIGNATURE):
        raise InvalidInputError(
            f"Cannot open {name!r} as a NetCDF file: it is NetCDF-3 (classic), only NetCDF-4/HDF5 is read; "
            "convert it, e.g. with `nccopy -k nc4`."
        )
    if head != _HDF5_SIGNATURE:
        raise InvalidInputError(f"Cannot open {name!r} as a NetCDF file: it does not start with the HDF5 signature.")


_LOAD_THREADS = 8  # variables read at once; each read already fetches its chunks concurrently
# The thumbnail reads these at its own pixels only (TileView.sample): when no other product needs them, they
# stay in storage rather than being decoded whole (3 float bands: 1.4 GB of a Sentinel-2 tile).
_SAMPLED_BY_THUMBNAIL = frozenset({"red", "green", "blue"})


def load_needed(tile: xr.Dataset, planned: Iterable[PlannedProduct]) -> xr.Dataset:
    """``tile`` with every variable the planned products read in memory; ``tile`` itself is unchanged.

    A tile opened lazily (:func:`open_tile`, or dask-backed) would otherwise be read from storage
    by each product and check that uses a variable, one after another. Here each needed variable
    is read once, all at the same time. Variables already in memory are used as they are (no copy);
    with a debug store planned, every data variable is needed. The optical bands, when only the
    thumbnail reads them, stay in storage: it samples them at its own pixels.

    Raises:
        InputReadError: reading a variable failed (connection, permissions, a corrupt chunk).
    """
    planned = tuple(planned)
    if any(p.kind is Kind.DEBUG_STORE for p in planned):
        wanted: Iterable[object] = tile.data_vars
    else:
        whole = {v for p in planned if p.kind is not Kind.THUMBNAIL for v in (*p.required, *p.optional)}
        wanted = dict.fromkeys(
            v
            for p in planned
            for v in (*p.required, *p.optional)
            if v in whole or p.kind is not Kind.THUMBNAIL or v not in _SAMPLED_BY_THUMBNAIL
        )
    names = [str(n) for n in wanted if n in tile.data_vars and not tile[n].variable._in_memory]
    if not names:
        return tile
    try:
        with ThreadPoolExecutor(min(_LOAD_THREADS, len(names)), thread_name_prefix="darts-read") as pool:
            values = dict(zip(names, pool.map(lambda n: tile[n].variable.values, names), strict=True))
    except OSError as exc:
        raise InputReadError(f"Cannot read the tile's variables {names}: {type(exc).__name__}: {exc}") from exc
    loaded = tile.copy(deep=False)
    for name, array in values.items():
        loaded[name] = tile[name].variable.copy(deep=False, data=array)
    logger.debug("read %d lazily stored variables at once: %s", len(names), names)
    return loaded


@functools.cache
def _quicklooked() -> type[Any]:
    """The lazily indexed band behind :func:`_with_quicklook` (a class made on first use: xarray is imported late)."""
    import numpy as np
    from xarray.backends import BackendArray
    from xarray.core import indexing

    class QuickLooked(BackendArray):
        def __init__(self, band: xr.Variable, rows: Any, cols: Any, quick: Any) -> None:
            self.band, self.rows, self.cols, self.quick = band, rows, cols, quick
            self.shape, self.dtype = band.shape, band.dtype

        def __getitem__(self, key: Any) -> Any:
            return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._get)

        def _get(self, key: tuple[Any, ...]) -> Any:
            # xarray hands an outer read its indices sorted and unique, as the quick-look keeps them.
            rows, cols = key
            if (
                isinstance(rows, np.ndarray)
                and isinstance(cols, np.ndarray)
                and np.array_equal(rows, self.rows)
                and np.array_equal(cols, self.cols)
            ):
                return self.quick[...]
            return self.band[key].values

    return QuickLooked

"""The input tile: its georeference and read-only, north-up views of its variables.

Every encoder sees the tile through :class:`TileView`, which checks the georeference
once, normalises the row order to north-up (GeoTIFF and GeoPackage readers expect
a negative pixel height) and hands out read-only arrays, so no product can modify the
caller's data or depend on the order in which other products were written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError

from darts_export.errors import InvalidTileError

if TYPE_CHECKING:
    import xarray as xr
    from numpy.typing import NDArray

__all__ = ["PROBABILITY_TOLERANCE", "GeoRef", "Role", "TileView"]

logger = logging.getLogger(__name__)

Role = Literal["probability", "mask", "band"]
"""What a variable holds for the product that reads it; :meth:`TileView.check_variable` checks it."""

PROBABILITY_TOLERANCE = 1e-5
"""How far outside [0, 1] a probability may stray by floating-point rounding (a softmax's 1.0000001)."""


@dataclass(frozen=True, kw_only=True)
class GeoRef:
    """Where a tile's pixels lie on Earth: CRS, north-up affine transform and size."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``, the shape of every 2-D array of the tile."""
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in the tile's CRS."""
        t = self.transform
        xs = (t.c, t.c + t.a * self.width)
        ys = (t.f, t.f + t.e * self.height)
        return (min(xs), min(ys), max(xs), max(ys))

    @property
    def epsg(self) -> int | None:
        """The EPSG code of the CRS, or ``None`` when no EPSG CRS is this one.

        Only the same CRS counts: an exact match, or an EPSG CRS with the same definition
        (a UTM zone spelt as a PROJ string). A look-alike (a transverse Mercator on GRS80 with
        an unknown datum, which PROJ calls NAD83 / UTM with 70 % confidence) has no code; see
        :meth:`lookalike_epsg`.
        """
        epsg = self.crs.to_epsg(confidence_threshold=100)
        if epsg is None:
            candidate = self.crs.to_epsg()
            if candidate is not None and _same_crs(self.crs, int(candidate)):
                epsg = candidate
        return None if epsg is None else int(epsg)

    @property
    def lookalike_epsg(self) -> int | None:
        """The EPSG code PROJ (and GDAL's GeoPackage writer) would wrongly give this CRS, if any."""
        candidate = self.crs.to_epsg()
        return None if candidate is None or self.epsg is not None else int(candidate)

    @property
    def authority(self) -> tuple[str, str] | None:
        """``("EPSG", "32606")``, or another authority's exact code (``("ESRI", "102001")``), else ``None``."""
        epsg = self.epsg
        if epsg is not None:
            return ("EPSG", str(epsg))
        found = self.crs.to_authority(confidence_threshold=100)
        return None if found is None else (str(found[0]), str(found[1]))

    @property
    def crs_code(self) -> str:
        """``"EPSG:32606"`` style authority code, or the WKT when there is no EPSG code."""
        epsg = self.epsg
        return f"EPSG:{epsg}" if epsg is not None else self.crs.to_wkt()


def _same_crs(crs: CRS, epsg: int) -> bool:
    import pyproj

    return bool(pyproj.CRS.from_wkt(crs.to_wkt()).equals(pyproj.CRS.from_epsg(epsg), ignore_axis_order=True))


_Georeference = tuple[str, str, CRS, Affine]
"""``(x_dim, y_dim, crs, transform)`` as rioxarray's ``tile.rio`` gives them (transform recalculated)."""


def _rioxarray_georeference(tile: xr.Dataset) -> _Georeference:
    """The georeference through rioxarray: any spatial dimensions, CRS and transform it can derive."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    try:
        x_dim, y_dim = tile.rio.x_dim, tile.rio.y_dim
    except Exception as exc:  # rioxarray raises its own MissingSpatialDimensionError
        raise InvalidTileError(
            "The tile has no spatial dimensions; name them 'x' and 'y' (or set them with tile.rio.set_spatial_dims)."
        ) from exc
    crs = tile.rio.crs
    if crs is None:
        raise InvalidTileError("The tile has no CRS; set one with tile.rio.write_crs('EPSG:...') before exporting.")
    if tile.sizes[x_dim] < 1 or tile.sizes[y_dim] < 1:
        raise InvalidTileError(f"The tile is empty: its size is {dict(tile.sizes)}.")
    grid_mapping = tile.rio.grid_mapping
    stored = grid_mapping in tile.coords and "GeoTransform" in tile[grid_mapping].attrs
    if not (x_dim in tile.coords and y_dim in tile.coords) and not stored:
        # rioxarray would silently fall back to the identity transform here.
        raise InvalidTileError(
            "The tile has no transform: give it 'x'/'y' coordinates or write one with tile.rio.write_transform(...)."
        )
    try:
        transform = tile.rio.transform(recalc=True)
    except Exception as exc:
        raise InvalidTileError(
            "The tile has no usable transform; give it 'x'/'y' coordinates or "
            "write one with tile.rio.write_transform(...)."
        ) from exc
    return str(x_dim), str(y_dim), CRS.from_user_input(crs), transform


def _cf_georeference(tile: xr.Dataset) -> _Georeference | None:
    """The georeference of a tile with a plain CF grid mapping, the same as rioxarray's; else ``None``.

    Plain means: every data variable over ``y``/``x`` dimensions with 1-D coordinates of at least
    two values, one grid-mapping coordinate whose ``spatial_ref`` or ``crs_wkt`` attribute GDAL
    reads, and no stored transform other than an unrotated one. Follows rioxarray 0.19's
    ``rio.x_dim``, ``rio.grid_mapping``, ``rio.crs`` and ``rio.transform(recalc=True)`` step by
    step; anything else (other dimension names, a CRS only in CF parameters, a rotated
    GeoTransform) is left to rioxarray.
    """
    if "x" not in tile.dims or "y" not in tile.dims:
        return None
    if "x" not in tile.coords or "y" not in tile.coords:
        return None
    x, y = tile.coords["x"], tile.coords["y"]
    if x.dims != ("x",) or y.dims != ("y",) or x.size < 2 or y.size < 2:
        return None
    if x.dtype.kind not in "iuf" or y.dtype.kind not in "iuf":
        return None
    if any("x" not in var.dims or "y" not in var.dims for var in tile.data_vars.values()):
        return None
    grid_mapping = _grid_mapping(tile)
    if grid_mapping is None or grid_mapping not in tile.coords:
        return None
    attrs = tile.coords[grid_mapping].attrs
    if "transform" in tile.attrs or not _unrotated(attrs.get("GeoTransform")):
        return None
    wkt = attrs.get("spatial_ref", attrs.get("crs_wkt"))
    if not isinstance(wkt, str):
        return None
    try:
        crs = CRS.from_user_input(wkt)
    except CRSError:  # rioxarray then asks pyproj
        return None
    left, right = float(x.values[0]), float(x.values[-1])
    top, bottom = float(y.values[0]), float(y.values[-1])
    resolution_x, resolution_y = (right - left) / (x.size - 1), (bottom - top) / (y.size - 1)
    left -= resolution_x / 2.0
    top -= resolution_y / 2.0
    return "x", "y", crs, Affine.translation(left, top) * Affine.scale(resolution_x, resolution_y)


def _grid_mapping(tile: xr.Dataset) -> str | None:
    """The grid-mapping name rioxarray uses (default ``spatial_ref``); ``None`` when the variables disagree."""
    named = tile.encoding.get("grid_mapping", tile.attrs.get("grid_mapping"))
    if named is not None:
        return str(named)
    names = {var.encoding.get("grid_mapping", var.attrs.get("grid_mapping")) for var in tile.data_vars.values()}
    names.discard(None)
    if len(names) > 1:
        return None
    return str(names.pop()) if names else "spatial_ref"


def _unrotated(geotransform: object) -> bool:
    """Whether a stored ``GeoTransform`` is absent or north-up-like (rioxarray then recalculates it)."""
    if geotransform is None:
        return True
    if not isinstance(geotransform, str):
        return False
    try:
        values = [float(v) for v in geotransform.split()]
    except ValueError:
        return False
    return len(values) == 6 and values[2] == 0 and values[4] == 0


class TileView:
    """A validated, read-only view on a DARTS tile (an ``xarray.Dataset`` with rioxarray georeference).

    Construction fails with :class:`~darts_export.errors.InvalidTileError` when the tile has
    no CRS, no usable transform, or is rotated.
    """

    def __init__(self, tile: xr.Dataset) -> None:
        """Check the georeference of ``tile`` once; nothing is read or copied yet."""
        import xarray as xr

        given: object = tile  # callers pass anything; say what is wrong before touching it
        if isinstance(given, xr.DataArray):
            raise InvalidTileError(
                f"The tile is an xarray.DataArray ({given.name!r}); export_tile needs an xarray.Dataset of named "
                "variables: pass tile.to_dataset(name='probabilities') (or the variable's name)."
            )
        if not isinstance(given, xr.Dataset):
            raise InvalidTileError(
                f"The tile must be an xarray.Dataset (as DARTS prepare_export returns), got {type(given).__name__}."
            )
        self._tile = tile
        # The CF grid mapping read directly when it is plain (as DARTS and the debug store write it); the
        # rest through rioxarray, whose import (with dask) is most of a cold start's first export.
        georeference = _cf_georeference(tile) or _rioxarray_georeference(tile)
        x_dim, y_dim, crs, transform = georeference
        if transform.b != 0 or transform.d != 0:
            raise InvalidTileError(f"Rotated or sheared transforms are not supported: {transform!r}.")
        if transform.a == 0 or transform.e == 0:
            raise InvalidTileError(f"The tile's transform has a zero pixel size: {transform!r}.")
        width, height = int(tile.sizes[x_dim]), int(tile.sizes[y_dim])
        self._flip_y = transform.e > 0
        if self._flip_y:
            # Ascending y (south-up): flip rows so every output is north-up.
            transform = Affine(transform.a, 0.0, transform.c, 0.0, -transform.e, transform.f + transform.e * height)
        self._flip_x = transform.a < 0
        if self._flip_x:
            transform = Affine(-transform.a, 0.0, transform.c + transform.a * width, 0.0, transform.e, transform.f)
        self._dims = (y_dim, x_dim)
        self.georef = GeoRef(crs=crs, transform=transform, width=width, height=height)
        lookalike = self.georef.lookalike_epsg
        if lookalike is not None:
            # GDAL's GeoPackage writer would label it with that code: the files would disagree on the CRS.
            raise InvalidTileError(
                f"The tile's CRS resembles EPSG:{lookalike} but is not the same (e.g. its datum is unknown), so "
                f"GeoPackage readers would see EPSG:{lookalike}. If it is that CRS, write it with "
                f"tile.rio.write_crs('EPSG:{lookalike}'); otherwise give its full definition (datum included) "
                "or reproject the tile."
            )

    @property
    def dataset(self) -> xr.Dataset:
        """The caller's dataset, unchanged."""
        return self._tile

    @property
    def variables(self) -> tuple[str, ...]:
        """Names of the tile's data variables."""
        return tuple(str(name) for name in self._tile.data_vars)

    def __contains__(self, name: object) -> bool:
        """Whether the tile has a data variable called ``name``."""
        return name in self._tile.data_vars

    def check_variable(self, name: str, role: Role) -> None:
        """Fail with :class:`InvalidTileError` unless variable ``name`` can be exported as ``role``.

        Every variable must be 2-D over the tile's ``y``/``x`` (extra dimensions of size 1 are
        dropped) with a boolean, integer or float dtype. A ``probability`` must be float in
        [0, 1] (NaN = no data, :data:`PROBABILITY_TOLERANCE` allowed for rounding); a ``mask``
        must be boolean or integers 0/1. The value checks read the variable once.
        """
        var = self._tile[name]
        missing = [d for d in self._dims if d not in var.dims]
        extra = [d for d in var.dims if d not in self._dims and var.sizes[d] != 1]
        if missing or extra:
            raise InvalidTileError(
                f"Variable {name!r} has dimensions {var.dims}; only 2-D {self._dims} variables can be exported "
                "(select one slice, e.g. tile[name].isel(band=0))."
            )
        dtype = var.dtype
        if dtype.kind not in "biuf":
            raise InvalidTileError(
                f"Variable {name!r} has dtype {dtype}; only boolean, integer and float variables can be exported."
            )
        if role == "probability":
            self._check_probabilities(name, dtype)
        elif role == "mask":
            self._check_mask(name, dtype)

    def _check_probabilities(self, name: str, dtype: np.dtype[np.generic]) -> None:
        if dtype.kind != "f":
            raise InvalidTileError(
                f"Variable {name!r} holds probabilities as {dtype}; they must be floats in [0, 1] with NaN as "
                f"no data. If they are percent, pass tile[{name!r}] / 100 with the no-data value set to NaN."
            )
        data = self.array(name)
        low, high = float(np.fmin.reduce(data, axis=None)), float(np.fmax.reduce(data, axis=None))
        if np.isnan(low):  # no valid pixel at all
            return
        if low < -PROBABILITY_TOLERANCE or high > 1 + PROBABILITY_TOLERANCE:
            hint = (
                "looks like percent: divide by 100"
                if low >= -PROBABILITY_TOLERANCE and high <= 100 + PROBABILITY_TOLERANCE
                else "set no-data pixels to NaN and clip the values to [0, 1]"
            )
            raise InvalidTileError(
                f"Variable {name!r} holds values from {low:g} to {high:g}; probabilities must lie in [0, 1] ({hint})."
            )

    def _check_mask(self, name: str, dtype: np.dtype[np.generic]) -> None:
        if dtype.kind == "b":
            return
        if dtype.kind == "f":
            raise InvalidTileError(
                f"Variable {name!r} is a mask stored as {dtype}; masks must be boolean or integers 0/1: "
                f"pass (tile[{name!r}] > 0.5) or tile[{name!r}].fillna(0).astype('uint8')."
            )
        data = self.array(name)
        low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
        if low < 0 or high > 1:
            raise InvalidTileError(
                f"Variable {name!r} is a mask with values from {low} to {high}; masks must be boolean or "
                f"integers 0/1: pass tile[{name!r}] > 0 (or mark no data in the 'extent' variable instead)."
            )

    def sample(self, name: str, rows: NDArray[np.intp], cols: NDArray[np.intp]) -> NDArray[np.generic]:
        """The pixels of variable ``name`` at north-up ``rows`` × ``cols`` (every pair), as :meth:`array` has them.

        A variable still in storage (a lazily opened tile) is read at those pixels only, so the
        whole band is never held in memory.
        """
        var = self._variable(name)
        if var.variable._in_memory:
            return self.array(name)[rows[:, None], cols[None, :]]
        height, width = self.georef.shape
        y_dim, x_dim = self._dims
        picked = var.isel(
            {y_dim: height - 1 - rows if self._flip_y else rows, x_dim: width - 1 - cols if self._flip_x else cols}
        )
        return np.asarray(picked.transpose(y_dim, x_dim).values)

    def array(self, name: str) -> NDArray[np.generic]:
        """The 2-D, north-up pixels of variable ``name`` as a read-only array.

        No copy is made where the tile already holds the data in memory in north-up
        order; a flipped tile yields a (read-only) strided view.
        """
        data = np.asarray(self._variable(name).transpose(*self._dims).values)
        if self._flip_y:
            data = data[::-1, :]
        if self._flip_x:
            data = data[:, ::-1]
        view = data.view()
        view.flags.writeable = False
        return view

    def _variable(self, name: str) -> xr.DataArray:
        """Variable ``name`` with its extra dimensions of size 1 dropped (stored order)."""
        if name not in self._tile.data_vars:
            raise InvalidTileError(f"Variable {name!r} not found in tile; available: {list(self.variables)}.")
        var = self._tile[name]
        extra = [d for d in var.dims if d not in self._dims]
        if extra:
            squeezable = [d for d in extra if var.sizes[d] == 1]
            if len(squeezable) != len(extra):
                raise InvalidTileError(
                    f"Variable {name!r} has dimensions {var.dims}; only 2-D (y, x) variables can be exported."
                )
            var = var.squeeze(squeezable, drop=True)
        return var

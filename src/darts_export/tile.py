"""The input tile: its georeference and read-only, north-up views of its variables.

Every encoder sees the tile through :class:`TileView`, which checks the georeference
once, normalises the row order to north-up (GeoTIFF and GeoPackage readers expect
a negative pixel height) and hands out read-only arrays, so no product can modify the
caller's data or depend on the order in which other products were written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
from affine import Affine
from rasterio.crs import CRS

from darts_export.errors import InvalidTileError

if TYPE_CHECKING:
    import xarray as xr
    from numpy.typing import NDArray

__all__ = ["GeoRef", "TileView"]

logger = logging.getLogger(__name__)


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
        """The EPSG code of the CRS, or ``None`` when it has none."""
        epsg = self.crs.to_epsg()
        return None if epsg is None else int(epsg)

    @property
    def crs_code(self) -> str:
        """``"EPSG:32606"`` style authority code, or the WKT when there is no EPSG code."""
        epsg = self.epsg
        return f"EPSG:{epsg}" if epsg is not None else self.crs.to_wkt()


class TileView:
    """A validated, read-only view on a DARTS tile (an ``xarray.Dataset`` with rioxarray georeference).

    Construction fails with :class:`~darts_export.errors.InvalidTileError` when the tile has
    no CRS, no usable transform, or is rotated.
    """

    def __init__(self, tile: xr.Dataset) -> None:
        """Check the georeference of ``tile`` once; nothing is read or copied yet."""
        self._tile = tile
        try:
            x_dim, y_dim = tile.rio.x_dim, tile.rio.y_dim
        except Exception as exc:  # rioxarray raises its own MissingSpatialDimensionError
            raise InvalidTileError(
                "The tile has no spatial dimensions; name them 'x' and 'y' "
                "(or set them with tile.rio.set_spatial_dims)."
            ) from exc
        crs = tile.rio.crs
        if crs is None:
            raise InvalidTileError("The tile has no CRS; set one with tile.rio.write_crs('EPSG:...') before exporting.")
        if tile.sizes[x_dim] < 1 or tile.sizes[y_dim] < 1:
            raise InvalidTileError(f"The tile is empty: its size is {dict(tile.sizes)}.")
        if not (x_dim in tile.coords and y_dim in tile.coords) and not self._has_stored_transform(tile):
            # rioxarray would silently fall back to the identity transform here.
            raise InvalidTileError(
                "The tile has no transform: give it 'x'/'y' coordinates "
                "or write one with tile.rio.write_transform(...)."
            )
        try:
            transform = tile.rio.transform(recalc=True)
        except Exception as exc:
            raise InvalidTileError(
                "The tile has no usable transform; give it 'x'/'y' coordinates or "
                "write one with tile.rio.write_transform(...)."
            ) from exc
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
        self.georef = GeoRef(crs=CRS.from_user_input(crs), transform=transform, width=width, height=height)

    @staticmethod
    def _has_stored_transform(tile: xr.Dataset) -> bool:
        grid_mapping = tile.rio.grid_mapping
        return grid_mapping in tile.coords and "GeoTransform" in tile[grid_mapping].attrs

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

    def array(self, name: str) -> NDArray[np.generic]:
        """The 2-D, north-up pixels of variable ``name`` as a read-only array.

        No copy is made where the tile already holds the data in memory in north-up
        order; a flipped tile yields a (read-only) strided view.
        """
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
        data = np.asarray(var.transpose(*self._dims).values)
        if self._flip_y:
            data = data[::-1, :]
        if self._flip_x:
            data = data[:, ::-1]
        view = data.view()
        view.flags.writeable = False
        return view

"""TileView reads a plain CF grid mapping itself, exactly as rioxarray would, and leaves the rest to rioxarray."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyproj
import pytest
import xarray as xr
from affine import Affine

from darts_export import InvalidTileError, make_synthetic_tile
from darts_export.inputs import open_tile
from darts_export.tile import TileView, _cf_georeference, _rioxarray_georeference
from helpers import put_zarr

_POLAR = "+proj=stere +lat_0=90 +lat_ts=71 +lon_0=-45 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"


def _base() -> xr.Dataset:
    return make_synthetic_tile(16, seed=3)


def _renamed_grid_mapping(tile: xr.Dataset) -> xr.Dataset:
    renamed: xr.Dataset = tile.drop_vars("spatial_ref").rio.write_crs("EPSG:32606", grid_mapping_name="crs")
    return renamed


def _only_crs_wkt(tile: xr.Dataset) -> xr.Dataset:
    out = tile.copy()
    out["spatial_ref"].attrs = {k: v for k, v in tile["spatial_ref"].attrs.items() if k != "spatial_ref"}
    return out


def _float32_coordinates(tile: xr.Dataset) -> xr.Dataset:
    return tile.assign_coords(x=tile.x.astype(np.float32), y=tile.y.astype(np.float32))


PLAIN: dict[str, Callable[[xr.Dataset], xr.Dataset]] = {
    "north-up": lambda t: t,
    "south-up": lambda t: t.isel(y=slice(None, None, -1)),
    "east-to-west": lambda t: t.isel(x=slice(None, None, -1)),
    "stored GeoTransform": lambda t: t.rio.write_transform(),
    "grid mapping named crs": _renamed_grid_mapping,
    "only crs_wkt": _only_crs_wkt,
    "custom CRS": lambda t: t.rio.write_crs(_POLAR),
    "float32 coordinates": _float32_coordinates,
    "uneven pixel size": lambda t: t.assign_coords(x=t.x * 1.0000001 + 0.3),
}


@pytest.mark.parametrize("variant", PLAIN)
def test_plain_grid_mapping_gives_rioxarrays_georeference(variant: str) -> None:
    tile = PLAIN[variant](_base())
    ours = _cf_georeference(tile)
    assert ours is not None
    x_dim, y_dim, crs, transform = ours
    theirs = _rioxarray_georeference(tile)
    assert (x_dim, y_dim) == theirs[:2]
    assert crs == theirs[2]
    assert crs.to_wkt() == theirs[2].to_wkt()
    assert tuple(transform) == tuple(theirs[3])  # bit for bit


def test_debug_store_opened_lazily_takes_the_plain_path(tmp_path: Path) -> None:
    tile = _base()
    put_zarr(tile, str(tmp_path / "tile.zarr"), None)
    with open_tile(tmp_path / "tile.zarr") as opened:
        ours = _cf_georeference(opened)
        assert ours is not None
        assert tuple(ours[3]) == tuple(_rioxarray_georeference(opened)[3])
        assert TileView(opened).georef == TileView(tile).georef


def _lon_lat(tile: xr.Dataset) -> xr.Dataset:
    renamed: xr.Dataset = tile.rename({"x": "longitude", "y": "latitude"}).rio.write_crs("EPSG:4326")
    return renamed


def _transform_only(tile: xr.Dataset) -> xr.Dataset:
    written: xr.Dataset = tile.rio.write_transform()
    return written.drop_vars(["x", "y"])


def _cf_parameters_only(tile: xr.Dataset) -> xr.Dataset:
    out = tile.copy()
    out["spatial_ref"].attrs = pyproj.CRS.from_epsg(32606).to_cf()
    del out["spatial_ref"].attrs["crs_wkt"]
    return out


def _one_column(tile: xr.Dataset) -> xr.Dataset:
    written: xr.Dataset = tile.rio.write_transform()
    return written.isel(x=slice(0, 1))


RIOXARRAY_ONLY: dict[str, Callable[[xr.Dataset], xr.Dataset]] = {
    "longitude/latitude dimensions": _lon_lat,
    "GeoTransform without coordinates": _transform_only,
    "CRS only as CF parameters": _cf_parameters_only,
    "one pixel wide": _one_column,
}


@pytest.mark.parametrize("variant", RIOXARRAY_ONLY)
def test_other_georeferences_are_left_to_rioxarray(variant: str) -> None:
    tile = RIOXARRAY_ONLY[variant](_base())
    assert _cf_georeference(tile) is None
    view = TileView(tile)
    assert view.georef.crs is not None
    assert view.georef.width == tile.sizes[view._dims[1]]


def test_rotated_transform_is_rejected_through_rioxarray() -> None:
    tile = _base()
    rotated = Affine.rotation(10) * Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 7000000.0)
    tile["spatial_ref"].attrs["GeoTransform"] = " ".join(str(v) for v in rotated.to_gdal())
    assert _cf_georeference(tile) is None
    with pytest.warns(UserWarning, match="rotation"), pytest.raises(InvalidTileError, match="Rotated"):
        TileView(tile)

"""Opening input tiles: Zarr (v3, consolidated or not) and NetCDF-4, on a local disk and on S3 (moto)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import xarray as xr

from darts_export.errors import ExportError, IncompleteStoreError, InputNotFoundError, InputReadError, InvalidInputError
from darts_export.formats.thumbnail import render_thumbnail
from darts_export.formats.zarr_store import write_debug_store
from darts_export.inputs import input_format, load_needed, open_tile
from darts_export.products import plan_products
from darts_export.synthetic import make_synthetic_tile
from darts_export.tile import TileView

FORMATS = ["zarr-consolidated", "zarr", "netcdf"]


@pytest.fixture(scope="module")
def tile() -> xr.Dataset:
    """A small tile plus an int16 band with a fill value and a float band stored scaled as int16."""
    base = make_synthetic_tile(32, seed=11)
    count = np.arange(32 * 32, dtype="int16").reshape(32, 32)
    count[0, :4] = -1
    scaled = (np.arange(32 * 32, dtype="float32").reshape(32, 32) * 0.25).astype("float32")
    tile = base.assign(count=(("y", "x"), count), scaled=(("y", "x"), scaled))
    tile["count"].encoding.update(_FillValue=-1)
    tile["scaled"].encoding.update(dtype="int16", scale_factor=0.25, add_offset=0.0, _FillValue=-32768)
    return tile


def write(tile: xr.Dataset, url: str, fmt: str, options: dict[str, Any] | None = None) -> None:
    """Save ``tile`` at ``url`` as ``fmt`` (one of FORMATS)."""
    if fmt == "netcdf":
        with fsspec.open(url, "wb", **(options or {})) as handle:
            handle.write(tile.to_netcdf(engine="h5netcdf"))
        return
    with warnings.catch_warnings():
        # zarr 3 warns that consolidated metadata is not (yet) part of the v3 spec; producers write it anyway.
        warnings.filterwarnings("ignore", "Consolidated metadata is currently not part", UserWarning)
        tile.to_zarr(url, storage_options=options, consolidated=fmt == "zarr-consolidated", mode="w", zarr_format=3)


def suffix(fmt: str) -> str:
    return ".nc" if fmt == "netcdf" else ".zarr"


@pytest.fixture
def s3_options(s3_storage_options: dict[str, Any]) -> dict[str, Any]:
    # A cached s3fs instance: an uncached one dropped mid-test leaves its aiohttp session unclosed (ResourceWarning).
    return {k: v for k, v in s3_storage_options.items() if k != "skip_instance_cache"}


def check_tile(opened: xr.Dataset, tile: xr.Dataset) -> None:
    """Values as stored, scale/offset decoded, CRS found."""
    assert opened.rio.crs == tile.rio.crs
    assert opened["count"].dtype == np.dtype("int16")  # not masked to float
    np.testing.assert_array_equal(opened["count"].values, tile["count"].values)  # -1 kept as stored
    assert opened["scaled"].dtype.kind == "f"
    np.testing.assert_allclose(opened["scaled"].values, tile["scaled"].values)
    for name in ("tc_brightness", "binarized_segmentation", "probabilities"):
        assert opened[name].dtype == tile[name].dtype
        np.testing.assert_array_equal(opened[name].values, tile[name].values)
    np.testing.assert_array_equal(opened["x"].values, tile["x"].values)


@pytest.mark.parametrize("fmt", FORMATS)
def test_local(fmt: str, tile: xr.Dataset, tmp_path: Path) -> None:
    path = tmp_path / f"tile{suffix(fmt)}"
    write(tile, str(path), fmt)
    with open_tile(path) as opened:
        check_tile(opened, tile)
    with open_tile(path.as_uri()) as opened:  # a file:// URL is a local path
        assert opened["count"].dtype == np.dtype("int16")


@pytest.mark.s3
@pytest.mark.parametrize("fmt", FORMATS)
def test_s3(fmt: str, tile: xr.Dataset, s3_bucket: str, s3_options: dict[str, Any]) -> None:
    url = f"s3://{s3_bucket}/in/T1/tile{suffix(fmt)}"
    write(tile, url, fmt, s3_options)
    with open_tile(url, storage_options=s3_options, require_consolidated=fmt == "zarr-consolidated") as opened:
        check_tile(opened, tile)


def test_memory_netcdf_is_read_lazily(tile: xr.Dataset) -> None:
    url = "memory://darts-test-inputs/lazy.nc"
    write(tile, url, "netcdf")
    try:
        opened = open_tile(url)
        assert not opened["count"].variable._in_memory  # nothing read yet
        np.testing.assert_array_equal(opened["count"].values, tile["count"].values)
        opened.close()
    finally:
        fsspec.filesystem("memory").rm("/darts-test-inputs", recursive=True)


@pytest.mark.s3
def test_require_consolidated_on_s3(tile: xr.Dataset, s3_bucket: str, s3_options: dict[str, Any]) -> None:
    url = f"s3://{s3_bucket}/in/T1/tile.zarr"
    write(tile, url, "zarr", s3_options)
    with pytest.raises(IncompleteStoreError, match="no consolidated metadata yet"):
        open_tile(url, storage_options=s3_options, require_consolidated=True)
    with open_tile(url, storage_options=s3_options) as opened:  # fine without the requirement
        assert opened["count"].dtype == np.dtype("int16")
    with pytest.raises(InputNotFoundError, match="does not exist"):
        open_tile(f"s3://{s3_bucket}/in/T2/tile.zarr", storage_options=s3_options, require_consolidated=True)


@pytest.mark.s3
@pytest.mark.parametrize("name", ["missing.zarr", "missing.nc"])
def test_missing_on_s3(name: str, s3_bucket: str, s3_options: dict[str, Any]) -> None:
    url = f"s3://{s3_bucket}/in/{name}"
    with pytest.raises(InputNotFoundError, match=f"{name}.*does not exist"):
        open_tile(url, storage_options=s3_options)


@pytest.mark.parametrize("name", ["missing.zarr", "missing.nc4", "file:///no/such/tile.zarr"])
def test_missing_local_path(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputNotFoundError, match=f"{name!r} does not exist") as info:
        open_tile(name)
    # one hierarchy: catchable as the built-in, the package's base and the input errors' base
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, ExportError)
    assert isinstance(info.value, InputReadError)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.nc", b"not a netcdf file", "does not start with the HDF5 signature"),
        ("classic.nc", b"CDF\x01" + bytes(60), "NetCDF-3"),
        ("empty.zarr", None, "does not exist \\(no zarr.json"),
    ],
)
def test_unreadable_input(name: str, content: bytes | None, message: str, tmp_path: Path) -> None:
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(InputReadError, match=message) as info:
        open_tile(path)
    assert str(path) in str(info.value)
    if content is not None:
        assert isinstance(info.value, InvalidInputError)
        assert isinstance(info.value, ValueError)


def test_truncated_zarr_array_is_invalid_input(tile: xr.Dataset, tmp_path: Path) -> None:
    path = tmp_path / "tile.zarr"
    write(tile, str(path), "zarr")
    (path / "count" / "zarr.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="as a Zarr store"):
        open_tile(path)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("tile.zarr", "zarr"),
        ("s3://b/T1/tile.zarr/", "zarr"),
        ("tile.NC", "netcdf"),
        ("tile.nc4", "netcdf"),
        ("memory://x/tile.h5", "netcdf"),
        ("store", "zarr"),
    ],
)
def test_input_format(source: str, expected: str) -> None:
    assert input_format(source) == expected


def test_load_needed_reads_what_the_export_needs_once_and_keeps_the_tile_lazy(tile: xr.Dataset, tmp_path: Path) -> None:
    url = str(tmp_path / "tile.zarr")
    write(tile, url, "zarr-consolidated")
    with open_tile(url) as lazy:
        loaded = load_needed(lazy, plan_products(["probabilities", "thumbnail"], ()))
        in_memory = {str(n) for n in loaded.data_vars if loaded[n].variable._in_memory}
        # The optical bands stay in storage: the thumbnail samples them (test below).
        assert in_memory == {"probabilities", "extent", "binarized_segmentation"}
        assert not lazy["nir"].variable._in_memory  # what the export does not need is never read
        optical = load_needed(lazy, plan_products(["thumbnail", "optical"], ()))
        assert all(optical[n].variable._in_memory for n in ("red", "green", "blue", "nir"))
        xr.testing.assert_identical(loaded.load(), lazy.load())
        everything = load_needed(lazy, plan_products(["metadata"], (), debug=True))
        assert all(everything[n].variable._in_memory for n in everything.data_vars)
    assert load_needed(tile, plan_products(["probabilities"], ())) is tile  # in memory already: as it is


@pytest.mark.parametrize("layout", ["plain", "debug store"])
def test_thumbnail_of_a_lazy_tile_samples_its_pixels_only(layout: str, tmp_path: Path) -> None:
    tile = make_synthetic_tile(1100, seed=12).isel(y=slice(None, None, -1))  # ascending y: a flipped view
    store = tmp_path / "tile.zarr"
    if layout == "plain":
        tile.to_zarr(store, zarr_format=3, consolidated=False)
    else:  # its quick-look holds the thumbnail's pixels: the bands' own chunks are never read
        write_debug_store(tile, store)
        for band in ("red", "green", "blue"):
            shutil.rmtree(store / band / "c")  # a read would now give NaN: the thumbnail would differ
    with open_tile(store) as lazy:
        planned = plan_products(["thumbnail"], ())
        lazy_view, memory_view = TileView(load_needed(lazy, planned)), TileView(tile)
        assert not lazy_view.dataset["red"].variable._in_memory
        if layout == "plain":
            rows, cols = np.array([0, 5, 1099]), np.array([3, 700, 1099, 4])
            for name in ("red", "extent"):
                sampled = lazy_view.sample(name, rows, cols)
                np.testing.assert_array_equal(sampled, memory_view.array(name)[rows[:, None], cols[None, :]])
        assert render_thumbnail(lazy_view, title="t") == render_thumbnail(memory_view, title="t")
        assert not lazy_view.dataset["red"].variable._in_memory  # sampled, never read whole

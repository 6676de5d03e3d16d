"""export_tile's raster products, metadata JSON and manifest on every storage backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import xarray as xr
from rio_cogeo.cogeo import cog_validate

from darts_export import Manifest, export_tile, missing_outputs, verify
from darts_export.synthetic import make_synthetic_tile
from helpers import Target, expected_binarized, expected_percent, multihash, read_back, read_raster

RASTER_BANDS = ["probabilities", "binarized", "optical", "dem", "tcvis", "metadata", "slope"]
SUBSETS = ["with_tcvis", "without_tcvis"]
META = {"tile_id": "T06WVS_2024", "model_version": "v2.1", "threshold": 0.5, "models": ["a", "b"]}


@pytest.fixture(scope="module")
def ensemble_tile() -> xr.Dataset:
    """A 600 × 700 tile (not a multiple of the block size) with two ensemble subsets."""
    tile = make_synthetic_tile(700, seed=3).isel(y=slice(0, 600))
    for i, subset in enumerate(SUBSETS):
        other = make_synthetic_tile(700, seed=10 + i, with_inputs=False).isel(y=slice(0, 600))
        tile[f"probabilities-{subset}"] = other["probabilities"]
        tile[f"binarized_segmentation-{subset}"] = other["binarized_segmentation"]
    return tile


@pytest.fixture(scope="module")
def exported(ensemble_tile: xr.Dataset) -> None:  # marker fixture: the tile must not change
    return None


def _cog_valid(tmp_path: Path, name: str, data: bytes) -> tuple[bool, list[str], list[str]]:
    local = tmp_path / name
    local.write_bytes(data)
    return cog_validate(str(local), quiet=True)


def test_raster_products_on_every_target(target: Target, ensemble_tile: xr.Dataset, tmp_path: Path) -> None:
    before = ensemble_tile.copy(deep=True)
    meta = dict(META)
    manifest = export_tile(
        ensemble_tile,
        target.out_dir,
        bands=RASTER_BANDS,
        ensemble_subsets=SUBSETS,
        metadata=meta,
        storage_options=target.storage_options,
    )

    # Caller's data untouched.
    assert meta == META
    xr.testing.assert_identical(ensemble_tile, before)

    expected_files = {
        "probabilities.tif",
        "probabilities-with_tcvis.tif",
        "probabilities-without_tcvis.tif",
        "binarized.tif",
        "binarized-with_tcvis.tif",
        "binarized-without_tcvis.tif",
        "optical.tif",
        "dem.tif",
        "tcvis.tif",
        "darts_inference.json",
        "slope.tif",
        "item.json",
    }
    assert {a.path for a in manifest.artifacts} == expected_files

    # Manifest on storage equals the returned one, and every size and checksum is true.
    stored = Manifest.from_json(read_back(target, "manifest.json"))
    assert stored == manifest
    assert stored.tile_id == "T06WVS_2024"
    assert stored.crs == "EPSG:32606"
    assert stored.shape == (600, 700)
    for artifact in manifest.artifacts:
        data = read_back(target, artifact.path)
        assert artifact.size == len(data)
        assert artifact.checksum == multihash(data)

    # Every GeoTIFF is a valid COG, carries the metadata tags and a nodata value.
    for artifact in manifest.artifacts:
        if not artifact.path.endswith(".tif"):
            continue
        data = read_back(target, artifact.path)
        valid, errors, _ = _cog_valid(tmp_path, artifact.path, data)
        assert valid, (artifact.path, errors)
        raster = read_raster(data)
        assert raster["tags"]["tile_id"] == "T06WVS_2024"
        assert raster["tags"]["threshold"] == "0.5"
        assert json.loads(raster["tags"]["models"]) == ["a", "b"]
        assert "DARTS_exportdate" in raster["tags"]
        assert raster["nodata"] is not None
        assert raster["crs"].to_epsg() == 32606
        assert raster["blocks"][0] == (512, 512)
        assert raster["compression"] is not None

    # Values equal the tile's.
    for name, var in [
        ("probabilities.tif", "probabilities"),
        ("probabilities-with_tcvis.tif", "probabilities-with_tcvis"),
    ]:
        raster = read_raster(read_back(target, name))
        np.testing.assert_array_equal(raster["array"][0], expected_percent(ensemble_tile[var].values))
        assert raster["nodata"] == 255
        assert raster["dtype"] == "uint8"
    binarized = read_raster(read_back(target, "binarized-without_tcvis.tif"))
    np.testing.assert_array_equal(
        binarized["array"][0],
        expected_binarized(
            ensemble_tile["binarized_segmentation-without_tcvis"].values, ensemble_tile["extent"].values
        ),
    )
    optical = read_raster(read_back(target, "optical.tif"))
    assert optical["descriptions"] == ("red", "green", "blue", "nir")
    for i, band in enumerate(("red", "green", "blue", "nir")):
        np.testing.assert_array_equal(optical["array"][i], ensemble_tile[band].values)
    dem = read_raster(read_back(target, "dem.tif"))
    assert dem["descriptions"] == ("slope", "relative_elevation")
    tcvis = read_raster(read_back(target, "tcvis.tif"))
    assert tcvis["dtype"] == "uint8"
    assert tcvis["nodata"] == 0
    np.testing.assert_array_equal(tcvis["array"][2], ensemble_tile["tc_wetness"].values)
    slope = read_raster(read_back(target, "slope.tif"))
    assert slope["descriptions"] == ("slope",)
    np.testing.assert_array_equal(slope["array"][0], ensemble_tile["slope"].values)
    assert json.loads(read_back(target, "darts_inference.json"))["model_version"] == "v2.1"

    # Completeness from the same registry the writer used.
    kwargs: dict[str, Any] = {"storage_options": target.storage_options}
    assert missing_outputs(target.out_dir, RASTER_BANDS, SUBSETS, **kwargs) == "none"
    assert missing_outputs(target.out_dir, [*RASTER_BANDS, "thumbnail"], SUBSETS, **kwargs) == "some"
    assert missing_outputs(target.out_dir + "/elsewhere", RASTER_BANDS, SUBSETS, **kwargs) == "all"
    target.fs().rm(target.path("binarized-with_tcvis.tif"))
    assert missing_outputs(target.out_dir, RASTER_BANDS, SUBSETS, **kwargs) == "some"
    report = verify(target.out_dir, **kwargs)
    assert not report.ok
    assert [(p.path, p.reason) for p in report.problems] == [("binarized-with_tcvis.tif", "missing")]


def test_probabilities_are_rounded_not_truncated(tmp_path: Path, tile_factory) -> None:  # type: ignore[no-untyped-def]
    tile = tile_factory(64, seed=1, with_inputs=False)
    # Halves exactly representable in float32 round up; truncation would give 12 for 0.129.
    values = np.array([0.0, 0.004, 0.125, 0.129, 0.375, 0.994, 0.999, 1.0, np.nan], dtype=np.float32)
    probs = tile["probabilities"].values.copy()
    probs[0, : values.size] = values
    tile = tile.assign(probabilities=(("y", "x"), probs))
    export_tile(tile, tmp_path, bands=["probabilities"])
    with rasterio.open(tmp_path / "probabilities.tif") as ds:
        row = ds.read(1)[0, : values.size]
    assert row.tolist() == [0, 0, 13, 13, 38, 99, 100, 100, 255]


def test_ascending_y_is_written_north_up(tmp_path: Path, small_tile: xr.Dataset) -> None:
    flipped = small_tile.isel(y=slice(None, None, -1))
    export_tile(flipped, tmp_path / "a", bands=["probabilities"])
    export_tile(small_tile, tmp_path / "b", bands=["probabilities"])
    with (
        rasterio.open(tmp_path / "a" / "probabilities.tif") as a,
        rasterio.open(tmp_path / "b" / "probabilities.tif") as b,
    ):
        assert a.transform == b.transform
        assert a.transform.e < 0
        np.testing.assert_array_equal(a.read(), b.read())


def test_overviews_use_suitable_resampling(tmp_path: Path, tile_factory) -> None:  # type: ignore[no-untyped-def]
    tile = tile_factory(2048, seed=5, with_inputs=False)
    export_tile(tile, tmp_path, bands=["probabilities", "binarized"])
    with rasterio.open(tmp_path / "probabilities.tif") as ds:
        assert ds.overviews(1) == [2, 4]
        overview = ds.read(1, out_shape=(1024, 1024))
        full = ds.read(1, masked=True).astype(np.float64)
    # AVERAGE: an overview pixel is the mean of its 2x2 valid block (within rounding).
    block = full[:2, :2]
    if not np.ma.is_masked(block):
        assert abs(float(overview[0, 0]) - float(block.mean())) <= 1.0
    full = expected_binarized(tile["binarized_segmentation"].values, tile["extent"].values)
    for level, factor in enumerate((2, 4)):
        # NEAREST: each overview pixel is one of its block's pixels, so nodata stays nodata, never 0.
        with rasterio.open(tmp_path / "binarized.tif", overview_level=level) as ds:
            assert ds.nodata == 255
            overview = ds.read(1)
        n = full.shape[0] // factor
        blocks = full.reshape(n, factor, n, factor).transpose(0, 2, 1, 3).reshape(n, n, factor * factor)
        assert (blocks == overview[:, :, None]).any(axis=2).all()
        assert (overview == 255).any()
        assert (overview == 1).any()


def test_manifest_lists_options_and_georeference(tmp_path: Path, small_tile: xr.Dataset) -> None:
    manifest = export_tile(small_tile, tmp_path, bands=["binarized"], metadata={"scene_id": "S2A_X"})
    doc = json.loads((tmp_path / "manifest.json").read_text())
    assert doc["tile_id"] == "S2A_X"
    assert doc["options"]["bands"] == ["binarized"]
    assert doc["artifacts"][0]["checksum"].startswith("1220")
    assert doc["artifacts"][0]["media_type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert doc["bounds"] == list(manifest.bounds)
    assert doc["transform"][0] == 10.0
    assert doc["version"]
    assert doc["created"].endswith("Z")


def test_tile_id_is_derived_deterministically_without_metadata(tmp_path: Path, small_tile: xr.Dataset) -> None:
    first = export_tile(small_tile, tmp_path / "a", bands=["binarized"])
    second = export_tile(small_tile, tmp_path / "b", bands=["binarized"])
    assert first.tile_id == second.tile_id == "EPSG32606_399960_7700040_256x256_10m"


def _raster_band(item: dict[str, Any], href: str) -> dict[str, Any]:
    (asset,) = (a for a in item["assets"].values() if a["href"] == href)
    bands: list[dict[str, Any]] = asset.get("raster:bands") or asset["bands"]
    return bands[0]


def test_binarized_is_nodata_outside_the_valid_extent(tmp_path: Path, tile_factory) -> None:  # type: ignore[no-untyped-def]
    tile = tile_factory(300, seed=4, with_inputs=False)
    extent = tile["extent"].values
    assert 0 < extent.mean() < 1
    export_tile(tile, tmp_path, bands=["binarized"])
    with rasterio.open(tmp_path / "binarized.tif") as ds:
        assert ds.nodata == 255
        np.testing.assert_array_equal(ds.read(1), expected_binarized(tile["binarized_segmentation"].values, extent))
        np.testing.assert_array_equal(ds.read_masks(1) == 0, extent == 0)
    # STAC statistics are over the valid pixels only: nodata is neither the maximum nor in the mean.
    band = _raster_band(json.loads((tmp_path / "item.json").read_text()), "./binarized.tif")
    mask = tile["binarized_segmentation"].values[extent > 0]
    assert band["nodata"] == 255
    assert band["statistics"]["minimum"] == 0
    assert band["statistics"]["maximum"] == 1
    assert band["statistics"]["mean"] == pytest.approx(mask.mean())
    assert band["statistics"]["valid_percent"] == pytest.approx(100 * (extent > 0).mean(), abs=0.01)


def test_binarized_without_extent_is_nodata_where_probabilities_are_nan(tmp_path: Path, tile_factory) -> None:  # type: ignore[no-untyped-def]
    tile = tile_factory(128, seed=6, with_inputs=False).drop_vars("extent")
    subset = tile["probabilities"].values.copy()
    subset[:, :40] = np.nan  # the subset's own invalid area, not the main one
    tile["probabilities-narrow"] = (("y", "x"), subset)
    tile["binarized_segmentation-narrow"] = tile["binarized_segmentation"]
    export_tile(tile, tmp_path, bands=["binarized"], ensemble_subsets=["narrow"])
    mask = tile["binarized_segmentation"].values
    for name, probabilities in (("binarized.tif", tile["probabilities"].values), ("binarized-narrow.tif", subset)):
        with rasterio.open(tmp_path / name) as ds:
            np.testing.assert_array_equal(ds.read(1), np.where(np.isnan(probabilities), 255, mask.astype(np.uint8)))

"""encode_cog and the percent conversion: exact values and statistics, against numpy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from rasterio.io import MemoryFile

from darts_export.formats import cog
from darts_export.formats.cog import CogOptions, Resampling, encode_cog
from darts_export.formats.rasters import MaskBytes, probabilities_to_percent
from darts_export.tile import GeoRef, TileView
from helpers import expected_percent, gdal_cog, overview_levels


@pytest.fixture(scope="module")
def view(request: pytest.FixtureRequest) -> TileView:
    return TileView(request.getfixturevalue("small_tile"))


@pytest.mark.parametrize(
    ("dtype", "nodata"),
    [(np.uint8, 255.0), (np.int16, -9999.0), (np.float32, math.nan), (np.float32, None)],
)
def test_statistics_are_exact_and_exclude_nodata(view: TileView, dtype: type, nodata: float | None) -> None:
    rng = np.random.default_rng(5)
    data: NDArray[Any] = (rng.random(view.georef.shape) * 200).astype(dtype)
    invalid = np.zeros(view.georef.shape, dtype=bool)
    invalid[:40] = True
    if nodata is not None:
        data[invalid] = nodata
    else:
        invalid[:] = False

    encoded = encode_cog([data], view.georef, nodata=nodata)

    values = data[~invalid].astype(np.float64)
    (stats,) = encoded.statistics
    assert stats.minimum == values.min()
    assert stats.maximum == values.max()
    assert stats.mean == pytest.approx(values.mean(), rel=1e-9)
    assert stats.stddev == pytest.approx(values.std(), rel=1e-6)  # population standard deviation
    assert stats.valid_percent == pytest.approx(100 * values.size / data.size, abs=0.01)
    with MemoryFile(encoded.data) as mf, mf.open() as ds:
        np.testing.assert_array_equal(ds.read(1), data)
        assert float(ds.tags(1)["STATISTICS_MAXIMUM"]) == pytest.approx(values.max())  # stored for GIS clients


def test_a_band_without_valid_pixels_has_undefined_statistics(view: TileView) -> None:
    empty = np.full(view.georef.shape, 255, dtype=np.uint8)
    full = np.zeros(view.georef.shape, dtype=np.uint8)
    encoded = encode_cog([empty, full], view.georef, nodata=255)
    none, zeros = encoded.statistics
    assert none.valid_percent == 0
    assert math.isnan(none.minimum)
    assert math.isnan(none.mean)
    assert (zeros.minimum, zeros.maximum, zeros.mean, zeros.valid_percent) == (0, 0, 0, 100)


def test_percent_rounds_halves_up_exactly_for_every_float32_near_a_half() -> None:
    # Every float32 within a few ulps of each k + 0.5 percent boundary, plus the specials.
    boundaries = (np.arange(0, 100) + 0.5) / 100
    near = [np.nextafter(np.float32(b), np.float32(d)) for b in boundaries for d in (0, 1)]
    values = np.array([*boundaries.astype(np.float32), *near, 0, 1, np.nan, -0.2, 1.7], dtype=np.float32)
    grid = np.resize(values, (7, values.size))  # several rows: exercises the block loop
    expected = np.where(np.isnan(grid), 255, np.clip(np.floor(grid.astype(np.float64) * 100 + 0.5), 0, 100))
    np.testing.assert_array_equal(probabilities_to_percent(grid), expected.astype(np.uint8))
    assert probabilities_to_percent(np.array([[0.125, 0.994, 0.995]], dtype=np.float32)).tolist() == [[13, 99, 100]]


def test_percent_of_a_wide_tile_is_the_reference_in_every_block() -> None:
    rng = np.random.default_rng(11)
    p = rng.random((300, 1500)).astype(np.float32)  # more than one 1-MiB block
    p[rng.random(p.shape) < 0.1] = np.nan
    np.testing.assert_array_equal(probabilities_to_percent(p), expected_percent(p))


def test_percent_fills_a_caller_array_band_by_band() -> None:
    rng = np.random.default_rng(3)
    p = rng.random((50, 40)).astype(np.float32)
    out = np.zeros(p.shape, dtype=np.uint8)
    probabilities_to_percent(p[:20], out[:20])
    probabilities_to_percent(p[20:], out[20:])
    np.testing.assert_array_equal(out, expected_percent(p))
    with pytest.raises(ValueError, match="uint8 of shape"):
        probabilities_to_percent(p, np.zeros((50, 41), dtype=np.uint8))


def test_a_band_computed_by_rows_gives_the_same_cog_as_its_array(
    view: TileView, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cog, "_WRITE_BLOCK_BYTES", 256 * 50)  # several blocks, the last one short
    mask = view.array("binarized_segmentation")
    probabilities = view.array("probabilities")
    rows = MaskBytes(mask, probabilities, lambda block, out: np.isnan(block, out=out))
    whole = np.where(np.isnan(probabilities), 255, mask).astype(np.uint8)
    assert (whole == 255).any()
    np.testing.assert_array_equal(np.asarray(rows), whole)
    by_rows = encode_cog([rows], view.georef, nodata=255)
    assert by_rows == encode_cog([whole], view.georef, nodata=255)
    with MemoryFile(by_rows.data) as mf, mf.open() as ds:
        np.testing.assert_array_equal(ds.read(1), whole)


def _odd_grid(view: TileView) -> GeoRef:
    """301 × 517 pixels: with 128-pixel blocks, three overview levels whose ratios are not all whole."""
    return GeoRef(crs=view.georef.crs, transform=view.georef.transform, width=517, height=301)


@pytest.mark.parametrize(
    ("resampling", "nodata", "count"), [("AVERAGE", 255, 1), ("NEAREST", 255, 1), ("AVERAGE", None, 2)]
)
def test_a_byte_cog_is_the_one_gdal_builds_itself(
    view: TileView, resampling: Resampling, nodata: float | None, count: int
) -> None:
    # The overviews computed before GDAL (and the histogram statistics in the tags) give GDAL's own file, byte for byte.
    georef = _odd_grid(view)
    rng = np.random.default_rng(2)
    bands = [rng.integers(0, 101, georef.shape).astype(np.uint8) for _ in range(count)]
    if nodata is not None:
        bands[0][rng.random(georef.shape) < 0.3] = 255
        bands[0][:40] = 255  # whole blocks of nodata
    options = CogOptions(blocksize=128, level=3)
    metadata: dict[str, Any] = {"nodata": nodata, "descriptions": [f"b{i}" for i in range(count)]}
    metadata["tags"] = {"tile_id": "T1", "note": 'a "quoted" <value> & more\nlines\r\tend'}
    encoded = encode_cog(bands, georef, resampling=resampling, options=options, **metadata)
    assert len(overview_levels(encoded.data)) == 3
    assert encoded.data == gdal_cog(bands, georef, options.creation_options(np.dtype(np.uint8), resampling), **metadata)


def test_float_bands_get_gdals_own_overviews(view: TileView) -> None:
    georef = _odd_grid(view)
    rng = np.random.default_rng(4)
    data = rng.random(georef.shape).astype(np.float32)
    data[rng.random(georef.shape) < 0.2] = np.nan
    options = CogOptions(blocksize=128)
    encoded = encode_cog([data], georef, nodata=math.nan, resampling="AVERAGE", options=options)
    reference = gdal_cog([data], georef, options.creation_options(data.dtype, "AVERAGE"), nodata=math.nan)
    ours, gdals = overview_levels(encoded.data), overview_levels(reference)
    assert len(ours) == 3
    for level, expected in zip(ours, gdals, strict=True):
        np.testing.assert_array_equal(level, expected)  # NaN where GDAL has NaN

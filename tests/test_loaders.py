"""The clients users load exports with read them with no extra arguments, and all read the same numbers.

odc-stac loads every band of every raster asset by its name (and the optical bands by their eo
common names) from the per-export item.json and from items.ndjson, and gets the COG's pixels;
odc-stac, rioxarray (``mask_and_scale=True``), rasterio and, where installed, stackstac (with
the README's ``proj:epsg`` recipe) read the same probability values.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import rioxarray
import xarray as xr

from catalog_helpers import shifted
from darts_export.export import export_tile
from darts_export.stac.collection import ITEMS_NDJSON_NAME, build_collection
from darts_export.synthetic import make_synthetic_tile
from helpers import fail_if_required

_BANDS = ["probabilities", "binarized", "optical", "dem", "tcvis", "ndvi"]
_COG = "image/tiff; application=geotiff; profile=cloud-optimized"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export with every raster product and an ensemble subset, catalogued (items.ndjson) below a root."""
    root = tmp_path_factory.mktemp("loaders") / "darts"
    tile = make_synthetic_tile(96, seed=61)
    tile = tile.assign(
        {
            "probabilities-m1": tile["probabilities"] ** 2,
            "binarized_segmentation-m1": tile["binarized_segmentation"],
            "ndvi": (tile["nir"] - tile["red"]) / (tile["nir"] + tile["red"] + 1),  # any variable: its own COG
        }
    )
    export_tile(
        shifted(tile, 20_000.0),
        root / "T06WVS",
        bands=_BANDS,
        ensemble_subsets=["m1"],
        metadata={"tile_id": "T06WVS", "datetime": "2023-07-01T10:00:00Z"},
    )
    build_collection(root)
    return root


def _items(root: Path) -> dict[str, pystac.Item]:
    """The same item as exported (relative hrefs, read from its file) and as catalogued (absolute hrefs)."""
    (row,) = [json.loads(line) for line in (root / ITEMS_NDJSON_NAME).read_text().splitlines()]
    return {
        "item.json": pystac.Item.from_file(str(root / "T06WVS" / "item.json")),
        "items.ndjson": pystac.Item.from_dict(row),
    }


def _cog_pixels(href: str, index: int) -> np.ndarray[Any, Any]:
    with rasterio.open(href) as ds:
        pixels: np.ndarray[Any, Any] = ds.read(index)
    return pixels


def test_odc_stac_loads_every_band_by_name(exported: Path) -> None:
    odc_stac = pytest.importorskip("odc.stac")
    for source, item in _items(exported).items():
        cogs = {key: asset for key, asset in item.assets.items() if asset.media_type == _COG}
        assert set(cogs) >= {"probabilities", "probabilities-m1", "binarized", "optical", "dem", "tcvis", "ndvi"}
        names = []
        for key, asset in cogs.items():
            href = asset.get_absolute_href()
            assert href is not None
            bands = asset.extra_fields["bands"]
            assert [b["name"] for b in asset.extra_fields["eo:bands"]] == [b["name"] for b in bands]
            for index, band in enumerate(bands, start=1):
                # A single-band asset is loaded by its key, a band of a multi-band asset by its name.
                name = key if len(bands) == 1 else band["name"]
                names.append(name)
                loaded = odc_stac.load([item], bands=[name])
                assert loaded[name].shape == (1, *item.properties["proj:shape"]), (source, name)
                expected = _cog_pixels(href, index)
                np.testing.assert_array_equal(loaded[name].isel(time=0).values, expected, (source, name))
        assert {"red", "green", "blue", "nir", "slope", "relative_elevation", "tc_brightness"} <= set(names)
        # The optical bands by their eo common names, all at once.
        rgb = odc_stac.load([item], bands=["red", "green", "blue", "nir"])
        assert rgb.odc.geobox.crs.epsg == 32606
        assert rgb.odc.geobox.transform == rasterio.Affine(*item.properties["proj:transform"])
        optical = item.assets["optical"].get_absolute_href()
        assert optical is not None
        np.testing.assert_array_equal(rgb["nir"].isel(time=0).values, _cog_pixels(optical, 4))


STACKSTAC_INSTALL = "pip install --no-deps stackstac==0.5.1"
"""stackstac 0.5.1 declares pandas<3 (it runs on the locked pandas 3), so pip cannot resolve it beside the
project; ``.ci/run`` installs it this way and sets ``DARTS_TEST_REQUIRE_STACKSTAC=1``."""


def _stackstac_installed() -> bool:
    if importlib.util.find_spec("stackstac") is not None:
        return True
    fail_if_required("DARTS_TEST_REQUIRE_STACKSTAC", f"stackstac is not installed: {STACKSTAC_INSTALL}")
    return False


def _require_stackstac() -> None:
    if not _stackstac_installed():
        pytest.skip(f"stackstac declares pandas<3, which the lock cannot resolve; to run this: {STACKSTAC_INSTALL}")


def _stackstac_recipe(item: pystac.Item) -> xr.DataArray:
    """The README's recipe: stackstac reads only ``proj:epsg``, which projection v2 replaced by ``proj:code``."""
    import stackstac

    items = [item.to_dict()]
    for it in items:
        it["properties"]["proj:epsg"] = int(it["properties"]["proj:code"].split(":")[1])
    stacked: xr.DataArray = stackstac.stack(items, assets=["probabilities"]).isel(time=0, band=0)
    return stacked


def _rioxarray_values(href: str) -> np.ndarray[Any, Any]:
    opened = rioxarray.open_rasterio(href, mask_and_scale=True)
    assert isinstance(opened, xr.DataArray)
    values: np.ndarray[Any, Any] = opened.isel(band=0).values
    return values


def test_every_client_reads_the_same_probability(exported: Path) -> None:
    odc_stac = pytest.importorskip("odc.stac")
    item = _items(exported)["items.ndjson"]
    asset = item.assets["probabilities"]
    href = asset.get_absolute_href()
    assert href is not None
    (band,) = asset.extra_fields["bands"]
    assert band["unit"] == "%"
    assert "scale" not in band
    assert "scale" not in asset.extra_fields["raster:bands"][0]

    with rasterio.open(href) as ds:
        raw = ds.read(1)
        assert ds.scales == (1.0,)
        assert ds.offsets == (0.0,)
        nodata = ds.nodata
    valid = raw != nodata
    assert valid.any()
    assert not valid.all()
    expected = raw[valid].astype(np.float64)
    assert expected.max() > 1  # percent, not a fraction

    values: dict[str, Any] = {
        "rasterio": expected,
        "rioxarray": _rioxarray_values(href)[valid],
        "odc-stac": odc_stac.load([item], bands=["probabilities"])["probabilities"].isel(time=0).values[valid],
    }
    if _stackstac_installed():
        values["stackstac"] = _stackstac_recipe(item).values[valid]
    for client, read in values.items():
        np.testing.assert_array_equal(np.asarray(read, dtype=np.float64), expected, err_msg=client)


def test_stackstac_recipe_gives_the_exported_grid(exported: Path) -> None:
    _require_stackstac()
    item = _items(exported)["items.ndjson"]
    stacked = _stackstac_recipe(item)
    href = item.assets["probabilities"].get_absolute_href()
    assert href is not None
    assert stacked.shape == tuple(item.properties["proj:shape"])
    assert tuple(stacked.transform)[:6] == pytest.approx(item.properties["proj:transform"])
    raw = _cog_pixels(href, 1).astype(np.float64)
    raw[raw == 255] = np.nan
    np.testing.assert_array_equal(stacked.values, raw)

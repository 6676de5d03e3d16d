"""The STAC Item: offline schema validation, projection/file/raster fields, same shape for every tile."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio.warp
import shapely
import xarray as xr
from shapely.geometry import shape

from darts_export.errors import InvalidTileError
from darts_export.formats.cog import BandStatistics, RasterBand
from darts_export.manifest import Artifact, Manifest
from darts_export.products import ITEM_NAME, MediaType
from darts_export.stac.footprint import FOOTPRINT_MAX_VERTICES, footprint, footprint_bbox
from darts_export.stac.item import acquisition_datetime, asset_key, build_item, encode_item
from darts_export.synthetic import make_synthetic_tile
from darts_export.tile import TileView
from stac_helpers import (
    OfflineValidator,
    SchemaFetchError,
    antimeridian_tile,
    fake_checksum,
    make_item,
    make_manifest,
    raster_bands,
    validate_offline,
)

# --- tests --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validator() -> OfflineValidator:
    return OfflineValidator()


def _skeleton(value: Any) -> Any:
    """The shape of a JSON value: keys and value types, not values (lists by their first element)."""
    if isinstance(value, dict):
        return {k: _skeleton(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_skeleton(value[0])] if value else []
    return type(value).__name__


def test_item_validates_offline_against_core_and_extension_schemas(validator: OfflineValidator) -> None:
    item = make_item(make_synthetic_tile(64, seed=1, with_inputs=False))
    used = validate_offline(item, validator)
    assert set(item.stac_extensions) == {
        "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
        "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        "https://stac-extensions.github.io/file/v2.1.0/schema.json",
        "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    }
    assert set(item.stac_extensions) <= set(used)
    assert any(uri.endswith("item-spec/json-schema/item.json") for uri in used)
    # The encoded bytes validate too, as a reader sees them.
    validate_offline(json.loads(encode_item(item)), validator)


def test_validator_refuses_to_fetch_and_catches_invalid_items(validator: OfflineValidator) -> None:
    data = make_item(make_synthetic_tile(32, seed=2, with_inputs=False)).to_dict(include_self_link=False)
    unknown = {**data, "stac_extensions": [*data["stac_extensions"], "https://example.com/ext/v1.0.0/schema.json"]}
    with pytest.raises(SchemaFetchError, match=r"example\.com"):
        validate_offline(unknown, validator)
    bad = json.loads(json.dumps(data))
    bad["properties"]["proj:shape"] = ["64", "64"]
    with pytest.raises(pystac.errors.STACValidationError):
        validate_offline(bad, validator)
    bad = json.loads(json.dumps(data))
    bad["assets"]["probabilities"]["file:checksum"] = "not-a-multihash!"
    with pytest.raises(pystac.errors.STACValidationError):
        validate_offline(bad, validator)


def test_projection_fields_describe_the_grid() -> None:
    tile = make_synthetic_tile(48, seed=3, with_inputs=False)
    georef = TileView(tile).georef
    props = make_item(tile).properties
    assert props["proj:code"] == "EPSG:32606"
    assert props["proj:shape"] == [48, 48]
    assert props["proj:transform"] == list(tuple(georef.transform)[:6])
    assert props["proj:bbox"] == list(georef.bounds)
    assert "proj:epsg" not in props  # projection v2 dropped it


def test_assets_carry_the_manifest_checksums_and_relative_hrefs() -> None:
    tile = make_synthetic_tile(32, seed=4, with_inputs=False)
    view = TileView(tile)
    manifest = make_manifest(view, tile_id="X", created="2024-05-01T12:00:00Z")
    item = build_item(manifest, view, metadata={}, raster_bands=raster_bands(view))
    assert len(item.assets) == len(manifest.artifacts)
    for artifact in manifest.artifacts:
        asset = item.assets[asset_key(artifact.path)]
        assert asset.href == f"./{artifact.path}"
        assert asset.media_type == artifact.media_type
        assert asset.roles == list(artifact.roles)
        if artifact.type == "file":
            assert asset.extra_fields["file:checksum"] == artifact.checksum
            assert asset.extra_fields["file:size"] == artifact.size
        else:  # a directory's checksum is darts-export's own definition, not a file's
            assert "file:checksum" not in asset.extra_fields
    assert set(item.assets) == {
        "probabilities",
        "prediction_segments-parquet",
        "prediction_segments-gpkg",
        "thumbnail",
        "darts_inference_debug",
    }
    band = item.assets["probabilities"].extra_fields["raster:bands"][0]
    assert band["name"] == "probabilities"
    assert band["data_type"] == "uint8"
    assert (band["nodata"], band["unit"]) == (255.0, "%")
    assert "scale" not in band  # every client reads the stored percent (issue 12)
    assert 0 < band["statistics"]["valid_percent"] <= 100
    encoded = json.loads(encode_item(item))
    assert not any(link["rel"] == "self" for link in encoded["links"])
    links = {link["rel"]: link["href"] for link in encoded["links"]}
    assert links == {
        "collection": "../collection.json",
        "root": "../collection.json",
        "parent": "../collection.json",
        "describedby": "./manifest.json",
    }
    assert encoded["collection"] == "darts"
    assert ITEM_NAME == "item.json"


def test_nan_nodata_and_empty_statistics_stay_valid_json(validator: OfflineValidator) -> None:
    tile = make_synthetic_tile(32, seed=5, with_inputs=False)
    view = TileView(tile)
    nan_stats = BandStatistics(minimum=np.nan, maximum=np.nan, mean=np.nan, stddev=np.nan, valid_percent=0.0)
    bands = {"probabilities.tif": (RasterBand(name="p", data_type="float32", nodata=np.nan, statistics=nan_stats),)}
    item = build_item(
        make_manifest(view, tile_id="N", created="2024-05-01T12:00:00Z"), view, metadata={}, raster_bands=bands
    )
    encoded = json.loads(encode_item(item))  # allow_nan=False: would raise on NaN
    band = encoded["assets"]["probabilities"]["raster:bands"][0]
    assert band["nodata"] == "nan"
    assert band["statistics"] == {"valid_percent": 0.0}
    validate_offline(encoded, validator)


def test_two_different_tiles_give_items_of_the_same_shape(validator: OfflineValidator) -> None:
    first = make_item(
        make_synthetic_tile(64, seed=11),
        tile_id="T06WVS",
        metadata={"tile_id": "T06WVS", "datetime": "2023-07-01T10:00:00Z", "cloud_cover": 3, "model": "v1"},
    )
    second = make_item(
        make_synthetic_tile(96, seed=12, with_inputs=False),
        tile_id="T07WXR",
        metadata={"tile_id": "T07WXR", "datetime": "2023-08-02", "cloud_cover": 12.5, "model": {"name": "v2"}},
    )
    a, b = (json.loads(encode_item(i)) for i in (first, second))
    assert a["properties"] != b["properties"]
    assert set(a["properties"]) == set(b["properties"])
    assert set(a["assets"]) == set(b["assets"])
    for key in ("properties", "assets", "links", "bbox", "stac_extensions"):
        assert _skeleton(a[key]) == _skeleton(b[key]), key
    assert a["properties"]["darts:cloud_cover"] == "3"
    assert b["properties"]["darts:cloud_cover"] == "12.5"
    for data in (a, b):
        validate_offline(data, validator)


def test_datetime_from_metadata_else_export_time() -> None:
    tile = make_synthetic_tile(32, seed=6, with_inputs=False)
    acquired = make_item(tile, metadata={"acquisition_time": "2023-06-15T10:30:00"})
    assert acquired.datetime is not None
    assert acquired.datetime.isoformat() == "2023-06-15T10:30:00+00:00"
    assert acquired.properties["created"] == "2024-05-01T12:00:00Z"
    offset = make_item(tile, metadata={"datetime": "2023-06-15T12:30:00+02:00"})
    assert offset.datetime == acquired.datetime
    exported = make_item(tile, metadata={})
    assert exported.datetime is not None
    assert exported.datetime.isoformat() == "2024-05-01T12:00:00+00:00"
    assert acquisition_datetime({"datetime": ""}) is None
    with pytest.raises(InvalidTileError, match="ISO 8601"):
        make_item(tile, metadata={"datetime": "15/06/2023"})


def test_footprint_covers_the_valid_pixels_with_few_vertices() -> None:
    tile = make_synthetic_tile(256, seed=8, with_inputs=False)
    view = TileView(tile)
    geometry = footprint(view)
    geom = shape(geometry)
    assert geom.is_valid
    assert geom.geom_type in ("Polygon", "MultiPolygon")
    assert shapely.get_num_coordinates(geom) <= FOOTPRINT_MAX_VERTICES
    rows, cols = np.nonzero(view.array("extent"))
    xs, ys = rasterio.transform.xy(view.georef.transform, rows, cols, offset="center")
    lon, lat = rasterio.warp.transform(view.georef.crs, "EPSG:4326", xs, ys)
    assert shapely.contains_xy(geom.buffer(1e-6), np.asarray(lon), np.asarray(lat)).all()
    tile_box = shapely.box(*rasterio.warp.transform_bounds(view.georef.crs, "EPSG:4326", *view.georef.bounds))
    assert geom.area < tile_box.area  # the invalid corner is cut off
    assert footprint_bbox(geometry) == pytest.approx(list(geom.bounds))


def test_footprint_is_split_at_the_antimeridian(validator: OfflineValidator) -> None:
    tile = antimeridian_tile()
    item = make_item(tile, tile_id="T60WXX")
    assert item.geometry is not None
    geom = shape(item.geometry)
    assert geom.geom_type == "MultiPolygon"
    assert geom.is_valid
    lons = shapely.get_coordinates(geom)[:, 0]
    assert lons.min() >= -180
    assert lons.max() <= 180
    assert lons.max() == pytest.approx(180)
    assert lons.min() == pytest.approx(-180)
    west, south, east, north = item.bbox or []
    assert west > east  # RFC 7946: a bbox across the antimeridian
    assert 170 < west < 180
    assert -180 < east < -170
    assert 69 < south < north < 71
    validate_offline(item, validator)


def test_build_item_leaves_its_inputs_alone() -> None:
    tile = make_synthetic_tile(32, seed=9, with_inputs=False)
    before = tile.copy(deep=True)
    metadata = {"tile_id": "A", "nested": {"k": [1, 2]}}
    snapshot = json.loads(json.dumps(metadata))
    make_item(tile, metadata=metadata)
    xr.testing.assert_identical(tile, before)
    assert metadata == snapshot


def test_clashing_asset_keys_are_rejected() -> None:
    tile = make_synthetic_tile(32, seed=10, with_inputs=False)
    view = TileView(tile)
    manifest = make_manifest(view, tile_id="C", created="2024-05-01T12:00:00Z")
    clash = Artifact(
        path="probabilities.json",
        size=1,
        checksum=fake_checksum("x"),
        media_type=MediaType.JSON,
        roles=("metadata",),
        product="probabilities",
    )
    manifest = Manifest(**{**manifest.__dict__, "artifacts": (*manifest.artifacts, clash)})
    with pytest.raises(InvalidTileError, match="asset key 'probabilities'"):
        build_item(manifest, view, metadata={}, raster_bands={})


@pytest.mark.parametrize(("shape", "factor"), [((37, 53), 5), ((40, 40), 8), ((7, 300), 11), ((64, 64), 1000)])
def test_block_any_equals_a_reduceat_reference(shape: tuple[int, int], factor: int) -> None:
    from darts_export.stac.footprint import _block_any

    mask = np.random.default_rng(sum(shape)).random(shape) > 0.97
    rows = np.logical_or.reduceat(mask, np.arange(0, shape[0], factor), axis=0)
    expected = np.logical_or.reduceat(rows, np.arange(0, shape[1], factor), axis=1)
    np.testing.assert_array_equal(_block_any(mask, factor), expected)

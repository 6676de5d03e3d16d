"""Vector products on small hand-made tiles: geometry, statistics, GeoParquet 1.1 and GeoPackage."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import geopandas as gpd
import jsonschema
import numpy as np
import pyarrow.parquet as pq
import pyogrio
import pyproj
import pytest
import rasterio.features
import shapely
import xarray as xr
from affine import Affine
from geopandas.testing import assert_geodataframe_equal
from rasterio.crs import CRS
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from darts_export import export_tile
from darts_export.encoders import OBJECT_COLUMNS, object_frame
from darts_export.errors import InvalidTileError
from darts_export.formats.polygons import EXTENT_COLUMNS, _components, _Runs, polygonize_extent, polygonize_objects
from darts_export.formats.vector_files import GPKG_TIMESTAMP, encode_geoparquet, write_geopackage
from darts_export.tile import GeoRef
from helpers import SCHEMAS, expected_percent

# Pixel (row, col) covers x in [X0 + 10 col, X0 + 10 (col + 1)], y in [Y0 - 10 (row + 1), Y0 - 10 row].
X0, Y0, PIXEL = 399960.0, 7700040.0, 10.0
EPSG = 32606
EIGHT = np.ones((3, 3), dtype=bool)


def georef(height: int, width: int) -> GeoRef:
    return GeoRef(crs=CRS.from_epsg(EPSG), transform=Affine(PIXEL, 0, X0, 0, -PIXEL, Y0), width=width, height=height)


def pixel_box(row0: int, col0: int, row1: int, col1: int) -> shapely.Polygon:
    """The exact outline of pixels ``[row0, row1) x [col0, col1)``."""
    return shapely.box(X0 + PIXEL * col0, Y0 - PIXEL * row1, X0 + PIXEL * col1, Y0 - PIXEL * row0)


def read_only(array: np.ndarray) -> np.ndarray:
    """A read-only copy, so any attempt to modify the caller's data raises."""
    copy = np.array(array)
    copy.flags.writeable = False
    return copy


def same_shape(actual: Any, expected: Any) -> bool:
    """Exactly the same vertices (after normalising ring start and order)."""
    return bool(shapely.equals_exact(shapely.normalize(actual), shapely.normalize(expected), tolerance=0))


def assert_regions_match_labels(frame: gpd.GeoDataFrame, mask: np.ndarray, geo: GeoRef) -> None:
    """One row per 8-connected region, in ndimage's (raster) order, covering exactly its pixels."""
    labels, count = ndimage.label(mask, structure=EIGHT)
    assert len(frame) == count
    assert frame["Region_ID"].tolist() == list(range(1, count + 1))
    assert shapely.is_valid(frame.geometry.values).all()
    assert set(frame.geom_type) <= {"MultiPolygon"}
    # Each row's area is exactly its pixels' area, so rows cannot overlap, and burning every row with its
    # Region_ID (pixel centres inside) reproduces ndimage's labels.
    areas = frame.geometry.area.to_numpy() / (PIXEL * PIXEL)
    np.testing.assert_array_equal(areas, np.bincount(labels.ravel(), minlength=count + 1)[1:])
    shapes = zip(frame.geometry, frame["Region_ID"].tolist(), strict=True)
    burnt = rasterio.features.rasterize(shapes, out_shape=geo.shape, transform=geo.transform, dtype="int32")
    np.testing.assert_array_equal(burnt, labels)


@pytest.fixture
def objects_tile() -> tuple[np.ndarray, np.ndarray, GeoRef]:
    """An L-shaped blob, two pixels touching only at a corner, a ring with a hole, NaN probabilities."""
    mask = np.zeros((8, 10), dtype=bool)
    mask[1, 1:4] = True  # L: row 1, cols 1-3 ...
    mask[2, 1] = True  # ... plus (2, 1)
    mask[0, 8] = mask[1, 9] = True  # diagonal pair
    mask[4:7, 5:8] = True  # 3 x 3 ring ...
    mask[5, 6] = False  # ... with a one-pixel hole
    rng = np.random.default_rng(3)
    probabilities = rng.random(mask.shape).astype(np.float32)
    probabilities[1, 2] = 0.125  # a half that rounds up, as in probabilities.tif
    probabilities[4, 5] = np.nan
    return mask, probabilities, georef(*mask.shape)


def test_objects_exact_geometry_diagonal_and_hole(objects_tile: tuple[np.ndarray, np.ndarray, GeoRef]) -> None:
    mask, probabilities, geo = objects_tile
    frame = object_frame(read_only(mask), geo, read_only(probabilities))

    assert list(frame.columns) == list(OBJECT_COLUMNS)
    assert frame.crs == pyproj.CRS.from_epsg(EPSG)
    assert frame["Region_ID"].tolist() == [1, 2, 3]  # raster order of first pixels: (0, 8), (1, 1), (4, 5)
    assert frame["npixel"].tolist() == [2, 4, 8]
    diagonal, blob, ring = frame.geometry

    # The diagonal pair is one row: two squares meeting at one corner.
    assert diagonal.geom_type == "MultiPolygon"
    assert same_shape(diagonal, shapely.MultiPolygon([pixel_box(0, 8, 1, 9), pixel_box(1, 9, 2, 10)]))

    # The L, vertex by vertex at pixel edges, counter-clockwise.
    def x(col: float) -> float:
        return X0 + PIXEL * col

    def y(row: float) -> float:
        return Y0 - PIXEL * row

    outline = [(x(1), y(1)), (x(1), y(3)), (x(2), y(3)), (x(2), y(2)), (x(4), y(2)), (x(4), y(1))]
    assert same_shape(blob, shapely.MultiPolygon([shapely.Polygon(outline)]))
    assert shapely.Polygon(blob.geoms[0].exterior).exterior.is_ccw

    # The ring keeps its hole, which is exactly the missing pixel and runs clockwise.
    (polygon,) = ring.geoms
    assert len(polygon.interiors) == 1
    assert same_shape(shapely.Polygon(polygon.interiors[0]), pixel_box(5, 6, 6, 7))
    assert same_shape(polygon, pixel_box(4, 5, 7, 8).difference(pixel_box(5, 6, 6, 7)))
    assert polygon.exterior.is_ccw
    assert not polygon.interiors[0].is_ccw

    assert_regions_match_labels(frame, mask, geo)


def test_stats_equal_numpy_on_the_same_pixels(objects_tile: tuple[np.ndarray, np.ndarray, GeoRef]) -> None:
    mask, probabilities, geo = objects_tile
    frame = object_frame(mask, geo, probabilities)
    labels, _ = ndimage.label(mask, structure=EIGHT)
    percent = expected_percent(probabilities).astype(np.float64)
    percent[percent == 255] = np.nan
    for row in frame.itertuples():
        values = percent[labels == row.Region_ID]
        known = values[~np.isnan(values)]
        assert row.npixel == values.size
        expected = [known.min(), known.max(), known.mean(), np.median(known), known.std(ddof=0)]
        np.testing.assert_allclose([row.min, row.max, row.mean, row.median, row.std], expected, rtol=1e-12)
    assert frame.loc[frame["Region_ID"] == 2, "min"].item() == 13.0  # 0.125 → 13 %, never 12.5
    assert frame[["min", "max"]].to_numpy() == pytest.approx(np.round(frame[["min", "max"]].to_numpy()))


def test_stats_do_not_depend_on_other_inputs(objects_tile: tuple[np.ndarray, np.ndarray, GeoRef]) -> None:
    mask, probabilities, geo = objects_tile
    reference = object_frame(mask, geo, probabilities)
    polygonize_extent(~mask, geo)  # other products before or after must not matter
    outside_changed = np.where(mask, probabilities, np.float32(0.99))
    as_float64 = probabilities.astype(np.float64)
    for other in (outside_changed, as_float64, probabilities):
        frame = object_frame(mask, geo, other)
        assert_geodataframe_equal(frame, reference)
    np.testing.assert_array_equal(probabilities, objects_tile[1])  # the caller's array is untouched


def test_stats_from_the_percent_array_of_the_cog_equal_those_from_probabilities(
    objects_tile: tuple[np.ndarray, np.ndarray, GeoRef],
) -> None:
    mask, probabilities, geo = objects_tile
    percent = read_only(expected_percent(probabilities))  # what the export converted once for the COG
    from_percent = object_frame(mask, geo, None, percent=percent)
    assert_geodataframe_equal(from_percent, object_frame(mask, geo, probabilities))
    # Given both, the percent array is used as is (the probabilities are not converted again).
    assert_geodataframe_equal(object_frame(mask, geo, probabilities * 0, percent=percent), from_percent)


def test_object_pixels_say_which_row_they_belong_to(objects_tile: tuple[np.ndarray, np.ndarray, GeoRef]) -> None:
    mask, _, geo = objects_tile
    objects = polygonize_objects(mask, geo)
    labels, _ = ndimage.label(mask, structure=EIGHT)
    flat = labels.ravel()
    assert sorted(objects.pixels.tolist()) == np.flatnonzero(mask).tolist()
    np.testing.assert_array_equal(objects.frame["Region_ID"].to_numpy()[objects.regions], flat[objects.pixels])
    assert list(objects.frame.columns) == ["Region_ID", "geometry"]


def test_objects_without_probabilities_have_nan_stats(objects_tile: tuple[np.ndarray, np.ndarray, GeoRef]) -> None:
    mask, _, geo = objects_tile
    frame = object_frame(mask.astype(np.uint8), geo, None)
    assert frame["npixel"].tolist() == [2, 4, 8]
    assert frame[["min", "max", "mean", "median", "std"]].isna().all().all()


def test_objects_match_labelling_on_a_dense_random_mask() -> None:
    # Dense enough that many objects touch only diagonally, also across the internal 32-px search cells.
    mask = np.random.default_rng(1).random((90, 110)) < 0.3
    geo = georef(*mask.shape)
    assert_regions_match_labels(object_frame(mask, geo, None), mask, geo)


@pytest.mark.parametrize(
    ("shape", "density"),
    [((0, 7), 0.5), ((1, 1), 1.0), ((1, 300), 0.6), ((300, 1), 0.6), ((57, 83), 0.0), ((57, 83), 1.0)]
    + [((120, 97), d) for d in (0.05, 0.3, 0.45, 0.6, 0.9)],
)
def test_labels_are_scipys(shape: tuple[int, int], density: float) -> None:
    # The labelling replaced scipy.ndimage.label (whose import was a quarter of a cold export's imports).
    mask = np.random.default_rng(round(density * 100)).random(shape) < density
    expected, count = ndimage.label(mask, structure=EIGHT)
    runs = _Runs.of(mask)
    labels, found = runs.components()
    assert found == count
    assert np.array_equal(runs.paint(mask.shape, labels + 1, np.int32), expected)


@pytest.mark.parametrize("edges", [0, 1, 40, 300, 3000])
def test_components_are_scipys(edges: int) -> None:
    rng = np.random.default_rng(edges)
    left, right = rng.integers(0, 500, edges), rng.integers(0, 500, edges)
    graph = sparse.coo_array((np.ones(edges), (left, right)), shape=(500, 500))
    count, expected = csgraph.connected_components(graph, directed=False)
    labels, found = _components(500, left, right)
    assert found == count
    assert np.array_equal(labels, expected)


def test_object_crossing_cells_diagonally_is_one_row() -> None:
    mask = np.zeros((70, 70), dtype=bool)
    mask[31, 31] = mask[32, 32] = mask[33, 33] = True  # a diagonal chain across a cell corner
    geo = georef(*mask.shape)
    frame = object_frame(mask, geo, None)
    assert frame["npixel"].tolist() == [3]
    assert_regions_match_labels(frame, mask, geo)


def test_object_inside_another_objects_bounding_box() -> None:
    mask = np.zeros((100, 100), dtype=bool)
    mask[0:81, 5] = True  # an L over many 32-px cells ...
    mask[80, 5:81] = True
    mask[5:8, 70:73] = True  # ... whose bounding box holds a far-away blob
    geo = georef(*mask.shape)
    frame = object_frame(mask, geo, None)
    assert frame["npixel"].tolist() == [156, 9]  # each object once, not again inside the other's window
    assert_regions_match_labels(frame, mask, geo)


def test_gdal_traces_a_few_packed_rasters_not_one_per_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each rasterio.features.shapes() call opens a GDAL environment (a boto3 session, 17 ms, whenever AWS
    # credentials are in the environment), so the windows are packed and traced together.
    calls: list[tuple[int, ...]] = []
    shapes = rasterio.features.shapes

    def counting(source: np.ndarray, **kwargs: Any) -> Any:
        calls.append(source.shape)
        return shapes(source, **kwargs)

    monkeypatch.setattr(rasterio.features, "shapes", counting)
    rng = np.random.default_rng(11)
    mask = np.zeros((400, 520), dtype=bool)
    mask[::70, ::70] = True  # far-apart objects, in windows of their own ...
    mask[5::70, 5::70] = rng.random(mask[5::70, 5::70].shape) < 0.5
    mask[200:260, 100:300] = rng.random((60, 200)) < 0.4  # ... and a window full of diagonal touches
    geo = georef(*mask.shape)
    objects = object_frame(mask, geo, None)
    assert len(calls) == 1
    assert len(objects) > 150
    assert_regions_match_labels(objects, mask, geo)

    calls.clear()
    valid = rng.random(mask.shape) > 0.002  # nodata specks in nearly every block: many runs of mixed blocks
    valid[:, :7] = False
    valid[130:390, 150:500] = True  # fully valid blocks, traced at block resolution
    extent = polygonize_extent(valid, geo)
    assert len(calls) == 2
    assert_regions_match_labels(extent, valid, geo)


def test_extent_ragged_edge_islands_and_holes() -> None:
    height, width = 300, 280  # larger than the 128-px blocks traced whole, with partial edge blocks
    rng = np.random.default_rng(5)
    border = np.clip(60 + np.cumsum(rng.integers(-3, 4, height)), 20, width)
    valid = np.arange(width)[None, :] >= border[:, None]
    valid[150:153, 200:203] = False  # a nodata hole inside the valid area
    valid[20:22, 0:2] = True  # an island in the nodata ...
    valid[22, 2] = True  # ... with a pixel touching it only at a corner
    geo = georef(height, width)
    frame = polygonize_extent(read_only(valid), geo)
    assert list(frame.columns) == list(EXTENT_COLUMNS)
    assert frame.crs == pyproj.CRS.from_epsg(EPSG)
    assert_regions_match_labels(frame, valid, geo)
    assert len(frame) == 2
    main, island = frame.geometry  # raster order: the main area starts in row 0, the island in row 20
    assert same_shape(island, shapely.MultiPolygon([pixel_box(20, 0, 22, 2), pixel_box(22, 2, 23, 3)]))
    (polygon,) = main.geoms
    assert [same_shape(shapely.Polygon(ring), pixel_box(150, 200, 153, 203)) for ring in polygon.interiors] == [True]
    # Exact edges and no redundant vertices: every vertex is a pixel corner where the outline turns.
    xy = shapely.get_coordinates(main)
    np.testing.assert_array_equal((xy - [X0, Y0]) % PIXEL, 0)
    assert shapely.get_num_coordinates(main) == shapely.get_num_coordinates(shapely.simplify(main, 0))


def test_all_valid_extent_is_the_tile_rectangle() -> None:
    geo = georef(260, 300)
    frame = polygonize_extent(np.ones(geo.shape, dtype=bool), geo)
    assert same_shape(frame.geometry.iloc[0], shapely.MultiPolygon([pixel_box(0, 0, 260, 300)]))


def test_empty_tile_gives_empty_files_with_columns_and_crs(tmp_path: Path) -> None:
    geo = georef(40, 50)
    empty = np.zeros(geo.shape, dtype=bool)
    for frame, columns in (
        (object_frame(empty, geo, np.full(geo.shape, 0.2)), OBJECT_COLUMNS),
        (polygonize_extent(empty, geo), EXTENT_COLUMNS),
    ):
        assert len(frame) == 0
        assert list(frame.columns) == list(columns)
        data = encode_geoparquet(frame)
        parquet = gpd.read_parquet(io.BytesIO(data))
        assert len(parquet) == 0
        assert list(parquet.columns) == list(columns)
        assert parquet.crs == pyproj.CRS.from_epsg(EPSG)
        assert pq.read_schema(io.BytesIO(data)).names == [*columns, "bbox"]
        validate_geo(geo_metadata(data))
        path = tmp_path / "empty.gpkg"
        write_geopackage(frame, path, layer="empty")
        info = pyogrio.read_info(path, layer="empty")
        assert info["features"] == 0
        assert set(columns) - {"geometry"} <= set(info["fields"])
        assert pyproj.CRS.from_user_input(info["crs"]) == pyproj.CRS.from_epsg(EPSG)
    objects = object_frame(empty, geo, None)
    assert objects.dtypes.astype(str).tolist()[:-1] == ["int64", *["float64"] * 5, "int64"]


# --- formats ---------------------------------------------------------------------------


def validate_geo(metadata: dict[str, Any]) -> None:
    """Validate against the official GeoParquet 1.1 schema, offline.

    The schema's ``crs`` refers to the PROJJSON schema on proj.org; PROJ ships that very
    schema (same ``$id``), so it is served from pyproj's data folder and nothing is fetched.
    """
    schema = json.loads((SCHEMAS / "geoparquet" / "schema-v1.1.0.json").read_text())
    projjson = json.loads((Path(pyproj.datadir.get_data_dir()) / "projjson.schema.json").read_text())

    def no_network(uri: str) -> Resource[Any]:
        raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs class behind referencing's own decorator

    registry: Registry[Any] = Registry(retrieve=no_network).with_resource(  # type: ignore[call-arg]
        projjson["$id"], Resource.from_contents(projjson)
    )
    validator = jsonschema.validators.validator_for(schema)(schema, registry=registry)
    validator.validate(metadata)


def geo_metadata(data: bytes) -> dict[str, Any]:
    metadata: dict[str, Any] = json.loads(pq.read_schema(io.BytesIO(data)).metadata[b"geo"])
    return metadata


@pytest.fixture
def objects_frame(objects_tile: tuple[np.ndarray, np.ndarray, GeoRef]) -> gpd.GeoDataFrame:
    mask, probabilities, geo = objects_tile
    return object_frame(mask, geo, probabilities)


def test_geoparquet_is_valid_1_1_with_projjson_bbox_and_zstd(objects_frame: gpd.GeoDataFrame) -> None:
    data = encode_geoparquet(objects_frame)
    geo = geo_metadata(data)
    validate_geo(geo)  # including the CRS against the PROJJSON schema
    assert geo["version"] == "1.1.0"
    column = geo["columns"][geo["primary_column"]]
    assert column["encoding"] == "WKB"
    assert column["geometry_types"] == ["MultiPolygon"]
    assert pyproj.CRS.from_json_dict(column["crs"]) == pyproj.CRS.from_epsg(EPSG)
    assert column["crs"]["id"] == {"authority": "EPSG", "code": EPSG}
    assert column["covering"]["bbox"] == {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}

    metadata = pq.read_metadata(io.BytesIO(data))
    chunks = [
        metadata.row_group(g).column(c) for g in range(metadata.num_row_groups) for c in range(metadata.num_columns)
    ]
    assert chunks
    assert {chunk.compression for chunk in chunks} == {"ZSTD"}

    table = pq.read_table(io.BytesIO(data))
    bounds = np.array([[b["xmin"], b["ymin"], b["xmax"], b["ymax"]] for b in table.column("bbox").to_pylist()])
    np.testing.assert_allclose(bounds, objects_frame.geometry.bounds.to_numpy(), rtol=1e-7)  # float32-safe

    back = gpd.read_parquet(io.BytesIO(data))  # geopandas hides the covering column
    assert_geodataframe_equal(back, objects_frame, check_crs=True)


def test_geopackage_reads_back_equal_to_geoparquet(objects_frame: gpd.GeoDataFrame, tmp_path: Path) -> None:
    path = tmp_path / "prediction_segments.gpkg"
    write_geopackage(objects_frame, path, layer="stale")  # an existing file is replaced, not updated
    write_geopackage(objects_frame, path, layer="prediction_segments")

    info = pyogrio.read_info(path, layer="prediction_segments")
    assert info["geometry_type"] == "MultiPolygon"
    assert pyproj.CRS.from_user_input(info["crs"]) == pyproj.CRS.from_epsg(EPSG)
    assert [name for name, *_ in pyogrio.list_layers(path)] == ["prediction_segments"]

    from_gpkg = pyogrio.read_dataframe(path, layer="prediction_segments")
    from_parquet = gpd.read_parquet(io.BytesIO(encode_geoparquet(objects_frame)))
    assert_geodataframe_equal(from_gpkg[list(OBJECT_COLUMNS)], from_parquet, check_crs=True)


def test_geopackage_is_byte_reproducible(objects_frame: gpd.GeoDataFrame, tmp_path: Path) -> None:
    first, second = tmp_path / "a.gpkg", tmp_path / "b.gpkg"
    write_geopackage(objects_frame, first, layer="prediction_segments")
    write_geopackage(objects_frame.copy(), second, layer="prediction_segments")
    assert first.read_bytes() == second.read_bytes()
    with sqlite3.connect(first) as db:
        (last_change,) = db.execute("SELECT last_change FROM gpkg_contents").fetchone()
    assert last_change.startswith(GPKG_TIMESTAMP.removesuffix("Z"))  # pinned, not the wall clock
    assert pyogrio.get_gdal_config_option("OGR_CURRENT_DATE") is None  # restored after the write


def gpkg_version(path: Path) -> tuple[int, int]:
    """The GeoPackage ``application_id`` and ``user_version`` SQLite headers (e.g. 10200 for 1.2)."""
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA application_id").fetchone()[0], db.execute("PRAGMA user_version").fetchone()[0]


def test_geopackage_is_version_1_2_unless_asked_for_newer(objects_frame: gpd.GeoDataFrame, tmp_path: Path) -> None:
    gpkg = int.from_bytes(b"GPKG", "big")
    default, newer = tmp_path / "default.gpkg", tmp_path / "newer.gpkg"
    write_geopackage(objects_frame, default, layer="prediction_segments")
    write_geopackage(objects_frame, newer, layer="prediction_segments", version="1.4")
    assert gpkg_version(default) == (gpkg, 10200)
    assert gpkg_version(newer) == (gpkg, 10400)
    assert_geodataframe_equal(pyogrio.read_dataframe(default), pyogrio.read_dataframe(newer))
    with pytest.raises(InvalidTileError, match="version"):
        write_geopackage(objects_frame, newer, layer="prediction_segments", version="2.0")  # type: ignore[arg-type]


def test_invalid_inputs_are_rejected_before_any_work(tmp_path: Path) -> None:
    geo = georef(4, 5)
    with pytest.raises(InvalidTileError, match="shape"):
        object_frame(np.zeros((5, 4), dtype=bool), geo, None)
    with pytest.raises(InvalidTileError, match="floating-point"):
        object_frame(np.zeros((4, 5), dtype=bool), geo, np.zeros((4, 5), dtype=np.uint8))
    with pytest.raises(InvalidTileError, match="shape"):
        polygonize_extent(np.zeros(5, dtype=bool), geo)
    frame = polygonize_extent(np.ones((4, 5), dtype=bool), geo)
    with pytest.raises(InvalidTileError, match="CRS"):
        encode_geoparquet(frame.set_crs(None, allow_override=True))
    with pytest.raises(InvalidTileError, match="layer"):
        write_geopackage(frame, tmp_path / "x.gpkg", layer="")


# --- through export_tile ------------------------------------------------------------------


def test_export_stats_match_the_exported_probability_rasters_for_every_subset(
    small_tile: xr.Dataset, tmp_path: Path
) -> None:
    tile = small_tile.copy()
    tile["probabilities-lowered"] = tile["probabilities"] * 0.9
    tile["binarized_segmentation-lowered"] = tile["binarized_segmentation"]
    bands = ["polygonized", "probabilities"]
    export_tile(tile, tmp_path / "a", bands=bands, ensemble_subsets=["lowered"])
    # Other products, in another order, must change neither the statistics nor a byte of the vectors.
    export_tile(tile, tmp_path / "b", bands=["thumbnail", "extent", *bands[::-1]], ensemble_subsets=["lowered"])

    for suffix in ("", "-lowered"):
        frame = gpd.read_parquet(tmp_path / "a" / f"prediction_segments{suffix}.parquet")
        with rasterio.open(tmp_path / "a" / f"probabilities{suffix}.tif") as raster:
            percent = raster.read(1).astype(np.float64)
            percent[percent == raster.nodata] = np.nan
            shapes = zip(frame.geometry, frame["Region_ID"].tolist(), strict=True)
            labels = rasterio.features.rasterize(shapes, out_shape=raster.shape, transform=raster.transform)
        assert len(frame) > 0
        for row in frame.itertuples():
            values = percent[labels == row.Region_ID]
            known = values[~np.isnan(values)]
            assert row.npixel == values.size
            expected = [known.min(), known.max(), known.mean(), np.median(known), known.std()]
            np.testing.assert_allclose([row.min, row.max, row.mean, row.median, row.std], expected, rtol=1e-12)
        for ext in ("parquet", "gpkg"):
            name = f"prediction_segments{suffix}.{ext}"
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert gpkg_version(tmp_path / "a" / f"prediction_segments{suffix}.gpkg")[1] == 10200
        assert [name for name, _ in pyogrio.list_layers(tmp_path / "a" / f"prediction_segments{suffix}.gpkg")] == [
            f"prediction_segments{suffix}"
        ]

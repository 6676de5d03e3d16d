"""The STAC Collection over many exports: walk, extent, relative links, items.parquet, offline validation."""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow.parquet as pq
import pystac
import pytest
import shapely
from shapely.geometry.base import BaseGeometry
from stac_geoparquet.arrow import stac_table_to_items

from darts_export.errors import ExportError, NoItemsError
from darts_export.export import export_tile
from darts_export.products import ITEM_NAME
from darts_export.stac.collection import COLLECTION_NAME, ITEMS_PARQUET_NAME, build_collection, rebase_item, union_bbox
from darts_export.stac.item import asset_key, encode_item
from darts_export.storage import Storage
from darts_export.synthetic import make_synthetic_tile
from helpers import Target, multihash
from stac_helpers import OfflineValidator, antimeridian_tile, make_item, validate_offline


@pytest.fixture(scope="module")
def validator() -> OfflineValidator:
    return OfflineValidator()


def _publish_items(target: Target) -> dict[str, dict[str, Any]]:
    """Three exports' item.json under the target (one across the antimeridian), plus decoys; returns rel → item."""
    storage = Storage.open(target.out_dir, target.storage_options)
    items = {
        "2023/T06WVS/item.json": make_item(make_synthetic_tile(32, seed=31, with_inputs=False), tile_id="T06WVS",
                                       metadata={"datetime": "2023-07-01T10:00:00Z"}),
        "2024/T06WVS/item.json": make_item(make_synthetic_tile(48, seed=32, with_inputs=False), tile_id="T06WVS-b",
                                       metadata={"datetime": "2024-08-02T11:00:00Z"}),
        "T60WXX/item.json": make_item(antimeridian_tile(), tile_id="T60WXX", metadata={"datetime": "2023-09-03"}),
    }  # fmt: skip
    written = {}
    for rel, item in items.items():
        data = encode_item(item)
        storage.publish_bytes(rel, data)
        written[rel] = json.loads(data)
    storage.publish_bytes("T60WXX/darts_inference_debug.zarr/item.json", b"{}")  # inside a store: ignored
    storage.publish_bytes("T60WXX/manifest.json", b"{}")
    return written


def _read(target: Target, rel: str) -> bytes:
    return bytes(target.fs().cat_file(target.path(rel)))


def test_collection_over_exports_validates_and_links_relatively(target: Target, validator: OfflineValidator) -> None:
    items = _publish_items(target)

    collection = build_collection(target.out_dir, storage_options=target.storage_options, items_parquet=True)

    written = json.loads(_read(target, COLLECTION_NAME))
    used = validate_offline(written, validator)
    assert any(uri.endswith("collection-spec/json-schema/collection.json") for uri in used)
    assert written["type"] == "Collection"
    assert written["id"] == collection.id == "darts"
    assert not any(link["rel"] == "self" for link in written["links"])
    item_links = [link for link in written["links"] if link["rel"] == "item"]
    assert sorted(link["href"] for link in item_links) == sorted(f"./{rel}" for rel in items)
    for link in item_links:  # every link resolves, relative to the collection, to the item as exported
        assert json.loads(_read(target, link["href"].removeprefix("./"))) == items[link["href"].removeprefix("./")]
    # Extent: the union of the item bboxes (one item crosses the antimeridian, so the union does too).
    (bbox,) = written["extent"]["spatial"]["bbox"]
    assert bbox == union_bbox(item["bbox"] for item in items.values())
    west, south, east, north = bbox
    assert west > east
    assert south == min(i["bbox"][1] for i in items.values())
    assert north == max(i["bbox"][3] for i in items.values())
    assert written["extent"]["temporal"]["interval"] == [["2023-07-01T10:00:00Z", "2024-08-02T11:00:00Z"]]
    # The CLI prints collection.to_dict().
    assert collection.to_dict()["id"] == "darts"

    table = pq.read_table(io.BytesIO(_read(target, ITEMS_PARQUET_NAME)))
    assert table.num_rows == 3
    assert b"geo" in (table.schema.metadata or {})
    rows = {row["id"]: row for row in stac_table_to_items(table)}
    assert set(rows) == {"T06WVS", "T06WVS-b", "T60WXX"}
    assert {row["collection"] for row in rows.values()} == {"darts"}
    assert rows["T60WXX"]["assets"]["probabilities"]["href"] == "./T60WXX/probabilities.tif"
    assert rows["T06WVS"]["assets"]["probabilities"]["href"] == "./2023/T06WVS/probabilities.tif"
    assert rows["T06WVS"]["properties"]["proj:code"] == "EPSG:32606"
    assert (
        rows["T06WVS"]["assets"]["probabilities"]["file:checksum"]
        == (items["2023/T06WVS/item.json"]["assets"]["probabilities"]["file:checksum"])
    )


def test_no_items_is_a_clear_error(target: Target) -> None:
    storage = Storage.open(target.out_dir, target.storage_options)
    storage.publish_bytes("T06WVS/manifest.json", b"{}")
    with pytest.raises(NoItemsError, match=r"No item\.json found") as info:
        build_collection(target.out_dir, storage_options=target.storage_options)
    assert isinstance(info.value, ExportError)
    assert isinstance(info.value, FileNotFoundError)
    assert not storage.exists(COLLECTION_NAME)


def test_empty_or_missing_prefix_has_no_items(tmp_path: Any) -> None:
    with pytest.raises(NoItemsError):
        build_collection(tmp_path / "nothing-here")


def test_write_false_only_returns_the_collection(tmp_path: Any) -> None:
    target = Target("local", str(tmp_path / "exports"))
    _publish_items(target)
    collection = build_collection(target.out_dir, write=False, collection_id="rts", description="d", title="RTS")
    assert (collection.id, collection.description, collection.title) == ("rts", "d", "RTS")
    assert len(list(collection.get_links("item"))) == 3
    assert not (tmp_path / "exports" / COLLECTION_NAME).exists()


def test_a_broken_item_is_reported(tmp_path: Any) -> None:
    storage = Storage.open(tmp_path)
    storage.publish_bytes("A/item.json", b"{not json")
    with pytest.raises(ExportError, match=r"A/item\.json is not valid JSON"):
        build_collection(tmp_path)
    storage.publish_bytes("A/item.json", b'{"type": "FeatureCollection"}')
    with pytest.raises(ExportError, match="is not a STAC Item"):
        build_collection(tmp_path)


@pytest.mark.parametrize(
    ("bboxes", "expected"),
    [
        ([[0, 0, 1, 1]], [0, 0, 1, 1]),
        ([[0, 0, 1, 1], [5, -2, 6, 0.5]], [0, -2, 6, 1]),
        # Across the antimeridian: narrower than going round the other way.
        ([[170, 60, 179, 61], [-179, 62, -170, 63]], [170, 60, -170, 63]),
        ([[175, 60, -175, 61], [178, 59, 179, 60]], [175, 59, -175, 61]),
        ([[175, 60, -175, 61], [-10, 59, 30, 60]], [-10, 59, -175, 61]),
        ([[175, 60, -175, 61], [-20, 59, 10, 60]], [175, 59, 10, 61]),
        # Everything covered: the whole circle.
        ([[-180, 0, 0, 1], [0, 0, 180, 1]], [-180, 0, 180, 1]),
    ],
)
def test_union_bbox(bboxes: list[list[float]], expected: list[float]) -> None:
    result = union_bbox(bboxes)
    assert result == pytest.approx(expected)

    # Every input lies inside the result (checked on the circle, split at ±180°).
    def parts(b: list[float]) -> BaseGeometry:
        w, s, e, n = b
        return (
            shapely.box(w, s, e, n) if w <= e else shapely.union(shapely.box(w, s, 180, n), shapely.box(-180, s, e, n))
        )

    covered = parts(result)
    assert all(covered.buffer(1e-9).contains(parts(b)) for b in bboxes)


def test_rebase_item_leaves_the_item_alone() -> None:
    item = {
        "type": "Feature",
        "assets": {"a": {"href": "./a.tif"}, "b": {"href": "s3://bucket/b.tif"}},
        "links": [{"rel": "describedby", "href": "./manifest.json"}, {"rel": "x", "href": "../up.json"}],
    }
    snapshot = json.loads(json.dumps(item))
    rebased = rebase_item(item, "2024/T1/item.json", "darts")
    assert item == snapshot
    assert rebased["collection"] == "darts"
    assert rebased["assets"]["a"]["href"] == "./2024/T1/a.tif"
    assert rebased["assets"]["b"]["href"] == "s3://bucket/b.tif"
    assert [link["href"] for link in rebased["links"]] == ["./2024/T1/manifest.json", "./2024/up.json"]


def test_collection_object_round_trips_through_pystac(tmp_path: Any, validator: OfflineValidator) -> None:
    target = Target("local", str(tmp_path / "exports"))
    _publish_items(target)
    build_collection(target.out_dir)
    collection = pystac.Collection.from_file(str(tmp_path / "exports" / COLLECTION_NAME))
    loaded = list(collection.get_items())
    assert sorted(i.id for i in loaded) == ["T06WVS", "T06WVS-b", "T60WXX"]
    for item in loaded:
        validate_offline(item.to_dict(include_self_link=False, transform_hrefs=False), validator)


def test_exports_through_export_tile_give_valid_items_and_a_collection(
    target: Target, validator: OfflineValidator
) -> None:
    tiles = {
        "T06WVS": make_synthetic_tile(48, seed=41),
        "T06WVT": make_synthetic_tile(64, seed=42, with_inputs=False),
    }
    metadata = {
        "T06WVS": {"tile_id": "T06WVS", "datetime": "2023-07-01T10:00:00Z", "cloud_cover": 3},
        "T06WVT": {"tile_id": "T06WVT", "datetime": "2023-07-05T10:00:00Z", "cloud_cover": 7.5},
    }
    root = target.out_dir.rstrip("/")
    shapes = []
    for name, tile in tiles.items():
        manifest = export_tile(
            tile, f"{root}/{name}", metadata=metadata[name], debug=True, storage_options=target.storage_options
        )
        item_bytes = _read(target, f"{name}/{ITEM_NAME}")
        item = json.loads(item_bytes)
        validate_offline(item, validator)
        assert item["id"] == manifest.tile_id == name
        assert item["properties"]["datetime"] == metadata[name]["datetime"]
        assert manifest.artifact(ITEM_NAME).checksum == multihash(item_bytes)
        for artifact in manifest.artifacts:
            if artifact.path == ITEM_NAME:
                continue
            asset = item["assets"][asset_key(artifact.path)]
            assert asset["href"] == f"./{artifact.path}"
            if artifact.type == "file":
                assert (
                    asset["file:checksum"] == artifact.checksum == multihash(_read(target, f"{name}/{artifact.path}"))
                )
                assert asset["file:size"] == artifact.size
        debug = manifest.artifact("darts_inference_debug.zarr")
        assert debug.type == "directory"
        assert (
            debug.checksum == Storage.open(f"{root}/{name}", target.storage_options).describe_tree(debug.path).checksum
        )
        shapes.append((sorted(item["properties"]), sorted(item["assets"])))
    assert shapes[0] == shapes[1]

    collection = build_collection(target.out_dir, storage_options=target.storage_options, items_parquet=True)
    written = json.loads(_read(target, COLLECTION_NAME))
    validate_offline(written, validator)
    assert sorted(link["href"] for link in written["links"] if link["rel"] == "item") == [
        "./T06WVS/item.json",
        "./T06WVT/item.json",
    ]
    assert len(list(collection.get_links("item"))) == 2
    assert pq.read_table(io.BytesIO(_read(target, ITEMS_PARQUET_NAME))).num_rows == 2

"""The STAC Collection over many exports: walk, extent, links, items.ndjson/items.parquet, duplicates, validation."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pystac
import pytest
import shapely
from click.testing import CliRunner, Result
from shapely.geometry.base import BaseGeometry
from stac_geoparquet.arrow import stac_table_to_items

from darts_export.cli.main import ExitCode, main
from darts_export.cloud import HandlerConfig
from darts_export.errors import ConfigurationError, DuplicateItemError, ExportError, InvalidTileError, NoItemsError
from darts_export.export import export_tile
from darts_export.products import ITEM_NAME
from darts_export.stac.collection import (
    COLLECTION_NAME,
    ITEMS_NDJSON_NAME,
    ITEMS_PARQUET_NAME,
    build_collection,
    catalog_item,
    union_bbox,
)
from darts_export.stac.item import asset_key, encode_item
from darts_export.storage import Storage
from darts_export.synthetic import make_synthetic_tile
from helpers import Target, closed_port, multihash
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

    assert written["summaries"]["proj:code"] == ["EPSG:32606", "EPSG:32660"]

    # items.ndjson: one catalog row per line, hrefs absolute below the root, collection set and linked.
    base = Storage.open(target.out_dir, target.storage_options).url.rstrip("/")
    lines = _read(target, ITEMS_NDJSON_NAME).decode().splitlines()
    ndjson = {row["id"]: row for row in map(json.loads, lines)}
    assert set(ndjson) == {"T06WVS", "T06WVS-b", "T60WXX"}
    assert ndjson["T60WXX"]["assets"]["probabilities"]["href"] == f"{base}/T60WXX/probabilities.tif"
    assert ndjson["T06WVS"]["assets"]["probabilities"]["href"] == f"{base}/2023/T06WVS/probabilities.tif"
    for rel, item in items.items():
        row = ndjson[item["id"]]
        assert row["collection"] == "darts"
        links = {link["rel"]: link["href"] for link in row["links"]}
        assert links["collection"] == links["root"] == links["parent"] == f"{base}/{COLLECTION_NAME}"
        assert links["self"] == f"{base}/{rel}"
        assert links["describedby"] == f"{base}/{rel.removesuffix(ITEM_NAME)}manifest.json"
        validate_offline(row, validator)

    # items.parquet: the same rows, valid STAC (collection with its link).
    table = pq.read_table(io.BytesIO(_read(target, ITEMS_PARQUET_NAME)))
    assert table.num_rows == 3
    assert b"geo" in (table.schema.metadata or {})
    rows = {row["id"]: row for row in stac_table_to_items(table)}
    assert set(rows) == set(ndjson)
    for item_id, row in rows.items():
        assert row["assets"]["probabilities"]["href"] == ndjson[item_id]["assets"]["probabilities"]["href"]
        assert row["links"] == ndjson[item_id]["links"]
        assert row["collection"] == "darts"
        validate_offline(row, validator)  # pystac's validation: no null title, collection linked
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


def test_catalog_item_leaves_the_item_alone() -> None:
    item = {
        "type": "Feature",
        "collection": "old",
        "assets": {"a": {"href": "./a.tif"}, "b": {"href": "s3://bucket/b.tif"}},
        "links": [
            {"rel": "collection", "href": "../collection.json"},
            {"rel": "describedby", "href": "./manifest.json"},
            {"rel": "x", "href": "../up.json"},
        ],
    }
    snapshot = json.loads(json.dumps(item))
    row = catalog_item(item, "2024/T1/item.json", "darts", "https://data.example.org/darts/")
    assert item == snapshot
    assert row["collection"] == "darts"
    assert row["assets"]["a"]["href"] == "https://data.example.org/darts/2024/T1/a.tif"
    assert row["assets"]["b"]["href"] == "s3://bucket/b.tif"
    assert [(link["rel"], link["href"]) for link in row["links"]] == [
        ("collection", "https://data.example.org/darts/collection.json"),
        ("root", "https://data.example.org/darts/collection.json"),
        ("parent", "https://data.example.org/darts/collection.json"),
        ("self", "https://data.example.org/darts/2024/T1/item.json"),
        ("describedby", "https://data.example.org/darts/2024/T1/manifest.json"),
        ("x", "https://data.example.org/darts/2024/up.json"),
    ]
    with pytest.raises(ValueError, match="outside the collection root"):
        catalog_item({"assets": {"a": {"href": "../../../a.tif"}}}, "T1/item.json", "darts", "s3://b/darts")


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


def test_duplicate_ids_are_an_error_unless_allowed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    storage = Storage.open(tmp_path)
    tile = make_synthetic_tile(32, seed=71, with_inputs=False)
    for rel in ("2023/T06WVS/item.json", "2024/T06WVS/item.json"):
        storage.publish_bytes(rel, encode_item(make_item(tile, tile_id="T06WVS")))
    with pytest.raises(DuplicateItemError, match=r"'T06WVS' in 2023/T06WVS/item\.json, 2024/T06WVS/item\.json") as info:
        build_collection(tmp_path)
    assert isinstance(info.value, ValueError)
    assert "allow_duplicates=True" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2023", "2024"]  # nothing written

    with caplog.at_level("WARNING", logger="darts_export.stac.collection"):
        collection = build_collection(tmp_path, allow_duplicates=True)
    assert "more than once" in caplog.text
    assert len(list(collection.get_links("item"))) == 2
    assert len((tmp_path / ITEMS_NDJSON_NAME).read_text().splitlines()) == 2


def test_summaries_keep_what_items_share(tmp_path: Path) -> None:
    storage = Storage.open(tmp_path)
    for i, (tile_id, model) in enumerate([("A", "v2.1"), ("B", "v2.1"), ("C", "v2.2")]):
        tile = make_synthetic_tile(32, seed=80 + i, with_inputs=False)
        item = make_item(tile, tile_id=tile_id, metadata={"tile_id": tile_id, "model_version": model})
        storage.publish_bytes(f"{tile_id}/{ITEM_NAME}", encode_item(item))
    build_collection(tmp_path)
    written = json.loads((tmp_path / COLLECTION_NAME).read_text())
    assert written["summaries"] == {"proj:code": ["EPSG:32606"], "darts:model_version": ["v2.1", "v2.2"]}


def test_href_base_makes_every_href_absolute(tmp_path: Path, validator: OfflineValidator) -> None:
    root = tmp_path / "darts"
    tile = make_synthetic_tile(48, seed=72, with_inputs=False)
    manifest = export_tile(
        tile, root / "T06WVS", metadata={"tile_id": "T06WVS"}, href_base="https://data.example.org/darts/"
    )
    item = json.loads((root / "T06WVS" / ITEM_NAME).read_text())
    validate_offline(item, validator)
    base = "https://data.example.org/darts"
    for artifact in manifest.artifacts:
        if artifact.path != ITEM_NAME:
            assert item["assets"][asset_key(artifact.path)]["href"] == f"{base}/T06WVS/{artifact.path}"
    links = {link["rel"]: link["href"] for link in item["links"]}
    assert links == {
        "collection": f"{base}/collection.json",
        "root": f"{base}/collection.json",
        "parent": f"{base}/collection.json",
        "self": f"{base}/T06WVS/item.json",
        "describedby": f"{base}/T06WVS/manifest.json",
    }

    # The collection builder keeps absolute hrefs and puts the collection's own URL on it.
    collection = build_collection(root, href_base=base, collection_id="darts")
    assert collection.get_self_href() == f"{base}/collection.json"
    (row,) = map(json.loads, (root / ITEMS_NDJSON_NAME).read_text().splitlines())
    assert row["assets"]["probabilities"]["href"] == f"{base}/T06WVS/probabilities.tif"
    assert {link["rel"]: link["href"] for link in row["links"]}["self"] == f"{base}/T06WVS/item.json"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"href_base": "darts/relative"}, "not an absolute URL"),
        ({"href_base": "https://example.org/darts?x=1"}, "not an absolute URL"),
        ({"collection": "bad id/with slash"}, "not a usable STAC collection id"),
    ],
)
def test_bad_catalog_options_fail_before_writing(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    tile = make_synthetic_tile(32, seed=73, with_inputs=False)
    with pytest.raises(InvalidTileError, match=message):
        export_tile(tile, tmp_path / "T1", **options)
    assert not (tmp_path / "T1").exists()


def test_an_item_without_collection(tmp_path: Path, validator: OfflineValidator) -> None:
    export_tile(make_synthetic_tile(32, seed=74, with_inputs=False), tmp_path / "T1", collection=None)
    item = json.loads((tmp_path / "T1" / ITEM_NAME).read_text())
    assert "collection" not in item
    assert [link["rel"] for link in item["links"]] == ["describedby"]
    validate_offline(item, validator)


def _cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="darts-export", catch_exceptions=False)


def test_cli_catalog_options(tmp_path: Path) -> None:
    root = tmp_path / "darts"
    exported = _cli("demo", root / "T1", "--size", "32", "--href-base", "s3://bucket/darts", "--collection", "rts")
    assert exported.exit_code == 0, exported.output
    item = json.loads((root / "T1" / ITEM_NAME).read_text())
    assert item["collection"] == "rts"
    assert item["assets"]["probabilities"]["href"] == "s3://bucket/darts/T1/probabilities.tif"
    bad = _cli("demo", root / "T2", "--size", "32", "--seed", "1", "--href-base", "relative/path")
    assert bad.exit_code == ExitCode.BAD_INPUT
    assert "not an absolute URL" in bad.output
    assert not (root / "T2").exists()
    assert _cli("demo", root / "T2", "--size", "32", "--seed", "1", "--collection", "").exit_code == 0
    assert "collection" not in json.loads((root / "T2" / ITEM_NAME).read_text())

    catalogued = _cli("stac", root, "--id", "rts", "--href-base", "https://data.example.org/darts", "--json")
    assert catalogued.exit_code == 0, catalogued.output
    rows = [json.loads(line) for line in (root / ITEMS_NDJSON_NAME).read_text().splitlines()]
    assert {row["assets"]["probabilities"]["href"] for row in rows} == {
        "s3://bucket/darts/T1/probabilities.tif",  # absolute already: kept
        "https://data.example.org/darts/T2/probabilities.tif",
    }

    Storage.open(root).publish_bytes("T3/item.json", (root / "T1" / ITEM_NAME).read_bytes())  # a second "T1"
    duplicated = _cli("stac", root)
    assert duplicated.exit_code == ExitCode.BAD_INPUT
    assert "--allow-duplicates" in duplicated.output
    assert _cli("stac", root, "--allow-duplicates").exit_code == 0
    unreachable = _cli("stac", root, "--allow-duplicates", "--pgstac", f"postgresql://u@127.0.0.1:{closed_port()}/db")
    assert unreachable.exit_code == ExitCode.STORAGE
    assert "Cannot connect to pgstac" in unreachable.output


def test_handler_config_reads_the_catalog_settings() -> None:
    config = HandlerConfig.from_environ({"DARTS_COLLECTION": "rts", "DARTS_HREF_BASE": "s3://bucket/darts/"})
    assert (config.collection, config.href_base) == ("rts", "s3://bucket/darts")
    assert (HandlerConfig.from_environ({}).collection, HandlerConfig.from_environ({}).href_base) == ("darts", None)
    assert HandlerConfig.from_environ({"DARTS_COLLECTION": ""}).collection is None
    with pytest.raises(ConfigurationError, match="DARTS_HREF_BASE"):
        HandlerConfig.from_environ({"DARTS_HREF_BASE": "darts"})

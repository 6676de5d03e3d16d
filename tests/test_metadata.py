"""The export's metadata, decided once: tags, tile id, acquisition time, export time, source properties.

And what a given export time buys: byte-identical re-exports on every target.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import xarray as xr
from affine import Affine
from rasterio.crs import CRS

from darts_export import export_tile
from darts_export.errors import ConfigurationError, InvalidTileError
from darts_export.manifest import Manifest
from darts_export.metadata import EXPORT_DATE_KEY, ExportMetadata, decide_metadata, parse_time
from darts_export.synthetic import make_synthetic_tile
from darts_export.tile import GeoRef
from helpers import Target, read_back

GEOREF = GeoRef(crs=CRS.from_epsg(32606), transform=Affine(10, 0, 399960, 0, -10, 7800000), width=64, height=64)
NOW = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)

# What darts-acquisition leaves on a Sentinel-2 tile (CDSE STAC item properties, flattened).
S2_ATTRS: dict[str, Any] = {
    "tile_id": "S2B_MSIL2A_20240715T213309_N0510_R086_T06WVS_20240716T002043",
    "s2_tile_id": "S2B_MSIL2A_20240715T213309_N0510_R086_T06WVS_20240716T002043",
    "datetime": "2024-07-15T21:33:09.024000Z",
    "start_datetime": "2024-07-15T21:33:09.024000Z",
    "end_datetime": "2024-07-15T21:33:09.024000Z",
    "time": "2024-07-15T21:33:09.024000000",
    "platform": "sentinel-2b",
    "constellation": "sentinel-2",
    "instruments": "['msi']",
    "eo:cloud_cover": np.float64(3.25),
    "view:sun_azimuth": 172.4,
    "view:sun_elevation": 41.2,
    "view:moon_azimuth": 12.0,  # not a field of view v1.0.0: left out
    "s2:mgrs_tile": "06WVS",
    "s2:degraded_msi_data_percentage": 0,
    "s2:nodata_pixel_percentage": float("nan"),  # not JSON: left out
    "azimuth": 172.4,
    "elevation": 41.2,
}


def decide(metadata: dict[str, Any] | None = None, attrs: dict[str, Any] | None = None, **kw: Any) -> ExportMetadata:
    return decide_metadata(metadata, attrs or {}, GEOREF, environ=kw.pop("environ", {}), now=kw.pop("now", NOW))


def test_darts_sequential_metadata_gives_tile_id_and_json_tags() -> None:
    metadata = {"DARTS_tileid": "T06WVS_2024", "DARTS_modelfiles": ["a.pt", "b.pt"], "DARTS_patchsize": 1024}
    meta = decide(metadata, S2_ATTRS)
    assert (meta.tile_id, meta.tile_id_source) == ("T06WVS_2024", "metadata['DARTS_tileid']")
    assert meta.tags["DARTS_modelfiles"] == '["a.pt", "b.pt"]'  # lists as JSON text, one rule everywhere
    assert meta.tags["DARTS_patchsize"] == "1024"
    assert meta.values["DARTS_modelfiles"] == ["a.pt", "b.pt"]
    assert meta.tags[EXPORT_DATE_KEY] == "2026-01-02T03:04:05Z"


def test_ray_shape_without_metadata_takes_everything_from_the_attrs() -> None:
    meta = decide(None, S2_ATTRS)
    assert (meta.tile_id, meta.tile_id_source) == (S2_ATTRS["tile_id"], "tile.attrs['tile_id']")
    assert meta.acquisition is not None
    assert meta.acquisition.instant == datetime(2024, 7, 15, 21, 33, 9, 24000, tzinfo=UTC)
    assert meta.acquisition.source == "tile.attrs['datetime']"
    assert meta.acquisition.start == meta.acquisition.end == meta.acquisition.instant
    assert dict(meta.source_properties) == {
        "constellation": "sentinel-2",
        "eo:cloud_cover": 3.25,
        "instruments": ["msi"],
        "platform": "sentinel-2b",
        "s2:degraded_msi_data_percentage": 0,
        "s2:mgrs_tile": "06WVS",
        "view:sun_azimuth": 172.4,
        "view:sun_elevation": 41.2,
    }


@pytest.mark.parametrize(
    ("metadata", "attrs", "expected", "source"),
    [
        ({"tile_id": "a", "DARTS_tileid": "b", "scene_id": "c", "id": "d"}, {"tile_id": "e"}, "a", "metadata"),
        ({"DARTS_tileid": "b", "scene_id": "c"}, {"tile_id": "e"}, "b", "metadata"),
        ({"scene_id": "c", "id": "d"}, {"tile_id": "e"}, "c", "metadata"),
        ({"id": 42}, {"tile_id": "e"}, "42", "metadata"),
        ({"tile_id": ""}, {"tile_id": "e", "s2_tile_id": "f"}, "e", "tile.attrs"),
        ({}, {"s2_tile_id": "f", "planet_scene_id": "g"}, "f", "tile.attrs"),
        ({}, {"planet_scene_id": "g", "planet_orthotile_id": "h"}, "g", "tile.attrs"),
        ({}, {"planet_orthotile_id": "h", "landsat_tile_id": "i"}, "h", "tile.attrs"),
        ({}, {"landsat_tile_id": np.str_("i")}, "i", "tile.attrs"),
        ({}, {"scene_id": "not read from attrs"}, "EPSG32606_399960_7800000_64x64_10m", "georeference"),
    ],
)
def test_tile_id_precedence(metadata: dict[str, Any], attrs: dict[str, Any], expected: str, source: str) -> None:
    meta = decide(metadata, attrs)
    assert meta.tile_id == expected
    assert meta.tile_id_source.startswith(source)


@pytest.mark.parametrize(
    ("metadata", "attrs", "instant", "source"),
    [
        ({"datetime": "2023-06-15T10:30:00Z"}, {"datetime": "2024-07-15T00:00:00Z"}, "2023-06-15T10:30:00Z", "m"),
        ({"sensing_time": "2023-06-15"}, {"time": "2024-07-15T00:00:00"}, "2023-06-15T00:00:00Z", "m"),
        ({}, {"time": "2024-07-15T21:33:09.024000000"}, "2024-07-15T21:33:09.024000Z", "a"),
        ({}, {"datetime": np.datetime64("2024-07-15T21:33:09")}, "2024-07-15T21:33:09Z", "a"),
        ({}, {"datetime": "2024-07-15T23:33:09+02:00", "time": "x"}, "2024-07-15T21:33:09Z", "a"),
        ({"datetime": ""}, {}, None, None),
    ],
)
def test_acquisition_time_metadata_wins_over_attrs(
    metadata: dict[str, Any], attrs: dict[str, Any], instant: str | None, source: str | None
) -> None:
    acquisition = decide(metadata, attrs).acquisition
    if instant is None:
        assert acquisition is None
        return
    assert acquisition is not None
    assert acquisition.instant == parse_time(instant, "expected")
    assert acquisition.source.startswith({"m": "metadata", "a": "tile.attrs"}[str(source)])


def test_an_interval_alone_gives_start_and_end() -> None:
    attrs = {"start_datetime": "2024-07-01T00:00:00Z", "end_datetime": "2024-07-31T00:00:00Z"}
    acquisition = decide({}, attrs).acquisition
    assert acquisition is not None
    assert acquisition.instant is None
    assert (acquisition.start, acquisition.end) == (datetime(2024, 7, 1, tzinfo=UTC), datetime(2024, 7, 31, tzinfo=UTC))
    with pytest.raises(InvalidTileError, match="swap them"):
        decide({}, {"start_datetime": attrs["end_datetime"], "end_datetime": attrs["start_datetime"]})


def test_metadata_entries_override_source_properties_and_bad_values_are_left_out() -> None:
    meta = decide({"platform": "sentinel-2a"}, {"platform": "x", "eo:cloud_cover": 140, "view:off_nadir": "3"})
    assert dict(meta.source_properties) == {"platform": "sentinel-2a"}


@pytest.mark.parametrize(
    ("given", "environ", "expected"),
    [
        ({EXPORT_DATE_KEY: "2024-01-01T00:00:00+01:00"}, {"SOURCE_DATE_EPOCH": "0"}, "2023-12-31T23:00:00Z"),
        ({}, {"SOURCE_DATE_EPOCH": "1700000000"}, "2023-11-14T22:13:20Z"),
    ],
)
def test_a_given_export_time_is_used_and_marked(given: dict[str, Any], environ: dict[str, str], expected: str) -> None:
    meta = decide(given, environ=environ)
    assert meta.export_time_given
    assert meta.created_text == expected == meta.tags[EXPORT_DATE_KEY] == meta.values[EXPORT_DATE_KEY]


def test_the_clock_is_used_otherwise_to_the_second() -> None:
    meta = decide({})
    assert not meta.export_time_given
    assert meta.created_text == "2026-01-02T03:04:05Z"


def test_a_malformed_source_date_epoch_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="SOURCE_DATE_EPOCH"):
        decide({}, environ={"SOURCE_DATE_EPOCH": "yesterday"})


@pytest.mark.parametrize(
    ("metadata", "attrs", "message"),
    [
        ({"": "x"}, {}, "empty key"),
        ({" ": "x"}, {}, "empty key"),
        ({"a=b": "x"}, {}, "contains '='"),
        ({"a\nb": "x"}, {}, "control character"),
        ({"a\tb": "x"}, {}, "control character"),
        ({("a",): "x"}, {}, "keys must be strings"),
        ({"note": "a\x00b"}, {}, "control character"),
        ({"datetime": "yesterday"}, {}, "not an ISO 8601"),
        ({"datetime": 20240715}, {}, "must be an ISO 8601 string"),
        ({EXPORT_DATE_KEY: "soon"}, {}, "not an ISO 8601"),
        ({}, {"time": "last tuesday"}, "tile.attrs\\['time'\\]"),
        ({"tile_id": ["T1"]}, {}, "must be a string"),
        ({"DARTS_tileid": "a/b"}, {}, "cannot be a tile id"),
        ({}, {"tile_id": "x" * 300}, "cannot be a tile id"),
        ({"score": float("nan")}, {}, "JSON-serialisable"),
        ({"when": datetime(2024, 1, 1)}, {}, "JSON-serialisable"),
    ],
)
def test_bad_metadata_is_rejected(metadata: dict[Any, Any], attrs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidTileError, match=message):
        decide(metadata, attrs)


def test_not_a_mapping_is_rejected() -> None:
    with pytest.raises(InvalidTileError, match="must be a mapping"):
        decide_metadata([("a", 1)], {}, GEOREF)  # type: ignore[arg-type]


def test_neither_metadata_nor_attrs_are_modified_and_the_value_is_read_only() -> None:
    metadata = {"DARTS_tileid": "T1", "DARTS_modelfiles": ["a.pt"], "nested": {"k": [1, 2]}}
    attrs = dict(S2_ATTRS)
    before = (copy.deepcopy(metadata), copy.deepcopy(attrs))
    meta = decide(metadata, attrs)
    assert (metadata, attrs) == before  # deepcopy keeps the very NaN object, so == holds
    with pytest.raises(TypeError):
        meta.values["x"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        meta.tags["x"] = "1"  # type: ignore[index]
    assert meta.values["DARTS_modelfiles"] is not metadata["DARTS_modelfiles"]


def test_darts_inference_json_is_the_values() -> None:
    meta = decide({"b": 1, "a": "ü"})
    assert meta.to_json().decode() == '{\n  "b": 1,\n  "a": "ü",\n  "DARTS_exportdate": "2026-01-02T03:04:05Z"\n}\n'


# --- reproducible exports -------------------------------------------------------------------------

_REPRO_BANDS = ["probabilities", "binarized", "polygonized", "extent", "thumbnail", "metadata"]


def _export_all(tile: xr.Dataset, target: Target, metadata: dict[str, Any]) -> tuple[Manifest, dict[str, bytes]]:
    """Export with every product, the debug store and one subset; return the manifest and each file's bytes."""
    manifest = export_tile(
        tile,
        target.out_dir,
        bands=_REPRO_BANDS,
        ensemble_subsets=["a"],
        metadata=metadata,
        debug=True,
        storage_options=target.storage_options,
    )
    files = {a.path: read_back(target, a.path) for a in manifest.artifacts if a.type == "file"}
    return manifest, files


@pytest.fixture
def repro_tile() -> xr.Dataset:
    tile = make_synthetic_tile(48, seed=5, with_inputs=False)
    return tile.assign(
        {"probabilities-a": tile.probabilities * 0.5, "binarized_segmentation-a": tile.binarized_segmentation}
    ).assign_attrs(S2_ATTRS)


def test_a_given_export_time_makes_every_artifact_byte_identical_on_every_target(
    repro_tile: xr.Dataset,
    tmp_path: Path,
    s3_bucket: str,
    s3_storage_options: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metadata = {"DARTS_tileid": "T06WVS_2024", "DARTS_modelfiles": ["a.pt", "b.pt"]}
    targets = [
        Target("local", str(tmp_path / "first")),
        Target("local", str(tmp_path / "second")),
        Target("memory", f"memory://repro-{uuid.uuid4().hex}/export"),
        Target("s3", f"s3://{s3_bucket}/darts/T06WVS", s3_storage_options),
    ]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1721079189")
    runs = [_export_all(repro_tile, t, metadata) for t in targets]
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    given = {**metadata, EXPORT_DATE_KEY: "2024-07-15T21:33:09Z"}  # the same instant, named in the metadata
    runs.append(_export_all(repro_tile, Target("local", str(tmp_path / "third")), given))
    (first, first_files), *others = runs
    assert first.clock_fields == ()
    assert len(first.artifacts) == 14  # 12 files, the debug store (a directory) and the item
    assert "darts_inference_debug.zarr" in {a.path for a in first.artifacts}
    for manifest, files in others:
        assert manifest.artifacts == first.artifacts  # paths, sizes and checksums, the debug store's too
        assert files == first_files
        moved = dataclasses.replace(first, location=manifest.location, target=manifest.target)
        assert moved.to_json() == manifest.to_json()  # only where it lies differs
    memory = fsspec.filesystem("memory")
    memory.rm("/" + targets[2].out_dir.removeprefix("memory://").split("/")[0], recursive=True)


def test_without_an_export_time_only_the_named_clock_fields_differ(repro_tile: xr.Dataset, tmp_path: Path) -> None:
    clock, clock_files = _export_all(repro_tile, Target("local", str(tmp_path / "clock")), {})
    given = {EXPORT_DATE_KEY: "2001-01-01T00:00:00Z"}
    _, given_files = _export_all(repro_tile, Target("local", str(tmp_path / "given")), given)
    named = {field.split("#")[0] for field in clock.clock_fields}
    differing = {path for path in clock_files if clock_files[path] != given_files[path]}
    assert differing == named - {"manifest.json"}
    assert "manifest.json#created" in clock.clock_fields
    assert "item.json#properties.created" in clock.clock_fields
    assert "item.json#properties.datetime" not in clock.clock_fields  # the acquisition time comes from the attrs
    assert differing >= {"probabilities.tif", "binarized-a.tif", "darts_inference.json", "item.json"}
    assert not differing & {"prediction_segments.parquet", "prediction_segments.gpkg", "thumbnail.jpg"}
    manifest = json.loads((tmp_path / "clock" / "manifest.json").read_text())
    assert manifest["clock_fields"] == list(clock.clock_fields)

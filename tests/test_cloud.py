"""The cloud-function handler: event parsing, idempotent exports to S3 (moto), resource checks."""

from __future__ import annotations

import gc
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from darts_export.cloud import ExportRequest, HandlerConfig, handler, output_for_input, parse_event
from darts_export.errors import ConfigurationError, ExportError, ExportFailedError, InvalidEventError, InvalidTileError
from darts_export.products import DEFAULT_BANDS
from darts_export.verify import verify
from helpers import expected_binarized, expected_percent, get, keys, multihash, put_zarr, read_raster, s3_record

BANDS = ["probabilities", "binarized", "metadata"]
PREFIX = "s3://out-bucket/exports"
CONFIG = HandlerConfig(output_prefix=PREFIX)


@pytest.fixture
def cloud_env(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str, s3_client: Any) -> str:
    """The Lambda environment on moto: endpoint, output prefix in a fresh bucket, bands; returns the bucket."""
    bucket = f"out-{np.random.default_rng().integers(1 << 40):x}"
    s3_client.create_bucket(Bucket=bucket)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("DARTS_OUTPUT_PREFIX", f"s3://{bucket}/exports")
    monkeypatch.setenv("DARTS_BANDS", ",".join(BANDS))
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "10240")
    return bucket


# --- event parsing (no I/O) ---------------------------------------------------------------------


def test_direct_event_minimal_uses_defaults() -> None:
    (request,) = parse_event({"input": "s3://in/T1/tile.zarr", "output": "s3://out/T1"}, HandlerConfig())
    assert request == ExportRequest(input="s3://in/T1/tile.zarr", output="s3://out/T1", bands=DEFAULT_BANDS)
    assert (request.overwrite, request.debug, request.source) == (False, False, "direct")


def test_direct_event_full_and_metadata_detached() -> None:
    metadata = {"tile_id": "T06WVS", "nested": {"a": [1, 2]}}
    event = {
        "input": "s3://in/T1/tile.zarr/",
        "bands": ["probabilities", "slope"],
        "ensemble_subsets": ["with_tcvis"],
        "metadata": metadata,
        "overwrite": True,
        "debug": True,
    }
    (request,) = parse_event(event, CONFIG)
    assert request.output == f"{PREFIX}/T1"  # derived by the output rule
    assert request.bands == ("probabilities", "slope")
    assert request.ensemble_subsets == ("with_tcvis",)
    assert (request.overwrite, request.debug) == (True, True)
    assert request.metadata == metadata
    request.metadata["nested"]["a"].append(3)
    assert metadata == {"tile_id": "T06WVS", "nested": {"a": [1, 2]}}


GOOD = {"input": "s3://in/T1/tile.zarr", "output": "s3://out/T1"}


@pytest.mark.parametrize(
    ("event", "words"),
    [
        (["input"], "JSON object"),
        ({"output": "s3://out/T1"}, "'input'"),
        ({**GOOD, "input": 42}, "'input'"),
        ({**GOOD, "input": "s3://in/T1/tile.tif"}, ".zarr"),
        ({**GOOD, "output": ""}, "'output'"),
        ({"input": "s3://in/T1/tile.zarr"}, "'output'"),
        ({**GOOD, "output": "s3://in/T1/tile.zarr/out"}, "inside the input"),
        ({**GOOD, "bands": "probabilities"}, "'bands'"),
        ({**GOOD, "bands": [1, 2]}, "'bands'"),
        ({**GOOD, "bands": []}, "at least one"),
        ({**GOOD, "bands": ["../etc"]}, "../etc"),
        ({**GOOD, "ensemble_subsets": ["a/b"]}, "a/b"),
        ({**GOOD, "overwrite": "yes"}, "'overwrite'"),
        ({**GOOD, "debug": 1}, "'debug'"),
        ({**GOOD, "metadata": ["a"]}, "'metadata'"),
        ({**GOOD, "metadata": {"x": float("nan")}}, "JSON-serialisable"),
        ({**GOOD, "overwite": True}, "overwite"),
        ({"Records": []}, "non-empty list"),
        ({"Records": "x"}, "non-empty list"),
        ({"Records": ["x"]}, "Records[0] must be an object"),
        ({"Records": [s3_record("in", "T1/tile.zarr/zarr.json", source="aws:sqs")]}, "aws:sqs"),
        ({"Records": [s3_record("in", "T1/tile.zarr/zarr.json", name="ObjectRemoved:Delete")]}, "ObjectRemoved"),
        ({"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": "in"}}}]}, "s3.object.key"),
        ({"Records": [s3_record("in", "")]}, "non-empty strings"),
        ({"Records": [s3_record("in", "T1/tile.zarr/probabilities/zarr.json")]}, "does not name an input store"),
        ({"Records": [s3_record("in", "T1/readme.txt")]}, "does not name an input store"),
        ({"Records": [s3_record("out-bucket", "exports/T1/dbg.zarr/zarr.json")]}, "refusing to export an export"),
        (
            {"Records": [s3_record("in", "T1/tile.zarr/zarr.json"), s3_record("in", "T2/x.tif")]},
            "Records[1]",
        ),
    ],
)
def test_bad_events_are_rejected_clearly(event: Any, words: str) -> None:
    config = CONFIG if isinstance(event, dict) and "Records" in event else HandlerConfig()
    with pytest.raises(InvalidEventError) as info:
        parse_event(event, config)
    assert words in str(info.value)
    assert isinstance(info.value, InvalidTileError | ValueError | ExportError)


def test_s3_records_map_to_inputs_and_outputs() -> None:
    config = HandlerConfig(output_prefix=PREFIX, bands=("probabilities",), ensemble_subsets=("a",), debug=True)
    event = {
        "Records": [
            s3_record("in", "inputs/T06WVS+2024/tile%C3%A9.zarr/zarr.json"),
            s3_record("in", "v2/T07/tile.zarr/.zmetadata"),
            s3_record("in", "nc/T08/T08.nc", name="ObjectCreated:CompleteMultipartUpload"),
            s3_record("in", "root.zarr/zarr.json"),
            s3_record("in", "nc4/T09/T09.NC4"),  # every NetCDF suffix the CLI reads
        ]
    }
    requests = parse_event(event, config)
    assert [(r.input, r.output, r.require_consolidated) for r in requests] == [
        ("s3://in/inputs/T06WVS 2024/tileé.zarr", f"{PREFIX}/T06WVS 2024", True),
        ("s3://in/v2/T07/tile.zarr", f"{PREFIX}/T07", True),
        ("s3://in/nc/T08/T08.nc", f"{PREFIX}/T08", False),
        ("s3://in/root.zarr", f"{PREFIX}/root", True),
        ("s3://in/nc4/T09/T09.NC4", f"{PREFIX}/T09", False),
    ]
    assert requests[0].source == "s3://in/inputs/T06WVS 2024/tileé.zarr/zarr.json"
    assert {(r.bands, r.ensemble_subsets, r.debug, r.overwrite) for r in requests} == {
        (("probabilities",), ("a",), True, False)
    }


def test_s3_records_need_an_output_prefix() -> None:
    with pytest.raises(ConfigurationError, match="DARTS_OUTPUT_PREFIX"):
        parse_event({"Records": [s3_record("in", "T1/tile.zarr/zarr.json")]}, HandlerConfig())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://in/a/b/T1/tile.zarr", "s3://o/p/T1"),
        ("s3://in/T1/tile.zarr/", "s3://o/p/T1"),
        ("s3://in/tile.zarr", "s3://o/p/tile"),
        ("/data/T2/scene.nc", "s3://o/p/T2"),
    ],
)
def test_output_rule(url: str, expected: str) -> None:
    assert output_for_input(url, "s3://o/p/") == expected


def test_config_from_environment() -> None:
    config = HandlerConfig.from_environ(
        {
            "DARTS_OUTPUT_PREFIX": "s3://o/p/",
            "DARTS_BANDS": "probabilities, binarized ,",
            "DARTS_ENSEMBLE_SUBSETS": "a,b",
            "DARTS_DEBUG": "True",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "4096",
        }
    )
    assert config == HandlerConfig(
        output_prefix="s3://o/p",
        bands=("probabilities", "binarized"),
        ensemble_subsets=("a", "b"),
        debug=True,
        endpoint_url="http://127.0.0.1:9",
        memory_mb=4096,
    )
    assert config.storage_options("s3://b/k") == {"endpoint_url": "http://127.0.0.1:9"}
    assert config.storage_options("memory://x") is None
    assert HandlerConfig.from_environ({}) == HandlerConfig()
    with pytest.raises(ConfigurationError, match="DARTS_DEBUG"):
        HandlerConfig.from_environ({"DARTS_DEBUG": "maybe"})


# --- resources (local files) --------------------------------------------------------------------


def test_too_little_tmp_space_fails_before_writing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tile_factory: Any
) -> None:
    store = tmp_path / "in" / "T1" / "tile.zarr"
    put_zarr(tile_factory(64, seed=1), str(store), None)
    real = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: real._replace(free=10 * 2**20))
    out = tmp_path / "out"
    with pytest.raises(ExportFailedError) as info:
        handler({"input": str(store), "output": str(out), "bands": ["probabilities", "polygonized"]}, None)
    (summary,) = (s.to_dict() for s in info.value.summaries)
    assert (summary["status"], summary["error_type"]) == ("failed", "InsufficientSpaceError")
    assert "10 MiB free" in summary["reason"]
    assert "1 GeoPackage" in summary["reason"]
    assert not out.exists()


@pytest.mark.parametrize("enabled", [True, False])
def test_first_request_loads_the_export_path_and_leaves_the_gc_as_it_was(
    monkeypatch: pytest.MonkeyPatch, enabled: bool
) -> None:
    from darts_export.cloud import entry

    monkeypatch.setattr(entry, "_loaded", False)
    request = parse_event({"input": "s3://bucket/in/T1/tile.zarr", "output": "s3://bucket/out/T1"}, HandlerConfig())
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        entry._load_export_path(request)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
    assert entry._loaded
    assert {"darts_export.export", "zarr", "s3fs"} <= set(sys.modules)


def test_memory_estimate_is_logged(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tile_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "T1" / "tile.zarr"
    put_zarr(tile_factory(64, seed=1), str(store), None)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "0")
    with caplog.at_level(logging.INFO, logger="darts_export.cloud.resources"):
        (summary,) = handler({"input": str(store), "output": str(tmp_path / "out"), "bands": ["probabilities"]})
    assert summary["status"] == "exported"
    assert any("MiB memory needed, 0 MiB configured" in r.message for r in caplog.records)
    assert any(r.levelno == logging.WARNING and "function has 0 MiB" in r.message for r in caplog.records)


# --- end to end on S3 (moto) --------------------------------------------------------------------


@pytest.mark.s3
def test_direct_event_exports_then_skips_then_overwrites(
    cloud_env: str, s3_bucket: str, s3_client: Any, s3_storage_options: dict[str, Any], small_tile: xr.Dataset
) -> None:
    put_zarr(small_tile, f"s3://{s3_bucket}/inputs/T06WVS_2024/tile.zarr", s3_storage_options)
    event = {
        "input": f"s3://{s3_bucket}/inputs/T06WVS_2024/tile.zarr",
        "output": f"s3://{cloud_env}/direct/T06WVS_2024",
        "bands": BANDS,
        "metadata": {"tile_id": "T06WVS_2024"},
    }
    (first,) = handler(event, None)
    assert json.loads(json.dumps(first)) == first
    assert first["status"] == "exported"
    assert first["manifest"] == f"s3://{cloud_env}/direct/T06WVS_2024/manifest.json"
    manifest = json.loads(get(s3_client, cloud_env, "direct/T06WVS_2024/manifest.json"))
    assert manifest["tile_id"] == first["tile_id"] == "T06WVS_2024"
    assert first["artifacts"] == len(manifest["artifacts"]) == 4
    assert first["bytes"] == sum(a["size"] for a in manifest["artifacts"])
    assert first["seconds"] > 0
    tif = get(s3_client, cloud_env, "direct/T06WVS_2024/probabilities.tif")
    assert multihash(tif) == next(a["checksum"] for a in manifest["artifacts"] if a["path"] == "probabilities.tif")
    np.testing.assert_array_equal(read_raster(tif)["array"][0], expected_percent(small_tile["probabilities"].values))

    (second,) = handler(event, None)
    assert (second["status"], second["artifacts"], second["bytes"]) == ("skipped", 4, first["bytes"])
    assert "verified export exists" in second["reason"]
    assert json.loads(get(s3_client, cloud_env, "direct/T06WVS_2024/manifest.json")) == manifest

    (third,) = handler({**event, "overwrite": True}, None)
    assert third["status"] == "exported"
    assert third["artifacts"] == 4


@pytest.mark.s3
def test_s3_notification_exports_each_record_once(
    cloud_env: str, s3_bucket: str, s3_client: Any, s3_storage_options: dict[str, Any], small_tile: xr.Dataset
) -> None:
    put_zarr(small_tile, f"s3://{s3_bucket}/inputs/T06WVS 2024/tile.zarr", s3_storage_options)
    put_zarr(small_tile.isel(x=slice(0, 128)), f"s3://{s3_bucket}/inputs/T07/tile.zarr", s3_storage_options)
    event = {
        "Records": [
            s3_record(s3_bucket, "inputs/T06WVS+2024/tile.zarr/zarr.json"),
            s3_record(s3_bucket, "inputs/T07/tile.zarr/zarr.json"),
        ]
    }
    results = handler(event, None)
    assert [(r["status"], r["output"]) for r in results] == [
        ("exported", f"s3://{cloud_env}/exports/T06WVS 2024"),
        ("exported", f"s3://{cloud_env}/exports/T07"),
    ]
    assert keys(s3_client, cloud_env) == sorted(
        f"exports/{tile}/{name}"
        for tile in ("T06WVS 2024", "T07")
        for name in ("binarized.tif", "darts_inference.json", "item.json", "manifest.json", "probabilities.tif")
    )
    t07 = json.loads(get(s3_client, cloud_env, "exports/T07/manifest.json"))
    assert t07["shape"] == [256, 128]
    assert [r["status"] for r in handler(event, None)] == ["skipped", "skipped"]  # a redelivered event


@pytest.mark.s3
def test_s3_notification_waits_for_consolidated_metadata(
    cloud_env: str, s3_bucket: str, s3_client: Any, s3_storage_options: dict[str, Any], tile_factory: Any
) -> None:
    put_zarr(tile_factory(64, seed=2), f"s3://{s3_bucket}/in/T1/tile.zarr", s3_storage_options, consolidated=False)
    (result,) = handler({"Records": [s3_record(s3_bucket, "in/T1/tile.zarr/zarr.json")]}, None)
    assert result["status"] == "skipped"
    assert "consolidated metadata" in result["reason"]
    assert keys(s3_client, cloud_env) == []
    # A direct event does not need consolidated metadata.
    (direct,) = handler({"input": f"s3://{s3_bucket}/in/T1/tile.zarr"}, None)
    assert (direct["status"], direct["output"]) == ("exported", f"s3://{cloud_env}/exports/T1")


@pytest.mark.s3
def test_failures_are_reported_per_record_before_writing(
    cloud_env: str, s3_bucket: str, s3_client: Any, s3_storage_options: dict[str, Any], tile_factory: Any
) -> None:
    put_zarr(tile_factory(64, seed=3), f"s3://{s3_bucket}/in/T1/tile.zarr", s3_storage_options)
    with pytest.raises(ExportFailedError) as info:
        handler({"input": f"s3://{s3_bucket}/in/T1/tile.zarr", "bands": ["probabilities", "no_such_band"]}, None)
    (summary,) = (s.to_dict() for s in info.value.summaries)
    assert (summary["status"], summary["error_type"]) == ("failed", "InvalidTileError")
    assert "no_such_band" in summary["reason"]
    assert "no_such_band" in str(info.value)
    assert keys(s3_client, cloud_env) == []

    event = {
        "Records": [
            s3_record(s3_bucket, "in/missing/tile.zarr/zarr.json"),
            s3_record(s3_bucket, "in/T1/tile.zarr/zarr.json"),
        ]
    }
    with pytest.raises(ExportFailedError) as info:
        handler(event, None)
    missing, good = (s.to_dict() for s in info.value.summaries)
    assert (missing["status"], missing["error_type"]) == ("failed", "InputNotFoundError")  # an InputReadError subclass
    assert "does not exist" in missing["reason"]
    assert good["status"] == "exported"  # one bad record does not stop the others
    assert keys(s3_client, cloud_env, "exports/missing") == []
    assert "exports/T1/manifest.json" in keys(s3_client, cloud_env)


@pytest.mark.s3
def test_an_export_that_does_not_verify_is_redone(
    cloud_env: str,
    s3_bucket: str,
    s3_client: Any,
    s3_storage_options: dict[str, Any],
    tile_factory: Any,
    moto_endpoint: str,
) -> None:
    put_zarr(tile_factory(64, seed=4), f"s3://{s3_bucket}/in/T1/tile.zarr", s3_storage_options)
    event = {"input": f"s3://{s3_bucket}/in/T1/tile.zarr"}
    assert [r["status"] for r in handler(event)] == ["exported"]
    good = get(s3_client, cloud_env, "exports/T1/probabilities.tif")
    s3_client.put_object(Bucket=cloud_env, Key="exports/T1/probabilities.tif", Body=b"corrupt")
    assert [r["status"] for r in handler(event)] == ["exported"]
    redone = get(s3_client, cloud_env, "exports/T1/probabilities.tif")
    np.testing.assert_array_equal(read_raster(redone)["array"], read_raster(good)["array"])
    assert verify(f"s3://{cloud_env}/exports/T1", storage_options={"endpoint_url": moto_endpoint}).ok


@pytest.mark.s3
def test_netcdf_input(cloud_env: str, s3_bucket: str, s3_client: Any, tmp_path: Path, tile_factory: Any) -> None:
    tile = tile_factory(64, seed=5)
    local = tmp_path / "T09.nc"
    tile.to_netcdf(local, engine="h5netcdf")
    s3_client.upload_file(str(local), s3_bucket, "nc/T09/T09.nc")
    (result,) = handler({"Records": [s3_record(s3_bucket, "nc/T09/T09.nc")]}, None)
    assert (result["status"], result["output"]) == ("exported", f"s3://{cloud_env}/exports/T09")
    tif = get(s3_client, cloud_env, "exports/T09/binarized.tif")
    expected = expected_binarized(tile["binarized_segmentation"].values, tile["extent"].values)
    np.testing.assert_array_equal(read_raster(tif)["array"][0], expected)


@pytest.mark.s3
def test_s3_notification_names_the_tile_after_its_folder_unless_the_tile_names_itself(
    cloud_env: str, s3_bucket: str, s3_client: Any, s3_storage_options: dict[str, Any], tile_factory: Any
) -> None:
    tile = tile_factory(32, seed=4, with_inputs=False)
    put_zarr(tile, f"s3://{s3_bucket}/in/T06WVS_2024/tile.zarr", s3_storage_options)
    put_zarr(tile.assign_attrs(tile_id="S2B_T07"), f"s3://{s3_bucket}/in/T07_2024/tile.zarr", s3_storage_options)
    event = {
        "Records": [
            s3_record(s3_bucket, "in/T06WVS_2024/tile.zarr/zarr.json"),
            s3_record(s3_bucket, "in/T07_2024/tile.zarr/zarr.json"),
        ]
    }
    assert [r["tile_id"] for r in handler(event, None)] == ["T06WVS_2024", "S2B_T07"]
    assert json.loads(get(s3_client, cloud_env, "exports/T06WVS_2024/item.json"))["id"] == "T06WVS_2024"
    # A direct event names its tile through "metadata"; without, the id is derived from the georeference.
    (direct,) = handler({"input": f"s3://{s3_bucket}/in/T06WVS_2024/tile.zarr", "output": f"s3://{cloud_env}/d"}, None)
    assert direct["tile_id"].startswith("EPSG32606_")

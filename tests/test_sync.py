"""sync: exports that fell back to a local folder are published to their recorded target, then removed."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from rasterio.io import MemoryFile

from darts_export import export_tile, verify
from darts_export.export import fallback_location
from darts_export.lease import LEASE_NAME
from darts_export.manifest import Artifact, Manifest
from darts_export.storage import Storage
from darts_export.sync import sync
from faultproxy import Fault, FaultProxy
from helpers import expected_percent

BANDS = ("probabilities", "binarized", "metadata")


def _fall_back(tile: xr.Dataset, target: str, fallback: Path, unreachable: dict[str, Any], **kw: Any) -> Manifest:
    return export_tile(
        tile, target, bands=BANDS, storage_options=unreachable, fallback_dir=fallback, metadata={"id": "T1"}, **kw
    )


def _keys(s3_client: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_fallback_then_sync_publishes_verifies_and_removes_local(
    small_tile: xr.Dataset,
    tmp_path: Path,
    unreachable: dict[str, Any],
    s3_bucket: str,
    s3_storage_options: dict[str, Any],
    s3_client: Any,
) -> None:
    fallback = tmp_path / "fallback"
    target = f"s3://{s3_bucket}/darts/T1"
    manifest = _fall_back(small_tile, target, fallback, unreachable)
    local = fallback / "s3" / s3_bucket / "darts" / "T1"
    assert manifest.fell_back
    assert manifest.target == target
    assert manifest.location == local.resolve().as_uri()
    assert (local / "manifest.json").is_file()
    assert _keys(s3_client, s3_bucket) == []
    local_cog = (local / "probabilities.tif").read_bytes()

    report = sync(fallback, storage_options=s3_storage_options)

    assert report.ok
    [result] = report.results
    assert (result.status, result.target, result.local_path) == ("synced", target, str(local))
    assert (result.artifacts, result.bytes) == (len(manifest.artifacts), manifest.total_size)
    checked = verify(target, storage_options=s3_storage_options)
    assert checked.ok
    assert checked.checked == len(manifest.artifacts)
    assert _keys(s3_client, s3_bucket) == sorted(
        f"darts/T1/{p}" for p in ("manifest.json", *(a.path for a in manifest.artifacts))
    )
    remote = Manifest.from_json(s3_client.get_object(Bucket=s3_bucket, Key="darts/T1/manifest.json")["Body"].read())
    assert remote.location == target
    assert not remote.fell_back
    assert remote.artifacts == manifest.artifacts
    assert any("synced from the local fallback" in w for w in remote.warnings)
    body = s3_client.get_object(Bucket=s3_bucket, Key="darts/T1/probabilities.tif")["Body"].read()
    assert body == local_cog
    with MemoryFile(body) as mf, mf.open() as ds:
        assert (ds.read(1) == expected_percent(small_tile["probabilities"].values)).all()
    assert not local.exists()
    assert list(fallback.iterdir()) == []  # the empty s3/<bucket>/darts folders went too


def test_sync_commits_like_an_export_manifest_last(
    small_tile: xr.Dataset,
    tmp_path: Path,
    unreachable: dict[str, Any],
    s3_bucket: str,
    fault_proxy: FaultProxy,
    proxy_options: dict[str, Any],
) -> None:
    fallback = tmp_path / "fallback"
    _fall_back(small_tile, f"s3://{s3_bucket}/T1", fallback, unreachable)
    assert sync(fallback, storage_options=proxy_options).ok
    writes = [(r.method, r.key.removeprefix("T1/")) for r in fault_proxy.log if r.method in ("PUT", "DELETE", "POST")]
    assert writes[0] == ("PUT", LEASE_NAME)
    assert writes[1] == ("DELETE", "manifest.json")  # the old marker, before the first artifact
    assert sorted(writes[2:5]) == [
        ("PUT", "binarized.tif"),
        ("PUT", "darts_inference.json"),
        ("PUT", "probabilities.tif"),
    ]
    assert writes[5:] == [("PUT", "item.json"), ("PUT", "manifest.json"), ("DELETE", LEASE_NAME)]


def test_a_marker_that_cannot_be_removed_stops_the_sync(
    small_tile: xr.Dataset,
    tmp_path: Path,
    unreachable: dict[str, Any],
    s3_bucket: str,
    fault_proxy: FaultProxy,
    proxy_options: dict[str, Any],
) -> None:
    fallback = tmp_path / "fallback"
    target = f"s3://{s3_bucket}/T1"
    export_tile(small_tile, target, bands=["binarized"], storage_options=proxy_options)  # an older export there
    _fall_back(small_tile, target, fallback, unreachable)
    fault_proxy.reset(Fault("delete-error", match=lambda r: r.key == "T1/manifest.json"))
    [result] = sync(fallback, storage_options=proxy_options).results
    assert (result.status, result.reason) == ("failed", "storage")
    assert "still there after the delete" in (result.error or "")
    assert not [r for r in fault_proxy.log if r.method == "PUT" and r.key != f"T1/{LEASE_NAME}"]


def test_unreachable_target_keeps_the_local_copy(
    small_tile: xr.Dataset, tmp_path: Path, unreachable: dict[str, Any]
) -> None:
    fallback = tmp_path / "fallback"
    manifest = _fall_back(small_tile, "s3://bucket/darts/T1", fallback, unreachable)
    report = sync(fallback, storage_options=unreachable)
    [result] = report.results
    assert not report.ok
    assert (result.status, result.reason) == ("failed", "unreachable")
    assert "unreachable" in (result.error or "")
    assert verify(fallback_location(fallback, manifest.target or "")).ok  # untouched


def test_corrupt_local_export_is_not_pushed_and_others_go_on(
    small_tile: xr.Dataset,
    tmp_path: Path,
    unreachable: dict[str, Any],
    s3_bucket: str,
    s3_storage_options: dict[str, Any],
    s3_client: Any,
) -> None:
    fallback = tmp_path / "fallback"
    _fall_back(small_tile, f"s3://{s3_bucket}/bad", fallback, unreachable)
    _fall_back(small_tile, f"s3://{s3_bucket}/good", fallback, unreachable)
    tif = fallback / "s3" / s3_bucket / "bad" / "binarized.tif"
    data = bytearray(tif.read_bytes())
    data[-1] ^= 0xFF
    tif.write_bytes(bytes(data))
    broken = fallback / "s3" / s3_bucket / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")

    report = sync(fallback, storage_options=s3_storage_options)

    by_path = {Path(r.local_path).name: r for r in report.results}
    assert (by_path["bad"].status, by_path["bad"].reason) == ("failed", "local-corrupt")
    assert "binarized.tif: checksum" in (by_path["bad"].error or "")
    assert (by_path["broken"].status, by_path["broken"].reason) == ("failed", "local-corrupt")
    assert by_path["good"].status == "synced"
    assert all(k.startswith("good/") for k in _keys(s3_client, s3_bucket))
    assert tif.exists()


def test_target_filter_matches_whole_path_segments_and_dry_run_changes_nothing(
    small_tile: xr.Dataset,
    tmp_path: Path,
    unreachable: dict[str, Any],
    s3_bucket: str,
    s3_storage_options: dict[str, Any],
    s3_client: Any,
) -> None:
    fallback = tmp_path / "fallback"
    _fall_back(small_tile, f"s3://{s3_bucket}/darts/T1", fallback, unreachable)
    _fall_back(small_tile, f"s3://{s3_bucket}/darts-v2/T1", fallback, unreachable)

    dry = sync(fallback, f"s3://{s3_bucket}/darts/", storage_options=s3_storage_options, dry_run=True)
    assert sorted((r.target, r.status, r.reason) for r in dry.results) == [
        (f"s3://{s3_bucket}/darts-v2/T1", "skipped", "filtered"),
        (f"s3://{s3_bucket}/darts/T1", "skipped", "dry-run"),
    ]
    assert _keys(s3_client, s3_bucket) == []

    report = sync(fallback, f"s3://{s3_bucket}/darts", storage_options=s3_storage_options)
    assert [r.target for r in report.synced] == [f"s3://{s3_bucket}/darts/T1"]
    assert {k.split("/")[0] for k in _keys(s3_client, s3_bucket)} == {"darts"}
    assert (fallback / "s3" / s3_bucket / "darts-v2" / "T1" / "manifest.json").exists()
    assert json.loads(json.dumps(report.to_dict()))["synced"] == 1


def test_zarr_store_is_synced_object_by_object(
    small_tile: xr.Dataset, tmp_path: Path, s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    """A fallback-shaped export with a directory artifact, built by hand (no debug store writer needed)."""
    target = f"s3://{s3_bucket}/darts/T1"
    local = fallback_location(tmp_path / "fallback", target)
    manifest = export_tile(small_tile, local, bands=["binarized"])
    small_tile[["probabilities"]].to_zarr(local / "darts_inference_debug.zarr", consolidated=False)
    tree = Storage.open(local).describe_tree("darts_inference_debug.zarr")
    store = Artifact(
        path=tree.path,
        size=tree.size,
        checksum=tree.checksum,
        media_type="application/vnd.zarr",
        roles=("debug",),
        product="debug",
        type="directory",
    )
    shaped = replace(manifest, target=target, artifacts=(*manifest.artifacts, store))
    (local / "manifest.json").write_bytes(shaped.to_json())

    [result] = sync(tmp_path / "fallback", storage_options=s3_storage_options).results

    assert result.status == "synced", result.error
    assert verify(target, storage_options=s3_storage_options).ok
    # A cached s3fs instance: an uncached one dropped later leaves its aiohttp session unclosed (ResourceWarning).
    cached = {k: v for k, v in s3_storage_options.items() if k != "skip_instance_cache"}
    remote = xr.open_zarr(f"{target}/darts_inference_debug.zarr", storage_options=cached, consolidated=False)
    np.testing.assert_array_equal(remote["probabilities"].values, small_tile["probabilities"].values)


def test_newer_export_at_target_is_not_overwritten_and_a_repeated_sync_is_harmless(
    small_tile: xr.Dataset,
    tmp_path: Path,
    unreachable: dict[str, Any],
    s3_bucket: str,
    s3_storage_options: dict[str, Any],
) -> None:
    fallback = tmp_path / "fallback"
    target = f"s3://{s3_bucket}/T1"
    local = fallback_location(fallback, target)
    _fall_back(small_tile, target, fallback, unreachable)
    backup = tmp_path / "backup"
    shutil.copytree(local, backup)

    assert sync(fallback, storage_options=s3_storage_options).ok
    shutil.copytree(backup, local)  # as if an earlier sync stopped before removing the local copy
    [again] = sync(fallback, storage_options=s3_storage_options).results
    assert again.status == "synced"
    assert not local.exists()

    shutil.copytree(backup, local)
    older = Manifest.from_json((local / "manifest.json").read_bytes())
    (local / "manifest.json").write_bytes(replace(older, created="2000-01-01T00:00:00Z").to_json())
    export_tile(small_tile, target, bands=["binarized"], storage_options=s3_storage_options)
    [skipped] = sync(fallback, storage_options=s3_storage_options).results
    assert (skipped.status, skipped.reason) == ("skipped", "newer-at-target")
    assert local.exists()
    at_target = verify(target, storage_options=s3_storage_options).manifest
    assert at_target is not None
    assert [a.path for a in at_target.artifacts] == ["binarized.tif", "item.json"]


def test_missing_fallback_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sync(tmp_path / "nope")

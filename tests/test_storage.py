"""The storage seam: atomic publishing, checksums, retries, error translation, and GDAL reading from S3."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.session import AWSSession

from darts_export import StorageError, TargetUnreachableError, export_tile
from darts_export.storage import Storage, multihash_sha256
from helpers import Target, expected_percent


def test_publish_bytes_and_file_report_true_size_and_checksum(target: Target, tmp_path: Path) -> None:
    storage = Storage.open(target.out_dir, target.storage_options)
    data = np.random.default_rng(0).bytes(100_000)
    stored = storage.publish_bytes("nested/blob.bin", data)
    assert stored.size == len(data)
    assert stored.checksum == "1220" + hashlib.sha256(data).hexdigest()
    assert target.fs().cat_file(target.path("nested/blob.bin")) == data
    local = tmp_path / "staged.bin"
    local.write_bytes(data[::-1])
    stored_file = storage.publish_file("staged.bin", local)
    assert stored_file.checksum == multihash_sha256(hashlib.sha256(data[::-1]).digest())
    assert storage.describe("staged.bin") == stored_file
    assert storage.read_bytes("staged.bin") == data[::-1]


def test_describe_tree_is_defined_over_objects(target: Target) -> None:
    storage = Storage.open(target.out_dir, target.storage_options)
    storage.publish_bytes("store/a", b"1")
    storage.publish_bytes("store/sub/b", b"22")
    tree = storage.describe_tree("store")
    listing = "".join(
        f"{name}\t{len(body)}\t{hashlib.sha256(body).hexdigest()}\n" for name, body in [("a", b"1"), ("sub/b", b"22")]
    )
    assert tree.size == 3
    assert tree.checksum == multihash_sha256(hashlib.sha256(listing.encode()).digest())
    storage.publish_bytes("store/sub/b", b"23")
    assert storage.describe_tree("store").checksum != tree.checksum


def test_local_publish_is_atomic_and_leaves_no_temporaries(tmp_path: Path) -> None:
    storage = Storage.open(tmp_path)
    storage.publish_bytes("x.tif", b"old")

    class BoomError(RuntimeError):
        pass

    def failing_write(fh: Any) -> None:
        fh.write(b"half")
        raise BoomError

    with pytest.raises(StorageError) as info:
        storage._retry("write x.tif", lambda: storage._write_local(str(tmp_path / "x.tif"), failing_write))
    assert isinstance(info.value.__cause__, BoomError)
    assert (tmp_path / "x.tif").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tif"]


def test_paths_cannot_escape_out_dir(tmp_path: Path) -> None:
    storage = Storage.open(tmp_path)
    for bad in ("../x", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(ValueError, match="relative path"):
            storage.publish_bytes(bad, b"")


def test_transient_errors_are_retried_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    storage = Storage.open("memory://retry-test/out", backoff=0.001)
    calls: list[int] = []
    original = storage.fs.pipe_file

    def flaky(path: str, data: bytes, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) < 3:
            raise TimeoutError("read timed out")
        return original(path, data, **kwargs)

    monkeypatch.setattr(storage.fs, "pipe_file", flaky)
    assert storage.publish_bytes("a.bin", b"abc").size == 3
    assert len(calls) == 3
    calls.clear()

    def always_times_out(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        raise TimeoutError("x")

    monkeypatch.setattr(storage.fs, "pipe_file", always_times_out)
    with pytest.raises(StorageError, match=r"Cannot upload a\.bin") as info:
        storage.publish_bytes("a.bin", b"abc")
    assert isinstance(info.value.__cause__, TimeoutError)
    assert len(calls) == storage.retries + 1


def test_permanent_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    storage = Storage.open("memory://perm-test/out", backoff=0.001)
    calls: list[int] = []

    def denied(*_: Any, **__: Any) -> None:
        calls.append(1)
        raise PermissionError("Access Denied")

    monkeypatch.setattr(storage.fs, "pipe_file", denied)
    with pytest.raises(StorageError, match="Access Denied"):
        storage.publish_bytes("a.bin", b"abc")
    assert calls == [1]


def test_unreachable_endpoint_is_reported_as_such(small_tile: xr.Dataset, unreachable: dict[str, Any]) -> None:
    with pytest.raises(TargetUnreachableError, match="unreachable"):
        export_tile(small_tile, "s3://nowhere/prefix", bands=["binarized"], storage_options=unreachable)


def test_missing_bucket_is_unreachable(small_tile: xr.Dataset, s3_storage_options: dict[str, Any]) -> None:
    with pytest.raises(TargetUnreachableError):
        export_tile(small_tile, "s3://no-such-bucket-xyz/p", bands=["binarized"], storage_options=s3_storage_options)


def test_standard_aws_environment_is_enough(
    small_tile: xr.Dataset, s3_bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    manifest = export_tile(small_tile, f"s3://{s3_bucket}/env", bands=["binarized"])
    assert manifest.location == f"s3://{s3_bucket}/env"
    storage = Storage.open(f"s3://{s3_bucket}/env", {"skip_instance_cache": True})
    assert storage.describe("binarized.tif").checksum == manifest.artifact("binarized.tif").checksum


def test_gdal_reads_s3_cog_with_range_requests(
    tile_factory: Any, s3_bucket: str, s3_storage_options: dict[str, Any], moto_endpoint: str
) -> None:
    tile = tile_factory(1200, seed=4, with_inputs=False)
    export_tile(tile, f"s3://{s3_bucket}/cog", bands=["probabilities"], storage_options=s3_storage_options)
    session = AWSSession(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_session_token="testing",
        region_name="us-east-1",
        endpoint_url=moto_endpoint.removeprefix("http://"),
    )
    with (
        rasterio.Env(
            session=session, AWS_HTTPS="NO", AWS_VIRTUAL_HOSTING="FALSE", GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"
        ),
        rasterio.open(f"/vsis3/{s3_bucket}/cog/probabilities.tif") as ds,
    ):
        assert ds.profile["blockxsize"] == 512
        assert ds.overviews(1) == [2, 4]
        window = rasterio.windows.Window(512, 512, 300, 200)
        part = ds.read(1, window=window)
        overview = ds.read(1, out_shape=(600, 600))
    expected = expected_percent(tile["probabilities"].values)
    np.testing.assert_array_equal(part, expected[512:712, 512:812])
    assert overview.shape == (600, 600)

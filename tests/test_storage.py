"""The storage seam: atomic and exclusive publishing, confirmed deletes, one retry layer, errors, the probe."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.session import AWSSession

from darts_export import StorageError, TargetUnreachableError, export_tile
from darts_export.commit import transaction
from darts_export.errors import ArtifactExistsError, UnsupportedTargetError
from darts_export.products import MANIFEST_NAME
from darts_export.storage import MULTIPART_THRESHOLD, S3_DEFAULT_OPTIONS, Storage, multihash_sha256
from faultproxy import Fault, FaultKind, FaultProxy
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

    for exclusive in (False, True):
        with pytest.raises(BoomError):
            storage._write_local(str(tmp_path / "x.tif"), failing_write, exclusive=exclusive)
    assert (tmp_path / "x.tif").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tif"]


def test_paths_cannot_escape_out_dir(tmp_path: Path) -> None:
    storage = Storage.open(tmp_path)
    for bad in ("../x", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(ValueError, match="relative path"):
            storage.publish_bytes(bad, b"")


def test_exclusive_create_refuses_another_writers_object(target: Target) -> None:
    storage = Storage.open(target.out_dir, target.storage_options)
    storage.publish_bytes("marker.json", b"mine", exclusive=True)
    with pytest.raises(ArtifactExistsError, match="another writer created it first"):
        storage.publish_bytes("marker.json", b"theirs", exclusive=True)
    # The same bytes again: a retried create whose first answer was lost; that is success.
    assert storage.publish_bytes("marker.json", b"mine", exclusive=True).size == 4
    assert storage.read_bytes("marker.json") == b"mine"
    assert storage.publish_bytes("marker.json", b"overwritten").size == 11  # not exclusive: replaces


def test_remove_confirms_that_nothing_is_left(target: Target) -> None:
    storage = Storage.open(target.out_dir, target.storage_options)
    for rel in ("m.json", "store/a", "store/sub/b"):
        storage.publish_bytes(rel, b"x")
    storage.remove("m.json")
    storage.remove("store", recursive=True)
    storage.remove("never-there.json")
    storage.remove("never-there", recursive=True)
    assert storage.list() == ()
    assert not storage.exists("store")


def test_a_delete_answered_ok_that_deleted_nothing_is_detected(
    fault_proxy: FaultProxy, proxy_options: dict[str, Any], s3_bucket: str
) -> None:
    storage = Storage.open(f"s3://{s3_bucket}/t", proxy_options)
    for rel in ("manifest.json", "store/a", "store/b"):
        storage.publish_bytes(rel, b"x")
    fault_proxy.reset(Fault("delete-error", match=lambda r: r.method in ("DELETE", "POST")))
    with pytest.raises(StorageError, match="still there after the delete"):
        storage.remove("manifest.json")  # a single DELETE answered 204
    with pytest.raises(StorageError, match=r"2 object\(s\) still there"):
        storage.remove("store", recursive=True)  # a batch answered 200 with per-key errors
    assert [r.fault for r in fault_proxy.log if r.fault] == ["delete-error", "delete-error"]
    fault_proxy.reset()
    storage.remove("store", recursive=True)
    storage.remove("manifest.json")
    assert storage.list() == ()


def test_one_retry_layer_retries_each_request_and_translates_what_stays_failed(
    fault_proxy: FaultProxy, proxy_options: dict[str, Any], s3_bucket: str
) -> None:
    storage = Storage.open(f"s3://{s3_bucket}/t", proxy_options)
    storage.probe()
    fault_proxy.reset(Fault("503", at=0))
    assert storage.publish_bytes("a.bin", b"abc").size == 3
    assert [(r.method, r.key, r.fault) for r in fault_proxy.log] == [
        ("PUT", "t/a.bin", "503"),
        ("PUT", "t/a.bin", None),
    ]
    assert S3_DEFAULT_OPTIONS["config_kwargs"]["retries"] == {"mode": "standard", "max_attempts": 4}
    retries = {"max_attempts": 2}  # fewer than the default, to keep the test short
    options = {**proxy_options, "config_kwargs": {**proxy_options["config_kwargs"], "retries": retries}}
    storage = Storage.open(f"s3://{s3_bucket}/t", options)
    assert storage.fs.config_kwargs["retries"] == {"mode": "standard", "max_attempts": 2}  # merged over the default
    storage.probe()
    fault_proxy.reset(Fault("500", at=0, persistent=True))
    with pytest.raises(StorageError, match=r"Cannot upload b\.bin") as info:
        storage.publish_bytes("b.bin", b"abc")
    assert not isinstance(info.value, TargetUnreachableError)
    assert len(fault_proxy.log) == 3  # botocore's attempts only: no second loop around them
    # An answer cut off after its headers is not botocore's to retry: the read is repeated.
    fault_proxy.reset(Fault("truncate", match=lambda r: r.method == "GET", limit=1))
    assert storage.read_bytes("a.bin") == b"abc"
    assert [(r.method, r.fault) for r in fault_proxy.log] == [("GET", "truncate"), ("GET", None)]  # no HEAD first


@pytest.mark.parametrize("kind", ["truncate", "stall"])
def test_describe_reads_again_an_answer_that_broke_off(
    kind: FaultKind, fault_proxy: FaultProxy, proxy_options: dict[str, Any], s3_bucket: str
) -> None:
    storage = Storage.open(f"s3://{s3_bucket}/t", proxy_options)
    data = bytes(range(256)) * 64
    stored = storage.publish_bytes("a.tif", data)
    # verify reads through a file object, whose body reads neither botocore nor s3fs (1 attempt) repeat
    fault_proxy.reset(Fault(kind, match=lambda r: r.method == "GET", limit=1))
    assert storage.describe("a.tif") == stored
    gets = [r.fault for r in fault_proxy.log if r.method == "GET"]
    assert gets == [kind, None]


def test_a_large_artifact_goes_up_as_concurrent_parts_and_reads_back_identical(
    s3_storage_options: dict[str, Any], s3_bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    storage = Storage.open(f"s3://{s3_bucket}/t", s3_storage_options)
    data = np.random.default_rng(0).integers(0, 256, MULTIPART_THRESHOLD + 1, dtype=np.uint8).tobytes()
    staged = tmp_path / "staged.bin"
    staged.write_bytes(data[::-1])
    stored = [storage.publish_bytes("big.tif", data, exclusive=True), storage.publish_file("big.gpkg", staged)]
    for obj, expected in zip(stored, [data, data[::-1]], strict=True):
        assert (obj.size, obj.checksum) == (len(expected), multihash_sha256(hashlib.sha256(expected).digest()))
        assert storage.read_bytes(obj.path) == expected
        etag = s3_client.head_object(Bucket=s3_bucket, Key=f"t/{obj.path}")["ETag"]
        assert etag.endswith('-3"')  # three parts: 8 MiB, 8 MiB, 1 byte
    with pytest.raises(ArtifactExistsError):
        storage.publish_bytes("big.tif", data[::-1], exclusive=True)  # a conditional create, multipart too
    assert storage.read_bytes("big.tif") == data


def test_a_part_failing_for_good_stores_nothing_and_commits_nothing(
    fault_proxy: FaultProxy, proxy_options: dict[str, Any], s3_bucket: str, s3_client: Any
) -> None:
    retries = {"max_attempts": 1}  # botocore's retries are tested above; keep this one short
    options = {**proxy_options, "config_kwargs": {**proxy_options["config_kwargs"], "retries": retries}}
    storage = Storage.open(f"s3://{s3_bucket}/t", options)
    fault_proxy.reset(Fault("500", match=lambda r: "partNumber=2" in r.query))

    def export_one_big_artifact() -> None:
        with transaction(storage, overwrite=True) as tx:
            tx.publisher.publish("big.tif", bytes(MULTIPART_THRESHOLD))
            tx.commit(b"{}")

    with pytest.raises(StorageError, match=r"Cannot upload big\.tif"):
        export_one_big_artifact()
    assert storage.list() == ()  # no artifact, no manifest, no lease
    assert "Uploads" not in s3_client.list_multipart_uploads(Bucket=s3_bucket)  # the upload was aborted
    assert not any(r.key.endswith(MANIFEST_NAME) and r.method == "PUT" for r in fault_proxy.log)


def test_probe_rejects_an_unusable_local_target(tmp_path: Path) -> None:
    existing = tmp_path / "file.tif"
    existing.write_bytes(b"x")
    with pytest.raises(UnsupportedTargetError, match="existing file"):
        Storage.open(existing).probe()
    with pytest.raises(StorageError):
        Storage.open(existing / "below").probe()
    Storage.open(tmp_path / "new" / "folder").probe()
    assert (tmp_path / "new" / "folder").is_dir()
    assert list((tmp_path / "new" / "folder").iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders; run the suite as a normal user")
def test_probe_rejects_a_read_only_folder(tmp_path: Path) -> None:
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(StorageError, match="permission denied"):
            Storage.open(tmp_path).probe()
    finally:
        tmp_path.chmod(0o755)


def test_cannot_connect_differs_from_a_connection_lost_mid_export(
    small_tile: xr.Dataset,
    unreachable: dict[str, Any],
    fault_proxy: FaultProxy,
    proxy_options: dict[str, Any],
    s3_bucket: str,
) -> None:
    with pytest.raises(TargetUnreachableError, match="could not connect"):
        export_tile(small_tile, "s3://nowhere/prefix", bands=["binarized"], storage_options=unreachable)
    fault_proxy.reset(Fault("reset", at=3, persistent=True))
    options = {**proxy_options, "config_kwargs": {**proxy_options["config_kwargs"], "retries": {"max_attempts": 2}}}
    with pytest.raises(StorageError, match="lost the connection during the export") as info:
        export_tile(small_tile, f"s3://{s3_bucket}/lost", bands=["binarized", "metadata"], storage_options=options)
    assert not isinstance(info.value, TargetUnreachableError)


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

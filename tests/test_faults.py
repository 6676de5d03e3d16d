"""Faults injected by a proxy in front of the S3 server, at every stage of one small export.

For each fault kind (HTTP 500, 503 SlowDown, connection reset, a stall past the read timeout, a
truncated answer) one request is faulted in each stage of the export — the artifacts, the debug
store, the STAC item, the manifest, and the removal of an older export's manifest — and every
invariant of :mod:`faultsuite` must hold. ``bench/bench_faults.py`` runs every request index.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
import xarray as xr

from darts_export import export_tile
from darts_export.errors import StorageError, TargetUnreachableError
from darts_export.lease import LEASE_NAME
from darts_export.verify import missing_outputs, verify
from faultproxy import FAULT_KINDS, STALL_SECONDS, Fault, FaultKind, FaultProxy, settled
from faultsuite import BANDS, SUBSETS, enumerate_requests, export, fault_tile, pick_indices, run_case

SAMPLED_STAGES = ("artifacts", "debug store", "item", "manifest")


@pytest.fixture(scope="module")
def tile() -> xr.Dataset:
    return fault_tile()


@pytest.fixture(scope="module")
def cases(tile: xr.Dataset, moto_endpoint: str) -> list[tuple[str, int, bool]]:
    """(stage, request index, over an older export?) for one request in each stage, from a run without faults."""
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    bucket = f"enumerate-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    proxy = FaultProxy(moto_endpoint)
    try:
        options = {"endpoint_url": proxy.endpoint, "skip_instance_cache": True}
        fresh, overwrite = enumerate_requests(proxy, tile, f"s3://{bucket}/enumerated", options)
    finally:
        proxy.stop()
    picked = [(stage, index, False) for stage, index in pick_indices(fresh, SAMPLED_STAGES).items()]
    picked.append(("old marker", pick_indices(overwrite, ("old marker",))["old marker"], True))
    return picked


def test_cases_cover_every_stage(cases: list[tuple[str, int, bool]]) -> None:
    assert [c[0] for c in cases] == [*SAMPLED_STAGES, "old marker"]


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_one_fault_at_every_stage_ends_complete_or_clean(
    kind: FaultKind,
    cases: list[tuple[str, int, bool]],
    tile: xr.Dataset,
    moto_endpoint: str,
    proxy_options: dict[str, Any],
    s3_bucket: str,
    s3_client: Any,
) -> None:
    def one(case: tuple[str, int, bool]) -> str:
        stage, index, over = case
        proxy = FaultProxy(moto_endpoint, stall_seconds=STALL_SECONDS)  # one each: the cases run side by side
        try:
            options = {**proxy_options, "endpoint_url": proxy.endpoint}
            fault = Fault(kind, at=index)
            outcome = run_case(proxy, s3_client, tile, s3_bucket, f"{kind}-{index}", options, fault, overwrite=over)
        finally:
            proxy.stop()
        where = f"{kind} at request {index} ({stage}): {outcome}"
        assert outcome.injected == 1, where
        assert outcome.result in ("complete", "clean error"), where
        assert outcome.dropped == 0, where
        assert outcome.missing_agrees, where
        assert outcome.rerun in ("complete", "not needed"), where
        return outcome.result

    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(one, cases))
    assert len(results) == len(cases)


def test_a_persistent_outage_raises_within_one_requests_retry_budget_and_commits_nothing(
    tile: xr.Dataset, fault_proxy: FaultProxy, proxy_options: dict[str, Any], s3_bucket: str
) -> None:
    options = {**proxy_options, "config_kwargs": {**proxy_options["config_kwargs"], "retries": {"max_attempts": 2}}}
    url = f"s3://{s3_bucket}/outage"
    fault_proxy.reset(Fault("500", at=6, persistent=True))  # from the first artifact on: all uploads in flight fail
    started = time.perf_counter()
    with pytest.raises(StorageError) as info:
        export_tile(tile, url, bands=BANDS, ensemble_subsets=SUBSETS, debug=True, storage_options=options)
    seconds = time.perf_counter() - started
    assert not isinstance(info.value, TargetUnreachableError)  # reached, then lost: not "check your endpoint"
    faulted = [r for r in fault_proxy.log if r.fault]
    # The queued uploads were cancelled: only those in flight (8 threads x 3 attempts) and the lease release ran.
    assert len(faulted) <= 8 * 3 + 3, [(r.method, r.key) for r in faulted]
    assert seconds < 15, seconds
    fault_proxy.reset()
    assert not verify(url, storage_options=settled(options)).ok
    assert missing_outputs(url, BANDS, SUBSETS, debug=True, storage_options=settled(options)) != "none"


def test_old_marker_is_provably_gone_before_the_first_new_byte(
    tile: xr.Dataset, fault_proxy: FaultProxy, proxy_options: dict[str, Any], s3_bucket: str, s3_client: Any
) -> None:
    url = f"s3://{s3_bucket}/overwritten"
    export_tile(tile, url, bands=["binarized"], storage_options=proxy_options)
    before = s3_client.get_object(Bucket=s3_bucket, Key="overwritten/manifest.json")["Body"].read()
    fault_proxy.reset(Fault("delete-error", match=lambda r: r.key.endswith("manifest.json")))
    with pytest.raises(StorageError, match="still there after the delete"):
        export_tile(tile, url, bands=["binarized", "probabilities"], storage_options=proxy_options)
    written = [r.key for r in fault_proxy.log if r.method == "PUT" and not r.key.endswith(LEASE_NAME)]
    assert written == []  # not one byte of the new export
    assert s3_client.get_object(Bucket=s3_bucket, Key="overwritten/manifest.json")["Body"].read() == before
    fault_proxy.reset()
    assert verify(url, storage_options=settled(proxy_options)).ok  # the old export, whole and still valid


def test_eight_exports_under_random_faults_all_complete(
    tile: xr.Dataset, fault_proxy: FaultProxy, proxy_options: dict[str, Any], s3_bucket: str
) -> None:
    # 2 % of all requests faulted, spread over the five kinds; seeded, so a failure can be replayed.
    fault_proxy.reset(*(Fault(kind, rate=0.02 / len(FAULT_KINDS), seed=i) for i, kind in enumerate(FAULT_KINDS)))
    urls = [f"s3://{s3_bucket}/load/T{i}" for i in range(8)]
    started = time.perf_counter()
    with ThreadPoolExecutor(len(urls)) as pool:
        list(pool.map(lambda url: export(tile, url, proxy_options), urls))
    seconds = time.perf_counter() - started
    injected = [r for r in fault_proxy.log if r.fault]
    fault_proxy.reset()
    assert all(verify(url, storage_options=settled(proxy_options)).ok for url in urls)
    assert seconds < 90, seconds
    assert injected  # faults did happen, and every one was absorbed

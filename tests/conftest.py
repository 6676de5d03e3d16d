"""Shared fixtures: synthetic tiles, and one export target per backend (local, memory://, S3 on moto).

The S3 backend is a real S3 protocol server (moto's ``ThreadedMotoServer``) on loopback,
started once per test session (per xdist worker); every test gets a fresh bucket.
Credentials are fake and the environment is scrubbed so that nothing can reach AWS.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import fsspec
import pytest
import xarray as xr
from moto.server import ThreadedMotoServer

from darts_export.synthetic import make_synthetic_tile
from faultproxy import READ_TIMEOUT, STALL_SECONDS, FaultProxy
from helpers import Target, closed_port, fail_if_required

_FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # not a secret: moto accepts any key
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@pytest.fixture(scope="session", autouse=True)
def _no_real_aws() -> Iterator[None]:
    """Make every AWS client in the tests use fake credentials and never look for real ones."""
    saved = {k: os.environ.get(k) for k in (*_FAKE_AWS_ENV, "AWS_PROFILE", "AWS_ENDPOINT_URL")}
    os.environ.update(_FAKE_AWS_ENV)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto S3 server on loopback, for the whole session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_storage_options(moto_endpoint: str) -> dict[str, Any]:
    """fsspec/s3fs options that point at the moto server."""
    return {
        "endpoint_url": moto_endpoint,
        "key": _FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
        "secret": _FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        "token": _FAKE_AWS_ENV["AWS_SESSION_TOKEN"],
        "client_kwargs": {"region_name": "us-east-1"},
        "skip_instance_cache": True,
    }


@pytest.fixture
def s3_client(moto_endpoint: str) -> Any:
    """A boto3 S3 client on the moto server."""
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """A fresh, empty bucket for this test."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "memory", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """The same test on a local folder, on ``memory://`` and on S3 (moto server)."""
    backend = request.param
    if backend == "local":
        yield Target("local", str(tmp_path / "export"))
    elif backend == "memory":
        root = f"memory://darts-{uuid.uuid4().hex}/export"
        yield Target("memory", root)
        fs = fsspec.filesystem("memory")
        top = "/" + root.removeprefix("memory://").split("/")[0]
        if fs.exists(top):
            fs.rm(top, recursive=True)
    else:
        bucket = request.getfixturevalue("s3_bucket")
        options = request.getfixturevalue("s3_storage_options")
        yield Target("s3", f"s3://{bucket}/darts/T06WVS", options)


@pytest.fixture
def unreachable() -> dict[str, Any]:
    """s3fs options for an endpoint where nothing listens: every request fails at once."""
    return {
        "endpoint_url": f"http://127.0.0.1:{closed_port()}",
        "key": "k",
        "secret": "s",
        "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
        "skip_instance_cache": True,
    }


@pytest.fixture(scope="session")
def small_tile() -> xr.Dataset:
    """A 256 × 256 synthetic tile with every input band (shared; tests must not modify it)."""
    return make_synthetic_tile(256, seed=7)


@pytest.fixture
def tile_factory() -> Callable[..., xr.Dataset]:
    """Build synthetic tiles of any size and seed."""
    return make_synthetic_tile


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A PostgreSQL + PostGIS server: ``$DARTS_TEST_PGSTAC_DSN``, else a throwaway one on loopback.

    Skips when neither is available, naming the command that installs PostgreSQL + PostGIS;
    with ``DARTS_TEST_REQUIRE_PGSTAC=1`` (set by ``.ci/run``) that is a failure instead.
    """
    from pg_cluster import DSN_ENV, PostgresUnavailableError, start_cluster

    dsn = os.environ.get(DSN_ENV)
    if dsn:
        yield dsn
        return
    try:
        cluster = start_cluster()
    except PostgresUnavailableError as exc:
        fail_if_required("DARTS_TEST_REQUIRE_PGSTAC", str(exc))
        pytest.skip(f"{exc} (or set {DSN_ENV} to a PostgreSQL + PostGIS database)")
    try:
        yield cluster.dsn
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def dask_scheduler() -> Iterator[str]:
    """Address of a Dask LocalCluster with two worker processes (one export each), for a test module."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, resources={"export": 1}, dashboard_address=":0"
    ) as cluster:
        yield str(cluster.scheduler_address)


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    """A local Ray runtime with two CPUs, for a test module (the batch reuses an initialised runtime)."""
    import logging

    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture
def fault_proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    """A fault-injecting proxy on loopback in front of the moto server (forwards everything until told)."""
    proxy = FaultProxy(moto_endpoint, stall_seconds=STALL_SECONDS)
    yield proxy
    proxy.stop()


@pytest.fixture
def proxy_options(fault_proxy: FaultProxy) -> dict[str, Any]:
    """s3fs options through the fault proxy, with a read timeout the proxy's stalls exceed."""
    return {
        "endpoint_url": fault_proxy.endpoint,
        "key": _FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
        "secret": _FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        "token": _FAKE_AWS_ENV["AWS_SESSION_TOKEN"],
        "client_kwargs": {"region_name": "us-east-1"},
        "config_kwargs": {"read_timeout": READ_TIMEOUT, "connect_timeout": 1},
        "skip_instance_cache": True,
    }

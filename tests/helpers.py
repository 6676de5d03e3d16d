"""Small helpers shared by the tests: export targets, reading artifacts back through independent clients."""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import rasterio
import rasterio.shutil
import xarray as xr
from rasterio.io import MemoryFile

from darts_export.errors import ArtifactExistsError
from darts_export.storage import StoredObject

DATA = Path(__file__).resolve().parent / "data"
SCHEMAS = DATA / "schemas"
"""Official JSON schemas the tests validate against (see ``tests/data/schemas/SOURCES.md``)."""


@dataclass(frozen=True)
class Target:
    """Where a test exports to: ``out_dir`` and the ``storage_options`` that go with it."""

    backend: str
    out_dir: str
    storage_options: dict[str, Any] | None = field(default=None)

    @functools.cached_property
    def _resolved(self) -> tuple[fsspec.AbstractFileSystem, str]:
        # One filesystem per target, made on first use: a new S3 client per read made read-back ~10x slower.
        # No listings cache, so that a listing taken before an export never hides what it wrote.
        options = {**self.storage_options, "use_listings_cache": False} if self.storage_options else {}
        fs, root = fsspec.core.url_to_fs(self.out_dir, **options)
        return fs, str(root)

    def fs(self) -> fsspec.AbstractFileSystem:
        """An fsspec filesystem on the target, independent of the one the export used, for reading results back."""
        return self._resolved[0]

    def path(self, rel: str) -> str:
        """The full path of ``rel`` in that filesystem's notation."""
        return f"{self._resolved[1].rstrip('/')}/{rel}"


def fail_if_required(env: str, missing: str) -> None:
    """Fail the test when ``env`` is ``1`` (``.ci/run`` requires it there); else let the caller skip or do without."""
    if os.environ.get(env) == "1":
        pytest.fail(f"{env}=1 but {missing}")


def closed_port() -> int:
    """A loopback port where nothing listens (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_back(target: Target, rel: str) -> bytes:
    """The bytes of ``rel`` as an independent fsspec client sees them."""
    return bytes(target.fs().cat_file(target.path(rel)))


def multihash(data: bytes) -> str:
    return "1220" + hashlib.sha256(data).hexdigest()


def read_raster(data: bytes) -> dict[str, Any]:
    """Open GeoTIFF bytes with rasterio and return what the tests compare."""
    with MemoryFile(data) as mf, mf.open() as ds:
        return {
            "array": ds.read(),
            "nodata": ds.nodata,
            "tags": ds.tags(),
            "descriptions": ds.descriptions,
            "crs": ds.crs,
            "transform": ds.transform,
            "overviews": ds.overviews(1),
            "blocks": ds.block_shapes,
            "compression": ds.compression,
            "dtype": ds.dtypes[0],
            "count": ds.count,
        }


def expected_percent(probabilities: np.ndarray) -> np.ndarray:
    """Reference rounding of probabilities to percent: nearest, halves up, NaN → 255."""
    p = np.asarray(probabilities, dtype=np.float64)
    out = np.floor(p * 100 + 0.5)
    out[np.isnan(p)] = 255
    return out.astype(np.uint8)


def expected_binarized(mask: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """binarized.tif's pixels: the mask as 0/1 inside the valid extent (``extent > 0``), 255 (nodata) outside."""
    return np.where(np.asarray(extent) > 0, np.asarray(mask).astype(np.uint8), np.uint8(255))


def open_with_gdal(data: bytes) -> rasterio.DatasetReader:
    return MemoryFile(data).open()


def gdal_cog(bands: list[np.ndarray], georef: Any, creation: dict[str, str], **metadata: Any) -> bytes:
    """The COG GDAL writes by itself: a MEM copy of ``bands`` and the COG driver building the overviews.

    ``metadata``: ``nodata``, ``descriptions``, ``tags``, as encode_cog takes them; statistics computed by GDAL.
    """
    profile = {"driver": "MEM", "width": georef.width, "height": georef.height, "count": len(bands)}
    profile |= {"dtype": bands[0].dtype.name, "crs": georef.crs, "transform": georef.transform}
    with rasterio.open("", "w", nodata=metadata.get("nodata"), **profile) as mem:
        for index, band in enumerate(bands, start=1):
            mem.write(band, index)
            if metadata.get("descriptions"):
                mem.set_band_description(index, metadata["descriptions"][index - 1])
        mem.update_tags(**metadata.get("tags", {}))
        mem.stats(approx=False)
        with MemoryFile(ext=".tif") as out:
            rasterio.shutil.copy(mem, out.name, driver="COG", **{**creation, "OVERVIEWS": "IGNORE_EXISTING"})
            return bytes(out.read())


def overview_levels(data: bytes) -> list[np.ndarray]:
    """Every overview level of a GeoTIFF, largest first."""
    with MemoryFile(data) as mf, mf.open() as ds:
        count = len(ds.overviews(1))
    levels = []
    for level in range(count):
        with MemoryFile(data) as mf, mf.open(overview_level=level) as ds:
            levels.append(ds.read())
    return levels


# --- S3 (boto3 client on the moto server) and cloud events ----------------------------------------


def s3_record(bucket: str, key: str, *, source: str = "aws:s3", name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """One record of an S3 event notification."""
    return {"eventSource": source, "eventName": name, "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}


def put_zarr(tile: xr.Dataset, url: str, options: dict[str, Any] | None, *, consolidated: bool = True) -> None:
    """Write ``tile`` as a Zarr store at ``url``, as a producer upstream of darts-export would."""
    # A cached s3fs instance: an uncached one dropped mid-test leaves its aiohttp session unclosed (ResourceWarning).
    options = {k: v for k, v in options.items() if k != "skip_instance_cache"} if options else None
    with warnings.catch_warnings():
        # zarr 3 warns that consolidated metadata is not (yet) part of the v3 spec; producers write it anyway.
        warnings.filterwarnings("ignore", "Consolidated metadata is currently not part", UserWarning)
        tile.to_zarr(url, storage_options=options, consolidated=consolidated, mode="w")


def keys(s3_client: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every object key in ``bucket`` under ``prefix``, sorted."""
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def get(s3_client: Any, bucket: str, key: str) -> bytes:
    """The bytes of one object."""
    return bytes(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())


class FakeSink:
    """An in-memory target that satisfies :class:`darts_export.storage.Sink`, for orchestration tests.

    ``calls`` records every operation in order as ``(operation, rel)``; ``fail(operation, rel)``
    may return an exception to raise instead of doing it (``None`` lets it happen).
    """

    def __init__(self, fail: Callable[[str, str], Exception | None] | None = None) -> None:
        self.url = "fake://sink"
        self.objects: dict[str, bytes] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail = fail
        self._lock = threading.Lock()

    def _do(self, operation: str, rel: str) -> None:
        with self._lock:
            self.calls.append((operation, rel))
        error = self.fail(operation, rel) if self.fail is not None else None
        if error is not None:
            raise error

    def probe(self) -> None:
        self._do("probe", "")

    def exists(self, rel: str) -> bool:
        self._do("exists", rel)
        return rel in self.objects or any(k.startswith(rel + "/") for k in self.objects)

    def read_bytes(self, rel: str) -> bytes:
        self._do("read", rel)
        return self.objects[rel]

    def read_optional(self, rel: str) -> bytes | None:
        self._do("read", rel)
        return self.objects.get(rel)

    def publish_bytes(self, rel: str, data: bytes, *, exclusive: bool = False) -> StoredObject:
        self._do("publish", rel)
        with self._lock:
            if exclusive and rel in self.objects:
                raise ArtifactExistsError(f"{rel} exists")
            self.objects[rel] = bytes(data)
        return StoredObject(path=rel, size=len(data), checksum=multihash(bytes(data)))

    def publish_file(self, rel: str, local_path: Path, *, exclusive: bool = False) -> StoredObject:
        return self.publish_bytes(rel, Path(local_path).read_bytes(), exclusive=exclusive)

    def remove(self, rel: str, *, recursive: bool = False, confirm: bool = True) -> None:
        self._do("remove", rel)
        with self._lock:
            for key in [k for k in self.objects if k == rel or (recursive and k.startswith(rel + "/"))]:
                del self.objects[key]

    def published(self) -> list[str]:
        """The paths published, in order."""
        return [rel for op, rel in self.calls if op == "publish"]

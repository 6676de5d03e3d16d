"""Helpers of the batch tests: input stores on S3, and what a finished batch must look like."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import fsspec
import xarray as xr

from darts_export.batch import BatchSummary
from darts_export.synthetic import make_synthetic_tile
from darts_export.verify import verify


def input_tile(index: int, size: int = 64) -> xr.Dataset:
    """A small tile; each index lies beside the previous one, so every tile gets its own id and footprint."""
    tile = make_synthetic_tile(size, seed=index, with_inputs=False)
    return tile.assign_coords(x=tile.x + index * size * 10.0)


def put_inputs(
    url: str, count: int, options: Mapping[str, Any] | None, *, size: int = 64, only: int | None = None
) -> list[str]:
    """Write ``count`` input stores ``<url>/T<i>/tile.zarr`` (or just the one numbered ``only``); return their URLs."""
    cached = {k: v for k, v in (options or {}).items() if k != "skip_instance_cache"} or None
    stores = []
    for i in range(count) if only is None else [only]:
        store = f"{url.rstrip('/')}/T{i:02d}/tile.zarr"
        with warnings.catch_warnings():
            # zarr 3 warns that consolidated metadata is not (yet) part of the v3 spec; producers write it anyway.
            warnings.filterwarnings("ignore", "Consolidated metadata is currently not part", UserWarning)
            input_tile(i, size).to_zarr(store, storage_options=cached, consolidated=True, mode="w")
        stores.append(store)
    return stores


def corrupt_store(store: str, options: Mapping[str, Any] | None) -> None:
    """Overwrite the store's root metadata with bytes no reader accepts."""
    fs, root = fsspec.core.url_to_fs(store, **dict(options or {}))
    fs.pipe_file(f"{root}/zarr.json", b"\x00 not a zarr store")


def assert_consistent(summary: BatchSummary, inputs: list[str], options: Mapping[str, Any] | None) -> None:
    """Every input has exactly one row; every exported or skipped tile verifies; no failed tile has a manifest."""
    assert sorted(r.input for r in summary.results) == sorted(inputs)
    for result in summary.results:
        report = verify(result.output, storage_options=options)
        if result.status == "failed":
            assert report.manifest is None, f"{result.output} failed but looks complete"
            assert result.error
        else:
            assert report.ok, f"{result.output}: {[str(p) for p in report.problems]}"

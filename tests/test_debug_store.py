"""The Zarr debug store: encoded locally, published object by object to local/memory/S3, reopened with xarray."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr

from darts_export import export_tile
from darts_export.errors import TargetUnreachableError
from darts_export.formats import zarr_store as debug_store
from darts_export.formats.zarr_store import write_debug_store
from darts_export.manifest import Artifact
from darts_export.storage import Storage
from darts_export.synthetic import make_synthetic_tile
from helpers import Target

REL = "darts_inference_debug.zarr"


def _url(target: Target, rel: str) -> str:
    return f"{target.out_dir.rstrip('/')}/{rel}"


def _read_options(target: Target) -> dict[str, Any] | None:
    """The target's storage options for zarr's own (asynchronous) filesystem.

    Without ``skip_instance_cache`` fsspec reuses one cached S3 client for every read in the
    test session; a fresh client per read would be garbage-collected with its aiohttp session
    still open (zarr never closes the filesystems it creates), an unraisable ResourceWarning.
    """
    if target.storage_options is None:
        return None
    return {k: v for k, v in target.storage_options.items() if k != "skip_instance_cache"}


def _open(target: Target, **kwargs: Any) -> xr.Dataset:
    ds: xr.Dataset = xr.open_zarr(_url(target, REL), consolidated=True, storage_options=_read_options(target), **kwargs)
    return ds


def _tree_checksum(target: Target, rel: str) -> tuple[int, str]:
    """The documented tree checksum, recomputed with an independent client.

    SHA-256 over the sorted lines ``<path inside rel>\\t<size>\\t<sha256 hex>\\n``, as a multihash.
    """
    fs = target.fs()
    base = target.path(rel).rstrip("/")
    lines = []
    total = 0
    for full in sorted(fs.find(base)):
        inner = str(full).split(base.lstrip("/"), 1)[1].lstrip("/")
        data = fs.cat_file(full)
        total += len(data)
        lines.append(f"{inner}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\n")
    return total, "1220" + hashlib.sha256("".join(lines).encode()).hexdigest()


def _export(tile: xr.Dataset, target: Target) -> Artifact:
    manifest = export_tile(tile, target.out_dir, bands=["metadata"], debug=True, storage_options=target.storage_options)
    return manifest.artifact(REL)


def test_store_reopens_with_crs_and_values(target: Target) -> None:
    tile = make_synthetic_tile(64, seed=21)
    before = tile.copy(deep=True)
    encodings = {name: dict(var.encoding) for name, var in tile.variables.items()}

    stored = _export(tile, target)

    raw = _open(target, mask_and_scale=False)
    assert raw.rio.crs == tile.rio.crs
    assert raw.rio.transform() == tile.rio.transform()
    assert set(raw.data_vars) == set(tile.data_vars)
    for name, variable in tile.data_vars.items():
        assert raw[name].dtype == variable.dtype, name
        np.testing.assert_array_equal(raw[name].values, variable.values, err_msg=str(name))
    decoded = _open(target)
    assert decoded.rio.crs == tile.rio.crs
    np.testing.assert_array_equal(decoded["probabilities"].values, tile["probabilities"].values)  # NaN where invalid
    # Zarr v3 with consolidated metadata at the root.
    root = json.loads(target.fs().cat_file(target.path(f"{REL}/zarr.json")))
    assert root["zarr_format"] == 3
    assert "probabilities" in root["consolidated_metadata"]["metadata"]
    # The caller's tile: values, attributes and encodings untouched.
    xr.testing.assert_identical(tile, before)
    assert {name: dict(var.encoding) for name, var in tile.variables.items()} == encodings
    # Size and checksum, computed on the way out: what is stored, by the documented definition.
    storage = Storage.open(target.out_dir, target.storage_options)
    assert (stored.size, stored.checksum) == _tree_checksum(target, REL)
    assert (stored.size, stored.checksum) == (storage.describe_tree(REL).size, storage.describe_tree(REL).checksum)
    assert stored.type == "directory"


_EXACT_DTYPES = (
    "bool",
    "uint8",
    "int8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float16",
    "float32",
    "float64",
)


def test_every_dtype_round_trips_bit_exact(target: Target) -> None:
    tile = make_synthetic_tile(40, seed=28, with_inputs=False)
    rng = np.random.default_rng(28)
    for dtype in map(np.dtype, _EXACT_DTYPES):
        if dtype.kind == "f":
            values = rng.normal(0.5, 0.3, (40, 40)).astype(dtype)
            bits = values.view(f"u{dtype.itemsize}")
            finfo = np.finfo(dtype)
            values.flat[:6] = [np.nan, -0.0, np.inf, -np.inf, finfo.max, finfo.smallest_subnormal]
            bits.flat[6] |= 1  # the lowest mantissa bit of a noisy value, and a NaN with its own payload
            bits.flat[7] = bits.flat[0] | 0x3
        elif dtype.kind == "b":
            values = rng.random((40, 40)) < 0.3
        else:
            info = np.iinfo(dtype)
            values = rng.integers(info.min, info.max, (40, 40), dtype=dtype, endpoint=True)
        tile[f"v_{dtype.name}"] = (("y", "x"), values)
    _export(tile, target)
    group = zarr.open_group(_url(target, REL), mode="r", storage_options=_read_options(target), zarr_format=3)
    opened = _open(target, mask_and_scale=False)
    for name, variable in tile.data_vars.items():
        array = group[str(name)]
        assert isinstance(array, zarr.Array)
        for got in (np.asarray(array[...]), opened[name].values):
            assert got.dtype == variable.dtype, name
            width = f"u{got.dtype.itemsize}" if got.dtype.kind == "f" else got.dtype
            np.testing.assert_array_equal(got.view(width), variable.values.view(width), err_msg=str(name))


def test_consolidated_metadata_is_what_zarr_itself_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debug_store, "QUICKLOOK_SIZE", 16)  # a nested group too: the quick-look
    tile = make_synthetic_tile(32, seed=26)
    ours = write_debug_store(tile, tmp_path / "ours.zarr")
    theirs = tmp_path / "theirs.zarr"
    write_debug_store(tile, theirs)
    (theirs / "zarr.json").write_text(json.dumps({"attributes": {}, "zarr_format": 3, "node_type": "group"}))
    with pytest.warns(UserWarning, match="Consolidated metadata is currently not part"):
        zarr.consolidate_metadata(str(theirs), zarr_format=3)
    assert json.loads((ours / "zarr.json").read_text()) == json.loads((theirs / "zarr.json").read_text())
    quick = zarr.open_group(ours, mode="r")["quicklook/red"]
    assert isinstance(quick, zarr.Array)
    assert quick.shape == (16, 16)


def test_lazy_tile_exports_the_store_whatever_its_chunks(target: Target) -> None:
    tile = make_synthetic_tile(80, seed=27, with_inputs=False)
    lazy = tile.chunk({"x": 30, "y": 50})  # dask chunks that straddle the store's chunks
    stored = _export(lazy, target)
    reopened = _open(target, mask_and_scale=False)
    for name in tile.data_vars:
        np.testing.assert_array_equal(reopened[name].values, tile[name].values, err_msg=str(name))
    assert (stored.size, stored.checksum) == _tree_checksum(target, REL)


def test_chunks_and_compression_follow_the_layout(target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debug_store, "DEBUG_CHUNK_SIZE", 32)
    tile = make_synthetic_tile(80, seed=22, with_inputs=False)
    _export(tile, target)
    group = zarr.open_group(_url(target, REL), mode="r", storage_options=_read_options(target), zarr_format=3)
    array = group["probabilities"]
    assert isinstance(array, zarr.Array)
    assert array.chunks == (32, 32)
    blosc = array.compressors[0]
    assert isinstance(blosc, zarr.codecs.BloscCodec)
    assert (blosc.cname.value, blosc.shuffle and blosc.shuffle.value, blosc.typesize) == ("lz4", "bitshuffle", 4)
    mask = group["binarized_segmentation"]
    assert isinstance(mask, zarr.Array)
    assert [type(c).__name__ for c in mask.compressors] == ["ZstdCodec"]
    window = _open(target)["probabilities"][40:72, 8:40].values  # a window across four chunks
    np.testing.assert_array_equal(window, tile["probabilities"].values[40:72, 8:40])


def test_rewrite_leaves_no_stale_objects(target: Target) -> None:
    first = _export(make_synthetic_tile(48, seed=23), target)
    second = _export(make_synthetic_tile(48, seed=24, with_inputs=False), target)
    assert second.checksum != first.checksum
    reopened = _open(target)
    assert set(reopened.data_vars) == {"probabilities", "binarized_segmentation", "extent"}
    assert not target.fs().exists(target.path(f"{REL}/red"))
    assert (second.size, second.checksum) == _tree_checksum(target, REL)


def test_missing_bucket_fails_before_anything_is_encoded(s3_storage_options: dict[str, object]) -> None:
    with pytest.raises(TargetUnreachableError, match="bucket does not exist"):
        export_tile(
            make_synthetic_tile(32, seed=25, with_inputs=False),
            "s3://no-such-bucket-for-darts/x",
            bands=["metadata"],
            debug=True,
            storage_options=s3_storage_options,
        )

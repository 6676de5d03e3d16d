"""Bad input fails with a clear error before the first byte is written; failures never commit a manifest."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from darts_export import (
    ArtifactExistsError,
    InvalidTileError,
    UnsupportedTargetError,
    export_tile,
    verify,
)
from darts_export.export import ProgressEvent
from helpers import Target


def _nothing_written(target: Target) -> bool:
    fs = target.fs()
    root = target.path("").rstrip("/")
    return not fs.exists(root) or fs.find(root) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bands": ["probabilities", "no_such_band"]}, "Available variables are: \\['probabilities'"),
        ({"bands": ["optical"]}, "optical needs \\['red', 'green', 'blue', 'nir'\\]"),
        ({"bands": ["probabilities"], "ensemble_subsets": ["missing"]}, "probabilities-missing"),
        ({"bands": ["binarized"], "ensemble_subsets": ["a/b"]}, "not safe in a file name"),
        ({"bands": ["binarized"], "ensemble_subsets": [".."]}, "not safe in a file name"),
        ({"bands": ["binarized"], "ensemble_subsets": [""]}, "not safe in a file name"),
        ({"bands": ["../escape"]}, "band names become file names"),
        ({"metadata": {"when": object()}}, "JSON-serialisable"),
        ({"metadata": {"score": math.nan}}, "JSON-serialisable"),
        ({"metadata": {1: "x"}}, "keys must be strings"),
    ],
)
def test_bad_input_fails_before_writing(
    target: Target, tile_factory: Any, kwargs: dict[str, Any], message: str
) -> None:
    tile = tile_factory(32, seed=2, with_inputs=False)
    with pytest.raises(ValueError, match=message) as info:
        export_tile(tile, target.out_dir, storage_options=target.storage_options, **kwargs)
    assert isinstance(info.value, InvalidTileError)
    assert _nothing_written(target)


def test_tile_without_crs_is_rejected(tmp_path: Path, tile_factory: Any) -> None:
    tile = tile_factory(32, with_inputs=False).drop_vars("spatial_ref")
    for name in tile.data_vars:
        tile[name].attrs.pop("grid_mapping", None)
        tile[name].encoding.pop("grid_mapping", None)
    with pytest.raises(InvalidTileError, match="no CRS"):
        export_tile(tile, tmp_path / "out", bands=["binarized"])
    assert not (tmp_path / "out").exists()


def test_tile_without_coordinates_is_rejected(tmp_path: Path) -> None:
    tile = xr.Dataset({"binarized_segmentation": (("y", "x"), np.zeros((4, 4), bool))}).rio.write_crs("EPSG:32606")
    with pytest.raises(InvalidTileError, match="transform"):
        export_tile(tile, tmp_path / "out", bands=["binarized"])
    assert not (tmp_path / "out").exists()


def test_unknown_protocol_is_rejected(small_tile: xr.Dataset) -> None:
    with pytest.raises(UnsupportedTargetError, match="nosuchproto"):
        export_tile(small_tile, "nosuchproto://bucket/prefix", bands=["binarized"])


def test_existing_export_is_kept_without_overwrite(target: Target, small_tile: xr.Dataset) -> None:
    first = export_tile(small_tile, target.out_dir, bands=["binarized"], storage_options=target.storage_options)
    with pytest.raises(ArtifactExistsError, match="overwrite=True"):
        export_tile(
            small_tile, target.out_dir, bands=["binarized"], overwrite=False, storage_options=target.storage_options
        )
    assert verify(target.out_dir, storage_options=target.storage_options).manifest == first


def test_unreachable_target_falls_back_to_local_folder(
    small_tile: xr.Dataset, tmp_path: Path, unreachable: dict[str, Any]
) -> None:
    seen: list[str] = []

    def stored(event: ProgressEvent, path: str) -> None:
        if event == "published":
            seen.append(path)

    manifest = export_tile(
        small_tile,
        "s3://bucket/darts/T1",
        bands=["binarized", "metadata"],
        storage_options=unreachable,
        fallback_dir=tmp_path / "fallback",
        progress=stored,
    )
    local = tmp_path / "fallback" / "s3" / "bucket" / "darts" / "T1"
    assert manifest.fell_back
    assert manifest.target == "s3://bucket/darts/T1"
    assert manifest.location == local.as_uri()
    assert any("unreachable" in w for w in manifest.warnings)
    assert sorted(seen) == ["binarized.tif", "darts_inference.json", "item.json"]
    assert verify(local).ok

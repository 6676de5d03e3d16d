"""Every malformed input fails before the first byte, with the documented exception class.

One table of malformed calls of ``export_tile``, each run against a local folder (the test's
``tmp_path`` must stay empty: not even the export folder may appear), a subset of them also
against ``memory://`` and S3 (moto). Every case also checks that the caller's metadata dict
is left as it was.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import rasterio
import xarray as xr

from darts_export import export_tile, verify
from darts_export.errors import ConfigurationError, ExportError, InvalidTileError, UnsupportedTargetError
from darts_export.synthetic import make_synthetic_tile
from helpers import Target

_BASE = make_synthetic_tile(32, seed=3, with_inputs=False)


def _with(**variables: Any) -> xr.Dataset:
    """The base tile with variables replaced or added (2-D arrays on y/x unless given as (dims, data))."""
    tile = _BASE.copy()
    for name, value in variables.items():
        tile[name] = value if isinstance(value, tuple) else (("y", "x"), value)
    return tile


def _probabilities(scale: float = 1.0, dtype: Any = np.float32) -> Any:
    return (_BASE["probabilities"].fillna(0).values * scale).astype(dtype)


def _drop_crs(tile: xr.Dataset) -> xr.Dataset:
    tile = tile.drop_vars("spatial_ref")
    for name in tile.data_vars:
        tile[name].attrs.pop("grid_mapping", None)
        tile[name].encoding.pop("grid_mapping", None)
    return tile


@dataclass(frozen=True)
class Bad:
    """One malformed call: the tile and the keyword arguments, and what it must raise."""

    id: str
    error: type[ExportError]
    match: str
    kwargs: dict[str, Any]
    tile: Callable[[], Any] = lambda: _BASE


_LONG = "m" * 250
_GRS80_UTM6 = "+proj=tmerc +lat_0=0 +lon_0=-147 +k=0.9996 +x_0=500000 +y_0=0 +ellps=GRS80 +units=m"
CASES = [
    # --- the tile itself
    Bad("dataarray", InvalidTileError, r"to_dataset\(name=", {}, lambda: _BASE["probabilities"]),
    Bad("dict-tile", InvalidTileError, "must be an xarray.Dataset", {}, lambda: {"probabilities": 1}),
    Bad("none-tile", InvalidTileError, "must be an xarray.Dataset", {}, lambda: None),
    Bad("no-crs", InvalidTileError, "no CRS", {}, lambda: _drop_crs(_BASE)),
    Bad("empty-tile", InvalidTileError, "empty", {}, lambda: _BASE.isel(x=slice(0, 0))),
    Bad(
        "crs-lookalike",  # GRS80 with an unknown datum: GDAL's GeoPackage writer would call it NAD83 (EPSG:26906)
        InvalidTileError,
        "resembles EPSG:26906",
        {},
        lambda: _BASE.rio.write_crs(pyproj.CRS.from_proj4(_GRS80_UTM6).to_wkt()),
    ),
    # --- bands
    Bad("bands-empty", InvalidTileError, "bands is empty", {"bands": []}),
    Bad("bands-string", InvalidTileError, r"not the single string 'probabilities'", {"bands": "probabilities"}),
    Bad("bands-none", InvalidTileError, "must be a list of names", {"bands": None}),
    Bad("bands-int", InvalidTileError, "band names become file names", {"bands": [1]}),
    Bad("bands-escape", InvalidTileError, "band names become file names", {"bands": ["../escape"]}),
    Bad("bands-unknown", InvalidTileError, "Available variables", {"bands": ["no_such_band"]}),
    Bad("bands-missing-inputs", InvalidTileError, r"optical needs \['red'", {"bands": ["optical"]}),
    Bad("bands-too-long", InvalidTileError, "more than the 255", {"bands": [_LONG + "xxxxxx"]}),
    Bad("bands-reserved", InvalidTileError, "reserved device name", {"bands": ["CON"]}),
    Bad(
        "asset-key-clash-metadata",
        InvalidTileError,
        "share the STAC asset key 'darts_inference'",
        {"bands": ["metadata", "darts_inference"]},
        lambda: _with(darts_inference=_probabilities()),
    ),
    Bad(
        "asset-key-clash-vector",
        InvalidTileError,
        "share the STAC asset key 'prediction_segments-parquet'",
        {"bands": ["polygonized", "prediction_segments-parquet"]},
    ),
    Bad(
        "asset-key-clash-debug",
        InvalidTileError,
        "darts_inference_debug",
        {"bands": ["darts_inference_debug"], "debug": True},
    ),
    # --- ensemble subsets
    Bad("subsets-string", InvalidTileError, "not the single string", {"ensemble_subsets": "with_tcvis"}),
    Bad("subsets-int", InvalidTileError, "must be a list of names", {"ensemble_subsets": 5}),
    Bad("subset-slash", InvalidTileError, "not safe in a file name", {"ensemble_subsets": ["a/b"]}),
    Bad("subset-dotdot", InvalidTileError, "not safe in a file name", {"ensemble_subsets": [".."]}),
    Bad("subset-empty", InvalidTileError, "not safe in a file name", {"ensemble_subsets": [""]}),
    Bad("subset-too-long", InvalidTileError, "at most 227 characters", {"ensemble_subsets": [_LONG]}),
    Bad("subset-missing", InvalidTileError, "probabilities-missing", {"ensemble_subsets": ["missing"]}),
    # --- variable values
    Bad(
        "probabilities-percent",
        InvalidTileError,
        "looks like percent: divide by 100",
        {"bands": ["probabilities"]},
        lambda: _with(probabilities=_probabilities(100)),
    ),
    Bad(
        "probabilities-uint8",
        InvalidTileError,
        "must be floats in",
        {"bands": ["probabilities"]},
        lambda: _with(probabilities=_probabilities(100, np.uint8)),
    ),
    Bad(
        "probabilities-int64",
        InvalidTileError,
        "must be floats in",
        {"bands": ["thumbnail"]},
        lambda: _with(probabilities=_probabilities(100, np.int64)),
    ),
    Bad(
        "probabilities-negative",
        InvalidTileError,
        "clip the values",
        {"bands": ["polygonized"]},
        lambda: _with(probabilities=_probabilities() - 0.5),
    ),
    Bad(
        "probabilities-inf",
        InvalidTileError,
        "must lie in",
        {"bands": ["probabilities"]},
        lambda: _with(probabilities=np.where(_BASE["extent"].values > 0, np.inf, 0.5).astype(np.float32)),
    ),
    Bad(
        "subset-probabilities-percent",
        InvalidTileError,
        "'probabilities-a' holds values from",
        {"bands": ["probabilities"], "ensemble_subsets": ["a"]},
        lambda: _with(**{"probabilities-a": _probabilities(100), "binarized_segmentation-a": _BASE.extent.values}),
    ),
    Bad(
        "mask-float-nan",
        InvalidTileError,
        "masks must be boolean or integers 0/1",
        {"bands": ["binarized"]},
        lambda: _with(binarized_segmentation=np.where(_BASE.extent.values > 0, 1.0, np.nan)),
    ),
    Bad(
        "mask-uint8-255",
        InvalidTileError,
        "values from 0 to 255",
        {"bands": ["polygonized"]},
        lambda: _with(binarized_segmentation=(_BASE.extent.values * 255).astype(np.uint8)),
    ),
    Bad(
        "extent-negative",
        InvalidTileError,
        "'extent' is a mask with values from -1",
        {"bands": ["extent"]},
        lambda: _with(extent=_BASE.extent.values.astype(np.int16) - 1),
    ),
    Bad(
        "variable-3d",
        InvalidTileError,
        "only 2-D",
        {"bands": ["probabilities"]},
        lambda: _with(probabilities=(("band", "y", "x"), np.stack([_probabilities()] * 2))),
    ),
    Bad(
        "variable-strings",
        InvalidTileError,
        "only boolean, integer and float",
        {"bands": ["labels"]},
        lambda: _with(labels=np.full((32, 32), "slump")),
    ),
    Bad(
        "debug-variable-slash",
        InvalidTileError,
        "folder of the debug store",
        {"debug": True},
        lambda: _with(**{"a/b": _probabilities()}),
    ),
    Bad(
        "debug-variable-dunder",
        InvalidTileError,
        "folder of the debug store",
        {"debug": True},
        lambda: _with(__meta=_probabilities()),
    ),
    # --- metadata and the tile's attributes
    Bad(
        "metadata-datetime-word",
        InvalidTileError,
        "'yesterday' is not an ISO 8601",
        {"metadata": {"datetime": "yesterday"}},
    ),
    Bad("metadata-list", InvalidTileError, "must be a mapping", {"metadata": [("tile_id", "T1")]}),
    Bad("metadata-key-equals", InvalidTileError, "contains '='", {"metadata": {"a=b": 1}}),
    Bad("metadata-key-empty", InvalidTileError, "empty key", {"metadata": {"": 1}}),
    Bad("metadata-key-newline", InvalidTileError, "control character", {"metadata": {"model\nversion": 1}}),
    Bad("metadata-key-int", InvalidTileError, "keys must be strings", {"metadata": {1: "x"}}),
    Bad("metadata-nan", InvalidTileError, "JSON-serialisable", {"metadata": {"score": float("nan")}}),
    Bad("metadata-object", InvalidTileError, "JSON-serialisable", {"metadata": {"when": object()}}),
    Bad("metadata-exportdate", InvalidTileError, "not an ISO 8601", {"metadata": {"DARTS_exportdate": "soon"}}),
    Bad("metadata-tile-id-list", InvalidTileError, "must be a string", {"metadata": {"DARTS_tileid": ["T1"]}}),
    Bad(
        "attrs-time-word",
        InvalidTileError,
        r"tile.attrs\['time'\]",
        {},
        lambda: _BASE.assign_attrs(time="last tuesday"),
    ),
    # --- options and target
    Bad("storage-options-string", UnsupportedTargetError, "must be a dict", {"storage_options": "endpoint=x"}),
    Bad("storage-options-int-keys", UnsupportedTargetError, "must be a dict", {"storage_options": {1: 2}}),
    Bad(
        "storage-option-endpoint-int",
        UnsupportedTargetError,
        "endpoint_url=5",
        {"storage_options": {"endpoint_url": 5}},
    ),
    Bad(
        "storage-option-client-kwargs",
        UnsupportedTargetError,
        "client_kwargs='x'",
        {"storage_options": {"client_kwargs": "x"}},
    ),
    Bad("out-dir-none", UnsupportedTargetError, "must be a folder or URL", {"out_dir": None}),
    Bad("out-dir-int", UnsupportedTargetError, "must be a folder or URL", {"out_dir": 42}),
    Bad("out-dir-protocol", UnsupportedTargetError, "nosuchproto", {"out_dir": "nosuchproto://bucket/prefix"}),
    Bad("debug-string", InvalidTileError, "debug must be True or False", {"debug": "yes"}),
    Bad("overwrite-string", InvalidTileError, "overwrite must be True or False", {"overwrite": "no"}),
    Bad("cog-options-dict", InvalidTileError, "CogOptions", {"cog_options": {"compression": "ZSTD"}}),
    Bad("progress-string", InvalidTileError, "progress must be a function", {"progress": "print"}),
    Bad("fallback-dir-int", UnsupportedTargetError, "fallback_dir", {"fallback_dir": 5}),
]
# A subset also run against memory:// and S3: the target must stay empty there too.
ON_EVERY_TARGET = {
    "dataarray",
    "bands-string",
    "asset-key-clash-metadata",
    "subset-too-long",
    "probabilities-percent",
    "probabilities-uint8",
    "mask-float-nan",
    "metadata-datetime-word",
    "metadata-key-equals",
    "storage-option-endpoint-int",
}


def _call(case: Bad, out_dir: Any, storage_options: dict[str, Any] | None) -> None:
    """Run the case against ``out_dir``; assert the exact exception class and an untouched metadata dict."""
    kwargs = {"out_dir": out_dir, "storage_options": storage_options, **case.kwargs}
    given = case.kwargs.get("storage_options")
    if isinstance(given, dict) and storage_options:  # keep the target's endpoint and credentials
        kwargs["storage_options"] = {**storage_options, **given}
    metadata = kwargs.get("metadata")
    before = copy.copy(metadata)
    with pytest.raises(case.error, match=case.match) as info:
        export_tile(case.tile(), **kwargs)
    assert type(info.value) is case.error
    assert metadata == before


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_fails_before_anything_is_written(case: Bad, tmp_path: Path) -> None:
    _call(case, tmp_path / "out", None)
    assert list(tmp_path.rglob("*")) == []  # not even the export folder was created


@pytest.mark.parametrize("case", [c for c in CASES if c.id in ON_EVERY_TARGET], ids=lambda c: c.id)
def test_malformed_input_leaves_every_target_empty(case: Bad, target: Target) -> None:
    _call(case, target.out_dir, target.storage_options)
    fs, root = target.fs(), target.path("").rstrip("/")
    assert not fs.exists(root) or fs.find(root) == []


def test_the_table_is_large_and_covers_every_category() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


def test_a_bad_input_leaves_an_earlier_export_complete(target: Target) -> None:
    """The old manifest is removed only once the new input passed every check."""
    export_tile(_BASE, target.out_dir, bands=["binarized"], storage_options=target.storage_options)
    with pytest.raises(InvalidTileError, match="yesterday"):
        export_tile(
            _BASE,
            target.out_dir,
            bands=["binarized"],
            metadata={"datetime": "yesterday"},
            storage_options=target.storage_options,
        )
    assert verify(target.out_dir, storage_options=target.storage_options).ok


def test_an_out_dir_too_long_for_s3_keys_is_refused(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["d" * 200] * 5)
    with pytest.raises(UnsupportedTargetError, match="more than the 1024"):
        export_tile(_BASE, deep, bands=["binarized"])
    assert list(tmp_path.rglob("*")) == []


def test_a_malformed_source_date_epoch_fails_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "2024-01-01")
    with pytest.raises(ConfigurationError, match="SOURCE_DATE_EPOCH"):
        export_tile(_BASE, tmp_path / "out", bands=["binarized"])
    assert list(tmp_path.rglob("*")) == []


@pytest.mark.parametrize("probabilities", [1.000001, -0.000001])
def test_probabilities_within_float_tolerance_are_accepted(tmp_path: Path, probabilities: float) -> None:
    tile = _with(probabilities=np.full((32, 32), probabilities, np.float32))
    manifest = export_tile(tile, tmp_path / "out", bands=["probabilities"])
    assert [a.path for a in manifest.artifacts] == ["probabilities.tif", "item.json"]


def test_integer_and_boolean_masks_are_accepted(tmp_path: Path) -> None:
    tile = _with(binarized_segmentation=_BASE.binarized_segmentation.values.astype(np.int32))
    assert verify(export_tile(tile, tmp_path / "out", bands=["binarized", "polygonized"]).location).ok


@pytest.mark.parametrize(
    "definition",
    [
        "+proj=tmerc +lat_0=0 +lon_0=-147 +k=0.9996 +x_0=500010 +y_0=0 +datum=WGS84 +units=m",
        "+proj=stere +lat_0=90 +lat_ts=71 +lon_0=-45.5 +x_0=0 +y_0=0 +datum=WGS84 +units=m",
    ],
)
def test_a_crs_without_epsg_code_is_written_in_full_everywhere(tmp_path: Path, definition: str) -> None:
    crs = pyproj.CRS.from_proj4(definition)
    tile = _BASE.rio.write_crs(crs.to_wkt())
    manifest = export_tile(tile, tmp_path / "out", bands=["probabilities", "polygonized"])
    out = tmp_path / "out"
    assert manifest.tile_id.startswith("CRS_")
    assert pyproj.CRS.from_wkt(manifest.crs_wkt).equals(crs)
    with rasterio.open(out / "probabilities.tif") as cog:
        assert pyproj.CRS.from_wkt(cog.crs.to_wkt()).equals(crs)
    assert gpd.read_parquet(out / "prediction_segments.parquet").crs.equals(crs)
    assert gpd.read_file(out / "prediction_segments.gpkg").crs.equals(crs)
    properties = json.loads((out / "item.json").read_text())["properties"]
    assert properties["proj:code"] is None
    assert pyproj.CRS.from_wkt(properties["proj:wkt2"]).equals(crs)
    assert pyproj.CRS.from_json_dict(properties["proj:projjson"]).equals(crs)


def test_a_crs_spelt_as_proj_string_keeps_its_epsg_code(tmp_path: Path) -> None:
    tile = _BASE.rio.write_crs(pyproj.CRS.from_proj4("+proj=utm +zone=6 +datum=WGS84 +units=m").to_wkt())
    manifest = export_tile(tile, tmp_path / "out", bands=["binarized"])
    assert manifest.crs == "EPSG:32606"

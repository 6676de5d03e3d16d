"""darts-export as the DARTS pipelines call it, call for call.

``darts-nextgen``'s ``sequential_v2`` and ``ray_v2`` export stages (commit 4af7791) do, per tile:
``missing_outputs(outpath, bands=..., ensemble_subsets=...)`` on a ``pathlib.Path`` that does not
exist yet, then ``export_tile(tile, outpath, bands=..., ensemble_subsets=..., [metadata=..., debug=...])``.
The sequential pipeline passes the model names as a list and ``DARTS_``-prefixed metadata; the Ray
pipeline passes ``models.keys()`` (a ``dict_keys`` view) and no metadata at all, and hands the tile
over through Ray's object store inside a small dataclass. The tile carries what
``darts-acquisition`` leaves on a Sentinel-2 scene: its ids and the source STAC item's properties,
flattened into ``attrs``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pytest
import ray
import xarray as xr

from darts_export import export_tile, missing_outputs, verify
from darts_export.synthetic import make_synthetic_tile
from helpers import read_raster
from stac_helpers import OfflineValidator, validate_offline

S2_ID = "S2B_MSIL2A_20240715T213309_N0510_R086_T06WVS_20240716T002043"
EXPORT_BANDS = ["probabilities", "binarized", "polygonized", "extent", "thumbnail"]
MODELS: dict[str, Any] = {
    "with_tcvis": object(),
    "without_tcvis": object(),
}  # name -> model, as the pipelines hold them

# darts-acquisition (cdse_scene): the STAC item's properties, flattened, lists as str(), bools as int; plus ids.
ACQUISITION_ATTRS: dict[str, Any] = {
    "datetime": "2024-07-15T21:33:09.024000Z",
    "start_datetime": "2024-07-15T21:33:09.024000Z",
    "end_datetime": "2024-07-15T21:33:09.024000Z",
    "platform": "sentinel-2b",
    "constellation": "sentinel-2",
    "instruments": "['msi']",
    "eo:cloud_cover": 3.25,
    "view:sun_azimuth": 172.41,
    "view:sun_elevation": 41.23,
    "s2:mgrs_tile": "06WVS",
    "s2:processing_baseline": "05.10",
    "s2:degraded_msi_data_percentage": 0,
    "processing:software": "{'sentinel-2-l2a': '05.10'}",  # not an acquisition property: not carried
    "time": "2024-07-15T21:33:09.024000000",
    "azimuth": 172.41,
    "elevation": 41.23,
    "s2_tile_id": S2_ID,
    "tile_id": S2_ID,
}


@dataclass
class RayDataset:
    """As ``darts.pipelines._ray_wrapper.RayDataset``: lets Ray serialise an ``xarray.Dataset``."""

    dataset: xr.Dataset


class RayDataDict(TypedDict):
    """The row that travels between the Ray Data stages (the fields the export stage reads)."""

    tile: RayDataset
    outpath: str
    tile_id: str


def _darts_tile() -> xr.Dataset:
    """A tile as ``prepare_export`` leaves it: ensemble and per-model outputs, rioxarray CRS, y descending."""
    base = make_synthetic_tile(48, seed=11, with_inputs=False)
    variables: dict[str, Any] = {}
    for index, name in enumerate(MODELS):
        probabilities = (base.probabilities * (0.8 + 0.1 * index)).astype(np.float32)
        variables[f"probabilities-{name}"] = probabilities
        variables[f"binarized_segmentation-{name}"] = (probabilities > 0.5) & (base.extent > 0)
    return base.assign(variables).assign_attrs(ACQUISITION_ATTRS)


def _sequential_metadata(tile_id: str) -> dict[str, Any]:
    """``sequential_v2._result_metadata``: every key prefixed ``DARTS_``."""
    return {
        "DARTS_tileid": tile_id,
        "DARTS_modelfiles": ["RTS_v6_tcvis.pt", "RTS_v6_notcvis.pt"],
        "DARTS_tpiouter": 100,
        "DARTS_tpiinner": 0,
        "DARTS_patchsize": 1024,
        "DARTS_overlap": 256,
        "DARTS_reflection": 0,
        "DARTS_binarizethreshold": 0.5,
        "DARTS_maskerosion": 10,
        "DARTS_edgeerosion": 10,
        "DARTS_mmu": 32,
        "DARTS_qualitymask": 1,
    }


@pytest.fixture(scope="module")
def validator() -> OfflineValidator:
    return OfflineValidator()


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    """A local Ray runtime with one CPU, as the export stage's ``num_cpus=1``; shut down afterwards."""
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 2**20)
    yield
    ray.shutdown()


def _check_item(outpath: Path, tile_id: str, validator: OfflineValidator) -> dict[str, Any]:
    item: dict[str, Any] = json.loads((outpath / "item.json").read_text())
    validate_offline(item, validator)
    assert item["id"] == tile_id
    properties = item["properties"]
    assert properties["datetime"] == "2024-07-15T21:33:09.024000Z"  # the acquisition, not the export
    assert properties["start_datetime"] == properties["end_datetime"] == "2024-07-15T21:33:09.024000Z"
    carried = {
        k: v
        for k, v in properties.items()
        if k.split(":")[0] in ("platform", "constellation", "instruments", "eo", "view", "s2")
    }
    assert carried == {
        "platform": "sentinel-2b",
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": 3.25,
        "view:sun_azimuth": 172.41,
        "view:sun_elevation": 41.23,
        "s2:mgrs_tile": "06WVS",
        "s2:processing_baseline": "05.10",
        "s2:degraded_msi_data_percentage": 0,
    }
    assert {
        "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
        "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    } <= set(item["stac_extensions"])
    return item


def test_sequential_v2(tmp_path: Path, validator: OfflineValidator) -> None:
    tile = _darts_tile()
    tile_id = "T06WVS_2024-07-15"  # sequential_v2._get_tile_id(tilekey)
    outpath = tmp_path / "output" / tile_id
    ensemble_subsets = list(MODELS)  # ensemble.model_names
    assert missing_outputs(outpath, bands=EXPORT_BANDS, ensemble_subsets=ensemble_subsets) == "all"
    export_metadata = _sequential_metadata(tile_id)
    export_tile(
        tile,
        outpath,
        bands=EXPORT_BANDS,
        ensemble_subsets=ensemble_subsets or [],
        metadata=export_metadata,
        debug=False,
    )
    assert missing_outputs(outpath, bands=EXPORT_BANDS, ensemble_subsets=ensemble_subsets) == "none"
    report = verify(outpath)
    assert report.ok
    assert report.manifest is not None
    assert report.manifest.tile_id == tile_id
    item = _check_item(outpath, tile_id, validator)
    assert item["properties"]["darts:DARTS_modelfiles"] == '["RTS_v6_tcvis.pt", "RTS_v6_notcvis.pt"]'
    tags = read_raster((outpath / "probabilities-with_tcvis.tif").read_bytes())["tags"]
    assert json.loads(tags["DARTS_modelfiles"]) == ["RTS_v6_tcvis.pt", "RTS_v6_notcvis.pt"]
    assert tags["DARTS_tileid"] == tile_id
    assert tile.attrs == ACQUISITION_ATTRS  # the tile is not modified
    assert export_metadata == _sequential_metadata(tile_id)


def test_ray_v2_through_the_object_store(tmp_path: Path, validator: OfflineValidator, ray_runtime: None) -> None:
    row = RayDataDict(tile=RayDataset(_darts_tile()), outpath=str(tmp_path / "output" / S2_ID), tile_id=S2_ID)
    outpath = Path(row["outpath"])
    assert missing_outputs(outpath, bands=EXPORT_BANDS, ensemble_subsets=MODELS.keys()) == "all"
    received: RayDataDict = ray.get(ray.put(row))  # through the object store, as between Ray Data stages
    tile = received["tile"].dataset
    assert tile is not row["tile"].dataset
    export_tile(tile, Path(received["outpath"]), bands=EXPORT_BANDS, ensemble_subsets=MODELS.keys() or [])
    assert missing_outputs(outpath, bands=EXPORT_BANDS, ensemble_subsets=MODELS.keys()) == "none"
    report = verify(outpath)
    assert report.ok
    assert report.manifest is not None
    assert report.manifest.tile_id == S2_ID  # from tile.attrs["tile_id"]: no metadata was passed
    item = _check_item(outpath, S2_ID, validator)
    assert "darts:DARTS_tileid" not in item["properties"]
    assert {a.path for a in report.manifest.artifacts} >= {
        "probabilities-with_tcvis.tif",
        "binarized-without_tcvis.tif",
    }

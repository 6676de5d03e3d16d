"""export_tile end to end: every default product, the debug store and the STAC item on every target.

The per-format details live in the module tests (vectors, thumbnail, stac, debug store);
these tests prove the pieces are wired together: the registry, the manifest, the staging
of GeoPackages, the order of the commit and the non-fatal debug store.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

import geopandas as gpd
import pyarrow.parquet as pq
import pytest
import xarray as xr
from PIL import Image

import darts_export.encoders
import darts_export.export
from darts_export import DEFAULT_BANDS, Manifest, export_tile, missing_outputs, verify
from darts_export.errors import StorageError
from darts_export.export import ProgressEvent
from darts_export.products import expected_paths
from helpers import FakeSink, Target, multihash, read_back

SUBSETS = ("with_tcvis",)
META = {"tile_id": "T06WVS_2024", "model_version": "v2.1"}


@pytest.fixture(scope="module")
def subset_tile(request: pytest.FixtureRequest) -> xr.Dataset:
    """The session tile plus one ensemble subset."""
    tile: xr.Dataset = request.getfixturevalue("small_tile").copy()
    tile["probabilities-with_tcvis"] = tile["probabilities"] * 0.9
    tile["binarized_segmentation-with_tcvis"] = tile["binarized_segmentation"]
    return tile


@pytest.fixture
def staging_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private temp folder, so a test can see what the export staged and left behind."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_default_products_with_debug_store_on_every_target(
    target: Target, subset_tile: xr.Dataset, staging_root: Path
) -> None:
    manifest = export_tile(
        subset_tile,
        target.out_dir,
        ensemble_subsets=SUBSETS,
        metadata=META,
        debug=True,
        storage_options=target.storage_options,
    )

    # The writer, the registry and the checker agree on every path.
    paths = {a.path for a in manifest.artifacts}
    assert paths | {"manifest.json"} == set(expected_paths(DEFAULT_BANDS, SUBSETS, debug=True))
    assert {"prediction_segments-with_tcvis.gpkg", "thumbnail.jpg", "darts_inference_debug.zarr"} <= paths
    assert missing_outputs(target.out_dir, ensemble_subsets=SUBSETS, storage_options=target.storage_options) == "none"
    assert verify(target.out_dir, storage_options=target.storage_options).ok

    # The stored manifest is the returned one; the item is listed and checksummed like any artifact.
    assert Manifest.from_json(read_back(target, "manifest.json")) == manifest
    item_bytes = read_back(target, "item.json")
    by_path = {a.path: a for a in manifest.artifacts}
    assert by_path["item.json"].checksum == multihash(item_bytes)
    item = json.loads(item_bytes)
    assert item["id"] == "T06WVS_2024"
    assets = item["assets"]
    assert {"probabilities", "prediction_segments-parquet", "thumbnail", "darts_inference_debug"} <= set(assets)
    assert len(assets) == len(manifest.artifacts) - 1  # every artifact but the item itself
    for artifact in manifest.artifacts:
        if artifact.type == "file" and artifact.path != "item.json":
            match = [a for a in assets.values() if a["href"] == f"./{artifact.path}"]
            assert [a["file:checksum"] for a in match] == [artifact.checksum]
    assert by_path["darts_inference_debug.zarr"].type == "directory"

    # Vectors through independent readers: the GeoParquet and GeoPackage hold the same rows.
    with target.fs().open(target.path("prediction_segments.parquet"), "rb") as f:
        table = pq.read_table(f)
    local_gpkg = staging_root.parent / "prediction_segments.gpkg"
    local_gpkg.write_bytes(read_back(target, "prediction_segments.gpkg"))
    gpkg = gpd.read_file(local_gpkg)
    assert table.num_rows == len(gpkg) > 0
    assert sorted(table.column("Region_ID").to_pylist()) == sorted(gpkg["Region_ID"].tolist())
    assert gpkg.crs.to_epsg() == 32606

    thumb = Image.open(io.BytesIO(read_back(target, "thumbnail.jpg")))
    assert thumb.format == "JPEG"
    assert max(thumb.size) >= 256

    # Nothing is left in the staging area.
    assert list(staging_root.iterdir()) == []


def test_geopackage_staging_is_removed_when_an_export_fails(
    small_tile: xr.Dataset, tmp_path: Path, staging_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any, **__: Any) -> bytes:
        raise StorageError("simulated failure after the GeoPackage was staged")

    monkeypatch.setattr(darts_export.encoders, "encode_geoparquet", broken)
    out = tmp_path / "out"
    with pytest.raises(StorageError, match="simulated"):
        export_tile(small_tile, out, bands=["polygonized", "extent"])
    assert list(staging_root.iterdir()) == []
    assert not (out / "manifest.json").exists()
    assert missing_outputs(out, bands=["polygonized", "extent"]) in {"all", "some"}


def test_debug_store_failure_fails_the_export_and_commits_nothing(small_tile: xr.Dataset, tmp_path: Path) -> None:
    def fail(op: str, rel: str) -> Exception | None:
        injected = op == "publish" and rel.startswith("darts_inference_debug.zarr/probabilities/")
        return StorageError("simulated: a chunk of the debug store cannot be written") if injected else None

    sink = FakeSink(fail)
    with pytest.raises(StorageError, match="simulated"):
        export_tile(small_tile, sink, bands=["probabilities", "binarized"], debug=True)
    assert "manifest.json" not in sink.objects
    # Written locally: the products are there, the manifest is not, so the checker says "some" whatever lies there.
    out = tmp_path / "out"
    export_tile(small_tile, out, bands=["probabilities", "binarized"], debug=True)
    (out / "manifest.json").unlink()
    assert missing_outputs(out, bands=["probabilities", "binarized"], debug=True) == "some"
    assert not verify(out).ok


def test_item_is_written_after_every_artifact_and_before_the_manifest(small_tile: xr.Dataset, tmp_path: Path) -> None:
    events: list[tuple[ProgressEvent, str]] = []
    export_tile(small_tile, tmp_path / "out", bands=list(DEFAULT_BANDS), progress=lambda *e: events.append(e))
    order = [path for event, path in events if event == "published"]
    assert order[-1] == "item.json"
    # Each artifact is announced before it is stored, and each product before its first artifact.
    for path in order:
        assert events.index(("publishing", path)) < events.index(("published", path))
    encoding = [path for event, path in events if event == "encoding"]
    assert {"probabilities.tif", "prediction_segments.parquet", "thumbnail.jpg"} <= set(encoding)
    assert all(events.index(("encoding", p)) < events.index(("publishing", p)) for p in encoding)
    assert sorted(order[:-1]) == sorted(
        p for p in expected_paths(DEFAULT_BANDS, (), debug=False) if p not in {"item.json", "manifest.json"}
    )
    manifest = Manifest.from_json((tmp_path / "out" / "manifest.json").read_bytes())
    assert (tmp_path / "out" / "manifest.json").stat().st_mtime_ns >= (
        tmp_path / "out" / "item.json"
    ).stat().st_mtime_ns
    assert manifest.artifacts[-1].path == "item.json"

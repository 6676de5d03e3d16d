"""Helpers of the catalog and loader tests: exports at distinct places and times, hrefs opened as a client would."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import fsspec
import xarray as xr

from darts_export.export import export_tile
from darts_export.manifest import Manifest
from darts_export.synthetic import make_synthetic_tile

EXPORTS = {
    # tile id: (east shift in m, acquisition time); 60 km apart, so their bboxes never touch
    "T06WVS": (0.0, "2023-07-01T10:00:00Z"),
    "T06WVT": (60_000.0, "2024-08-02T11:00:00Z"),
}


def shifted(tile: xr.Dataset, dx: float) -> xr.Dataset:
    """``tile`` moved ``dx`` metres east (a new dataset; rioxarray recomputes the transform from the coordinates)."""
    return tile.assign_coords(x=tile.x + dx)


def export_pair(root: Path | str, *, size: int = 64, **options: Any) -> dict[str, Manifest]:
    """Export one synthetic tile per entry of :data:`EXPORTS` to ``root/<tile id>``."""
    manifests = {}
    for seed, (tile_id, (dx, when)) in enumerate(EXPORTS.items()):
        tile = shifted(make_synthetic_tile(size, seed=50 + seed, with_inputs=False), dx)
        manifests[tile_id] = export_tile(
            tile, f"{str(root).rstrip('/')}/{tile_id}", metadata={"tile_id": tile_id, "datetime": when}, **options
        )
    return manifests


def check_asset_opens(asset: dict[str, Any], storage_options: dict[str, Any] | None = None) -> None:
    """Open an asset's (absolute) href with fsspec; a file must have the size and checksum the item states."""
    href = asset["href"]
    fs, path = fsspec.core.url_to_fs(href, **(storage_options or {}))
    if "file:size" not in asset:  # a directory artifact (the Zarr debug store)
        assert fs.isdir(path), href
        return
    data = fs.cat_file(path)
    assert len(data) == asset["file:size"], href
    assert "1220" + hashlib.sha256(data).hexdigest() == asset["file:checksum"], href

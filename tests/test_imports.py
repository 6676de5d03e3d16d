"""A cold start loads no heavy library: the package face and the CLI import them on first use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Each costs 0.1-1.7 s to import; together they were 3-5 s of every CLI call and Lambda cold start.
HEAVY = frozenset(
    {
        "xarray",
        "rioxarray",
        "rasterio",
        "geopandas",
        "pandas",
        "pyarrow",
        "pyogrio",
        "zarr",
        "dask",
        "s3fs",
        "aiobotocore",
        "botocore",
        "pystac",
        "scipy",
        "shapely",
        "numpy",
        "PIL",
    }
)


def imported_modules(statement: str) -> set[str]:
    """Top-level packages a fresh interpreter imports to run ``statement`` (from ``-X importtime``)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement], capture_output=True, text=True, check=True, timeout=60
    )
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.mark.parametrize("module", ["darts_export", "darts_export.cli", "darts_export.cloud"])
def test_import_loads_no_heavy_library(module: str) -> None:
    loaded = imported_modules(f"import {module}")
    assert module.split(".")[0] in loaded
    assert not loaded & HEAVY, f"import {module} loads {sorted(loaded & HEAVY)}"


@pytest.mark.parametrize("args", [["--help"], ["export", "--help"], ["demo", "--help"]])
def test_cli_help_loads_no_heavy_library(args: list[str]) -> None:
    loaded = imported_modules(f"import sys; from darts_export.cli import main; sys.argv[1:] = {args!r}; main()")
    assert not loaded & HEAVY, f"darts-export {' '.join(args)} loads {sorted(loaded & HEAVY)}"


def test_lazy_names_resolve_to_their_modules() -> None:
    import darts_export
    from darts_export.export import export_tile

    assert darts_export.export_tile is export_tile
    assert set(darts_export.__all__) <= set(dir(darts_export))
    for name in darts_export.__all__:
        assert getattr(darts_export, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = darts_export.nope


def test_names_shadowed_by_submodules_stay_functions() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import darts_export.verify; from darts_export import verify; "
            "import inspect; print(inspect.isfunction(verify))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == "True"


def test_media_types_are_pystacs() -> None:
    import pystac

    from darts_export.products import MediaType

    pystac_names = {
        "COG": "COG",
        "GEOPARQUET": "VND_APACHE_PARQUET",
        "GEOPACKAGE": "GEOPACKAGE",
        "JPEG": "JPEG",
        "JSON": "JSON",
        "GEOJSON": "GEOJSON",
        "ZARR": "VND_ZARR",
    }
    assert {m.name: m.value for m in MediaType} == {
        ours: pystac.MediaType[theirs].value for ours, theirs in pystac_names.items()
    }


# Not needed by an export of the default bands of a tile with a plain CF grid mapping (what DARTS and the debug
# store write): rioxarray (with dask) only for other georeferences, band rasters and the debug store.
NOT_ON_THE_EXPORT_PATH = ("rioxarray", "scipy")

# dask is hidden as in a runtime install (it is an optional extra): installed, xarray imports dask.array
# (and dask imports scipy.sparse) on its own.
_EXPORT_IN_A_FRESH_PROCESS = """
import sys
sys.modules["dask"] = None
import numpy as np
import pyproj
import xarray as xr
from darts_export import export_tile

rng = np.random.default_rng(0)
grid = ("y", "x")
probabilities = rng.random((64, 64), dtype=np.float32)
variables = {{name: (grid, rng.random((64, 64), dtype=np.float32)) for name in ("red", "green", "blue", "nir")}}
variables |= {{"probabilities": (grid, probabilities), "binarized_segmentation": (grid, probabilities > 0.8)}}
variables["extent"] = (grid, np.ones((64, 64), dtype=np.uint8))
coords = {{"x": 500000 + 10 * (np.arange(64) + 0.5), "y": 7500000 - 10 * (np.arange(64) + 0.5)}}
coords["spatial_ref"] = ((), 0, {{"crs_wkt": pyproj.CRS.from_epsg(32606).to_wkt()}})
tile = xr.Dataset(variables, coords=coords)
export_tile(tile, sys.argv[1])
print(",".join(m for m in {heavy!r} if m in sys.modules))
export_tile(tile, sys.argv[2], bands=["optical"])
"""


def test_export_of_a_cf_tile_loads_neither_rioxarray_nor_scipy(tmp_path: Path) -> None:
    from darts_export.verify import verify

    code = _EXPORT_IN_A_FRESH_PROCESS.format(heavy=NOT_ON_THE_EXPORT_PATH)
    out = [str(tmp_path / "default"), str(tmp_path / "optical")]
    done = subprocess.run([sys.executable, "-c", code, *out], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"the default export loaded {done.stdout.strip()}"
    assert verify(tmp_path / "default").ok
    assert verify(tmp_path / "optical").ok  # band rasters still get rioxarray's .rio accessor when they need it

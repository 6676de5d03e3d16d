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


# Not needed by an export of the default bands from a stored tile (the handler's first request): rioxarray
# (with dask) only for tiles whose georeference only it can derive, band rasters and the debug store.
NOT_ON_THE_EXPORT_PATH = ("rioxarray", "scipy")

# dask is hidden as in a runtime install (it is an optional extra): installed, xarray imports dask.array
# (and dask imports scipy.sparse) on its own.
_EXPORT_IN_A_FRESH_PROCESS = """
import sys
sys.modules["dask"] = None
from darts_export import export_tile
from darts_export.inputs import open_tile

with open_tile(sys.argv[1]) as tile:
    export_tile(tile, sys.argv[2])
print(",".join(m for m in {heavy!r} if m in sys.modules))
with open_tile(sys.argv[1]) as tile:
    export_tile(tile, sys.argv[3], bands=["optical"])
"""


def test_export_of_a_stored_tile_loads_neither_rioxarray_nor_scipy(tmp_path: Path) -> None:
    from darts_export import make_synthetic_tile
    from darts_export.verify import verify
    from helpers import put_zarr

    put_zarr(make_synthetic_tile(64, seed=1), str(tmp_path / "tile.zarr"), None)
    code = _EXPORT_IN_A_FRESH_PROCESS.format(heavy=NOT_ON_THE_EXPORT_PATH)
    out = [str(tmp_path / "tile.zarr"), str(tmp_path / "default"), str(tmp_path / "optical")]
    done = subprocess.run([sys.executable, "-c", code, *out], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"the default export loaded {done.stdout.strip()}"
    assert verify(tmp_path / "default").ok
    assert verify(tmp_path / "optical").ok  # band rasters still get rioxarray's .rio accessor when they need it

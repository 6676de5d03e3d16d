"""A cold start loads no heavy library: the package face and the CLI import them on first use."""

from __future__ import annotations

import subprocess
import sys

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

"""darts-export: write DARTS segmentation tiles as COGs, GeoParquet, GeoPackage, Zarr and STAC.

The main entry point is :func:`export_tile`; :func:`missing_outputs` and :func:`verify`
check an export for completeness and integrity, locally or on object storage.

Importing the package loads no array, geo or cloud library: the names that need them are
imported on first use (PEP 562 module ``__getattr__``), so a CLI call or a cold Lambda start
pays only for what it runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from darts_export.__about__ import __version__
from darts_export.errors import (
    ArtifactExistsError,
    ExportError,
    InvalidTileError,
    StorageError,
    TargetUnreachableError,
    UnsupportedTargetError,
    VerificationError,
)
from darts_export.manifest import Artifact, Manifest
from darts_export.products import DEFAULT_BANDS, Product

# Eager, and light (fsspec only): the function `verify` shares its name with the submodule, and
# importing a submodule sets the package attribute of its name, which would hide a lazy function.
from darts_export.verify import VerificationReport, missing_outputs, verify

if TYPE_CHECKING:
    from darts_export.export import export_tile
    from darts_export.formats.cog import CogOptions
    from darts_export.synthetic import make_synthetic_tile

__all__ = [
    "DEFAULT_BANDS",
    "Artifact",
    "ArtifactExistsError",
    "CogOptions",
    "ExportError",
    "InvalidTileError",
    "Manifest",
    "Product",
    "StorageError",
    "TargetUnreachableError",
    "UnsupportedTargetError",
    "VerificationError",
    "VerificationReport",
    "__version__",
    "export_tile",
    "make_synthetic_tile",
    "missing_outputs",
    "verify",
]

# Public name -> the module that defines it; imported on first access.
_LAZY = {
    "export_tile": "darts_export.export",
    "CogOptions": "darts_export.formats.cog",
    "make_synthetic_tile": "darts_export.synthetic",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

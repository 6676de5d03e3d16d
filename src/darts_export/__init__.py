"""darts-export: write DARTS segmentation tiles as COGs, GeoParquet, GeoPackage, Zarr and STAC.

The main entry point is :func:`export_tile`; :func:`missing_outputs` and :func:`verify`
check an export for completeness and integrity, locally or on object storage.
"""

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
from darts_export.export import export_tile
from darts_export.formats.cog import CogOptions
from darts_export.manifest import Artifact, Manifest
from darts_export.products import DEFAULT_BANDS, Product
from darts_export.synthetic import make_synthetic_tile
from darts_export.verify import VerificationReport, missing_outputs, verify

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

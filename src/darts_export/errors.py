"""Every exception darts-export raises.

All derive from :class:`ExportError`; each subclass also inherits the built-in exception a
caller would naturally catch (``ValueError`` for bad input, ``OSError`` for storage trouble,
``FileNotFoundError`` for something missing), so existing ``except ValueError`` code keeps
working. Messages name the offending value and say what to do about it.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from typing import Any, Protocol

__all__ = [
    "ArtifactExistsError",
    "BatchInputError",
    "CatalogError",
    "ConfigurationError",
    "DuplicateItemError",
    "EngineUnavailableError",
    "ExportError",
    "ExportFailedError",
    "ExportInProgressError",
    "IncompleteStoreError",
    "InputNotFoundError",
    "InputReadError",
    "InsufficientSpaceError",
    "InvalidEventError",
    "InvalidInputError",
    "InvalidLocationError",
    "InvalidTileError",
    "MissingExtraError",
    "NoItemsError",
    "StorageError",
    "TargetUnreachableError",
    "UnsupportedTargetError",
    "VerificationError",
    "require_extra",
]


class ExportError(Exception):
    """Base class of every error raised by darts-export."""


# --- bad input: raised before anything is written -------------------------------------------------


class InvalidTileError(ExportError, ValueError):
    """The tile, the requested bands, the subset names or the metadata are unusable.

    Raised before anything is written.
    """


class UnsupportedTargetError(ExportError, ValueError):
    """``out_dir`` names a protocol that no installed fsspec implementation handles."""


class InvalidLocationError(ExportError, ValueError):
    """No output folder name can be derived from an input's path or URL."""


class InvalidEventError(InvalidTileError):
    """A cloud event is malformed or names something that cannot be exported; raised before anything is written."""


class ConfigurationError(ExportError, ValueError):
    """An environment variable is malformed: one of the cloud handler's, or ``SOURCE_DATE_EPOCH``."""


class MissingExtraError(ExportError, ImportError):
    """An optional feature was asked for but the package of its extra is not installed.

    Raised before anything is written; the message gives the ``pip install`` command to run.
    """

    def __init__(self, feature: str, extra: str, module: str) -> None:
        """Name the feature, the missing module and the extra that provides it."""
        self.feature, self.extra = feature, extra
        super().__init__(
            f'{feature} needs the optional package {module!r}; install it with: pip install "darts-export[{extra}]"',
            name=module,
        )


def require_extra(module: str, *, extra: str, feature: str) -> None:
    """Raise :class:`MissingExtraError` unless ``module`` (provided by the ``extra``) can be imported."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a half-installed module
        found = False
    if not found:
        raise MissingExtraError(feature, extra, module)


# --- input tiles ----------------------------------------------------------------------------------


class InputReadError(ExportError, OSError):
    """The input tile cannot be opened or read (the base of every input error)."""


class InputNotFoundError(InputReadError, FileNotFoundError):
    """The input path, object or store does not exist."""


class InvalidInputError(InputReadError, ValueError):
    """The input exists but is not a readable Zarr store or NetCDF-4 file."""


class IncompleteStoreError(InputReadError):
    """The Zarr store exists but has no consolidated metadata yet: its writer has not finished."""


# --- storage --------------------------------------------------------------------------------------


class StorageError(ExportError, OSError):
    """Reading from or writing to the output location failed."""


class TargetUnreachableError(StorageError):
    """The output location cannot be reached at all (connection, credentials, missing bucket).

    This is the condition under which an export may fall back to a local folder.
    """


class InsufficientSpaceError(ExportError, OSError):
    """The local staging disk (``/tmp`` on Lambda) has less free space than the export needs."""


class ArtifactExistsError(ExportError, FileExistsError):
    """An export already exists at the target and overwriting was not requested."""


class ExportInProgressError(ExportError, OSError):
    """Another writer holds the lease on the export's prefix (an export or sync is running there).

    Raised before anything is written. A duplicate event or retried invocation can ignore it;
    otherwise wait for the other writer, or for its lease to expire if it crashed.
    """


# --- checking and cataloguing exports -------------------------------------------------------------


class VerificationError(ExportError):
    """An exported artifact is missing or differs from what its manifest records."""


class NoItemsError(ExportError, FileNotFoundError):
    """No export's ``item.json`` was found under the walked prefix."""


class DuplicateItemError(ExportError, ValueError):
    """Two exports under the walked prefix have the same item id; a catalog would keep only one of them."""


class CatalogError(ExportError):
    """Loading the collection and its items into a STAC catalog database (pgstac) failed."""


# --- batches --------------------------------------------------------------------------------------


class BatchInputError(ExportError, ValueError):
    """The inputs of a batch cannot be resolved into tiles; raised before anything is written."""


class EngineUnavailableError(ExportError, RuntimeError):
    """A batch engine's cluster cannot be reached or started, or it lost a tile's worker for good."""


class _Summary(Protocol):
    @property
    def status(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class ExportFailedError(ExportError):
    """At least one request of a cloud event failed; ``summaries`` holds the outcome of every request."""

    def __init__(self, summaries: Sequence[_Summary]) -> None:
        """Build the message from the failed summaries."""
        self.summaries = tuple(summaries)
        failed = [s.to_dict() for s in self.summaries if s.status == "failed"]
        super().__init__(f"{len(failed)} of {len(self.summaries)} export(s) failed: {json.dumps(failed)}")

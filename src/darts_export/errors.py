"""The exceptions darts-export raises.

Every error derives from :class:`ExportError`; each subclass also inherits the
built-in exception a caller would naturally catch (``ValueError`` for bad input,
``OSError`` for storage trouble), so existing ``except ValueError`` code keeps working.
Messages name the offending value and say what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ArtifactExistsError",
    "ExportError",
    "InvalidTileError",
    "StorageError",
    "TargetUnreachableError",
    "UnsupportedTargetError",
    "VerificationError",
]


class ExportError(Exception):
    """Base class of every error raised by darts-export."""


class InvalidTileError(ExportError, ValueError):
    """The tile, the requested bands, the subset names or the metadata are unusable.

    Raised before anything is written.
    """


class UnsupportedTargetError(ExportError, ValueError):
    """``out_dir`` names a protocol that no installed fsspec implementation handles."""


class StorageError(ExportError, OSError):
    """Reading from or writing to the output location failed."""


class TargetUnreachableError(StorageError):
    """The output location cannot be reached at all (connection, credentials, missing bucket).

    This is the condition under which an export may fall back to a local folder.
    """


class ArtifactExistsError(ExportError, FileExistsError):
    """An export already exists at the target and overwriting was not requested."""


class VerificationError(ExportError):
    """An exported artifact is missing or differs from what its manifest records."""

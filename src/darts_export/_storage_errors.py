"""What went wrong at a target, from builtin exception types and botocore's error classes and codes.

Private to :mod:`darts_export.storage`, which is the only caller: retrying is botocore's job
(one retry layer); this module only turns a backend's exception into the package's own.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from typing import Literal

from darts_export.errors import ArtifactExistsError, ExportError, StorageError, TargetUnreachableError

__all__ = ["FailureKind", "classify", "translate"]

FailureKind = Literal["exists", "bucket", "credentials", "body", "connection", "permission", "other"]

_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired"}
)
_CONNECTION_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNRESET})


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes: s3fs and aiobotocore wrap errors in several layers."""
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return
        yield current
        current = current.__cause__ or current.__context__


def _body_errors() -> tuple[type[BaseException], ...]:
    """An answer whose body was cut off after its headers: botocore retries requests, not body reads."""
    import http.client

    import aiohttp
    from botocore import exceptions as boto

    return (
        aiohttp.ClientPayloadError,
        boto.ResponseStreamingError,
        boto.IncompleteReadError,
        http.client.IncompleteRead,
    )


def classify(exc: BaseException) -> FailureKind:
    """The kind of failure ``exc`` (or one of its causes) reports."""
    from botocore import exceptions as boto  # only needed once something failed

    chain = list(_chain(exc))
    for error in chain:
        code = _code(error)
        if code == "NoSuchBucket":
            return "bucket"
        if code in _CREDENTIAL_CODES:
            return "credentials"
        if code == "PreconditionFailed" or isinstance(error, FileExistsError):
            return "exists"
        if isinstance(error, boto.NoCredentialsError | boto.PartialCredentialsError | boto.CredentialRetrievalError):
            return "credentials"
    for error in chain:
        if isinstance(error, _body_errors()):
            return "body"
        if isinstance(error, boto.ConnectionError | boto.HTTPClientError | ConnectionError | TimeoutError):
            return "connection"
        if isinstance(error, socket.gaierror) or getattr(error, "errno", None) in _CONNECTION_ERRNOS:
            return "connection"
        if isinstance(error, PermissionError):
            return "permission"
    return "other"


def translate(exc: BaseException, where: str, *, reached: bool, exclusive: bool = False) -> ExportError:
    """The package's exception for ``exc``; ``where`` says what failed (``Cannot upload x at s3://...``).

    Args:
        exc: The backend's exception.
        where: The start of the message.
        reached: Whether the target had answered before: a connection error is then a lost
            connection (:class:`StorageError`), not an unreachable target.
        exclusive: The operation was a conditional create, so "exists" means another writer won.
    """
    kind = classify(exc)
    if kind == "exists" and not exclusive:
        kind = "other"
    detail = f"{type(exc).__name__}: {exc}"
    if kind == "exists":
        return ArtifactExistsError(f"{where}: another writer created it first ({detail}).")
    if kind == "bucket":
        return TargetUnreachableError(f"{where}: the bucket does not exist ({detail}). Create it or fix the URL.")
    if kind == "credentials":
        return TargetUnreachableError(
            f"{where}: the credentials were rejected or are missing ({detail}). Check the key, secret and token."
        )
    if kind == "body":
        kind = "connection"
    if kind == "connection" and not reached:
        return TargetUnreachableError(
            f"{where}: the target is unreachable, could not connect ({detail}). "
            "Check the endpoint, the network and that the bucket exists."
        )
    if kind == "connection":
        return StorageError(
            f"{where}: lost the connection during the export, after the target had answered ({detail}). "
            "Nothing was committed; run the export again."
        )
    if kind == "permission":
        return StorageError(f"{where}: permission denied ({detail}). Check write access to the target.")
    return StorageError(f"{where}: {detail}")

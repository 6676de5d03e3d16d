"""What a worker does with one tile: open its input, export it, and report a small frozen summary.

:func:`run_tile` is the only function the engines ship to their workers. It never raises: every
failure becomes a ``failed`` :class:`TileResult`, after retrying transient ones (connections,
timeouts, storage errors) with exponential backoff. A worker that dies mid-tile is the engine's
business (it re-runs the task elsewhere); the tile's earlier attempt left no manifest, so it never
looks complete.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from darts_export.errors import (
    ArtifactExistsError,
    IncompleteStoreError,
    InsufficientSpaceError,
    InvalidLocationError,
    VerificationError,
)

__all__ = ["Status", "TileResult", "TileTask", "failed_result", "is_transient", "peak_memory", "run_tile"]

logger = logging.getLogger(__name__)

Status = Literal["exported", "skipped", "failed"]

_PERMANENT = (
    FileNotFoundError,
    PermissionError,
    ValueError,
    IncompleteStoreError,
    InsufficientSpaceError,
    ArtifactExistsError,
    VerificationError,
    InvalidLocationError,
)


@dataclass(frozen=True, kw_only=True)
class TileTask:
    """One tile of a batch: where to read it, where to export it, and how."""

    input: str
    output: str
    bands: tuple[str, ...]
    ensemble_subsets: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False)
    debug: bool = False
    input_options: Mapping[str, Any] | None = field(default=None, hash=False)
    output_options: Mapping[str, Any] | None = field(default=None, hash=False)
    retries: int = 2
    backoff: float = 1.0
    verify_existing: bool = False
    """Re-hash an existing export first (``verify="full"``) and skip the tile when it verifies."""


@dataclass(frozen=True, kw_only=True)
class TileResult:
    """The outcome of one tile, one row of the run ledger."""

    input: str
    output: str
    status: Status
    seconds: float
    bytes: int = 0
    artifacts: int = 0
    tile_id: str | None = None
    worker: str | None = None
    attempts: int = 0
    error: str | None = None
    error_type: str | None = None
    worker_peak_bytes: int | None = None
    """Peak resident memory of the worker process so far (its whole life, not this tile alone)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form."""
        return asdict(self)


def is_transient(exc: BaseException) -> bool:
    """Whether another attempt may succeed: connection trouble, timeouts, storage errors; not bad input."""
    if isinstance(exc, _PERMANENT):
        return False
    return isinstance(exc, OSError | TimeoutError | ConnectionError)


def peak_memory() -> int | None:
    """Peak resident set size of this process in bytes, where the platform reports it."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB elsewhere


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def failed_result(task: TileTask, exc: BaseException, *, seconds: float = 0.0, attempts: int = 0) -> TileResult:
    """A ``failed`` result for ``task`` (also used by the engines for a task they lost)."""
    return TileResult(
        input=task.input,
        output=task.output,
        status="failed",
        seconds=round(seconds, 3),
        attempts=attempts,
        error=str(exc) or repr(exc),
        error_type=type(exc).__name__,
    )


def run_tile(task: TileTask) -> TileResult:
    """Export one tile (or skip it when ``verify_existing`` finds a verified export); never raises."""
    from darts_export.export import export_tile
    from darts_export.inputs import open_tile
    from darts_export.verify import verify

    started = time.perf_counter()
    attempts = 0

    def result(status: Status, **kwargs: Any) -> TileResult:
        return TileResult(
            input=task.input,
            output=task.output,
            status=status,
            seconds=round(time.perf_counter() - started, 3),
            worker=_worker_name(),
            attempts=attempts,
            worker_peak_bytes=peak_memory(),
            **kwargs,
        )

    while True:
        attempts += 1
        try:
            if task.verify_existing:
                report = verify(task.output, storage_options=task.output_options)
                if report.ok and report.manifest is not None:
                    manifest = report.manifest
                    return result(
                        "skipped",
                        tile_id=manifest.tile_id,
                        artifacts=len(manifest.artifacts),
                        bytes=manifest.total_size,
                    )
            with open_tile(task.input, storage_options=task.input_options) as tile:
                manifest = export_tile(
                    tile,
                    task.output,
                    bands=task.bands,
                    ensemble_subsets=task.ensemble_subsets,
                    metadata=task.metadata,
                    debug=task.debug,
                    storage_options=task.output_options,
                    overwrite=True,  # the batch decided before dispatch that this tile is to be (re-)exported
                )
        except Exception as exc:  # a tile's failure is its result; the batch goes on
            if attempts > task.retries or not is_transient(exc):
                logger.warning(
                    "tile %s failed after %d attempt(s): %s: %s", task.input, attempts, type(exc).__name__, exc
                )
                failed = failed_result(task, exc, seconds=time.perf_counter() - started, attempts=attempts)
                return TileResult(**{**failed.to_dict(), "worker": _worker_name(), "worker_peak_bytes": peak_memory()})
            delay = task.backoff * 2 ** (attempts - 1)
            logger.warning(
                "tile %s: %s: %s; retry %d/%d in %.1f s",
                task.input,
                type(exc).__name__,
                exc,
                attempts,
                task.retries,
                delay,
            )
            time.sleep(delay)
            continue
        return result(
            "exported", tile_id=manifest.tile_id, artifacts=len(manifest.artifacts), bytes=manifest.total_size
        )

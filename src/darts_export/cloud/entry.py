"""The cloud-function entry point: an event in, one export per request, a list of summaries out.

:func:`handler` serves AWS Lambda (``darts_export.cloud.handler``) and anything else that calls a
Python function with an event: :mod:`.events` turns the event into requests, :mod:`.config` reads
the environment, :mod:`.resources` checks the staging disk, and each request is one
:func:`~darts_export.export.export_tile` call on the tile :func:`~darts_export.inputs.open_tile`
opens (as the CLI opens it).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from darts_export.cloud.config import HandlerConfig
from darts_export.cloud.events import ExportRequest, parse_event
from darts_export.cloud.resources import check_resources
from darts_export.errors import ExportFailedError, ExportInProgressError, IncompleteStoreError
from darts_export.products import MANIFEST_NAME, plan_products

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["ExportSummary", "handler", "run_request"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ExportSummary:
    """The outcome of one request, as returned by :func:`handler` (see :meth:`to_dict`)."""

    status: Literal["exported", "skipped", "failed"]
    input: str
    output: str
    source: str
    seconds: float
    manifest: str | None = None
    tile_id: str | None = None
    artifacts: int = 0
    bytes: int = 0
    reason: str | None = None
    error_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form; ``reason`` and ``error_type`` only when set."""
        data = asdict(self)
        return {k: v for k, v in data.items() if v is not None or k not in ("reason", "error_type")}


def handler(event: object, context: object = None) -> list[dict[str, Any]]:
    """Export the tile(s) an event asks for; the Lambda entry point ``darts_export.cloud.handler``.

    Returns:
        One summary per requested tile (:meth:`ExportSummary.to_dict`), in order: one for a direct
        event, one per record of an S3 notification.

    Raises:
        InvalidEventError: the event is malformed (nothing has been written).
        ExportFailedError: a request failed; every request was still attempted, the message lists the
            failures, and a retry skips the requests that succeeded.
    """
    config = HandlerConfig.from_environ(os.environ)
    requests = parse_event(event, config)
    _load_export_path(requests)
    logger.info("request %s: %d export(s)", getattr(context, "aws_request_id", "-"), len(requests))
    summaries = [run_request(request, config) for request in requests]
    for summary in summaries:
        logger.info("summary: %s", json.dumps(summary.to_dict()))
    if any(s.status == "failed" for s in summaries):
        raise ExportFailedError(summaries)
    return [s.to_dict() for s in summaries]


_loaded = False


def _load_export_path(requests: Sequence[ExportRequest]) -> None:
    """Import what the requests' exports need, once per process, with the cyclic GC paused; then freeze it.

    Importing the array, GDAL and S3 libraries allocates hundreds of thousands of long-lived objects,
    and every few hundred allocations the GC would scan them again (bench/results/cold-start.md).
    Frozen, later collections in this long-lived process skip them. Only imports happen here: a
    missing filesystem implementation is reported by the export itself, with its own message.
    """
    global _loaded
    if _loaded:
        return
    import fsspec
    from fsspec.utils import get_protocol

    from darts_export.inputs import input_format

    modules = ["darts_export.export", "darts_export.inputs", "darts_export.verify", "darts_export.metadata"]
    if any(input_format(r.input) == "zarr" for r in requests):
        modules += ["xarray.backends.zarr", "zarr"]
    paused = gc.isenabled()
    gc.disable()
    try:
        for module in modules:
            importlib.import_module(module)
        for url in {u for r in requests for u in (r.input, r.output)}:
            with contextlib.suppress(ImportError, ValueError):
                fsspec.get_filesystem_class(get_protocol(url))
    finally:
        if paused:
            gc.enable()
    gc.freeze()
    _loaded = True


def run_request(request: ExportRequest, config: HandlerConfig) -> ExportSummary:
    """Export one request unless a verified export already exists; never raises for export failures."""
    from darts_export.export import export_tile  # the array libraries load on the first request
    from darts_export.staging import sweep_stale_staging
    from darts_export.verify import verify

    started = time.perf_counter()
    out_options = config.storage_options(request.output)

    def summary(status: Literal["exported", "skipped", "failed"], **kwargs: Any) -> ExportSummary:
        elapsed = round(time.perf_counter() - started, 3)
        return ExportSummary(
            status=status, input=request.input, output=request.output, source=request.source, seconds=elapsed, **kwargs
        )

    sweep_stale_staging()  # /tmp survives warm invocations: reclaim what timed-out ones left
    try:
        if not request.overwrite:
            report = verify(request.output, storage_options=out_options)
            if report.ok and report.manifest is not None:
                logger.info("skipping %s: a verified export exists at %s", request.input, request.output)
                return summary(
                    "skipped",
                    manifest=_join(request.output, MANIFEST_NAME),
                    tile_id=report.manifest.tile_id,
                    artifacts=len(report.manifest.artifacts),
                    bytes=report.manifest.total_size,
                    reason="a verified export exists; set overwrite to replace it",
                )
        tile = _open_tile(request, config.storage_options(request.input))
        if tile is None:
            return summary("skipped", reason="the Zarr store has no consolidated metadata yet (still being written)")
        with tile:  # releases the input's open files
            planned = plan_products(request.bands, request.ensemble_subsets, debug=request.debug)
            check_resources(tile, planned, memory_mb=config.memory_mb)
            manifest = export_tile(
                tile,
                request.output,
                bands=request.bands,
                ensemble_subsets=request.ensemble_subsets,
                metadata=_with_folder_tile_id(request, tile),
                debug=request.debug,
                storage_options=out_options,
                overwrite=True,  # an existing export did not verify, or overwrite was asked for
                collection=config.collection,
                href_base=config.href_base,
            )
    except ExportInProgressError as exc:  # a redelivered or retried event: the other writer finishes the job
        logger.info("skipping %s: %s", request.input, exc)
        return summary("skipped", reason=f"in progress: {exc}", error_type=type(exc).__name__)
    except Exception as exc:  # one request's failure is reported; the others still run
        logger.exception("export of %s to %s failed", request.input, request.output)
        return summary("failed", reason=str(exc), error_type=type(exc).__name__)
    return summary(
        "exported",
        manifest=_join(manifest.location, MANIFEST_NAME),
        tile_id=manifest.tile_id,
        artifacts=len(manifest.artifacts),
        bytes=manifest.total_size,
    )


def _with_folder_tile_id(request: ExportRequest, tile: xr.Dataset) -> Mapping[str, Any]:
    """An S3-triggered export is named after the input's folder when neither the event nor the tile names it.

    The output rule already made that folder name the last part of ``request.output``.
    """
    from darts_export.metadata import named_tile_id

    if request.source == "direct" or named_tile_id(request.metadata, tile.attrs) is not None:
        return request.metadata
    return {**request.metadata, "tile_id": request.output.rstrip("/").rsplit("/", 1)[-1]}


def _open_tile(request: ExportRequest, options: Mapping[str, Any] | None) -> xr.Dataset | None:
    """Open the input lazily (each variable is read once, on first use); ``None`` while a store is incomplete."""
    from darts_export.inputs import open_tile

    try:
        return open_tile(request.input, storage_options=options, require_consolidated=request.require_consolidated)
    except IncompleteStoreError as exc:
        logger.info("%s", exc)
        return None


def _join(url: str, rel: str) -> str:
    return f"{url.rstrip('/')}/{rel}"

"""``export_many``: many input stores exported on one engine, with resume, retries and a run ledger."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from darts_export.batch.engines import FULL_TILE_BYTES, EngineName, fitting_workers, make_engine, require_engine
from darts_export.batch.ledger import BatchSummary, ledger_paths, write_ledger
from darts_export.batch.plan import complete_outputs, outputs_for, resolve_inputs
from darts_export.batch.worker import TileResult, TileTask
from darts_export.errors import BatchInputError, ExportError, InvalidTileError
from darts_export.products import DEFAULT_BANDS, expected_paths, plan_products
from darts_export.storage import Storage

__all__ = ["BatchProgress", "export_many"]

logger = logging.getLogger(__name__)

_ENGINES = ("local", "dask", "ray")


class BatchProgress(Protocol):
    """Receives a batch's progress, in the calling thread (the CLI draws its bar from it)."""

    def planned(self, tiles: int, skipped: int, workers: int) -> None:
        """The batch has ``tiles`` tiles, ``skipped`` of them already exported; ``workers`` run at once."""

    def finished(self, result: TileResult) -> None:
        """A tile is done (exported, skipped or failed)."""


def export_many(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    output_prefix: str | os.PathLike[str],
    *,
    engine: EngineName = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    bands: Iterable[str] = DEFAULT_BANDS,
    ensemble_subsets: Iterable[str] = (),
    metadata: Mapping[str, Any] | None = None,
    debug: bool = False,
    overwrite: bool = False,
    verify: Literal["sizes", "full"] = "sizes",
    retries: int = 2,
    engine_retries: int = 3,
    storage_options: Mapping[str, Any] | None = None,
    input_storage_options: Mapping[str, Any] | None = None,
    memory_per_tile: int = FULL_TILE_BYTES,
    collection: bool = True,
    run_id: str | None = None,
    progress: BatchProgress | None = None,
) -> BatchSummary:
    """Export every input store to ``<output_prefix>/<folder of the input>`` on one engine.

    Everything that can be checked is checked before the first byte is written: the options, the
    engine's installation, the inputs (listed and named) and the output folders (no two inputs may
    share one). Tiles whose export already exists and is complete are skipped without reading their
    input (see :mod:`darts_export.batch.plan`). Every other tile is opened and exported by a worker;
    a tile that fails is retried ``retries`` times when the failure looks transient, then recorded,
    and the batch goes on. At the end the run ledger is written to ``<output_prefix>/_runs/`` and
    the STAC collection over the prefix is rebuilt.

    Args:
        inputs: Input stores (paths or URLs), globs, folders/prefixes to list, or text files with one
            input per line; one of these or an iterable of them.
        output_prefix: A local folder or URL (``s3://bucket/darts``) under which every tile gets its folder.
        engine: ``local`` (a process pool here), ``dask`` (``distributed``) or ``ray`` (Ray Data).
        scheduler: The cluster to use: a Dask scheduler address (``tcp://host:8786``) or a Ray
            address (``auto``, ``ray://head:10001``); by default a local cluster is started.
        workers: Exports at once for a cluster started here; by default one per core, never more
            than ``memory_per_tile`` allows in the available memory.
        bands: As for :func:`~darts_export.export_tile`.
        ensemble_subsets: As for :func:`~darts_export.export_tile`.
        metadata: As for :func:`~darts_export.export_tile`, the same for every tile.
        debug: As for :func:`~darts_export.export_tile`.
        overwrite: Re-export every tile, complete or not.
        verify: How an existing export is judged complete: ``sizes`` (one listing) or ``full``
            (also re-hash every artifact, on the workers).
        retries: Further attempts per tile after a transient failure (connections, timeouts, storage).
        engine_retries: How often Dask re-runs a tile whose worker died (the ``allowed-failures`` of
            a cluster started here; an external scheduler keeps its own). Ray Data applies its own policy.
        storage_options: fsspec options for the outputs (and the inputs, unless given separately).
        input_storage_options: fsspec options for the inputs.
        memory_per_tile: Peak bytes of one export, to size the local pool (default: a full tile).
        collection: Rebuild ``collection.json`` over the prefix at the end.
        run_id: The ledger's name; by default the start time and a random suffix.
        progress: Told about the plan and each finished tile.

    Returns:
        The summary; ``summary.ok`` is false when a tile failed.

    Raises:
        BatchInputError: the inputs cannot be resolved, or two share an output folder.
        InvalidTileError: bad bands, subsets or metadata.
        MissingExtraError: the engine's extra (``dask``, ``ray``) is not installed.
        EngineUnavailableError: the engine's cluster cannot be reached.
        StorageError: the output prefix cannot be listed, or the ledger cannot be written.
    """
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    if engine not in _ENGINES:
        raise BatchInputError(f"Unknown engine {engine!r}; use one of {list(_ENGINES)}.")
    if verify not in ("sizes", "full"):
        raise BatchInputError(f"verify must be 'sizes' or 'full', got {verify!r}.")
    if retries < 0 or engine_retries < 0 or (workers is not None and workers < 1):
        raise BatchInputError("retries and engine_retries must be >= 0 and workers >= 1.")
    band_list, subset_list = list(bands), list(ensemble_subsets)
    if not band_list:
        raise InvalidTileError(f"bands must name at least one product, e.g. {list(DEFAULT_BANDS)}.")
    plan_products(band_list, subset_list, debug=debug)
    require_engine(engine)
    meta = _json_copy(metadata)
    prefix = os.fspath(output_prefix).rstrip("/")
    storage = Storage.open(prefix, storage_options)
    in_options = input_storage_options if input_storage_options is not None else storage_options
    sources = [s for s in resolve_inputs(inputs, storage_options=in_options) if not _inside(s, prefix)]
    if not sources:
        raise BatchInputError(f"Every input lies under the output prefix {prefix!r}; nothing to export.")
    outputs = outputs_for(sources, prefix)
    run_id = run_id or f"{started_at.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"

    done = {} if overwrite else complete_outputs(storage, prefix, outputs, expected_paths(band_list, subset_list))
    results: list[TileResult] = []
    tasks: list[TileTask] = []
    for source, output in zip(sources, outputs, strict=True):
        manifest = done.get(output)
        if manifest is not None and verify == "sizes":
            results.append(
                TileResult(
                    input=source,
                    output=output,
                    status="skipped",
                    seconds=0.0,
                    bytes=manifest.total_size,
                    artifacts=len(manifest.artifacts),
                    tile_id=manifest.tile_id,
                )
            )
            continue
        tasks.append(
            TileTask(
                input=source,
                output=output,
                bands=tuple(band_list),
                ensemble_subsets=tuple(subset_list),
                metadata=meta,
                debug=debug,
                input_options=dict(in_options) if in_options else None,
                output_options=dict(storage_options) if storage_options else None,
                retries=retries,
                verify_existing=manifest is not None,
            )
        )
    logger.info(
        "batch %s: %d tiles, %d already exported, %d to run on %s",
        run_id,
        len(sources),
        len(results),
        len(tasks),
        engine,
    )
    count = fitting_workers(workers, memory_per_tile, len(tasks)) if scheduler is None else (workers or 1)
    if progress is not None:
        progress.planned(len(sources), len(results), count if tasks else 0)
        for result in results:
            progress.finished(result)

    startup = run_seconds = 0.0
    if tasks:

        def record(result: TileResult) -> None:
            results.append(result)
            logger.info("%s %s → %s (%.2f s)", result.status, result.input, result.output, result.seconds)
            if progress is not None:
                progress.finished(result)

        with make_engine(engine, scheduler=scheduler, workers=count, engine_retries=engine_retries) as running:
            startup, count = running.startup_seconds, running.workers
            run_started = time.perf_counter()
            running.run(tasks, record)
            run_seconds = time.perf_counter() - run_started

    order = {source: i for i, source in enumerate(sources)}
    results.sort(key=lambda r: order[r.input])
    warnings: list[str] = []
    collection_url = _rebuild_collection(prefix, storage_options, warnings) if collection else None
    summary = BatchSummary(
        run_id=run_id,
        output_prefix=storage.url,
        engine=engine,
        workers=count,
        started=started_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        seconds=round(time.perf_counter() - started, 3),
        startup_seconds=round(startup, 3),
        run_seconds=round(run_seconds, 3),
        results=tuple(results),
        ledger=storage.uri(ledger_paths(run_id)[1]),
        collection=collection_url,
        warnings=tuple(warnings),
    )
    write_ledger(storage, summary)
    counts = summary.counts
    logger.info(
        "batch %s done in %.1f s: %d exported, %d skipped, %d failed; ledger %s",
        run_id,
        summary.seconds,
        counts["exported"],
        counts["skipped"],
        counts["failed"],
        summary.ledger,
    )
    return summary


def _json_copy(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidTileError(f"metadata must be a mapping (dict), got {type(metadata).__name__}.")
    try:
        return dict(json.loads(json.dumps(dict(metadata), allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise InvalidTileError(f"metadata must be JSON-serialisable: {exc}.") from exc


def _inside(source: str, prefix: str) -> bool:
    inside = source.rstrip("/") == prefix or source.startswith(prefix + "/")
    if inside:
        logger.warning("ignoring %s: it lies under the output prefix", source)
    return inside


def _rebuild_collection(prefix: str, storage_options: Mapping[str, Any] | None, warnings: list[str]) -> str | None:
    from darts_export.stac.collection import COLLECTION_NAME, build_collection

    try:
        build_collection(prefix, storage_options=storage_options)
    except ExportError as exc:  # no exports yet, or an item another tool left broken: the batch still counts
        message = f"collection not rebuilt: {type(exc).__name__}: {exc}"
        logger.warning("%s", message)
        warnings.append(message)
        return None
    return Storage.open(prefix, storage_options).uri(COLLECTION_NAME)

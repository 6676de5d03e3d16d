"""The cloud-function entry point: an event in, one export per request, a JSON summary out.

:func:`handler` serves AWS Lambda (``darts_export.cloud.handler``) and anything else that calls
a Python function with an event. It accepts two kinds of event:

* a **direct event** ``{"input": "s3://bucket/T06WVS/tile.zarr", "output": "s3://out/exports/T06WVS",
  "bands": [...], "ensemble_subsets": [...], "metadata": {...}, "overwrite": false, "debug": false}``
  (only ``input`` is required; ``output`` defaults to the rule below);
* an **S3 event notification** whose records name input stores. A record's key (URL-decoded as S3
  encodes it: ``+`` is a space, ``%xx`` a byte) must be a store's completion marker:
  ``<folder>/<name>.zarr/zarr.json`` (Zarr v3 root), ``<folder>/<name>.zarr/.zmetadata`` (Zarr v2)
  or a NetCDF-4 file ``<folder>/<name>.nc`` (or ``.nc4``, ``.netcdf``, ``.h5``, ``.hdf5``).

Inputs are opened with :func:`darts_export.inputs.open_tile`, as the CLI opens them.

**Output rule**: ``$DARTS_OUTPUT_PREFIX/<folder>``, where ``<folder>`` is the name of the folder
holding the input store (``s3://in/inputs/T06WVS_2024/tile.zarr`` → ``$DARTS_OUTPUT_PREFIX/T06WVS_2024``),
or the store's name without extension when it lies at the bucket root.

Environment variables are read here and nowhere else in the package: ``DARTS_OUTPUT_PREFIX``,
``DARTS_BANDS`` / ``DARTS_ENSEMBLE_SUBSETS`` (comma-separated defaults), ``DARTS_DEBUG``,
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (passed to s3fs explicitly, so that its instance
cache never mixes endpoints) and ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote_plus

from darts_export.errors import (
    ConfigurationError,
    ExportFailedError,
    IncompleteStoreError,
    InsufficientSpaceError,
    InvalidEventError,
    InvalidTileError,
)
from darts_export.export import export_tile
from darts_export.inputs import NETCDF_SUFFIXES, ZARR_SUFFIXES, open_tile
from darts_export.products import DEFAULT_BANDS, MANIFEST_NAME, Kind, PlannedProduct, plan_products
from darts_export.verify import verify

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "ExportRequest",
    "ExportSummary",
    "HandlerConfig",
    "handler",
    "output_for_input",
    "parse_event",
    "run_request",
]

logger = logging.getLogger(__name__)

MiB = 2**20
GPKG_BYTES_PER_PIXEL = 0.25
"""Staging bound per GeoPackage. Measured: a synthetic 10980² tile (684 objects) gives a 1.0 MiB objects
and a 0.4 MiB extent GeoPackage (< 0.01 B/px); 0.25 B/px (29 MiB per full tile) leaves a 25× margin for
busier real predictions."""
GPKG_FIXED_BYTES = 1 * MiB
STAGING_MARGIN_BYTES = 64 * MiB
WORKING_BYTES_PER_PIXEL = 8
"""Peak memory of an export on top of the input arrays (≤ 0.8 GiB measured for a 10980² tile)."""

_DIRECT_KEYS = frozenset({"input", "output", "bands", "ensemble_subsets", "metadata", "overwrite", "debug"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


@dataclass(frozen=True, kw_only=True)
class HandlerConfig:
    """The handler's settings, read from the environment once per invocation."""

    output_prefix: str | None = None
    bands: tuple[str, ...] = DEFAULT_BANDS
    ensemble_subsets: tuple[str, ...] = ()
    debug: bool = False
    endpoint_url: str | None = None
    memory_mb: int | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> HandlerConfig:
        """Read ``DARTS_*``, the S3 endpoint and the Lambda memory size from ``environ``."""

        def words(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
            value = environ.get(name)
            return default if value is None else tuple(w.strip() for w in value.split(",") if w.strip())

        debug = environ.get("DARTS_DEBUG", "").strip().lower()
        if debug not in _TRUE | _FALSE:
            raise ConfigurationError(f"DARTS_DEBUG must be true or false, got {debug!r}.")
        memory = environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        return cls(
            output_prefix=environ.get("DARTS_OUTPUT_PREFIX", "").rstrip("/") or None,
            bands=words("DARTS_BANDS", DEFAULT_BANDS),
            ensemble_subsets=words("DARTS_ENSEMBLE_SUBSETS", ()),
            debug=debug in _TRUE,
            endpoint_url=environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None,
            memory_mb=int(memory) if memory.isdigit() else None,
        )

    def storage_options(self, url: str) -> dict[str, Any] | None:
        """Fsspec options for ``url``: the configured endpoint for ``s3://`` URLs, else none."""
        if self.endpoint_url and url.split("://", 1)[0] in ("s3", "s3a"):
            return {"endpoint_url": self.endpoint_url}
        return None


@dataclass(frozen=True, kw_only=True)
class ExportRequest:
    """One tile to export, validated: what the library is called with."""

    input: str
    output: str
    bands: tuple[str, ...]
    ensemble_subsets: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False)
    overwrite: bool = False
    debug: bool = False
    source: str = "direct"
    """``direct``, or the ``s3://bucket/key`` of the object whose notification asked for it."""
    require_consolidated: bool = False
    """Only export once the Zarr store has consolidated metadata (the writer's last step)."""


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


def handler(event: object, context: object = None) -> dict[str, Any] | list[dict[str, Any]]:
    """Export the tile(s) an event asks for; the Lambda entry point ``darts_export.cloud.handler``.

    Returns:
        For a direct event, its summary; for an S3 notification, one summary per record, in order.

    Raises:
        InvalidEventError: the event is malformed (nothing has been written).
        ExportFailedError: a request failed; every request was still attempted, the message lists the
            failures, and a retry skips the requests that succeeded.
    """
    config = HandlerConfig.from_environ(os.environ)
    requests = parse_event(event, config)
    logger.info("request %s: %d export(s)", getattr(context, "aws_request_id", "-"), len(requests))
    summaries = [run_request(request, config) for request in requests]
    for summary in summaries:
        logger.info("summary: %s", json.dumps(summary.to_dict()))
    if any(s.status == "failed" for s in summaries):
        raise ExportFailedError(summaries)
    results = [s.to_dict() for s in summaries]
    return results if isinstance(event, Mapping) and "Records" in event else results[0]


def parse_event(event: object, config: HandlerConfig) -> tuple[ExportRequest, ...]:
    """Turn an event into validated requests, or raise :class:`InvalidEventError` naming what is wrong."""
    if not isinstance(event, Mapping):
        raise InvalidEventError(f"The event must be a JSON object, got {type(event).__name__}.")
    if "Records" in event:
        records = event["Records"]
        if not isinstance(records, list) or not records:
            raise InvalidEventError("'Records' must be a non-empty list of S3 event notification records.")
        return tuple(_request_from_record(record, i, config) for i, record in enumerate(records))
    return (_request_from_direct(event, config),)


def output_for_input(input_url: str, output_prefix: str) -> str:
    """The output folder of an input store: ``output_prefix/<folder holding the store>``.

    At the bucket root, the store's own name without ``.zarr``/``.nc`` is used instead.
    """
    protocol, _, rest = input_url.rstrip("/").rpartition("://")
    parts = rest.split("/")
    if protocol and len(parts) > 1:
        parts = parts[1:]  # drop the bucket
    name = parts[-2] if len(parts) > 1 else parts[-1].rsplit(".", 1)[0]
    if name in ("", ".", ".."):
        raise InvalidEventError(f"Cannot derive an output folder name from input {input_url!r}.")
    return f"{output_prefix.rstrip('/')}/{name}"


def run_request(request: ExportRequest, config: HandlerConfig) -> ExportSummary:
    """Export one request unless a verified export already exists; never raises for export failures."""
    started = time.perf_counter()
    out_options = config.storage_options(request.output)

    def summary(status: Literal["exported", "skipped", "failed"], **kwargs: Any) -> ExportSummary:
        elapsed = round(time.perf_counter() - started, 3)
        return ExportSummary(
            status=status, input=request.input, output=request.output, source=request.source, seconds=elapsed, **kwargs
        )

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
            _check_resources(tile, planned, memory_mb=config.memory_mb)
            manifest = export_tile(
                tile,
                request.output,
                bands=request.bands,
                ensemble_subsets=request.ensemble_subsets,
                metadata=request.metadata,
                debug=request.debug,
                storage_options=out_options,
                overwrite=True,  # an existing export did not verify, or overwrite was asked for
            )
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


# --- events -------------------------------------------------------------------------------------


def _request_from_direct(event: Mapping[str, Any], config: HandlerConfig) -> ExportRequest:
    unknown = sorted(str(k) for k in event if k not in _DIRECT_KEYS)
    if unknown:
        raise InvalidEventError(
            f"Unknown key(s) {unknown} in the event; a direct event has {sorted(_DIRECT_KEYS)} "
            "and an S3 notification has 'Records'."
        )
    source = _string(event, "input", required=True)
    if not source.rstrip("/").lower().endswith(ZARR_SUFFIXES + NETCDF_SUFFIXES):
        raise InvalidEventError(
            f"'input' must name a Zarr store (.zarr) or a NetCDF file ({', '.join(NETCDF_SUFFIXES)}), got {source!r}."
        )
    output = _string(event, "output", required=config.output_prefix is None)
    if not output:
        output = output_for_input(source, str(config.output_prefix))
    if output.rstrip("/") == source.rstrip("/") or output.startswith(source.rstrip("/") + "/"):
        raise InvalidEventError(f"'output' {output!r} lies inside the input {source!r}; choose another folder.")
    bands = _strings(event, "bands", config.bands)
    subsets = _strings(event, "ensemble_subsets", config.ensemble_subsets)
    debug = _flag(event, "debug", default=config.debug)
    _check_plan(bands, subsets, debug)
    return ExportRequest(
        input=source,
        output=output,
        bands=bands,
        ensemble_subsets=subsets,
        metadata=_metadata(event.get("metadata")),
        overwrite=_flag(event, "overwrite", default=False),
        debug=debug,
    )


def _request_from_record(record: object, index: int, config: HandlerConfig) -> ExportRequest:
    where = f"Records[{index}]"
    if not isinstance(record, Mapping):
        raise InvalidEventError(f"{where} must be an object, got {type(record).__name__}.")
    if record.get("eventSource") != "aws:s3":
        raise InvalidEventError(
            f"{where} has eventSource {record.get('eventSource')!r}; only S3 notifications ('aws:s3') are handled."
        )
    name = record.get("eventName", "ObjectCreated:")
    if not isinstance(name, str) or not name.startswith("ObjectCreated:"):
        raise InvalidEventError(f"{where} is a {name!r} event; only ObjectCreated:* events start an export.")
    try:
        bucket, raw_key = record["s3"]["bucket"]["name"], record["s3"]["object"]["key"]
    except (KeyError, TypeError) as exc:
        raise InvalidEventError(f"{where} lacks s3.bucket.name or s3.object.key.") from exc
    if not isinstance(bucket, str) or not bucket or not isinstance(raw_key, str) or not raw_key:
        raise InvalidEventError(f"{where}: s3.bucket.name and s3.object.key must be non-empty strings.")
    key = unquote_plus(raw_key)
    parts = key.split("/")
    if key.lower().endswith(NETCDF_SUFFIXES):
        store_key, consolidated = key, False
    elif len(parts) > 1 and parts[-2].lower().endswith(".zarr") and parts[-1] in ("zarr.json", ".zmetadata"):
        store_key, consolidated = "/".join(parts[:-1]), True
    else:
        raise InvalidEventError(
            f"{where}: object key {key!r} does not name an input store; expected '<folder>/<name>.zarr/zarr.json' "
            "(Zarr v3), '<folder>/<name>.zarr/.zmetadata' (Zarr v2) or '<folder>/<name>.nc' (NetCDF-4)."
        )
    if config.output_prefix is None:
        raise ConfigurationError("S3 notifications need DARTS_OUTPUT_PREFIX (e.g. s3://bucket/exports) to be set.")
    source = f"s3://{bucket}/{store_key}"
    if source.startswith(config.output_prefix + "/"):
        raise InvalidEventError(
            f"{where}: input {source!r} lies under the output prefix {config.output_prefix!r}; refusing to export "
            "an export (the S3 trigger's prefix must exclude the output prefix)."
        )
    _check_plan(config.bands, config.ensemble_subsets, config.debug)
    return ExportRequest(
        input=source,
        output=output_for_input(source, config.output_prefix),
        bands=config.bands,
        ensemble_subsets=config.ensemble_subsets,
        debug=config.debug,
        source=f"s3://{bucket}/{key}",
        require_consolidated=consolidated,
    )


def _string(event: Mapping[str, Any], key: str, *, required: bool) -> str:
    value = event.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        got = "missing" if value is None else repr(value)
        raise InvalidEventError(f"'{key}' must be a non-empty string (a path or URL), got {got}.")
    return value.strip()


def _strings(event: Mapping[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = event.get(key)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidEventError(f"'{key}' must be a list of strings, got {value!r}.")
    return tuple(value)


def _flag(event: Mapping[str, Any], key: str, *, default: bool) -> bool:
    value = event.get(key, default)
    if not isinstance(value, bool):
        raise InvalidEventError(f"'{key}' must be true or false, got {value!r}.")
    return value


def _metadata(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidEventError(f"'metadata' must be an object, got {type(value).__name__}.")
    try:
        return dict(json.loads(json.dumps(value, allow_nan=False)))  # a detached, JSON-safe copy
    except (TypeError, ValueError) as exc:
        raise InvalidEventError(f"'metadata' must be JSON-serialisable: {exc}.") from exc


def _check_plan(bands: tuple[str, ...], subsets: tuple[str, ...], debug: bool) -> None:
    if not bands:
        raise InvalidEventError(f"'bands' must name at least one product, e.g. {list(DEFAULT_BANDS)}.")
    try:
        plan_products(bands, subsets, debug=debug)
    except InvalidTileError as exc:
        raise InvalidEventError(str(exc)) from exc


# --- input and resources ------------------------------------------------------------------------


def _open_tile(request: ExportRequest, options: Mapping[str, Any] | None) -> xr.Dataset | None:
    """Open the input lazily (each variable is read once, on first use); ``None`` while a store is incomplete."""
    try:
        return open_tile(request.input, storage_options=options, require_consolidated=request.require_consolidated)
    except IncompleteStoreError as exc:
        logger.info("%s", exc)
        return None


def _check_resources(tile: xr.Dataset, planned: Sequence[PlannedProduct], *, memory_mb: int | None) -> None:
    """Fail before exporting if the staging disk is too small; log memory need against the configured size."""
    pixels = _pixels(tile)
    debug = any(p.kind == Kind.DEBUG_STORE for p in planned)
    names = set(tile.data_vars) if debug else {v for p in planned for v in (*p.required, *p.optional)}
    input_bytes = sum(int(tile[n].nbytes) for n in names if n in tile.data_vars)
    gpkgs = sum(1 for p in planned for o in p.outputs if o.path.endswith(".gpkg"))
    staging = gpkgs * (int(pixels * GPKG_BYTES_PER_PIXEL) + GPKG_FIXED_BYTES) + STAGING_MARGIN_BYTES
    if debug:
        staging += int(tile.nbytes)  # bound for a locally staged debug store
    tmp = tempfile.gettempdir()
    free = shutil.disk_usage(tmp).free
    if free < staging:
        raise InsufficientSpaceError(
            f"{tmp} has {free / MiB:.0f} MiB free but the export may stage up to {staging / MiB:.0f} MiB "
            f"({gpkgs} GeoPackage(s){' and the debug store' if debug else ''}); raise the function's ephemeral "
            "storage or export fewer products."
        )
    needed_mb = (input_bytes + WORKING_BYTES_PER_PIXEL * pixels) / MiB
    logger.info(
        "tile %d px: ~%.0f MiB memory needed, %s MiB configured; %.0f MiB staging of %.0f MiB free in %s",
        pixels,
        needed_mb,
        memory_mb if memory_mb is not None else "?",
        staging / MiB,
        free / MiB,
        tmp,
    )
    if memory_mb is not None and needed_mb > memory_mb:
        logger.warning("the tile may need ~%.0f MiB but the function has %d MiB", needed_mb, memory_mb)


def _pixels(tile: xr.Dataset) -> int:
    sizes = dict(tile.sizes)
    pixels = int(sizes.get("x", 0)) * int(sizes.get("y", 0))
    return pixels or max((int(v.size) for v in tile.data_vars.values()), default=0)


def _join(url: str, rel: str) -> str:
    return f"{url.rstrip('/')}/{rel}"

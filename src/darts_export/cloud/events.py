"""Events in, typed requests out: a direct event or an S3 notification becomes :class:`ExportRequest` s.

* a **direct event** ``{"input": "s3://bucket/T06WVS/tile.zarr", "output": "s3://out/exports/T06WVS",
  "bands": [...], "ensemble_subsets": [...], "metadata": {...}, "overwrite": false, "debug": false}``
  (only ``input`` is required; ``output`` defaults to the rule below);
* an **S3 event notification** whose records name input stores. A record's key (URL-decoded as S3
  encodes it: ``+`` is a space, ``%xx`` a byte) must be a store's completion marker:
  ``<folder>/<name>.zarr/zarr.json`` (Zarr v3 root), ``<folder>/<name>.zarr/.zmetadata`` (Zarr v2)
  or a NetCDF-4 file ``<folder>/<name>.nc`` (or ``.nc4``, ``.netcdf``, ``.h5``, ``.hdf5``).

**Output rule**: ``$DARTS_OUTPUT_PREFIX/<folder>``, where ``<folder>`` is the name of the folder
holding the input store (``s3://in/inputs/T06WVS_2024/tile.zarr`` → ``$DARTS_OUTPUT_PREFIX/T06WVS_2024``),
or the store's name without extension when it lies at the bucket root.

Parsing does no I/O; every malformed event raises :class:`~darts_export.errors.InvalidEventError`
before anything is read or written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from darts_export import locations
from darts_export.cloud.config import HandlerConfig
from darts_export.errors import ConfigurationError, InvalidEventError, InvalidLocationError, InvalidTileError
from darts_export.inputs import NETCDF_SUFFIXES, ZARR_SUFFIXES
from darts_export.products import DEFAULT_BANDS, plan_products

__all__ = ["ExportRequest", "output_for_input", "parse_event"]

_DIRECT_KEYS = frozenset({"input", "output", "bands", "ensemble_subsets", "metadata", "overwrite", "debug"})


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
    """The output folder of an input store (:func:`darts_export.locations.output_for_input`, shared with the batch)."""
    try:
        return locations.output_for_input(input_url, output_prefix)
    except InvalidLocationError as exc:
        raise InvalidEventError(str(exc)) from exc


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

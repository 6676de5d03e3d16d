"""The metadata of one export, decided once, before anything is written.

:func:`decide_metadata` turns what the caller passed (the ``metadata`` dict), what the tile
carries (its ``attrs``), the georeference and the clock into one frozen
:class:`ExportMetadata`. Every artifact reads from it, so the GeoTIFF tags, the STAC item
and the manifest cannot disagree, and every bad value fails before the first byte:

* **values**: a JSON-safe copy of ``metadata`` (the caller's dict is never modified) with
  :data:`EXPORT_DATE_KEY` set to the export time.
* **tags**: one rule for the GeoTIFF tags and the STAC ``darts:<key>`` properties —
  strings as they are, anything else (numbers, lists such as ``DARTS_modelfiles``) as JSON
  text. Keys GDAL cannot store (empty, with ``=`` or control characters) are rejected.
* **tile id**: the first of :data:`TILE_ID_KEYS` in ``metadata``, else the first of
  :data:`ATTR_TILE_ID_KEYS` in the tile's ``attrs`` (what ``darts-acquisition`` sets), else
  derived from the georeference (``EPSG32606_399960_7700040_10980x10980_10m``).
* **acquisition time**: the first of :data:`DATETIME_KEYS` in ``metadata``, else of
  :data:`ATTR_DATETIME_KEYS` in ``attrs``, else a ``start_datetime``/``end_datetime`` pair
  (metadata first). Explicit metadata always wins over the tile's attributes.
* **source properties**: the STAC properties of the source scene that describe the
  acquisition (``platform``, ``constellation``, ``instruments``, ``eo:cloud_cover``,
  ``view:*``, ``s2:*``), from ``attrs`` (``metadata`` entries of the same name win), for the
  STAC item under their own names. Values that are not valid for their STAC field are left
  out of the item (logged), never written wrong.
* **export time** (``created``): ``metadata["DARTS_exportdate"]`` if given, else the
  reproducible-builds convention ``SOURCE_DATE_EPOCH`` (integer seconds since 1970, read from
  the environment, as compilers and packaging tools do), else the clock. With a given export
  time, exporting the same tile with the same options gives byte-identical artifacts.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from darts_export.errors import ConfigurationError, InvalidTileError

if TYPE_CHECKING:
    from darts_export.tile import GeoRef

__all__ = [
    "ATTR_DATETIME_KEYS",
    "ATTR_TILE_ID_KEYS",
    "DATETIME_KEYS",
    "EXPORT_DATE_KEY",
    "SOURCE_DATE_EPOCH",
    "TILE_ID_KEYS",
    "Acquisition",
    "ExportMetadata",
    "acquisition_datetime",
    "check_tag_key",
    "decide_metadata",
    "format_time",
    "named_tile_id",
    "parse_time",
]

logger = logging.getLogger(__name__)

EXPORT_DATE_KEY = "DARTS_exportdate"
"""The metadata key of the export time (ISO 8601, UTC); set by the export unless the caller gives it."""

SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"
"""Environment variable of the reproducible-builds convention: the export time as integer Unix seconds."""

TILE_ID_KEYS = ("tile_id", "DARTS_tileid", "scene_id", "id")
"""Metadata keys read, in this order, for the tile id (``DARTS_tileid`` is what the DARTS pipelines send)."""

ATTR_TILE_ID_KEYS = ("tile_id", "s2_tile_id", "planet_scene_id", "planet_orthotile_id", "landsat_tile_id")
"""Tile ``attrs`` read, in this order, for the tile id when the metadata names none."""

DATETIME_KEYS = ("datetime", "acquisition_time", "acquisition_datetime", "sensing_time", "sensing_datetime")
"""Metadata keys read, in this order, for the acquisition time."""

ATTR_DATETIME_KEYS = ("datetime", "time")
"""Tile ``attrs`` read, in this order, for the acquisition time when the metadata names none."""

_INTERVAL_KEYS = ("start_datetime", "end_datetime")
_SOURCE_NAMES = frozenset({"platform", "constellation", "instruments", "eo:cloud_cover"})
_VIEW_RANGES = {  # the fields of the STAC view extension v1.0.0 and their valid ranges
    "view:off_nadir": (0.0, 90.0),
    "view:incidence_angle": (0.0, 90.0),
    "view:azimuth": (0.0, 360.0),
    "view:sun_azimuth": (0.0, 360.0),
    "view:sun_elevation": (-90.0, 90.0),
}
_SOURCE_PREFIXES = ("view:", "s2:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_IN_VALUE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # tab, newline, return are kept by GDAL
_MAX_TILE_ID = 255


@dataclass(frozen=True, kw_only=True)
class Acquisition:
    """When the source scene was acquired: an instant, an interval, or both (all aware UTC)."""

    instant: datetime | None
    start: datetime | None = None
    end: datetime | None = None
    source: str
    """Where it was read, e.g. ``"metadata['datetime']"`` or ``"tile.attrs['time']"``."""


@dataclass(frozen=True, kw_only=True)
class ExportMetadata:
    """Everything an export writes about the tile besides its pixels; build it with :func:`decide_metadata`."""

    values: Mapping[str, Any]
    """The JSON-safe metadata (a read-only copy) with :data:`EXPORT_DATE_KEY` set."""
    tags: Mapping[str, str]
    """The GeoTIFF tags; the STAC item carries the same strings as ``darts:<key>``."""
    tile_id: str
    tile_id_source: str
    """Where the tile id came from: ``"metadata['DARTS_tileid']"``, ``"tile.attrs['tile_id']"``, ``"georeference"``."""
    acquisition: Acquisition | None
    created: datetime
    """The export time (aware, UTC)."""
    export_time_given: bool
    """Whether the export time came from the caller (metadata or ``SOURCE_DATE_EPOCH``) rather than the clock."""
    source_properties: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """STAC properties of the source scene (``platform``, ``eo:cloud_cover``, ``view:*``, ``s2:*``, ...)."""

    @property
    def created_text(self) -> str:
        """The export time as written everywhere: ISO 8601 in UTC with a ``Z``."""
        return format_time(self.created)

    def to_json(self) -> bytes:
        """``darts_inference.json``: the metadata values, indented, UTF-8."""
        return (json.dumps(dict(self.values), indent=2, ensure_ascii=False) + "\n").encode()


def format_time(value: datetime) -> str:
    """``2024-07-15T21:33:09Z`` (fractional seconds only when there are any)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: object, what: str) -> datetime:
    """An ISO 8601 date or date-time (``str``, ``datetime``, ``date`` or ``numpy.datetime64``) as aware UTC.

    A value without a UTC offset is read as UTC; ``numpy``'s nanosecond strings
    (``2024-07-15T21:33:09.024000000``) are accepted.

    Raises:
        InvalidTileError: the value is not a date or date-time; ``what`` names it in the message.
    """
    if isinstance(value, np.datetime64):
        value = str(np.datetime_as_string(value, unit="us"))
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise InvalidTileError(
                f"{what} = {value!r} is not an ISO 8601 date-time; use e.g. '2023-06-15T10:30:00Z'."
            ) from exc
    else:
        raise InvalidTileError(f"{what} must be an ISO 8601 string, got {type(value).__name__} {value!r}.")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def acquisition_datetime(metadata: Mapping[str, Any]) -> datetime | None:
    """The acquisition time named in ``metadata`` (see :data:`DATETIME_KEYS`), as an aware UTC datetime.

    Returns ``None`` when no key is present (or its value is empty).

    Raises:
        InvalidTileError: the value is not an ISO 8601 date or date-time.
    """
    for key in DATETIME_KEYS:
        value = metadata.get(key)
        if not _absent(value):
            return parse_time(value, f"metadata[{key!r}]")
    return None


def check_tag_key(key: object) -> str:
    """``key`` if GDAL can store it as a metadata key (and STAC as ``darts:<key>``), else :class:`InvalidTileError`."""
    if not isinstance(key, str):
        raise InvalidTileError(f"metadata keys must be strings; got {type(key).__name__} {key!r}.")
    if not key.strip():
        raise InvalidTileError("metadata has an empty key; GeoTIFF tags need a name: give every entry one.")
    if "=" in key:
        raise InvalidTileError(
            f"metadata key {key!r} contains '=', which separates key and value in GDAL tags; rename it "
            "(e.g. replace '=' with '_')."
        )
    if _CONTROL.search(key):
        raise InvalidTileError(
            f"metadata key {key!r} contains a newline or control character, which GDAL tags cannot store; "
            "use letters, digits and punctuation."
        )
    return key


def decide_metadata(
    metadata: Mapping[str, Any] | None,
    attrs: Mapping[Any, Any],
    georef: GeoRef,
    *,
    environ: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> ExportMetadata:
    """Decide the metadata of an export from the caller's ``metadata``, the tile's ``attrs`` and the clock.

    Neither ``metadata`` nor ``attrs`` is modified.

    Args:
        metadata: The ``metadata`` argument of :func:`~darts_export.export.export_tile`.
        attrs: The tile's ``attrs``.
        georef: The tile's georeference (for the derived tile id).
        environ: Where ``SOURCE_DATE_EPOCH`` is looked up; the process environment when ``None``.
        now: The clock's time (for tests); ``datetime.now(UTC)`` when ``None``.

    Raises:
        InvalidTileError: ``metadata`` is not a mapping of JSON values under keys GDAL can
            store, or a tile id or acquisition time (in ``metadata`` or ``attrs``) is unusable.
        ConfigurationError: ``SOURCE_DATE_EPOCH`` is set but not an integer.
    """
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidTileError(f"metadata must be a mapping (dict), got {type(metadata).__name__}.")
    given = dict(metadata or {})
    for key in given:
        check_tag_key(key)
    created, time_given = _export_time(given, environ if environ is not None else os.environ, now)
    values = _json_safe({**given, EXPORT_DATE_KEY: format_time(created)})
    tags = {key: _tag_value(key, value) for key, value in values.items()}
    tile_id, tile_id_source = _tile_id(given, attrs, georef)
    return ExportMetadata(
        values=MappingProxyType(values),
        tags=MappingProxyType(tags),
        tile_id=tile_id,
        tile_id_source=tile_id_source,
        acquisition=_acquisition(given, attrs),
        created=created,
        export_time_given=time_given,
        source_properties=MappingProxyType(_source_properties(given, attrs)),
    )


# --- the parts ------------------------------------------------------------------------------------


def _absent(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _export_time(given: Mapping[str, Any], environ: Mapping[str, str], now: datetime | None) -> tuple[datetime, bool]:
    value = given.get(EXPORT_DATE_KEY)
    if not _absent(value):
        return parse_time(value, f"metadata[{EXPORT_DATE_KEY!r}]"), True
    epoch = environ.get(SOURCE_DATE_EPOCH, "").strip()
    if epoch:
        try:
            return datetime.fromtimestamp(int(epoch), UTC), True
        except (ValueError, OverflowError, OSError) as exc:
            raise ConfigurationError(
                f"{SOURCE_DATE_EPOCH}={epoch!r} is not an integer number of seconds since 1970-01-01 UTC; "
                "set it to e.g. $(git log -1 --format=%ct) or unset it."
            ) from exc
    clock = now if now is not None else datetime.now(UTC)
    return clock.astimezone(UTC).replace(microsecond=0), False


def _json_safe(values: Mapping[str, Any]) -> dict[str, Any]:
    try:
        safe: dict[str, Any] = json.loads(json.dumps(values, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidTileError(
            f"metadata must be JSON-serialisable (strings, numbers, booleans, lists, dicts; no NaN): {exc}. "
            "Convert dates and numpy values with str() or .item() first."
        ) from exc
    return safe


def _tag_value(key: str, value: Any) -> str:
    """Strings as they are, anything else as JSON text (so lists stay lists for a JSON reader)."""
    if isinstance(value, str):
        if _CONTROL_IN_VALUE.search(value):
            raise InvalidTileError(
                f"metadata[{key!r}] contains a control character that GDAL tags would drop; remove it."
            )
        return value
    return json.dumps(value, ensure_ascii=False)


def named_tile_id(metadata: Mapping[str, Any], attrs: Mapping[Any, Any]) -> tuple[str, str] | None:
    """The tile id ``metadata`` or the tile's ``attrs`` name, and where (see :data:`TILE_ID_KEYS`), else ``None``.

    Raises:
        InvalidTileError: the first id found is not a usable tile id.
    """
    for source, keys, where in ((metadata, TILE_ID_KEYS, "metadata"), (attrs, ATTR_TILE_ID_KEYS, "tile.attrs")):
        for key in keys:
            value = source.get(key)
            if not _absent(value):
                what = f"{where}[{key!r}]"
                return _check_tile_id(value, what), what
    return None


def _tile_id(given: Mapping[str, Any], attrs: Mapping[Any, Any], georef: GeoRef) -> tuple[str, str]:
    named = named_tile_id(given, attrs)
    if named is not None:
        return named
    left, _, _, top = georef.bounds
    crs = f"EPSG{georef.epsg}" if georef.epsg is not None else "CRS"
    pixel = abs(georef.transform.a)
    return f"{crs}_{math.floor(left)}_{math.floor(top)}_{georef.width}x{georef.height}_{pixel:g}m", "georeference"


def _check_tile_id(value: object, what: str) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidTileError(f"{what} must be a string (the tile id), got {type(value).__name__} {value!r}.")
    text = str(value).strip()
    if _CONTROL.search(text) or "/" in text or "\\" in text or len(text.encode()) > _MAX_TILE_ID:
        raise InvalidTileError(
            f"{what} = {text!r} cannot be a tile id (the STAC item id): use at most {_MAX_TILE_ID} bytes "
            "without '/', '\\' or control characters."
        )
    return text


def _acquisition(given: Mapping[str, Any], attrs: Mapping[Any, Any]) -> Acquisition | None:
    """Metadata first (instant, then interval), then attrs (instant, then interval)."""
    for source, keys, where in ((given, DATETIME_KEYS, "metadata"), (attrs, ATTR_DATETIME_KEYS, "tile.attrs")):
        start, end = (source.get(k) for k in _INTERVAL_KEYS)
        interval = (
            (parse_time(start, f"{where}['start_datetime']"), parse_time(end, f"{where}['end_datetime']"))
            if not _absent(start) and not _absent(end)
            else None
        )
        if interval is not None and interval[0] > interval[1]:
            raise InvalidTileError(
                f"{where}['start_datetime'] ({format_time(interval[0])}) is after "
                f"{where}['end_datetime'] ({format_time(interval[1])}); swap them."
            )
        for key in keys:
            value = source.get(key)
            if not _absent(value):
                what = f"{where}[{key!r}]"
                instant = parse_time(value, what)
                if interval is None:
                    return Acquisition(instant=instant, source=what)
                return Acquisition(instant=instant, start=interval[0], end=interval[1], source=what)
        if interval is not None:
            return Acquisition(instant=None, start=interval[0], end=interval[1], source=f"{where}['start_datetime']")
    return None


def _source_properties(given: Mapping[str, Any], attrs: Mapping[Any, Any]) -> dict[str, Any]:
    """The acquisition's STAC properties from ``attrs``, overridden by ``metadata`` entries of the same name."""
    found: dict[str, Any] = {}
    for where, source in (("tile.attrs", attrs), ("metadata", given)):
        for key, raw in source.items():
            if not isinstance(key, str) or not (key in _SOURCE_NAMES or key.startswith(_SOURCE_PREFIXES)):
                continue
            value = _stac_value(key, raw)
            if value is None:
                logger.info("%s[%r] = %r is not a valid STAC %s value; left out of the item", where, key, raw, key)
                found.pop(key, None)
            else:
                found[key] = value
    return dict(sorted(found.items()))


def _stac_value(key: str, raw: Any) -> Any:
    """``raw`` as the STAC field ``key`` holds it, or ``None`` when it does not fit the field."""
    value = raw.item() if isinstance(raw, np.generic) else raw
    if key in ("platform", "constellation"):
        return value.strip() if isinstance(value, str) and value.strip() else None
    if key == "instruments":
        return _string_list(value)
    if key == "eo:cloud_cover":
        return _number_in(value, 0.0, 100.0)
    if key.startswith("view:"):
        bounds = _VIEW_RANGES.get(key)
        return None if bounds is None else _number_in(value, *bounds)
    # s2:* — any JSON scalar
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _number_in(value: Any, low: float, high: float) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) and low <= value <= high else None


def _string_list(value: Any) -> list[str] | None:
    """A list of strings; ``darts-acquisition`` stores lists as their ``str()`` (``"['msi']"``)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return None
        elif text:
            return [text]
    if isinstance(value, list | tuple | np.ndarray):
        items = [v.item() if isinstance(v, np.generic) else v for v in value]
        if items and all(isinstance(v, str) and v for v in items):
            return [str(v) for v in items]
    return None

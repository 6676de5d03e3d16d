"""A STAC Collection over many exports: the catalog that loaders and STAC APIs ingest.

:func:`build_collection` walks a prefix of exports (a local folder or any fsspec URL), reads
every export's ``item.json`` and writes at the prefix (the *collection root*):

* ``collection.json``: links relative (``./T06WVS/item.json``), so the whole prefix can be
  moved or mirrored; the items themselves are never rewritten (each is listed, with its
  checksum, in its export's manifest). Each export's own item links to it as
  ``../collection.json``, so the exports are expected directly below the root.
* ``items.ndjson``: one item per line with ``collection`` set, ``collection``/``root``/
  ``parent``/``self`` links and every href absolute (below ``href_base`` if given, else
  below the root's own URL) — what ``pypgstac load items`` and a STAC API's bulk item
  endpoint take, and what a loader can open from anywhere.
* ``items.parquet`` (optional, extra ``parquet-catalog``): the same rows as stac-geoparquet.
* **Extent**: the smallest bbox covering every item's bbox, across the antimeridian when that
  is smaller (then west > east, as RFC 7946 and STAC prescribe); the temporal extent runs
  from the earliest to the latest item ``datetime`` (or ``start_datetime``/``end_datetime``).
* **Summaries**: ``proj:code`` (every CRS), and every ``darts:*`` property whose value some
  items share (at most :data:`SUMMARY_MAX_VALUES` distinct values; per-item values such as
  the export date are left out).
* Two items with one id are an error (:class:`~darts_export.errors.DuplicateItemError`),
  since a catalog keeps only one of them, unless ``allow_duplicates=True``.

With ``pgstac_dsn`` the collection and the rows are also upserted into a pgstac database
(:mod:`darts_export.stac.pgstac`). The pure parts (:func:`collection_from_items`,
:func:`catalog_item`, :func:`union_bbox`) take and return objects; only
:func:`build_collection` touches storage.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pystac
from pystac.utils import str_to_datetime

from darts_export.errors import (
    DuplicateItemError,
    ExportError,
    InvalidTileError,
    NoItemsError,
    StorageError,
    require_extra,
)
from darts_export.locations import RUNS_FOLDER
from darts_export.products import ITEM_NAME, MediaType
from darts_export.stac.item import METADATA_PREFIX
from darts_export.stac.placement import COLLECTION_NAME, DEFAULT_COLLECTION, normalise_href_base
from darts_export.storage import Storage

__all__ = [
    "COLLECTION_NAME",
    "ITEMS_NDJSON_NAME",
    "ITEMS_PARQUET_NAME",
    "SUMMARY_MAX_VALUES",
    "build_collection",
    "catalog_item",
    "collection_from_items",
    "encode_collection",
    "encode_ndjson",
    "find_items",
    "union_bbox",
]

logger = logging.getLogger(__name__)

ITEMS_NDJSON_NAME = "items.ndjson"
"""Every item, one JSON document per line, hrefs absolute, beside the collection."""

ITEMS_PARQUET_NAME = "items.parquet"
"""The optional stac-geoparquet table of every item, beside the collection."""

SUMMARY_MAX_VALUES = 16
"""A ``darts:*`` property is summarised only while it has at most this many distinct values."""

DEFAULT_DESCRIPTION = "DARTS retrogressive thaw slump segmentation exports, one item per processed tile."

_SKIPPED_DIR_SUFFIXES = (".zarr",)  # never look for items inside a debug store
_COLLECTION_RELS = frozenset({"collection", "root", "parent", "self"})


def find_items(storage: Storage) -> tuple[str, ...]:
    """Paths (relative to the storage root, sorted) of every ``item.json`` below it, at any depth.

    Raises:
        StorageError: the prefix cannot be listed (the backend's exception is chained).
    """
    rels = []
    for rel in storage.list():
        parts = rel.split("/")
        if (
            parts[-1] != ITEM_NAME
            or parts[0] == RUNS_FOLDER
            or any(p.endswith(_SKIPPED_DIR_SUFFIXES) for p in parts[:-1])
        ):
            continue
        rels.append(rel)
    return tuple(sorted(rels))


def _read_items(storage: Storage, rels: Sequence[str]) -> list[dict[str, Any]]:
    """The JSON of every item, fetched concurrently where the filesystem can (s3fs batches ``cat``)."""
    blobs = storage.read_many(rels)
    items = []
    for rel in rels:
        if rel not in blobs:
            raise StorageError(f"Cannot read {storage.uri(rel)}: it was listed but is gone; run again.")
        try:
            item = json.loads(blobs[rel])
        except json.JSONDecodeError as exc:
            raise ExportError(f"{storage.uri(rel)} is not valid JSON ({exc}); re-export that tile.") from exc
        if not isinstance(item, dict) or item.get("type") != "Feature":
            raise ExportError(f"{storage.uri(rel)} is not a STAC Item (no GeoJSON Feature); re-export that tile.")
        items.append(item)
    return items


def union_bbox(bboxes: Iterable[Sequence[float]]) -> list[float]:
    """The smallest ``[west, south, east, north]`` covering every bbox, on the longitude circle.

    A bbox with west > east crosses the antimeridian. The result crosses it too (west > east)
    when that covers the inputs with a narrower band of longitudes than going the other way.

    Raises:
        ValueError: ``bboxes`` is empty.
    """
    boxes = [(float(b[0]), float(b[1]), float(b[-2]), float(b[-1])) for b in bboxes]
    if not boxes:
        raise ValueError("union_bbox needs at least one bbox")
    south, north = min(b[1] for b in boxes), max(b[3] for b in boxes)
    intervals: list[tuple[float, float]] = []
    for west, _, east, _ in boxes:
        intervals.extend([(west, east)] if west <= east else [(west, 180.0), (-180.0, east)])
    intervals.sort()
    merged = [intervals[0]]
    for start, end in intervals[1:]:
        if start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    # The largest longitude gap not covered by any bbox; the answer is its complement.
    wrap_gap = merged[0][0] + 360.0 - merged[-1][1]
    inner = [(merged[i + 1][0] - merged[i][1], i) for i in range(len(merged) - 1)]
    widest, i = max(inner, default=(-1.0, -1))
    if wrap_gap >= widest:
        if wrap_gap <= 0:
            return [-180.0, south, 180.0, north]
        return [merged[0][0], south, merged[-1][1], north]
    return [merged[i + 1][0], south, merged[i][1], north]


def _time_range(item: Mapping[str, Any]) -> tuple[datetime, datetime] | None:
    props = item.get("properties") or {}
    start, end = props.get("start_datetime"), props.get("end_datetime")
    if props.get("datetime"):
        start = end = props["datetime"]
    if not start or not end:
        return None
    return str_to_datetime(str(start)), str_to_datetime(str(end))


def _href(rel: str) -> str:
    return f"./{rel}"


def _check_unique(items: Sequence[Mapping[str, Any]], rels: Sequence[str], *, allow_duplicates: bool) -> None:
    seen: dict[str, list[str]] = {}
    for item, rel in zip(items, rels, strict=True):
        seen.setdefault(str(item.get("id")), []).append(rel)
    duplicates = {item_id: where for item_id, where in seen.items() if len(where) > 1}
    if not duplicates:
        return
    listed = "; ".join(f"{item_id!r} in {', '.join(where)}" for item_id, where in sorted(duplicates.items()))
    if not allow_duplicates:
        raise DuplicateItemError(
            f"Item ids occur more than once: {listed}. A catalog keeps only one item per id: give each export "
            "its own tile_id (metadata 'tile_id'), or pass allow_duplicates=True (CLI: --allow-duplicates) to "
            "catalog them anyway (the last one loaded wins)."
        )
    logger.warning("item ids occur more than once (a catalog keeps only one of each): %s", listed)


def _summaries(items: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    values: dict[str, set[str]] = {}
    codes: set[str] = set()
    for item in items:
        props = item.get("properties") or {}
        if isinstance(props.get("proj:code"), str):
            codes.add(props["proj:code"])
        for key, value in props.items():
            if key.startswith(METADATA_PREFIX) and isinstance(value, str):
                values.setdefault(key, set()).add(value)
    summaries: dict[str, list[Any]] = {"proj:code": sorted(codes)} if codes else {}
    for key in sorted(values):
        distinct = values[key]
        if len(distinct) <= SUMMARY_MAX_VALUES and (len(distinct) < len(items) or len(items) == 1):
            summaries[key] = sorted(distinct)
    return summaries


def collection_from_items(
    items: Sequence[Mapping[str, Any]],
    rels: Sequence[str],
    *,
    collection_id: str = DEFAULT_COLLECTION,
    description: str = DEFAULT_DESCRIPTION,
    title: str | None = None,
    license: str = "other",
    href_base: str | None = None,
    allow_duplicates: bool = False,
) -> pystac.Collection:
    """The collection over ``items`` (their JSON), found at ``rels`` relative to the collection.

    Links: ``root`` → ``./collection.json`` and one ``item`` link per item, relative; with
    ``href_base`` also ``self`` → ``{href_base}/collection.json``.

    Raises:
        NoItemsError: ``items`` is empty.
        DuplicateItemError: two items share an id and ``allow_duplicates`` is false.
        InvalidTileError: ``href_base`` is not an absolute URL or path.
        ValueError: ``items`` and ``rels`` differ in length, or no item has a bbox.
    """
    if not items:
        raise NoItemsError("No STAC items to build a collection from.")
    if len(items) != len(rels):
        raise ValueError(f"{len(items)} items but {len(rels)} paths")
    base = normalise_href_base(href_base)
    bboxes = [item["bbox"] for item in items if item.get("bbox")]
    if not bboxes:
        raise ValueError("None of the items has a bbox; cannot compute the collection's spatial extent.")
    _check_unique(items, rels, allow_duplicates=allow_duplicates)
    ranges = [r for r in (_time_range(item) for item in items) if r is not None]
    interval: list[datetime | None] = [min(r[0] for r in ranges), max(r[1] for r in ranges)] if ranges else [None, None]
    collection = pystac.Collection(
        id=collection_id,
        description=description,
        title=title,
        license=license,
        extent=pystac.Extent(
            spatial=pystac.SpatialExtent([union_bbox(bboxes)]),
            temporal=pystac.TemporalExtent([interval]),
        ),
        summaries=pystac.Summaries(_summaries(items)),
    )
    collection.clear_links()
    collection.add_link(pystac.Link(rel="root", target=_href(COLLECTION_NAME), media_type=MediaType.JSON))
    if base is not None:
        collection.add_link(pystac.Link(rel="self", target=f"{base}/{COLLECTION_NAME}", media_type=MediaType.JSON))
    for item, rel in zip(items, rels, strict=True):
        collection.add_link(
            pystac.Link(rel="item", target=_href(rel), media_type=MediaType.GEOJSON, title=str(item.get("id")))
        )
    return collection


def encode_collection(collection: pystac.Collection) -> bytes:
    """UTF-8 JSON of ``collection`` with its links exactly as built."""
    data = collection.to_dict(include_self_link=True, transform_hrefs=False)
    return (json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


def _is_relative(href: str) -> bool:
    return not urlsplit(href).scheme and not href.startswith("/")


def catalog_item(item: Mapping[str, Any], rel: str, collection_id: str, base: str) -> dict[str, Any]:
    """A copy of ``item`` (found at ``rel`` below the collection root ``base``) as a catalog takes it.

    ``collection`` is set; relative hrefs become absolute below ``base``
    (``{base}/{folder of rel}/probabilities.tif``); the ``collection``, ``root`` and
    ``parent`` links point at ``{base}/collection.json`` and ``self`` at ``{base}/{rel}``.
    ``item`` is not modified.
    """
    base = base.rstrip("/")
    folder = posixpath.dirname(rel)

    def absolute(href: str) -> str:
        if not _is_relative(href):
            return href
        joined = posixpath.normpath(posixpath.join(folder, href))
        if joined == ".." or joined.startswith("../"):
            raise ValueError(f"{rel}: href {href!r} points outside the collection root")
        return f"{base}/{joined}"

    data: dict[str, Any] = json.loads(json.dumps(item))
    data["collection"] = collection_id
    for asset in (data.get("assets") or {}).values():
        asset["href"] = absolute(str(asset["href"]))
    links = [{**link, "href": absolute(str(link["href"]))} for link in data.get("links") or ()]
    collection_href = f"{base}/{COLLECTION_NAME}"
    # Every link titled: stac-geoparquet reads a missing title back as null, which STAC forbids.
    data["links"] = [
        *(
            {"rel": r, "href": collection_href, "type": MediaType.JSON.value, "title": collection_id}
            for r in ("collection", "root", "parent")
        ),
        {"rel": "self", "href": f"{base}/{rel}", "type": MediaType.GEOJSON.value, "title": str(data.get("id"))},
        *(link for link in links if link.get("rel") not in _COLLECTION_RELS),
    ]
    return data


def encode_ndjson(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """One compact JSON document per line (UTF-8, newline-terminated), as ``pypgstac load items`` reads."""
    return b"".join(
        (json.dumps(row, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n").encode() for row in rows
    )


def _write_items_parquet(storage: Storage, rows: Sequence[dict[str, Any]], collection: pystac.Collection) -> None:
    from stac_geoparquet.arrow import parse_stac_items_to_arrow, to_parquet

    collection_dict = collection.to_dict(include_self_link=True, transform_hrefs=False)
    with tempfile.TemporaryDirectory(prefix="darts-items-") as tmp:
        staged = Path(tmp) / ITEMS_PARQUET_NAME
        to_parquet(parse_stac_items_to_arrow(rows), staged, collections={collection.id: collection_dict})
        storage.publish_file(ITEMS_PARQUET_NAME, staged)


def _warn_on_foreign_links(items: Sequence[Mapping[str, Any]], rels: Sequence[str], collection_id: str) -> None:
    """Say when an export's own item.json names another collection or cannot reach the root's collection.json."""
    misplaced = [
        rel
        for item, rel in zip(items, rels, strict=True)
        if any(
            link.get("rel") == "collection" and link.get("href") == f"../{COLLECTION_NAME}"
            for link in item.get("links") or ()
        )
        and rel.count("/") != 1
    ]
    if misplaced:
        logger.warning(
            "%d item(s) are not directly below the collection root (e.g. %s): their own ../%s link misses it; "
            "%s has the right links",
            len(misplaced),
            misplaced[0],
            COLLECTION_NAME,
            ITEMS_NDJSON_NAME,
        )
    foreign = sorted({str(i["collection"]) for i in items if i.get("collection") not in (None, collection_id)})
    if foreign:
        logger.warning("items name collection(s) %s; cataloguing them as %r", foreign, collection_id)


def build_collection(
    root: str | os.PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    collection_id: str = DEFAULT_COLLECTION,
    description: str = DEFAULT_DESCRIPTION,
    title: str | None = None,
    license: str = "other",
    write: bool = True,
    items_parquet: bool = False,
    href_base: str | None = None,
    allow_duplicates: bool = False,
    pgstac_dsn: str | None = None,
) -> pystac.Collection:
    """Build the STAC Collection over every export's ``item.json`` below ``root``.

    Args:
        root: The prefix of exports: a local folder or any fsspec URL (``s3://bucket/darts``).
        storage_options: fsspec options for ``root`` (endpoint, credentials).
        collection_id: The collection's ``id``.
        description: The collection's ``description``.
        title: The collection's ``title``.
        license: An SPDX license identifier, or ``"other"``.
        write: Write ``collection.json`` and ``items.ndjson`` at ``root`` (replacing any there);
            without it nothing is written or loaded anywhere.
        items_parquet: Also write every item as ``items.parquet`` (stac-geoparquet) at ``root``.
        href_base: The public URL of ``root`` (``https://data.example.org/darts`` for
            ``s3://bucket/darts``): the base of the absolute hrefs in ``items.ndjson``,
            ``items.parquet`` and pgstac. By default the URL of ``root`` itself.
        allow_duplicates: Catalog items that share an id (a catalog then keeps the last one)
            instead of raising.
        pgstac_dsn: Also upsert the collection and every item into the pgstac database at this
            PostgreSQL DSN (extra ``pgstac``); re-running is safe.

    Returns:
        The collection, its links relative to ``root``.

    Raises:
        NoItemsError: no ``item.json`` below ``root``.
        MissingExtraError: ``items_parquet`` without stac-geoparquet, or ``pgstac_dsn`` without
            pypgstac installed (before anything is written).
        DuplicateItemError: two items share an id and ``allow_duplicates`` is false.
        InvalidTileError: ``href_base`` is not an absolute URL or path.
        StorageError: listing, reading or writing failed (``TargetUnreachableError`` when
            ``root`` cannot be reached at all).
        ExportError: an ``item.json`` is not a STAC Item.
        CatalogError: loading into pgstac failed.
    """
    if write and items_parquet:  # before anything is read or written
        require_extra(
            "stac_geoparquet", extra="parquet-catalog", feature=f"the {ITEMS_PARQUET_NAME} table (stac-geoparquet)"
        )
    if pgstac_dsn is not None:
        require_extra("pypgstac", extra="pgstac", feature="loading into pgstac (pypgstac)")
    base = normalise_href_base(href_base)
    storage = Storage.open(root, storage_options)
    rels = find_items(storage)
    if not rels:
        raise NoItemsError(
            f"No {ITEM_NAME} found below {storage.url}; export tiles there first "
            "(each export folder holds its item.json) or give the prefix that holds them."
        )
    items = _read_items(storage, rels)
    collection = collection_from_items(
        items,
        rels,
        collection_id=collection_id,
        description=description,
        title=title,
        license=license,
        href_base=base,
        allow_duplicates=allow_duplicates,
    )
    _warn_on_foreign_links(items, rels, collection_id)
    try:
        rows = [
            catalog_item(item, rel, collection_id, base or storage.url) for item, rel in zip(items, rels, strict=True)
        ]
    except ValueError as exc:
        raise InvalidTileError(f"{exc}; re-export that tile.") from exc
    if write:
        storage.publish_bytes(ITEMS_NDJSON_NAME, encode_ndjson(rows))
        if items_parquet:
            _write_items_parquet(storage, rows, collection)
        storage.publish_bytes(COLLECTION_NAME, encode_collection(collection))
        if pgstac_dsn is not None:
            from darts_export.stac.pgstac import load_into_pgstac

            load_into_pgstac(pgstac_dsn, collection, rows)
    elif items_parquet or pgstac_dsn is not None:
        logger.warning("items_parquet and pgstac_dsn ignored: write=False")
    logger.info("collection %r over %d items under %s", collection_id, len(items), storage.url)
    return collection

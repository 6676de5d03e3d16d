"""A STAC Collection over many exports: the catalog that loaders ingest.

:func:`build_collection` walks a prefix of exports (a local folder or any fsspec URL),
reads every export's ``item.json`` and writes ``collection.json`` at the prefix:

* **Links** are relative (``./T06WVS/item.json``), so the whole prefix can be moved or
  mirrored; the items themselves are never rewritten (each is listed, with its checksum,
  in its export's manifest).
* **Extent**: the spatial extent is the smallest bbox covering every item's bbox, across
  the antimeridian when that is smaller (then west > east, as RFC 7946 and STAC prescribe);
  the temporal extent runs from the earliest to the latest item ``datetime`` (or
  ``start_datetime``/``end_datetime``).
* **items.parquet** (optional): every item in one stac-geoparquet table for bulk loading
  (pgstac, DuckDB). Its rows carry ``collection`` and hrefs made relative to the table's
  own location (``./T06WVS/probabilities.tif``), as the items' hrefs are to theirs.

The pure parts (:func:`collection_from_items`, :func:`union_bbox`, :func:`rebase_item`)
take and return objects; only :func:`build_collection` touches storage.
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

from darts_export.errors import ExportError, NoItemsError, StorageError, require_extra
from darts_export.products import ITEM_NAME, MediaType
from darts_export.storage import Storage

__all__ = [
    "COLLECTION_NAME",
    "ITEMS_PARQUET_NAME",
    "build_collection",
    "collection_from_items",
    "find_items",
    "rebase_item",
    "union_bbox",
]

logger = logging.getLogger(__name__)

COLLECTION_NAME = "collection.json"
"""The collection document, written at the root of the walked prefix."""

ITEMS_PARQUET_NAME = "items.parquet"
"""The optional stac-geoparquet table of every item, beside the collection."""

DEFAULT_DESCRIPTION = "DARTS retrogressive thaw slump segmentation exports, one item per processed tile."

_SKIPPED_DIR_SUFFIXES = (".zarr",)  # never look for items inside a debug store


def find_items(storage: Storage) -> tuple[str, ...]:
    """Paths (relative to the storage root, sorted) of every ``item.json`` below it, at any depth.

    Raises:
        StorageError: the prefix cannot be listed (the backend's exception is chained).
    """
    base = storage.root.rstrip("/")
    try:
        found = storage.fs.find(base)
    except FileNotFoundError:
        return ()
    except Exception as exc:
        raise StorageError(f"Cannot list {storage.url}: {type(exc).__name__}: {exc}") from exc
    rels = []
    for full in found:
        rel = str(full)[len(base) :].lstrip("/") if str(full).startswith(base) else str(full)
        parts = rel.split("/")
        if parts[-1] != ITEM_NAME or any(p.endswith(_SKIPPED_DIR_SUFFIXES) for p in parts[:-1]):
            continue
        rels.append(rel)
    return tuple(sorted(rels))


def _read_items(storage: Storage, rels: Sequence[str]) -> list[dict[str, Any]]:
    """The JSON of every item, fetched concurrently where the filesystem can (s3fs batches ``cat``)."""
    paths = [storage.path(rel) for rel in rels]
    try:
        blobs = storage.fs.cat(paths, on_error="raise")
    except Exception as exc:
        raise StorageError(f"Cannot read the items under {storage.url}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(blobs, dict):  # a single path comes back as bytes
        blobs = {paths[0]: blobs}
    items = []
    for rel, path in zip(rels, paths, strict=True):
        data = blobs.get(path)
        if data is None:  # fsspec may key the result by a normalised path
            matches = [v for k, v in blobs.items() if str(k).rstrip("/").endswith(path.lstrip("/"))]
            if len(matches) != 1:
                raise StorageError(f"Cannot read {storage.uri(rel)}: the filesystem returned no content for it.")
            data = matches[0]
        try:
            item = json.loads(data)
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


def collection_from_items(
    items: Sequence[Mapping[str, Any]],
    rels: Sequence[str],
    *,
    collection_id: str = "darts",
    description: str = DEFAULT_DESCRIPTION,
    title: str | None = None,
    license: str = "other",
) -> pystac.Collection:
    """The collection over ``items`` (their JSON), found at ``rels`` relative to the collection.

    Links: ``root`` → ``./collection.json`` and one ``item`` link per item, relative.

    Raises:
        NoItemsError: ``items`` is empty.
        ValueError: ``items`` and ``rels`` differ in length, or no item has a bbox.
    """
    if not items:
        raise NoItemsError("No STAC items to build a collection from.")
    if len(items) != len(rels):
        raise ValueError(f"{len(items)} items but {len(rels)} paths")
    bboxes = [item["bbox"] for item in items if item.get("bbox")]
    if not bboxes:
        raise ValueError("None of the items has a bbox; cannot compute the collection's spatial extent.")
    ranges = [r for r in (_time_range(item) for item in items) if r is not None]
    interval: list[datetime | None] = [min(r[0] for r in ranges), max(r[1] for r in ranges)] if ranges else [None, None]
    seen: dict[str, str] = {}
    for item, rel in zip(items, rels, strict=True):
        previous = seen.setdefault(str(item.get("id")), rel)
        if previous != rel:
            logger.warning("items %s and %s share the id %r; loaders keep only one", previous, rel, item.get("id"))
    collection = pystac.Collection(
        id=collection_id,
        description=description,
        title=title,
        license=license,
        extent=pystac.Extent(
            spatial=pystac.SpatialExtent([union_bbox(bboxes)]),
            temporal=pystac.TemporalExtent([interval]),
        ),
    )
    collection.clear_links()
    collection.add_link(pystac.Link(rel="root", target=_href(COLLECTION_NAME), media_type=MediaType.JSON))
    for item, rel in zip(items, rels, strict=True):
        collection.add_link(
            pystac.Link(rel="item", target=_href(rel), media_type=MediaType.GEOJSON, title=str(item.get("id")))
        )
    return collection


def encode_collection(collection: pystac.Collection) -> bytes:
    """UTF-8 JSON of ``collection`` with its links exactly as built (relative) and no self link."""
    data = collection.to_dict(include_self_link=False, transform_hrefs=False)
    return (json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


def _is_relative(href: str) -> bool:
    return not urlsplit(href).scheme and not href.startswith("/")


def rebase_item(item: Mapping[str, Any], rel: str, collection_id: str) -> dict[str, Any]:
    """A copy of ``item`` (found at ``rel``) with relative hrefs rebased onto the collection's folder.

    Also sets ``collection``. ``item`` is not modified.
    """
    folder = posixpath.dirname(rel)

    def rebase(href: str) -> str:
        if not _is_relative(href):
            return href
        return "./" + posixpath.normpath(posixpath.join(folder, href))

    data: dict[str, Any] = json.loads(json.dumps(item))
    data["collection"] = collection_id
    for asset in (data.get("assets") or {}).values():
        asset["href"] = rebase(str(asset["href"]))
    data["links"] = [{**link, "href": rebase(str(link["href"]))} for link in data.get("links") or ()]
    return data


def _write_items_parquet(
    storage: Storage, items: Sequence[Mapping[str, Any]], rels: Sequence[str], collection: pystac.Collection
) -> None:
    from stac_geoparquet.arrow import parse_stac_items_to_arrow, to_parquet

    rows = [rebase_item(item, rel, collection.id) for item, rel in zip(items, rels, strict=True)]
    collection_dict = collection.to_dict(include_self_link=False, transform_hrefs=False)
    with tempfile.TemporaryDirectory(prefix="darts-items-") as tmp:
        staged = Path(tmp) / ITEMS_PARQUET_NAME
        to_parquet(parse_stac_items_to_arrow(rows), staged, collections={collection.id: collection_dict})
        storage.publish_file(ITEMS_PARQUET_NAME, staged)


def build_collection(
    root: str | os.PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    collection_id: str = "darts",
    description: str = DEFAULT_DESCRIPTION,
    title: str | None = None,
    license: str = "other",
    write: bool = True,
    items_parquet: bool = False,
) -> pystac.Collection:
    """Build the STAC Collection over every export's ``item.json`` below ``root``.

    Args:
        root: The prefix of exports: a local folder or any fsspec URL (``s3://bucket/darts``).
        storage_options: fsspec options for ``root`` (endpoint, credentials).
        collection_id: The collection's ``id``.
        description: The collection's ``description``.
        title: The collection's ``title``.
        license: An SPDX license identifier, or ``"other"``.
        write: Write ``collection.json`` at ``root`` (replacing any there).
        items_parquet: Also write every item as ``items.parquet`` (stac-geoparquet) at ``root``.

    Returns:
        The collection, its links relative to ``root``.

    Raises:
        NoItemsError: no ``item.json`` below ``root``.
        MissingExtraError: ``items_parquet`` without stac-geoparquet installed (before anything is written).
        StorageError: listing, reading or writing failed (``TargetUnreachableError`` when
            ``root`` cannot be reached at all).
        ExportError: an ``item.json`` is not a STAC Item.
    """
    if write and items_parquet:  # before anything is read or written
        require_extra(
            "stac_geoparquet", extra="parquet-catalog", feature=f"the {ITEMS_PARQUET_NAME} table (stac-geoparquet)"
        )
    storage = Storage.open(root, storage_options)
    rels = find_items(storage)
    if not rels:
        raise NoItemsError(
            f"No {ITEM_NAME} found below {storage.url}; export tiles there first "
            "(each export folder holds its item.json) or give the prefix that holds them."
        )
    items = _read_items(storage, rels)
    collection = collection_from_items(
        items, rels, collection_id=collection_id, description=description, title=title, license=license
    )
    if write:
        storage.publish_bytes(COLLECTION_NAME, encode_collection(collection))
        if items_parquet:
            _write_items_parquet(storage, items, rels, collection)
    elif items_parquet:
        logger.warning("items_parquet ignored: write=False")
    logger.info("collection %r over %d items under %s", collection_id, len(items), storage.url)
    return collection

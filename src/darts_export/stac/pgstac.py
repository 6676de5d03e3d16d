"""Put a collection and its items into a pgstac database (extra ``pgstac``).

:func:`load_into_pgstac` upserts, through pypgstac's own loader, the collection and the
catalog rows that :func:`~darts_export.stac.collection.build_collection` makes (absolute
hrefs, ``collection`` set and linked), so re-running after new exports is safe: existing
items are replaced, new ones added. The database must already hold the pgstac schema of
pypgstac's minor version (``pypgstac migrate --dsn DSN`` once, by whoever administers it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pystac

from darts_export.errors import CatalogError

__all__ = ["load_into_pgstac"]

logger = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 10


def _server(dsn: str) -> str:
    """Host, port and database of ``dsn`` for messages (never the password)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(dsn)
    except Exception:  # a malformed DSN: name nothing from it
        return "the PostgreSQL server of the DSN"
    host = info.get("host") or "localhost"
    return f"{host}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def _check_database(dsn: str) -> None:
    """Fail fast and clearly when the server is unreachable or has no (compatible) pgstac schema."""
    import psycopg
    from pypgstac import __version__ as pypgstac_version

    where = _server(dsn)
    try:
        with psycopg.connect(dsn, connect_timeout=_CONNECT_TIMEOUT_S, autocommit=True) as conn:
            found = conn.execute("SELECT to_regclass('pgstac.migrations') IS NOT NULL").fetchone()
            row = None
            if found and found[0]:
                row = conn.execute("SELECT version FROM pgstac.migrations ORDER BY datetime DESC LIMIT 1").fetchone()
    except psycopg.Error as exc:
        raise CatalogError(
            f"Cannot connect to pgstac at {where}: {type(exc).__name__}: {str(exc).strip()}. "
            "Check the DSN (postgresql://user:password@host:port/dbname) and that the server is running."
        ) from exc
    if row is None:
        raise CatalogError(
            f"The database {where} has no pgstac schema; install it once with: pypgstac migrate --dsn DSN "
            f"(pypgstac {pypgstac_version})."
        )
    installed = str(row[0])
    if installed.split(".")[:2] != pypgstac_version.split(".")[:2] and installed != "unreleased":
        raise CatalogError(
            f"The database {where} has pgstac {installed}, this pypgstac is {pypgstac_version}; "
            "run `pypgstac migrate --dsn DSN` or install the matching pypgstac."
        )


def load_into_pgstac(
    dsn: str,
    collection: pystac.Collection | Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
) -> int:
    """Upsert ``collection`` and ``items`` (catalog rows: absolute hrefs, ``collection`` set) into pgstac.

    The collection is stored without its ``item`` links (a STAC API lists items itself).

    Returns:
        The number of items loaded.

    Raises:
        CatalogError: the server cannot be reached, has no compatible pgstac schema, or
            refused the data.
    """
    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods

    started = time.perf_counter()
    data = (
        collection.to_dict(include_self_link=True, transform_hrefs=False)
        if isinstance(collection, pystac.Collection)
        else dict(collection)
    )
    data["links"] = [link for link in data.get("links") or () if link.get("rel") != "item"]
    rows = [dict(item) for item in items]
    wrong = sorted({str(r.get("id")) for r in rows if r.get("collection") != data["id"]})
    if wrong:
        raise CatalogError(f"Items {wrong[:5]} do not name collection {data['id']!r}; build them with catalog_item().")
    _check_database(dsn)
    try:
        with PgstacDB(dsn=dsn) as db:
            loader = Loader(db=db)
            loader.load_collections(iter([data]), insert_mode=Methods.upsert)
            if rows:
                loader.load_items(iter(rows), insert_mode=Methods.upsert)
    except Exception as exc:  # pypgstac raises bare Exception and psycopg errors alike
        raise CatalogError(f"Loading into pgstac at {_server(dsn)} failed: {type(exc).__name__}: {exc}") from exc
    logger.info(
        "upserted collection %r and %d items into pgstac at %s in %.2f s",
        data["id"],
        len(rows),
        _server(dsn),
        time.perf_counter() - started,
    )
    return len(rows)

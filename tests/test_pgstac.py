"""Exports into a real pgstac catalog: migrate, load (twice: upsert), search by bbox + datetime, serve over a STAC API.

The server is a real PostgreSQL + PostGIS (``postgres_dsn`` fixture); the API is
stac-fastapi-pgstac run in process on that database.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from catalog_helpers import EXPORTS, check_asset_opens, export_pair
from darts_export.cli.main import main
from darts_export.errors import CatalogError
from darts_export.stac.collection import ITEMS_NDJSON_NAME, build_collection
from darts_export.stac.pgstac import load_into_pgstac
from helpers import closed_port


@contextmanager
def fresh_database(server_dsn: str) -> Iterator[str]:
    """A new, empty database on the server (no pgstac schema yet); dropped afterwards."""
    name = f"darts_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrate(dsn: str) -> str:
    from pypgstac.db import PgstacDB
    from pypgstac.migrate import Migrate

    with PgstacDB(dsn=dsn) as db:
        return str(Migrate(db).run_migration())


def _search(dsn: str, query: dict[str, Any]) -> list[str]:
    from pypgstac.db import PgstacDB

    with PgstacDB(dsn=dsn) as db:
        return sorted(feature["id"] for feature in json.loads(db.search(query))["features"])


def _window(when: str) -> str:
    moment = datetime.fromisoformat(when)
    return f"{(moment - timedelta(hours=1)).isoformat()}/{(moment + timedelta(hours=1)).isoformat()}"


def _stac_api(dsn: str) -> Any:
    """stac-fastapi-pgstac's app on ``dsn`` (its own lifespan opens the asyncpg pool)."""
    from stac_fastapi.pgstac.app import instantiate_api
    from stac_fastapi.pgstac.config import PostgresSettings, Settings
    from stac_fastapi.pgstac.db import close_db_connection, connect_to_db

    info = conninfo_to_dict(dsn)
    postgres = PostgresSettings(
        pguser=str(info.get("user") or "postgres"),
        pgpassword=str(info.get("password") or ""),
        pghost=str(info.get("host") or "127.0.0.1"),
        pgport=int(info.get("port") or 5432),
        pgdatabase=str(info["dbname"]),
    )

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await connect_to_db(app, postgres_settings=postgres)
        yield
        await close_db_connection(app)

    return instantiate_api(lifespan=lifespan, settings=Settings(enable_response_models=False)).app


def test_exports_round_trip_through_pgstac_and_a_stac_api(tmp_path: Path, postgres_dsn: str) -> None:
    root = tmp_path / "darts"
    export_pair(root, debug=True)
    with fresh_database(postgres_dsn) as dsn:
        # A database without pgstac: a clear error that says what to run (the files are written all the same).
        with pytest.raises(CatalogError, match="pypgstac migrate"):
            build_collection(root, pgstac_dsn=dsn)
        assert (root / ITEMS_NDJSON_NAME).exists()

        assert _migrate(dsn)
        # The README's line, then again through the library: an upsert, so running again is safe.
        loaded = CliRunner().invoke(main, ["stac", str(root), "--pgstac", dsn], catch_exceptions=False)
        assert loaded.exit_code == 0, loaded.output
        assert "Upserted the collection and 2 items into pgstac" in loaded.output
        build_collection(root, pgstac_dsn=dsn)

        # items.ndjson is exactly what `pypgstac load items` takes.
        from pypgstac.db import PgstacDB
        from pypgstac.load import Loader, Methods

        with PgstacDB(dsn=dsn) as db:
            Loader(db=db).load_items(str(root / ITEMS_NDJSON_NAME), insert_mode=Methods.upsert)

        lines = (root / ITEMS_NDJSON_NAME).read_text().splitlines()
        rows = {row["id"]: row for row in map(json.loads, lines)}
        assert _search(dsn, {"collections": ["darts"]}) == sorted(EXPORTS)
        for tile_id, (_, when) in EXPORTS.items():
            bbox = rows[tile_id]["bbox"]
            assert _search(dsn, {"collections": ["darts"], "bbox": bbox, "datetime": _window(when)}) == [tile_id]
            other = next(w for t, (_, w) in EXPORTS.items() if t != tile_id)
            assert _search(dsn, {"bbox": bbox, "datetime": _window(other)}) == []

        # Served by a STAC API: every asset href of every served item opens, size and checksum as stated.
        asyncio.run(_check_served(dsn, rows, root))


async def _check_served(dsn: str, rows: dict[str, dict[str, Any]], root: Path) -> None:
    import httpx

    app = _stac_api(dsn)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://stac.test") as client,
    ):
        collection = await client.get("/collections/darts")
        assert collection.status_code == 200, collection.text
        assert collection.json()["extent"]["temporal"]["interval"] == [["2023-07-01T10:00:00Z", "2024-08-02T11:00:00Z"]]
        for tile_id, (_, when) in EXPORTS.items():
            found = await client.post("/search", json={"bbox": rows[tile_id]["bbox"], "datetime": _window(when)})
            assert found.status_code == 200, found.text
            assert [f["id"] for f in found.json()["features"]] == [tile_id]
            served = await client.get(f"/collections/darts/items/{tile_id}")
            assert served.status_code == 200, served.text
            assets = served.json()["assets"]
            assert "darts_inference_debug" in assets
            for asset in assets.values():
                assert asset["href"].startswith(root.as_uri() + f"/{tile_id}/")
                check_asset_opens(asset)


def test_pgstac_errors_are_clear_and_quick(tmp_path: Path) -> None:
    dsn = f"postgresql://postgres:s3cret@127.0.0.1:{closed_port()}/postgres"
    collection = {"type": "Collection", "id": "darts", "links": []}
    with pytest.raises(CatalogError, match=r"Cannot connect to pgstac at 127\.0\.0\.1:\d+/postgres") as info:
        load_into_pgstac(dsn, collection, [])
    assert "s3cret" not in str(info.value)
    with pytest.raises(CatalogError, match="do not name collection 'darts'"):
        load_into_pgstac(dsn, collection, [{"id": "A", "collection": "other"}])

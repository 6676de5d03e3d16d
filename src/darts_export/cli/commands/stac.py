"""``darts-export stac``: the STAC collection over every export under a prefix."""

from __future__ import annotations

from typing import Any

import click

from darts_export.cli.context import EXIT_CODES_HELP, ExitCode, Settings, pass_settings
from darts_export.cli.options import STORAGE_URL, global_options

__all__ = ["stac_command"]


@click.command("stac", epilog=EXIT_CODES_HELP)
@click.argument("root", type=STORAGE_URL)
@click.option("--id", "collection_id", default="darts", show_default=True, help="The collection's id.")
@click.option("--description", help="The collection's description (default: a description of DARTS).")
@click.option("--title", help="The collection's title.")
@click.option("--license", "license_", default="other", show_default=True, help="An SPDX license identifier.")
@click.option(
    "--items-parquet/--no-items-parquet",
    default=False,
    show_default=True,
    help='Also write the items as a stac-geoparquet table beside the collection (pip install "darts-export['
    'parquet-catalog]").',
)
@click.option(
    "--href-base",
    metavar="URL",
    help="Public URL of ROOT (e.g. https://data.example.org/darts for s3://bucket/darts): the base of the absolute "
    "hrefs in items.ndjson, items.parquet and pgstac. Default: ROOT's own URL.",
)
@click.option(
    "--allow-duplicates",
    is_flag=True,
    help="Catalog exports that share an item id (a catalog keeps the last one) instead of stopping with exit code 3.",
)
@click.option(
    "--pgstac",
    "pgstac_dsn",
    metavar="DSN",
    help="Also upsert the collection and its items into the pgstac database at this PostgreSQL DSN "
    '(postgresql://user:password@host:5432/db; pip install "darts-export[pgstac]"; run `pypgstac migrate` once).',
)
@click.option("--dry-run", is_flag=True, help="Build and print the collection without writing it.")
@global_options
@pass_settings
def stac_command(
    settings: Settings,
    root: str,
    collection_id: str,
    description: str | None,
    title: str | None,
    license_: str,
    items_parquet: bool,
    href_base: str | None,
    allow_duplicates: bool,
    pgstac_dsn: str | None,
    dry_run: bool,
) -> None:
    """Build the STAC collection over every export under ROOT (a folder or URL) and write it there.

    Every export's item.json under ROOT becomes an item of ROOT/collection.json, with extents that
    span them all; ROOT/items.ndjson holds every item with absolute hrefs (what `pypgstac load items`
    takes). Exits with 3 when there is no export under ROOT or two exports share an item id.
    """
    from darts_export.errors import CatalogError, DuplicateItemError, NoItemsError
    from darts_export.stac.collection import build_collection

    run = settings.run()
    extra: dict[str, Any] = {} if description is None else {"description": description}
    with run.translated():
        try:
            collection = build_collection(
                root,
                storage_options=run.storage_options,
                collection_id=collection_id,
                title=title,
                license=license_,
                write=not dry_run,
                items_parquet=items_parquet,
                href_base=href_base,
                allow_duplicates=allow_duplicates,
                pgstac_dsn=pgstac_dsn,
                **extra,
            )
        except (NoItemsError, DuplicateItemError) as exc:
            run.fail(exc, ExitCode.BAD_INPUT)
        except CatalogError as exc:  # the database, like a storage target, could not take the data
            run.fail(exc, ExitCode.STORAGE)
    items = [link.href for link in collection.links if link.rel == "item"]
    verb = "Built" if dry_run else "Wrote"
    lines = [f"{verb} STAC collection {collection.id!r} over {root}: {len(items)} items."]
    if pgstac_dsn is not None and not dry_run:
        lines.append(f"Upserted the collection and {len(items)} items into pgstac.")
    run.result(collection.to_dict(include_self_link=True, transform_hrefs=False), lines)  # never resolves links

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
    dry_run: bool,
) -> None:
    """Build the STAC collection over every export under ROOT (a folder or URL) and write it there.

    Every export's item.json under ROOT becomes an item of ROOT/collection.json, with extents that
    span them all. Exits with 3 when there is no export under ROOT.
    """
    from darts_export.errors import NoItemsError
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
                **extra,
            )
        except NoItemsError as exc:
            run.fail(exc, ExitCode.BAD_INPUT)
    items = [link.href for link in collection.links if link.rel == "item"]
    verb = "Built" if dry_run else "Wrote"
    run.result(collection.to_dict(), [f"{verb} STAC collection {collection.id!r} over {root}: {len(items)} items."])

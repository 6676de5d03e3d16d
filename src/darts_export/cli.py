"""The ``darts-export`` command line: a thin layer over the library."""

from __future__ import annotations

import json
import logging
import sys
import time

import click

from darts_export.__about__ import __version__
from darts_export.errors import ExportError
from darts_export.export import export_tile
from darts_export.synthetic import make_synthetic_tile

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="darts-export")
@click.option("-v", "--verbose", count=True, help="More log output (-v: per tile, -vv: per artifact).")
def main(verbose: int) -> None:
    """Export DARTS segmentation tiles as COGs, GeoParquet, GeoPackage, Zarr and STAC."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@main.command()
@click.argument("out_dir")
@click.option(
    "--size", default=1024, show_default=True, help="Pixels per side of the synthetic tile (10980 = Sentinel-2)."
)
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic tile.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON instead of a summary.")
def demo(out_dir: str, size: int, seed: int, as_json: bool) -> None:
    """Generate a realistic synthetic tile and export it to OUT_DIR (a folder or URL)."""
    tile = make_synthetic_tile(size, seed=seed)
    started = time.perf_counter()
    try:
        bands = ("probabilities", "binarized", "optical", "dem", "tcvis", "metadata")
        manifest = export_tile(tile, out_dir, bands=bands, metadata={"tile_id": f"demo-{size}-{seed}"})
    except ExportError as exc:
        raise click.ClickException(str(exc)) from exc
    seconds = time.perf_counter() - started
    if as_json:
        click.echo(json.dumps(manifest.to_dict(), indent=2))
        return
    click.echo(f"Exported {manifest.tile_id} ({size}×{size} px) to {manifest.location} in {seconds:.2f} s:")
    for artifact in manifest.artifacts:
        click.echo(f"  {artifact.path:<40} {artifact.size:>12,d} bytes")
    click.echo(f"  {'manifest.json':<40} (written last)")

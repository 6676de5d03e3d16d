"""``darts-export export`` (a saved tile) and ``darts-export demo`` (a synthetic one)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from darts_export.cli.context import EXIT_CODES_HELP, ExitCode, Run, Settings, pass_settings
from darts_export.cli.options import (
    JSON_OBJECT_FILE,
    KEY_VALUE,
    STORAGE_URL,
    catalog_options,
    global_options,
    target_options,
)
from darts_export.cli.progress import ExportProgress
from darts_export.products import DEFAULT_BANDS, Product, expected_paths

if TYPE_CHECKING:
    import xarray as xr

    from darts_export.manifest import Manifest

__all__ = ["demo_command", "export_command"]

_MIN_DEMO_SIZE = 16


@click.command("export", epilog=EXIT_CODES_HELP)
@click.argument("input_path", metavar="INPUT", type=STORAGE_URL)
@click.argument("out_dir", type=STORAGE_URL)
@click.option(
    "-b",
    "--band",
    "bands",
    multiple=True,
    metavar="BAND",
    help="A product to write (repeatable): probabilities, binarized, polygonized, extent, thumbnail, optical, "
    f"dem, tcvis, metadata, or a tile variable. Default: {', '.join(DEFAULT_BANDS)}.",
)
@click.option("-s", "--subset", "subsets", multiple=True, metavar="NAME", help="An ensemble subset (repeatable).")
@click.option(
    "--meta",
    "meta_pairs",
    type=KEY_VALUE,
    multiple=True,
    help="Metadata for the GeoTIFF tags and darts_inference.json (repeatable). JSON values are parsed "
    "(year=2024 is a number, flag=true a boolean), anything else is a string. Overrides --meta-file.",
)
@click.option("--meta-file", type=JSON_OBJECT_FILE, help="Metadata as a JSON object file.")
@click.option("--debug", is_flag=True, help="Also write the whole tile as darts_inference_debug.zarr.")
@target_options
@catalog_options
@global_options
@pass_settings
def export_command(
    settings: Settings,
    input_path: str,
    out_dir: str,
    bands: tuple[str, ...],
    subsets: tuple[str, ...],
    meta_pairs: tuple[tuple[str, Any], ...],
    meta_file: dict[str, Any] | None,
    debug: bool,
    overwrite: bool,
    fallback_dir: Path | None,
    collection: str,
    href_base: str | None,
) -> None:
    """Export the tile INPUT to OUT_DIR.

    INPUT is a tile saved as Zarr (e.g. the darts_inference_debug.zarr of an earlier export) or as
    NetCDF-4 (.nc, .nc4, .netcdf, .h5, .hdf5), a local path or a URL; a remote INPUT with the protocol
    of OUT_DIR is read with the same storage options.
    """
    from fsspec.utils import get_protocol

    from darts_export.inputs import open_tile

    run = settings.run(overwrite=overwrite, fallback_dir=fallback_dir)
    metadata = {**(meta_file or {}), **dict(meta_pairs)}
    same_protocol = get_protocol(input_path) == get_protocol(out_dir)
    with (
        run.translated(),
        open_tile(input_path, storage_options=run.storage_options if same_protocol else None) as tile,
    ):
        manifest = _run_export(
            run,
            tile,
            out_dir,
            label=Path(input_path.rstrip("/")).name,
            bands=bands or DEFAULT_BANDS,
            ensemble_subsets=subsets,
            metadata=metadata,
            debug=debug,
            collection=collection or None,
            href_base=href_base,
        )
    _report_export(run, manifest)


@click.command("demo", epilog=EXIT_CODES_HELP)
@click.argument("out_dir", type=STORAGE_URL)
@click.option("--size", default=1024, show_default=True, help="Pixels per side of the tile (10980 = Sentinel-2).")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic tile.")
@click.option("--debug", is_flag=True, help="Also write the whole tile as darts_inference_debug.zarr.")
@target_options
@catalog_options
@global_options
@pass_settings
def demo_command(
    settings: Settings,
    out_dir: str,
    size: int,
    seed: int,
    debug: bool,
    overwrite: bool,
    fallback_dir: Path | None,
    collection: str,
    href_base: str | None,
) -> None:
    """Generate a realistic synthetic tile and export every product of it to OUT_DIR (a folder or URL).

    The tile has a thaw-slump-like probability field, its segmentation and extent, and optical,
    DEM and Tasseled Cap inputs; the export holds every product (COGs, vectors, thumbnail, STAC item).
    """
    if size < _MIN_DEMO_SIZE:
        raise click.BadParameter(f"at least {_MIN_DEMO_SIZE} pixels, got {size}", param_hint="--size")
    run = settings.run(overwrite=overwrite, fallback_dir=fallback_dir)
    with run.status(f"Making a synthetic {size}×{size} tile (seed {seed})…"):
        from darts_export.synthetic import make_synthetic_tile

        tile = make_synthetic_tile(size, seed=seed)
    with run.translated():
        manifest = _run_export(
            run,
            tile,
            out_dir,
            label=f"demo {size}×{size}",
            bands=tuple(Product),
            ensemble_subsets=(),
            metadata={"tile_id": f"demo-{size}-{seed}"},
            debug=debug,
            collection=collection or None,
            href_base=href_base,
        )
    _report_export(run, manifest)


def _run_export(
    run: Run,
    tile: xr.Dataset,
    out_dir: str,
    *,
    label: str,
    bands: Sequence[str],
    ensemble_subsets: Sequence[str],
    metadata: dict[str, Any],
    debug: bool,
    collection: str | None,
    href_base: str | None,
) -> Manifest:
    """``export_tile`` with one progress bar over the artifacts, naming the ones in flight."""
    from darts_export.export import export_tile

    total = len(expected_paths(bands, ensemble_subsets, debug=debug)) - 1  # the manifest is not an artifact
    with ExportProgress(run, label, total) as progress:
        manifest = export_tile(
            tile,
            out_dir,
            bands=bands,
            ensemble_subsets=ensemble_subsets,
            metadata=metadata,
            debug=debug,
            storage_options=run.storage_options,
            overwrite=run.overwrite,
            fallback_dir=run.fallback_dir,
            progress=progress,
            collection=collection,
            href_base=href_base,
        )
        progress.finished()
    return manifest


def _report_export(run: Run, manifest: Manifest) -> None:
    """The manifest (``--json``) or a listing; a fallback export says so and exits with 6."""
    listing = [f"  {a.path:<40} {a.size:>12,d} bytes" for a in manifest.artifacts]
    listing.append(f"  {'manifest.json':<40} (written last)")
    if not manifest.fell_back:
        lines = [f"Exported {manifest.tile_id} to {manifest.location}: {len(manifest.artifacts)} artifacts", *listing]
        run.result(manifest.to_dict(), lines)
        return
    sync_hint = f"darts-export sync {run.fallback_dir}"
    lines = [
        f"Fell back: {manifest.target} was unreachable, so {manifest.tile_id} was exported to "
        f"{manifest.location} instead ({len(manifest.artifacts)} artifacts).",
        *listing,
        f"Publish it to {manifest.target} once it is reachable: {sync_hint}",
    ]
    run.result(manifest.to_dict(), lines)
    if run.as_json:  # stdout is the manifest; say it on stderr too
        click.echo(f"Fell back to {manifest.location}; publish it later with: {sync_hint}", err=True)
    raise click.exceptions.Exit(ExitCode.FELL_BACK)

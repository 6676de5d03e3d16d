"""The ``darts-export`` command line: a thin layer over the library.

Commands: ``export`` (a tile saved as Zarr or NetCDF), ``demo`` (a synthetic tile),
``verify``, ``sync`` (publish exports that fell back to a local folder) and ``stac``.
Every command takes ``--json`` (machine-readable result on stdout), ``-v``/``-q``
(log levels) and, where it touches storage, ``--storage-option KEY=VALUE``; ``s3://``
URLs otherwise use the standard AWS environment (``AWS_PROFILE``, ``AWS_ENDPOINT_URL``, ...).
Progress bars (rich) and logs go to stderr; bars only when stderr is a terminal.

Exit codes:

* 0 — success;
* 1 — verification failed, or a sync left exports behind;
* 2 — usage error (bad option, argument or URL protocol);
* 3 — bad input: the tile, a band, a subset or the metadata, an input that cannot be opened, no
  export under the ROOT of ``stac``, or an optional feature whose extra is not installed;
* 4 — storage error: the target is unreachable, or reading/writing it failed;
* 5 — an export already exists at the target (``--no-overwrite``).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from darts_export.__about__ import __version__
from darts_export.cli.context import (
    EXIT_CODES_HELP,
    JSON_FILE,
    ExitCode,
    Run,
    command,
    json_object_file,
    parse_pairs,
)
from darts_export.inputs import open_tile
from darts_export.products import DEFAULT_BANDS, Product, expected_paths

if TYPE_CHECKING:
    import xarray as xr

    from darts_export.manifest import Manifest
    from darts_export.sync import FallbackExport

__all__ = ["ExitCode", "main"]

logger = logging.getLogger(__name__)


# --- commands -------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="darts-export")
@click.option("-v", "--verbose", count=True, help="More log output, for any command (-v, -vv).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr and no progress bars, for any command.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Export DARTS segmentation tiles as COGs, GeoParquet, GeoPackage, Zarr and STAC.

    OUT_DIR, TARGET and ROOT are local folders or URLs (s3://bucket/prefix, memory://, any fsspec URL).
    """
    ctx.meta["darts_export.verbose"] = verbose
    ctx.meta["darts_export.quiet"] = quiet


@command(main, "export", target=True)
@click.argument("input_path", metavar="INPUT")
@click.argument("out_dir")
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
    multiple=True,
    metavar="KEY=VALUE",
    help="Metadata for the GeoTIFF tags and darts_inference.json (repeatable). JSON values are parsed "
    "(year=2024 is a number, flag=true a boolean), anything else is a string. Overrides --meta-file.",
)
@click.option("--meta-file", type=JSON_FILE, help="Metadata as a JSON object file.")
@click.option("--debug", is_flag=True, help="Also write the whole tile as darts_inference_debug.zarr.")
def export_command(
    run: Run,
    input_path: str,
    out_dir: str,
    bands: tuple[str, ...],
    subsets: tuple[str, ...],
    meta_pairs: tuple[str, ...],
    meta_file: Path | None,
    debug: bool,
) -> None:
    """Export the tile INPUT to OUT_DIR.

    INPUT is a tile saved as Zarr (e.g. the darts_inference_debug.zarr of an earlier export) or as
    NetCDF-4 (.nc, .nc4, .netcdf, .h5, .hdf5), a local path or a URL; a remote INPUT with the protocol
    of OUT_DIR is read with the same storage options.
    """
    metadata = {**json_object_file(meta_file, "--meta-file"), **parse_pairs(meta_pairs, "--meta")}
    same_protocol = _protocol(input_path) == _protocol(out_dir)
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
        )
    _report_export(run, manifest)


@command(main, "demo", target=True)
@click.argument("out_dir")
@click.option("--size", default=1024, show_default=True, help="Pixels per side of the tile (10980 = Sentinel-2).")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic tile.")
@click.option("--debug", is_flag=True, help="Also write the whole tile as darts_inference_debug.zarr.")
def demo(run: Run, out_dir: str, size: int, seed: int, debug: bool) -> None:
    """Generate a realistic synthetic tile and export every product of it to OUT_DIR (a folder or URL).

    The tile has a thaw-slump-like probability field, its segmentation and extent, and optical,
    DEM and Tasseled Cap inputs; the export holds every product (COGs, vectors, thumbnail, STAC item).
    """
    from darts_export.synthetic import make_synthetic_tile

    if size < 16:
        raise click.BadParameter(f"at least 16 pixels, got {size}", param_hint="--size")
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
        )
    _report_export(run, manifest)


@command(main, "verify")
@click.argument("out_dir")
def verify_command(run: Run, out_dir: str) -> None:
    """Re-read every artifact listed in OUT_DIR/manifest.json and compare sizes and SHA-256 checksums.

    Prints one line per missing or differing artifact and exits with 1 if there is any.
    """
    from darts_export.verify import verify

    if run.verbose == 0:  # the problems are this command's output; the library's warnings would repeat them
        verify_logger = logging.getLogger("darts_export.verify")
        click.get_current_context().call_on_close(functools.partial(verify_logger.setLevel, verify_logger.level))
        verify_logger.setLevel(logging.ERROR)
    with run.translated():
        report = verify(out_dir, storage_options=run.storage_options)
    summary = (
        f"OK: {report.checked} artifacts at {report.location} match the manifest."
        if report.ok
        else f"FAILED: {len(report.problems)} problem(s) at {report.location}."
    )
    problems = [
        {"path": p.path, "reason": p.reason, "expected": p.expected, "actual": p.actual} for p in report.problems
    ]
    tile_id = report.manifest.tile_id if report.manifest else None
    data = {"location": report.location, "ok": report.ok, "checked": report.checked, "tile_id": tile_id}
    run.result({**data, "problems": problems}, [*(str(p) for p in report.problems), summary])
    if not report.ok:
        raise click.exceptions.Exit(ExitCode.FAILED)


@command(main, "sync")
@click.argument("fallback_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("target", required=False)
@click.option(
    "--dry-run", is_flag=True, help="Check the local copies and list what would be published; change nothing."
)
def sync_command(run: Run, fallback_dir: Path, target: str | None, dry_run: bool) -> None:
    """Publish the exports under FALLBACK_DIR to the targets their manifests record.

    With TARGET, only the exports meant for TARGET or below it: `sync ./fallback s3://bucket` publishes
    every export meant for that bucket. Each export is verified locally, uploaded (manifest last),
    verified at the target, and only then removed locally; a failed one stays and is reported.
    --storage-option says how to reach the targets (endpoint, credentials).
    """
    from darts_export.sync import sync

    with run.translated(), run.progress() as progress:
        tasks: dict[Path, Any] = {}

        def advance(export: FallbackExport, path: str) -> None:
            if export.path not in tasks:
                total = len(export.manifest.artifacts) + 1
                tasks[export.path] = progress.add_task(export.target, total=total, step="")
            progress.update(tasks[export.path], advance=1, step=path)

        report = sync(fallback_dir, target, storage_options=run.storage_options, dry_run=dry_run, progress=advance)
    lines = [
        f"{r.status:<8} {r.target or r.local_path}  ({r.artifacts} artifacts, {r.bytes:,d} bytes)"
        + (f": {r.error}" if r.error else "")
        for r in report.results
    ]
    counts = f"{len(report.synced)} synced, {len(report.failed)} failed, {len(report.skipped)} skipped"
    run.result(report.to_dict(), [*lines, f"{counts} under {fallback_dir}." if report.results else "Nothing to sync."])
    if report.failed:
        unreachable_only = not report.synced and all(r.reason == "unreachable" for r in report.failed)
        raise click.exceptions.Exit(ExitCode.STORAGE if unreachable_only else ExitCode.FAILED)


@command(main, "stac")
@click.argument("root")
@click.option("--id", "collection_id", default="darts", show_default=True, help="The collection's id.")
@click.option("--description", help="The collection's description (default: a description of DARTS).")
@click.option("--title", help="The collection's title.")
@click.option("--license", "license_", default="other", show_default=True, help="An SPDX license identifier.")
@click.option(
    "--items-parquet/--no-items-parquet",
    default=False,
    show_default=True,
    help="Also write the items as a stac-geoparquet table beside the collection (needs stac-geoparquet).",
)
@click.option("--dry-run", is_flag=True, help="Build and print the collection without writing it.")
def stac_command(
    run: Run,
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

    extra = {} if description is None else {"description": description}
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


# --- helpers --------------------------------------------------------------------------------------


def _protocol(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


def _run_export(run: Run, tile: xr.Dataset, out_dir: str, *, label: str, **options: Any) -> Manifest:
    """``export_tile`` with one progress bar, the artifacts as steps."""
    from darts_export.export import export_tile

    total = len(expected_paths(options["bands"], options["ensemble_subsets"], debug=options["debug"])) - 1
    with run.progress() as progress:
        task = progress.add_task(label, total=total, step="")
        manifest = export_tile(
            tile,
            out_dir,
            **options,
            storage_options=run.storage_options,
            overwrite=run.overwrite,
            fallback_dir=run.fallback_dir,
            progress=lambda path: progress.update(task, advance=1, step=path),
        )
        progress.update(task, completed=total, step="manifest.json")
    return manifest


def _report_export(run: Run, manifest: Manifest) -> None:
    if manifest.fell_back:
        logger.warning(
            "%s was unreachable: the export is in %s; publish it later with `darts-export sync %s`",
            manifest.target,
            manifest.location,
            run.fallback_dir,
        )
    lines = [f"Exported {manifest.tile_id} to {manifest.location}: {len(manifest.artifacts)} artifacts"]
    lines += [f"  {a.path:<40} {a.size:>12,d} bytes" for a in manifest.artifacts]
    lines.append(f"  {'manifest.json':<40} (written last)")
    run.result(manifest.to_dict(), lines)

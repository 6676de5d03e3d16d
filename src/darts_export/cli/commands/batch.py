"""``darts-export batch``: many input stores exported on a local process pool, Dask or Ray."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import click

from darts_export.cli.context import EXIT_CODES_HELP, ExitCode, Run, Settings, pass_settings
from darts_export.cli.options import JSON_OBJECT_FILE, KEY_VALUE, STORAGE_URL, global_options
from darts_export.cli.progress import progress_display
from darts_export.products import DEFAULT_BANDS

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from darts_export.batch import TileResult

__all__ = ["batch_command"]


class BatchBar:
    """One bar over the tiles of a batch: how many are done, and how many exported, skipped, failed, running."""

    def __init__(self, run: Run) -> None:
        self._display: Progress = progress_display(run)
        self._task: TaskID | None = None
        self._counts = {"exported": 0, "skipped": 0, "failed": 0}
        self._tiles = self._workers = 0

    def __enter__(self) -> BatchBar:
        self._display.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._display.__exit__(None, None, None)

    def _step(self) -> str:
        done = sum(self._counts.values())
        running = min(self._workers, self._tiles - done)
        return " · ".join(f"{n} {word}" for word, n in (*self._counts.items(), ("running", running)))

    def planned(self, tiles: int, skipped: int, workers: int) -> None:
        """Start the bar over ``tiles`` tiles."""
        self._tiles, self._workers = tiles, workers
        self._task = self._display.add_task("tiles", total=tiles, step=self._step())

    def finished(self, result: TileResult) -> None:
        """Count ``result`` and redraw."""
        self._counts[result.status] += 1
        if self._task is not None:
            self._display.update(self._task, advance=1, step=self._step())


@click.command("batch", epilog=EXIT_CODES_HELP)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUTS...")
@click.argument("output_prefix", type=STORAGE_URL)
@click.option(
    "--engine",
    type=click.Choice(["local", "dask", "ray"]),
    default="local",
    show_default=True,
    help='local: a process pool on this machine; dask: a Dask cluster (pip install "darts-export[dask]"); '
    'ray: Ray Data on a Ray cluster (pip install "darts-export[ray]").',
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="The cluster to use: a Dask scheduler (tcp://host:8786) or a Ray address (auto, ray://head:10001). "
    "Default: a local cluster with --workers workers.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Exports at once on a cluster started here. Default: one per core, never more than fit in memory.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Further attempts per tile after a transient failure (connection, timeout, storage).",
)
@click.option(
    "--resume/--overwrite",
    default=True,
    show_default=True,
    help="Skip tiles whose export is already complete, or export every tile again.",
)
@click.option(
    "--verify",
    type=click.Choice(["sizes", "full"]),
    default="sizes",
    show_default=True,
    help="When an export counts as complete: every artifact at its size (one listing), or also its checksum.",
)
@click.option(
    "-b",
    "--band",
    "bands",
    multiple=True,
    metavar="BAND",
    help=f"A product to write (repeatable), as for `export`. Default: {', '.join(DEFAULT_BANDS)}.",
)
@click.option("-s", "--subset", "subsets", multiple=True, metavar="NAME", help="An ensemble subset (repeatable).")
@click.option("--meta", "meta_pairs", type=KEY_VALUE, multiple=True, help="Metadata for every tile (repeatable).")
@click.option("--meta-file", type=JSON_OBJECT_FILE, help="Metadata for every tile as a JSON object file.")
@click.option("--debug", is_flag=True, help="Also write each tile as darts_inference_debug.zarr.")
@global_options
@pass_settings
def batch_command(
    settings: Settings,
    inputs: tuple[str, ...],
    output_prefix: str,
    engine: str,
    scheduler: str | None,
    workers: int | None,
    retries: int,
    resume: bool,
    verify: str,
    bands: tuple[str, ...],
    subsets: tuple[str, ...],
    meta_pairs: tuple[tuple[str, Any], ...],
    meta_file: dict[str, Any] | None,
    debug: bool,
) -> None:
    """Export every input store of INPUTS, each to OUTPUT_PREFIX/<folder of the input>.

    INPUTS are Zarr stores or NetCDF files (paths or URLs), globs (quoted: 's3://bucket/in/*/tile.zarr'),
    folders or prefixes holding stores (listed recursively), or text files with one input per line.
    Complete exports are skipped (--resume), a failing tile is recorded and the batch goes on; the
    run's ledger lands in OUTPUT_PREFIX/_runs/ and the STAC collection over OUTPUT_PREFIX is rebuilt.
    Exits with 1 when any tile failed.
    """
    from fsspec.utils import get_protocol

    from darts_export.batch import export_many
    from darts_export.errors import BatchInputError, EngineUnavailableError

    run = settings.run()
    if run.verbose == 0:  # the bar and the summary say what Ray Data's INFO lines would
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    options = run.storage_options
    same_protocol = all(get_protocol(i) == get_protocol(output_prefix) for i in inputs)
    with run.translated(), BatchBar(run) as bar:
        try:
            summary = export_many(
                inputs,
                output_prefix,
                engine=engine,  # type: ignore[arg-type]  # click.Choice
                scheduler=scheduler,
                workers=workers,
                bands=bands or DEFAULT_BANDS,
                ensemble_subsets=subsets,
                metadata={**(meta_file or {}), **dict(meta_pairs)},
                debug=debug,
                overwrite=not resume,
                verify=verify,  # type: ignore[arg-type]  # click.Choice
                retries=retries,
                storage_options=options,
                input_storage_options=options if same_protocol else {},
                progress=bar,
            )
        except BatchInputError as exc:
            run.fail(exc, ExitCode.BAD_INPUT)
        except EngineUnavailableError as exc:
            run.fail(exc, ExitCode.STORAGE)
    counts = summary.counts
    lines = [f"FAILED {r.input}: {r.error_type}: {r.error}" for r in summary.failed]
    lines.append(
        f"Batch {summary.run_id} on {summary.engine} ({summary.workers} workers): {len(summary.results)} tiles, "
        f"{counts['exported']} exported, {counts['skipped']} skipped, {counts['failed']} failed "
        f"in {summary.seconds:.1f} s. Ledger: {summary.ledger}"
    )
    run.result(summary.to_dict(), lines)
    if not summary.ok:
        raise click.exceptions.Exit(ExitCode.FAILED)

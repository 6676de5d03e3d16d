"""The ``darts-export`` command group: global options, and the subcommands from :mod:`.commands`.

Commands: ``export`` (a tile saved as Zarr or NetCDF), ``demo`` (a synthetic tile),
``verify``, ``sync`` (publish exports that fell back to a local folder), ``stac`` and ``batch``
(many input stores on a process pool, Dask or Ray).
The global options ``--json`` (machine-readable result on stdout), ``-v``/``-q`` (log levels)
and ``--storage-option KEY=VALUE`` / ``--storage-options-file`` go before or after the
subcommand; ``s3://`` URLs otherwise use the standard AWS environment (``AWS_PROFILE``,
``AWS_ENDPOINT_URL``, ...). Progress and logs go to stderr; progress only when stderr is a terminal.

Exit codes:

* 0 — success;
* 1 — verification failed, a sync left exports behind, or a tile of a batch failed;
* 2 — usage error (bad option, argument or URL);
* 3 — bad input: the tile, a band, a subset or the metadata, an input that cannot be opened, no
  export under the ROOT of ``stac``, or an optional feature whose extra is not installed;
* 4 — storage error: the target is unreachable, or reading/writing it failed; or a batch's cluster is unreachable;
* 5 — an export already exists at the target (``--no-overwrite``);
* 6 — the target was unreachable and the export was written to ``--fallback-dir`` instead.
"""

from __future__ import annotations

import click

from darts_export.__about__ import __version__
from darts_export.cli.commands.batch import batch_command
from darts_export.cli.commands.export import demo_command, export_command
from darts_export.cli.commands.stac import stac_command
from darts_export.cli.commands.sync import sync_command
from darts_export.cli.commands.verify import verify_command
from darts_export.cli.context import EXIT_CODES_HELP, ExitCode, Settings
from darts_export.cli.options import global_options

__all__ = ["ExitCode", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="darts-export")
@global_options
@click.pass_context
def main(ctx: click.Context) -> None:
    """Export DARTS segmentation tiles as COGs, GeoParquet, GeoPackage, Zarr and STAC.

    OUT_DIR, TARGET and ROOT are local folders or URLs (s3://bucket/prefix, memory://, any fsspec URL).
    The options below (--json, -v, -q, --storage-option, --storage-options-file) may also follow the
    subcommand.
    """
    ctx.ensure_object(Settings)


for _command in (export_command, demo_command, verify_command, sync_command, stac_command, batch_command):
    main.add_command(_command)

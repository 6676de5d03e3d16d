"""``darts-export verify``: re-read an export and compare it with its manifest."""

from __future__ import annotations

import functools
import logging

import click

from darts_export.cli.context import EXIT_CODES_HELP, ExitCode, Settings, pass_settings
from darts_export.cli.options import STORAGE_URL, global_options

__all__ = ["verify_command"]


@click.command("verify", epilog=EXIT_CODES_HELP)
@click.argument("out_dir", type=STORAGE_URL)
@global_options
@pass_settings
def verify_command(settings: Settings, out_dir: str) -> None:
    """Re-read every artifact listed in OUT_DIR/manifest.json and compare sizes and SHA-256 checksums.

    Prints one line per missing or differing artifact and exits with 1 if there is any.
    """
    from darts_export.verify import verify

    run = settings.run()
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

"""``darts-export sync``: publish exports that fell back to a local folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from darts_export.cli.context import EXIT_CODES_HELP, ExitCode, Settings, pass_settings
from darts_export.cli.options import STORAGE_URL, global_options
from darts_export.cli.progress import progress_display

if TYPE_CHECKING:
    from rich.progress import TaskID

    from darts_export.sync import FallbackExport

__all__ = ["sync_command"]


@click.command("sync", epilog=EXIT_CODES_HELP)
@click.argument("fallback_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("target", required=False, type=STORAGE_URL)
@click.option(
    "--dry-run", is_flag=True, help="Check the local copies and list what would be published; change nothing."
)
@global_options
@pass_settings
def sync_command(settings: Settings, fallback_dir: Path, target: str | None, dry_run: bool) -> None:
    """Publish the exports under FALLBACK_DIR to the targets their manifests record.

    With TARGET, only the exports meant for TARGET or below it: `sync ./fallback s3://bucket` publishes
    every export meant for that bucket. Each export is verified locally, uploaded (manifest last),
    verified at the target, and only then removed locally; a failed one stays and is reported.
    A FALLBACK_DIR that does not exist holds nothing to sync (exports create it only when they fall back).
    --storage-option says how to reach the targets (endpoint, credentials).
    """
    from darts_export.sync import SyncReport, sync

    run = settings.run()
    if not fallback_dir.exists():
        empty = SyncReport(fallback_dir=str(fallback_dir), target=target, dry_run=dry_run, results=())
        run.result(empty.to_dict(), [f"Nothing to sync: {fallback_dir} does not exist (no export fell back)."])
        return
    with run.translated(), progress_display(run) as progress:
        tasks: dict[Path, TaskID] = {}

        def advance(export: FallbackExport, path: str) -> None:
            if export.path not in tasks:
                total = len(export.manifest.artifacts) + 1
                tasks[export.path] = progress.add_task(export.target, total=total, step="")
            progress.update(tasks[export.path], advance=1, step=f"uploaded {path}")

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

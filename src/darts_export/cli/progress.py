"""Progress on stderr (rich): one bar per export, naming what is being encoded or uploaded right now."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TYPE_CHECKING

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from darts_export.cli.context import Run
    from darts_export.export import ProgressEvent

__all__ = ["ExportProgress", "progress_display"]

_SHOWN = 3  # artifacts named at once; two encoder threads and one upload are the usual load


def progress_display(run: Run) -> Progress:
    """A rich progress display on stderr, disabled unless the run is interactive."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[step]}"),
        TimeElapsedColumn(),
        console=run.console,
        disable=not run.interactive,
    )


class ExportProgress:
    """A bar over an export's artifacts: the count of stored ones, and what is in flight now.

    Used as ``export_tile``'s ``progress`` callback; called from the export's worker threads.
    """

    def __init__(self, run: Run, label: str, total: int) -> None:
        self._display = progress_display(run)
        self._task: TaskID = self._display.add_task(label, total=total, step="starting")
        self._total = total
        self._stored = 0
        self._active: dict[str, str] = {}  # path → "encoding" | "uploading", in start order
        self._lock = threading.Lock()

    def __enter__(self) -> ExportProgress:
        self._display.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._display.__exit__(kind, exc, traceback)

    def __call__(self, event: ProgressEvent, path: str) -> None:
        """Record ``event`` for ``path`` and redraw the bar."""
        with self._lock:
            advance = 0
            if event == "encoding":
                self._active[path] = "encoding"
            elif event == "publishing":
                self._active.pop(path, None)  # re-inserted last: it moved on
                self._active[path] = "uploading"
            else:
                self._active.pop(path, None)
                self._stored += 1
                advance = 1
            self._display.update(self._task, advance=advance, step=self.describe())

    def finished(self) -> None:
        """The export returned: every artifact and the manifest are stored."""
        with self._lock:
            self._display.update(self._task, completed=self._total, step="manifest.json written")

    def describe(self) -> str:
        """What the bar says is happening: the artifacts in flight, oldest first."""
        if not self._active and self._stored >= self._total:
            return "writing manifest.json"
        shown = [f"{state} {path}" for path, state in list(self._active.items())[:_SHOWN]]
        more = len(self._active) - len(shown)
        return ", ".join(shown) + (f" (+{more})" if more > 0 else "")

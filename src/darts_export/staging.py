"""The local staging folder of an export, and the sweep of folders that killed exports left behind.

Each export stages its GeoPackages and its Zarr debug store in a fresh ``darts-export-*``
folder of the temp dir, removed when the export ends. A process killed mid-export (SIGKILL,
a Lambda timeout) cannot remove it; on Lambda ``/tmp`` survives between warm invocations, so
such leftovers would pile up until the function runs out of space. Every staging folder
therefore records its owner (host, pid and the pid's start time, as pids are reused), and
:func:`sweep_stale_staging` removes the folders of owners that are gone once they are older
than a few minutes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["STAGING_PREFIX", "STALE_AFTER_SECONDS", "staging_folder", "sweep_stale_staging"]

logger = logging.getLogger(__name__)

STAGING_PREFIX = "darts-export-"
STALE_AFTER_SECONDS = 300.0
"""A dead owner's folder is swept once it has not changed for this long."""

_OWNER_FILE = ".darts-export-owner.json"
_OWNERLESS_AFTER_SECONDS = 3600.0  # folders of versions that recorded no owner: only when surely abandoned


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(owner: dict[str, object]) -> bool:
    pid = owner.get("pid")
    if not isinstance(pid, int) or owner.get("host") != socket.gethostname():
        return True  # not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = owner.get("started")
    return started is None or _start_time(pid) in (None, started)


@contextlib.contextmanager
def staging_folder() -> Iterator[Path]:
    """A fresh staging folder in the temp dir that names its owner; removed on exit."""
    folder = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX))
    try:
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid())}
        (folder / _OWNER_FILE).write_text(json.dumps(owner))
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sweep_stale_staging(*, older_than: float = STALE_AFTER_SECONDS, temp_dir: str | None = None) -> list[Path]:
    """Remove the staging folders of exports whose process is gone, unchanged for ``older_than`` seconds.

    Returns:
        The folders removed.
    """
    removed = []
    now = time.time()
    for folder in Path(temp_dir or tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*"):
        try:
            age = now - folder.stat().st_mtime
            if not folder.is_dir() or age < older_than:
                continue
            owner_file = folder / _OWNER_FILE
            if owner_file.exists():
                owner = json.loads(owner_file.read_text())
                if not isinstance(owner, dict) or _alive(owner):
                    continue
            elif age < _OWNERLESS_AFTER_SECONDS:
                continue
            shutil.rmtree(folder)
        except (OSError, ValueError) as exc:  # another process swept it first, or it is not ours to read
            logger.debug("not sweeping %s: %s", folder, exc)
            continue
        logger.warning("removed the stale staging folder %s (its export was killed)", folder)
        removed.append(folder)
    return removed

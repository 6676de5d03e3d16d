"""Peak memory of a benchmarked step, without a sampling thread where the kernel can tell.

On Linux the kernel's own high-water mark is used (``VmHWM``, reset through
``/proc/self/clear_refs``), so nothing runs beside the step; elsewhere a thread samples the
RSS every millisecond, which competes for the GIL and inflates the times of Python-heavy
steps (a 1-2 ms sampler made a 2.3 s export measure 15 s). Memory freed by earlier steps
is returned first (``gc.collect`` + glibc ``malloc_trim``) so it does not hide this step's
allocations.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
import time
from pathlib import Path

import psutil

__all__ = ["PeakRss"]

_MIB = 1024 * 1024


_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _kernel_peak() -> int | None:
    """This process's peak RSS in bytes as the kernel counts it (Linux), or ``None``."""
    if not _STATUS.exists():
        return None
    for line in _STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def _reset_kernel_peak() -> bool:
    """Reset the kernel's peak RSS to the current RSS; ``False`` where that is not possible."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _kernel_peak() is not None


class PeakRss:
    """This process's peak RSS while active: the kernel's high-water mark, else a sampling thread."""

    def __init__(self, interval: float = 0.001) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.baseline = self.peak = 0

    def __enter__(self) -> PeakRss:
        _release_memory()
        self.baseline = self.peak = self._process.memory_info().rss
        if not _reset_kernel_peak():
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self._interval)

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss, _kernel_peak() or 0)

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.baseline) / _MIB


def _release_memory() -> None:
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)

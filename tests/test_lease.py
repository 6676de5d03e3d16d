"""Concurrent writers on one prefix (threads and processes, local and S3), the lease, and stale staging."""

from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import xarray as xr

from darts_export import export_tile
from darts_export.errors import ExportInProgressError
from darts_export.export import ProgressEvent
from darts_export.lease import LEASE_NAME, Lease
from darts_export.staging import STAGING_PREFIX, staging_folder, sweep_stale_staging
from darts_export.storage import Storage
from darts_export.synthetic import make_synthetic_tile
from darts_export.verify import verify

WRITERS = 8
BANDS = ["binarized", "metadata"]


@pytest.fixture(scope="module")
def tile() -> xr.Dataset:
    return make_synthetic_tile(64, seed=31, with_inputs=False)


def _hold_until_refused(refused: Any) -> Callable[[ProgressEvent, str], None]:
    """A progress callback for the writer holding the lease: it waits until every other writer was refused.

    Only the lease holder gets as far as publishing, so the writers overlap for certain, however
    slowly the machine starts them.
    """
    held = threading.Event()

    def progress(event: ProgressEvent, path: str) -> None:
        if event == "publishing" and not held.is_set():
            held.set()
            for _ in range(WRITERS - 1):
                assert refused.acquire(timeout=60)

    return progress


def _write(tile: xr.Dataset, out_dir: str, options: dict[str, Any] | None, start: Any, refused: Any) -> str:
    start.wait()
    try:
        export_tile(tile, out_dir, bands=BANDS, storage_options=options, progress=_hold_until_refused(refused))
    except ExportInProgressError:
        refused.release()
        return "refused"
    return "committed"


def _in_child(
    tile: xr.Dataset, out_dir: str, options: dict[str, Any] | None, start: Any, refused: Any, results: Any
) -> None:
    results.put(_write(tile, out_dir, options, start, refused))


@pytest.mark.parametrize("backend", ["local", "s3"])
@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_eight_writers_on_one_prefix_commit_exactly_one_export(
    mode: str, backend: str, tile: xr.Dataset, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "s3":
        out_dir = f"s3://{request.getfixturevalue('s3_bucket')}/T1"
        options: dict[str, Any] | None = request.getfixturevalue("s3_storage_options")
    else:
        out_dir, options = str(tmp_path / "T1"), None
    if mode == "threads":
        barrier = threading.Barrier(WRITERS)
        refused: Any = threading.Semaphore(0)
        outcome: list[str] = []
        threads = [
            threading.Thread(target=lambda: outcome.append(_write(tile, out_dir, options, barrier, refused)))
            for _ in range(WRITERS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    else:
        context = multiprocessing.get_context("fork")  # the children share the parent's imports and tile
        start, results = context.Barrier(WRITERS), context.Queue()
        refused = context.Semaphore(0)
        children = [
            context.Process(target=_in_child, args=(tile, out_dir, options, start, refused, results))
            for _ in range(WRITERS)
        ]
        for child in children:
            child.start()
        outcome = [results.get(timeout=60) for _ in children]
        for child in children:
            child.join(10)
    assert sorted(outcome) == ["committed"] + ["refused"] * (WRITERS - 1)
    report = verify(out_dir, storage_options=options)
    assert report.ok, report.problems  # the one commit holds: no false complete
    assert not Storage.open(out_dir, options).exists(LEASE_NAME)


def test_the_lease_is_renewed_while_held_and_refuses_others_until_released(tmp_path: Path) -> None:
    storage = Storage.open(tmp_path)
    held = Lease(storage, seconds=0.3)
    held.acquire()
    try:
        time.sleep(0.5)  # past the first expiry: renewed in the meantime
        with pytest.raises(ExportInProgressError, match="Another export is writing"):
            Lease(storage).acquire()
        held.check()
    finally:
        held.release()
    assert not storage.exists(LEASE_NAME)
    taker = Lease(storage)
    taker.acquire()
    taker.release()


def _killed_export(tile: xr.Dataset, out_dir: str, ready: Any) -> None:
    def progress(event: ProgressEvent, path: str) -> None:
        if event == "publishing":
            ready.set()
            time.sleep(60)  # SIGKILLed here, mid-export, its staging folder in place

    export_tile(tile, out_dir, bands=["polygonized", "metadata"], progress=progress)


def test_a_killed_exports_staging_is_swept_by_the_next_export(
    tile: xr.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    child = context.Process(target=_killed_export, args=(tile, str(tmp_path / "killed"), ready))
    child.start()
    assert ready.wait(60)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    [leftover] = temp.glob(f"{STAGING_PREFIX}*")
    with staging_folder() as alive:  # a live export's folder, just as old: never swept
        old = time.time() - 600
        for folder in (leftover, alive):
            os.utime(folder, (old, old))
        assert sweep_stale_staging(older_than=3600) == []  # not old enough yet
        export_tile(tile, tmp_path / "next", bands=["metadata"])  # sweeps before it stages
        assert not leftover.exists()
        assert alive.exists()
    assert list(temp.iterdir()) == []

"""The one commit operation of an export, used by :mod:`~darts_export.export` and :mod:`~darts_export.sync`.

:func:`transaction` brackets every write to a target:

1. probe the target once (:meth:`Storage.probe`) — an unusable target fails before any work;
2. take the writer lease (:class:`~darts_export.lease.Lease`) — a second writer fails fast;
3. invalidate the old commit marker: remove ``manifest.json`` and confirm it is gone, before
   the first new byte (or refuse with :class:`~darts_export.errors.ArtifactExistsError`);
4. publish the artifacts concurrently on a bounded pool (:class:`Publisher`); the first that
   fails for good cancels the queued ones, and the export raises;
5. :meth:`Transaction.commit` writes the marker last — a conditional create when not
   overwriting, so two writers can never both commit — then the lease is dropped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import Literal

from darts_export.errors import ArtifactExistsError
from darts_export.lease import Lease
from darts_export.products import MANIFEST_NAME
from darts_export.storage import Sink, StoredObject, tree_object

__all__ = ["PUBLISH_WORKERS", "PublishEvent", "Publisher", "Transaction", "transaction"]

logger = logging.getLogger(__name__)

PublishEvent = Literal["publishing", "published"]
"""What the ``progress`` callback hears about an artifact path: its upload starts, or it is stored."""

RELEASE_WAIT_AFTER_FAILURE = 2.0
"""Seconds a failed export waits for its lease to be removed before it raises (the target may be down)."""

PUBLISH_WORKERS = 8
"""Objects published at once: an object store answers each request after 10-50 ms, so latency bounds one stream."""


class Publisher:
    """Publishes artifacts through a sink on a bounded pool; the first failure cancels the queued rest."""

    def __init__(
        self, sink: Sink, *, workers: int = PUBLISH_WORKERS, progress: Callable[[PublishEvent, str], None] | None = None
    ) -> None:
        """Start ``workers`` upload threads on ``sink``; ``progress`` hears when each artifact starts and is stored."""
        self.sink = sink
        self.progress = progress
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="darts-upload")
        self._futures: list[Future[StoredObject]] = []
        self._lock = threading.Lock()
        self._failure: BaseException | None = None

    def publish(
        self, rel: str, data: bytes | Path, *, consume: bool = False, report: bool = True
    ) -> Future[StoredObject]:
        """Queue ``data`` (bytes, or a local file, deleted once stored when ``consume``) for ``rel``."""
        self.raise_if_failed()
        future = self._pool.submit(self._one, rel, data, consume, report)
        with self._lock:
            self._futures.append(future)
        future.add_done_callback(self._settled)
        return future

    def publish_tree(self, rel: str, folder: Path, *, consume: bool = False) -> Future[StoredObject]:
        """Replace the directory ``rel`` by the files under ``folder``, object by object.

        The old objects are removed (and confirmed gone) first, so no stale chunk survives. The
        returned future holds the directory's :func:`~darts_export.storage.tree_object`.
        """
        if self.progress is not None:
            self.progress("publishing", rel)
        self.sink.remove(rel, recursive=True)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        parts = [
            self.publish(f"{rel}/{f.relative_to(folder).as_posix()}", f, consume=consume, report=False) for f in files
        ]
        tree: Future[StoredObject] = Future()
        remaining = [len(parts)]
        lock = threading.Lock()

        def settle(_: Future[StoredObject]) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0] > 0:
                    return
            failed = [p for p in parts if p.cancelled() or p.exception() is not None]
            if failed:
                exc = next((p.exception() for p in failed if not p.cancelled()), None)
                tree.set_exception(exc or RuntimeError(f"publishing {rel} was cancelled"))
                return
            tree.set_result(tree_object(rel, (p.result() for p in parts)))
            if self.progress is not None:
                self.progress("published", rel)

        if not parts:
            tree.set_result(tree_object(rel, ()))
        for part in parts:
            part.add_done_callback(settle)
        return tree

    def _one(self, rel: str, data: bytes | Path, consume: bool, report: bool) -> StoredObject:
        if report and self.progress is not None:
            self.progress("publishing", rel)
        if isinstance(data, Path):
            try:
                stored = self.sink.publish_file(rel, data)
            finally:
                if consume:
                    data.unlink(missing_ok=True)  # free the staging space as soon as possible
        else:
            stored = self.sink.publish_bytes(rel, data)
        if report and self.progress is not None:
            self.progress("published", rel)
        return stored

    def _settled(self, future: Future[StoredObject]) -> None:
        if future.cancelled() or future.exception() is None:
            return
        with self._lock:
            first = self._failure is None
            if first:
                self._failure = future.exception()
            pending = list(self._futures)
        if first:
            cancelled = sum(f.cancel() for f in pending)
            logger.warning("an upload failed for good; %d queued upload(s) cancelled", cancelled)

    def raise_if_failed(self) -> None:
        """Raise the first upload failure, if there was one."""
        if self._failure is not None:
            raise self._failure

    def wait(self) -> None:
        """Wait until every queued upload is stored; raise the first failure."""
        with self._lock:
            pending = list(self._futures)
        wait_futures(pending)
        self.raise_if_failed()

    def close(self) -> None:
        """Cancel what is still queued and wait for the uploads in flight (each ends within its retry budget)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class Transaction:
    """An open write to one target: publish through :attr:`publisher`, then :meth:`commit`."""

    def __init__(self, sink: Sink, publisher: Publisher, lease: Lease, *, overwrite: bool) -> None:
        """Bind the parts of one transaction (use :func:`transaction`)."""
        self.sink = sink
        self.publisher = publisher
        self.lease = lease
        self.overwrite = overwrite

    def commit(self, manifest: bytes) -> StoredObject:
        """Write the commit marker after every upload is stored, while the lease is still ours.

        Raises:
            ArtifactExistsError: not overwriting, and another writer committed first.
            ExportInProgressError: the lease was lost (this writer stalled past its expiry).
        """
        self.publisher.wait()
        self.lease.check()
        return self.sink.publish_bytes(MANIFEST_NAME, manifest, exclusive=not self.overwrite)


def invalidate(sink: Sink, *, overwrite: bool) -> None:
    """Refuse, or remove and confirm gone, an earlier export's commit marker.

    Raises:
        ArtifactExistsError: a manifest exists and ``overwrite`` is false.
        StorageError: the marker could not be removed (nothing new was written).
    """
    if not overwrite:
        if sink.read_optional(MANIFEST_NAME) is not None:
            raise ArtifactExistsError(
                f"An export already exists at {sink.url} ({MANIFEST_NAME} found); pass overwrite=True to replace it."
            )
        return
    # The manifest is the commit marker: gone first (confirmed), so a failed re-export never looks complete.
    sink.remove(MANIFEST_NAME)


@contextlib.contextmanager
def transaction(
    sink: Sink,
    *,
    overwrite: bool,
    workers: int = PUBLISH_WORKERS,
    progress: Callable[[PublishEvent, str], None] | None = None,
) -> Iterator[Transaction]:
    """Probe, lease, invalidate the old marker; yield the transaction; drop the lease (see the module doc)."""
    sink.probe()
    lease = Lease(sink)
    lease.acquire()
    try:
        invalidate(sink, overwrite=overwrite)
        publisher = Publisher(sink, workers=workers, progress=progress)
        try:
            yield Transaction(sink, publisher, lease, overwrite=overwrite)
        finally:
            publisher.close()
    except BaseException:
        lease.release(wait=RELEASE_WAIT_AFTER_FAILURE)
        raise
    lease.release()

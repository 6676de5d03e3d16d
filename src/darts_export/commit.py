"""The one commit operation of an export, used by :mod:`~darts_export.export` and :mod:`~darts_export.sync`.

:func:`transaction` brackets every write to a target:

1. probe the target once (:meth:`Storage.probe`) — an unusable target fails the export;
2. take the writer lease (:class:`~darts_export.lease.Lease`) — a second writer fails fast;
3. invalidate the old commit marker: remove ``manifest.json`` and confirm it is gone, before
   the first new byte (or refuse with :class:`~darts_export.errors.ArtifactExistsError`);
4. publish the artifacts concurrently on a bounded pool (:class:`Publisher`); the first that
   fails for good cancels the queued ones, and the export raises;
5. :meth:`Transaction.commit` writes the marker last — a conditional create when not
   overwriting, so two writers can never both commit — then the lease is dropped.

Steps 1-3 are a few sequential round trips: they run on their own thread while the caller
starts encoding (:attr:`Transaction.ready`), and no upload starts before they succeeded, so
nothing is written before the lease is held and the old marker is gone.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import Any, Literal, TypeVar

from darts_export.errors import ArtifactExistsError
from darts_export.lease import Lease
from darts_export.products import MANIFEST_NAME
from darts_export.storage import Sink, StoredObject, tree_object

__all__ = ["PUBLISH_WORKERS", "PublishEvent", "Publisher", "Transaction", "transaction"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

PublishEvent = Literal["publishing", "published"]
"""What the ``progress`` callback hears about an artifact path: its upload starts, or it is stored."""

RELEASE_WAIT_AFTER_FAILURE = 2.0
"""Seconds a failed export waits for its lease to be removed before it raises (the target may be down)."""

_WATCH_SECONDS = 0.05  # how often a folder still being written is looked at for new files

PUBLISH_WORKERS = 8
"""Objects published at once: an object store answers each request after 10-50 ms, so latency bounds one stream."""


class Publisher:
    """Publishes artifacts through a sink on a bounded pool; the first failure cancels the queued rest."""

    def __init__(
        self,
        sink: Sink,
        *,
        workers: int = PUBLISH_WORKERS,
        progress: Callable[[PublishEvent, str], None] | None = None,
        ready: Future[None] | None = None,
    ) -> None:
        """Start ``workers`` upload threads on ``sink``; ``progress`` hears when each artifact starts and is stored.

        With ``ready``, every upload waits until that future is done, and fails with its exception.
        """
        self.sink = sink
        self.progress = progress
        self._ready = ready
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="darts-upload")
        self._futures: list[Future[Any]] = []
        self._lock = threading.Lock()
        self._failure: BaseException | None = None
        self._closing = threading.Event()

    def publish(
        self, rel: str, data: bytes | Path, *, consume: bool = False, report: bool = True
    ) -> Future[StoredObject]:
        """Queue ``data`` (bytes, or a local file, deleted once stored when ``consume``) for ``rel``."""
        return self._submit(self._one, rel, data, consume, report)

    def _submit(self, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        self.raise_if_failed()
        future = self._pool.submit(fn, *args)
        with self._lock:
            self._futures.append(future)
        future.add_done_callback(self._settled)
        return future

    def publish_tree(
        self,
        rel: str,
        folder: Path,
        *,
        consume: bool = False,
        writing: Future[Any] | None = None,
        final: Callable[[Path], bool] | None = None,
    ) -> Future[StoredObject]:
        """Replace the directory ``rel`` by the files under ``folder``, object by object.

        The old objects are removed (and confirmed gone) first, so no stale chunk survives; that
        and the listing of ``folder`` happen on an upload thread. The returned future holds the
        directory's :func:`~darts_export.storage.tree_object`.

        Args:
            rel: The directory's path at the target.
            folder: The local folder whose files are published.
            consume: Delete each file once it is stored.
            writing: The future of a writer still filling ``folder``: while it runs, the files for
                which ``final`` is true are published as they appear (the writer must create each
                whole, e.g. by renaming it into place, and never change it again); the rest once
                it is done. Its failure fails the tree.
            final: See ``writing``; by default no file is published before the writer is done.
        """
        tree: Future[StoredObject] = Future()

        def start() -> None:
            self._wait_ready()
            if self.progress is not None:
                self.progress("publishing", rel)
            self.sink.remove(rel, recursive=True)
            parts: dict[Path, Future[StoredObject]] = {}

            def publish_new(ready_file: Callable[[Path], bool]) -> None:
                found = sorted(p for p in folder.rglob("*") if p not in parts and ready_file(p) and p.is_file())
                for f in found:
                    name = f"{rel}/{f.relative_to(folder).as_posix()}"
                    parts[f] = self.publish(name, f, consume=consume, report=False)

            while writing is not None and not writing.done():
                self.raise_if_failed()
                if self._closing.is_set():
                    raise RuntimeError(f"publishing {rel} was cancelled")
                if final is not None:
                    publish_new(final)
                wait_futures([writing], timeout=_WATCH_SECONDS)
            if writing is not None:
                writing.result()  # a failed writer fails the tree
            publish_new(lambda _: True)
            self._settle_tree(rel, tree, list(parts.values()))

        def started(future: Future[None]) -> None:
            if future.cancelled():
                tree.set_exception(RuntimeError(f"publishing {rel} was cancelled"))
            elif (exc := future.exception()) is not None:
                tree.set_exception(exc)

        self._submit(start).add_done_callback(started)
        return tree

    def _settle_tree(self, rel: str, tree: Future[StoredObject], parts: list[Future[StoredObject]]) -> None:
        """Give ``tree`` the tree object of ``parts`` once all are stored, or the first failure."""
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

    def _wait_ready(self) -> None:
        if self._ready is not None:
            self._ready.result()

    def _one(self, rel: str, data: bytes | Path, consume: bool, report: bool) -> StoredObject:
        self._wait_ready()
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

    def _settled(self, future: Future[Any]) -> None:
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
        """Wait until every queued upload is stored (a tree's objects too); raise the first failure."""
        while True:
            with self._lock:
                pending = [f for f in self._futures if not f.done()]
            if not pending:
                break
            wait_futures(pending)
        self.raise_if_failed()

    def close(self) -> None:
        """Cancel what is still queued and wait for the uploads in flight (each ends within its retry budget)."""
        self._closing.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


class Transaction:
    """An open write to one target: publish through :attr:`publisher`, then :meth:`commit`."""

    def __init__(
        self, sink: Sink, publisher: Publisher, lease: Lease, *, overwrite: bool, ready: Future[None] | None = None
    ) -> None:
        """Bind the parts of one transaction (use :func:`transaction`)."""
        self.sink = sink
        self.publisher = publisher
        self.lease = lease
        self.overwrite = overwrite
        self.ready: Future[None] = ready if ready is not None else _done()
        """Done once the target is probed and leased and its old marker is gone; holds their error if not."""

    def commit(self, manifest: bytes) -> StoredObject:
        """Write the commit marker after every upload is stored, while the lease is still ours.

        The lease is checked while the last uploads finish (one round trip fewer at the end).

        Raises:
            ArtifactExistsError: not overwriting, and another writer committed first.
            ExportInProgressError: the lease was lost (this writer stalled past its expiry).
        """
        self.ready.result()
        with ThreadPoolExecutor(1, thread_name_prefix="darts-lease-check") as checker:
            check = checker.submit(self.lease.check)
            self.publisher.wait()
            check.result()
        return self.sink.publish_bytes(MANIFEST_NAME, manifest, exclusive=not self.overwrite)


def _done() -> Future[None]:
    future: Future[None] = Future()
    future.set_result(None)
    return future


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


def _open(sink: Sink, lease: Lease, overwrite: bool) -> None:
    """Steps 1-3: probe, lease, old marker gone."""
    sink.probe()
    lease.acquire()
    invalidate(sink, overwrite=overwrite)


@contextlib.contextmanager
def transaction(
    sink: Sink,
    *,
    overwrite: bool,
    workers: int = PUBLISH_WORKERS,
    progress: Callable[[PublishEvent, str], None] | None = None,
) -> Iterator[Transaction]:
    """Probe, lease, invalidate the old marker (in the background); yield the transaction; drop the lease.

    The body may encode while :attr:`Transaction.ready` is pending; uploads wait for it (see the module doc).
    """
    lease = Lease(sink)
    with ThreadPoolExecutor(1, thread_name_prefix="darts-open") as opener:
        ready = opener.submit(_open, sink, lease, overwrite)
        try:
            publisher = Publisher(sink, workers=workers, progress=progress, ready=ready)
            try:
                yield Transaction(sink, publisher, lease, overwrite=overwrite, ready=ready)
            finally:
                publisher.close()
            ready.result()
        except BaseException:
            wait_futures([ready])  # a lease being taken must be held before it can be dropped
            if lease.held:
                lease.release(wait=RELEASE_WAIT_AFTER_FAILURE)
            raise
    lease.release()

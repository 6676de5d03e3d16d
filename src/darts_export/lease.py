"""The writer lease: one export (or sync) at a time on one prefix.

Before its first byte, a writer creates the lease object :data:`LEASE_NAME` at the export's
root with a conditional create (S3 ``If-None-Match: *``, an exclusive create locally),
holding its owner id and an expiry. It renews the lease while it runs and removes it after
the manifest. A second writer finds the lease and fails fast with
:class:`~darts_export.errors.ExportInProgressError`; a lease whose expiry has passed (its
writer crashed) is taken over. S3 event notifications are delivered at least once, so two
invocations exporting the same tile at once are expected, not exotic.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from darts_export.errors import ArtifactExistsError, ExportError, ExportInProgressError
from darts_export.storage import Sink

__all__ = ["LEASE_NAME", "LEASE_SECONDS", "Lease"]

logger = logging.getLogger(__name__)

LEASE_NAME = ".darts-export.lease"
"""The lease object at the export's root (not an artifact: never listed in the manifest)."""

LEASE_SECONDS = 120.0
"""How long a lease holds without renewal; it is renewed every third of that."""


class Lease:
    """A lease on the root of ``sink``; use :meth:`acquire` and :meth:`release` (or ``with``)."""

    def __init__(self, sink: Sink, *, seconds: float = LEASE_SECONDS) -> None:
        """Prepare a lease on ``sink`` held for ``seconds`` between renewals (nothing is written yet)."""
        self.sink = sink
        self.seconds = seconds
        self.owner = uuid.uuid4().hex
        self.lost: str | None = None
        self._renewed = 0.0
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def held(self) -> bool:
        """Whether this lease was acquired and not yet released."""
        return self._renewer is not None

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _record(self) -> bytes:
        record = {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "expires": round(time.time() + self.seconds, 3),
        }
        return json.dumps(record).encode()

    def holder(self) -> dict[str, Any] | None:
        """The lease record now stored, or ``None`` when there is none (an unreadable one counts as expired)."""
        data = self.sink.read_optional(LEASE_NAME)
        if data is None:
            return None
        try:
            record = json.loads(data)
        except ValueError:
            return {"owner": "", "expires": 0.0}
        return record if isinstance(record, dict) else {"owner": "", "expires": 0.0}

    def acquire(self) -> None:
        """Create the lease, or take over an expired one; start renewing it.

        Raises:
            ExportInProgressError: another writer holds a lease that has not expired.
        """
        for attempt in range(2):
            try:
                self.sink.publish_bytes(LEASE_NAME, self._record(), exclusive=True)
                self._renewed = time.monotonic()
                break
            except ArtifactExistsError:
                holder = self.holder()
                if holder is None and attempt == 0:
                    continue  # released between our create and our read: try once more
                expires = float((holder or {}).get("expires", 0.0))
                if holder is None or attempt == 1 or expires > time.time():
                    raise ExportInProgressError(self._busy(holder)) from None
                logger.warning("taking over the expired lease at %s (%s)", self.sink.url, holder)
                self.sink.remove(LEASE_NAME)
        self._renewer = threading.Thread(target=self._renew_loop, name="darts-lease", daemon=True)
        self._renewer.start()

    def _busy(self, holder: dict[str, Any] | None) -> str:
        who = f"{holder.get('host')} pid {holder.get('pid')}" if holder else "another writer"
        until = float((holder or {}).get("expires", 0.0)) - time.time()
        return (
            f"Another export is writing to {self.sink.url} ({who}; its lease {LEASE_NAME} expires in "
            f"{max(until, 0.0):.0f} s unless renewed). Nothing was written; retry after it finished."
        )

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self.renew()
            except ExportError as exc:  # the next renewal or the check at commit decides
                logger.warning("cannot renew the lease at %s: %s", self.sink.url, exc)

    def renew(self) -> None:
        """Push the expiry forward, if the lease is still ours."""
        holder = self.holder()
        if holder is None or holder.get("owner") != self.owner:
            self.lost = f"the lease at {self.sink.url} was taken over by {holder}"
            self._stop.set()
            return
        self.sink.publish_bytes(LEASE_NAME, self._record())
        self._renewed = time.monotonic()

    def check(self) -> None:
        """Raise unless the lease is still ours (called right before the commit marker is written).

        Raises:
            ExportInProgressError: the lease expired and another writer took it over.
        """
        holder = self.holder()
        if self.lost is None and (holder is None or holder.get("owner") != self.owner):
            self.lost = f"the lease at {self.sink.url} is no longer ours (found {holder})"
        elif self.lost is None:
            self._renewed = time.monotonic()
        if self.lost is not None:
            raise ExportInProgressError(f"{self.lost}; this export was not committed. Run it again.")

    def release(self, *, wait: float | None = None) -> None:
        """Stop renewing and remove the lease if it is still ours; never raises (it expires anyway).

        Args:
            wait: Give up waiting for the removal after this many seconds (it goes on in the
                background): after a failed export the target may be down, and the error should
                not wait for one more retry cycle.
        """
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        if wait is None:
            self._remove()
            return
        # Checked first: a late removal must not delete the lease of a writer that came after us.
        remover = threading.Thread(target=self._remove, args=(True,), name="darts-lease-release", daemon=True)
        remover.start()
        remover.join(wait)

    def _remove(self, check: bool = False) -> None:
        try:
            if self.lost is None and (check or time.monotonic() - self._renewed > self.seconds / 2):
                holder = self.holder()  # not seen for a while: make sure it was not taken over
                if holder is None or holder.get("owner") != self.owner:
                    return
            if self.lost is None:
                self.sink.remove(LEASE_NAME, confirm=False)  # a lease left behind expires; no extra round trip
        except ExportError as exc:
            logger.warning("lease at %s not removed (%s); it expires in %.0f s", self.sink.url, exc, self.seconds)

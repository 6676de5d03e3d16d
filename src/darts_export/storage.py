"""The storage seam: where an export's bytes go, and nothing about what they mean.

:class:`Storage` resolves ``out_dir`` (a local path, ``file://``, ``s3://``,
``memory://`` or any fsspec URL) to one filesystem once, then publishes named
artifacts under it:

* **whole or not at all** — local files are written to a temporary sibling and
  renamed into place; object stores get a single PUT or, from :data:`MULTIPART_THRESHOLD`
  on, a multipart upload whose parts go up concurrently (s3fs completes it, or aborts it when
  a part fails for good), so a reader never sees half an artifact;
* **exclusively** on request (``exclusive=True``): a conditional create (S3
  ``If-None-Match: *``, a hard link locally) so two writers cannot both create the object;
* **with size and SHA-256** computed from the bytes on their way out (never read back),
  reported as a :class:`StoredObject` whose checksum is a multihash (``1220`` + hex
  digest, the form of STAC's ``file:checksum``);
* **with one retry layer**: botocore's (``standard`` mode, :data:`S3_DEFAULT_OPTIONS`,
  merged under the caller's storage options). This module translates backend errors into
  :mod:`darts_export.errors` exceptions (``raise … from``) and re-reads only an answer whose
  body was cut off after its headers, which botocore does not retry.

Deleting is confirmed: :meth:`Storage.remove` checks that nothing is left (an S3 batch
delete answers HTTP 200 even when single keys fail).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from darts_export._storage_errors import classify, translate
from darts_export.errors import (
    ArtifactExistsError,
    ExportError,
    StorageError,
    TargetUnreachableError,
    UnsupportedTargetError,
)
from darts_export.sink import Sink, StoredObject, describe_bytes, file_checksum, multihash_sha256, tree_object

__all__ = [
    "MULTIPART_PART",
    "MULTIPART_THRESHOLD",
    "S3_DEFAULT_OPTIONS",
    "Sink",
    "Storage",
    "StoredObject",
    "describe_bytes",
    "multihash_sha256",
    "tree_object",
    "url_problem",
]

logger = logging.getLogger(__name__)

_CHUNK = 8 * 2**20
_READERS = 8  # objects re-read at once: an object store answers each request after 10-50 ms

MULTIPART_PART = 8 * 2**20
"""Bytes per part of a multipart upload (S3's minimum is 5 MiB); see :data:`MULTIPART_THRESHOLD`."""

MULTIPART_THRESHOLD = 2 * MULTIPART_PART
"""Objects from this size on go to S3 as a multipart upload of concurrent parts (s3fs's own rule: two parts).

One connection carries about 100 MB/s, so a 31 MB COG as one PUT is 0.3 s after its encoder ends;
as four parts at once, 0.1 s plus two round trips (bench/results/s3.md)."""

_IN_MEMORY_UPLOAD = 64 * 2**20  # staged files up to this size are read once (checksum and upload from one read)

S3_DEFAULT_OPTIONS: Mapping[str, Any] = {
    "config_kwargs": {"retries": {"mode": "standard", "max_attempts": 4}, "max_pool_connections": 32}
}
"""Storage options for ``s3://`` targets, under the caller's own: botocore's retries are the one retry layer.

``max_attempts`` counts retries (botocore's meaning): 5 attempts per request in all. ``standard``,
not ``adaptive``: adaptive's client-side rate limiter, once throttled, holds back every queued upload,
so a persistent ``503 SlowDown`` took up to 72 s to surface instead of 14 s (bench/bench_faults.py).
``max_pool_connections`` (botocore's default: 10) leaves room for the upload threads and the parts
of their multipart uploads at once.
"""

_BODY_READS = 3  # attempts at reading an answer whose body was cut off, which botocore does not retry
_BODY_FAILURES = ("body", "connection")  # how a body read breaks off: cut short, or stalled past the read timeout

_S3FS_ATTEMPTS = 1  # s3fs would repeat botocore's whole retry cycle 5 times over: let botocore alone retry


def url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a path or fsspec URL, with the fix; ``None`` when nothing is.

    Pure (no I/O): catches what looks like a mistyped URL before it silently becomes a local folder
    (``s3:/bucket/x``, ``s3:bucket/x`` are relative paths to the OS), an upper-case scheme
    (``S3://``), and a scheme no fsspec filesystem handles or whose package is not installed.
    """
    from fsspec.core import split_protocol
    from fsspec.registry import get_filesystem_class, known_implementations, registry

    known = set(known_implementations) | set(registry)
    for part in url.split("::"):  # chained URLs: simplecache::s3://bucket/key
        protocol, rest = split_protocol(part)
        if protocol is None:
            head, colon, tail = part.partition(":")
            if colon and head.lower() in known:
                return f"it looks like a mistyped URL; did you mean {head.lower()}://{tail.lstrip('/')}?"
            continue
        if protocol != protocol.lower():
            return f"URL schemes are lower case; did you mean {protocol.lower()}://{rest}?"
        if protocol not in known:
            return (
                f"no fsspec filesystem handles {protocol}://; use a local path or a URL such as "
                "s3://bucket/prefix, file:///path or memory://name."
            )
        try:
            get_filesystem_class(protocol)
        except ImportError as exc:
            return f"the filesystem for {protocol}:// is not installed: {exc}"
    return None


def _check_relative(rel: str) -> str:
    """Reject absolute paths and parent references: artifacts stay inside ``out_dir``."""
    parts = PurePosixPath(rel).parts
    if not rel or rel.startswith("/") or any(p in ("..", ".", "") for p in parts) or "\\" in rel:
        raise ValueError(f"artifact path must be a plain relative path inside out_dir, got {rel!r}")
    return rel


def _merged(defaults: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` with ``options`` laid over them, nested mappings merged key by key."""
    out = copy.deepcopy(dict(defaults))
    for key, value in options.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


@contextlib.contextmanager
def _described_meanwhile(rel: str, view: memoryview) -> Iterator[Callable[[], StoredObject]]:
    """Size and checksum of ``view``; a large one is hashed on a second thread while the caller writes it.

    hashlib releases the GIL, so the SHA-256 of a 31 MB COG (0.03 s) leaves the upload's tail.
    """
    if view.nbytes < MULTIPART_THRESHOLD:
        yield lambda: describe_bytes(rel, view)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="darts-hash") as hasher:
        yield hasher.submit(describe_bytes, rel, view).result


class Storage:
    """Publishes artifacts under one root on one fsspec filesystem, atomically, with checksums.

    Build it with :meth:`Storage.open`; a ``Storage`` is cheap and safe to share between threads.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, *, url: str) -> None:
        """Wrap filesystem ``fs`` rooted at ``root`` (a path in ``fs``'s own notation)."""
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.url = url
        self._reached = False  # once the target answered, connection errors are losses, not "unreachable"

    @classmethod
    def open(cls, out_dir: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> Storage:
        """Resolve ``out_dir`` and ``storage_options`` to a filesystem, once.

        ``s3://`` targets get :data:`S3_DEFAULT_OPTIONS` beneath the given options.

        Raises:
            UnsupportedTargetError: ``out_dir`` looks like a mistyped URL (see :func:`url_problem`), no
                installed fsspec implementation knows its protocol, or the storage options are not a mapping.
            TargetUnreachableError: a filesystem that connects on creation (``ftp://``) cannot connect.
        """
        target = os.fspath(out_dir)
        if not target:
            raise UnsupportedTargetError("out_dir is empty; give a local folder or a URL such as s3://bucket/prefix.")
        if (problem := url_problem(target)) is not None:
            raise UnsupportedTargetError(f"Cannot use {target!r}: {problem}")
        if storage_options is not None and not isinstance(storage_options, Mapping):
            raise UnsupportedTargetError(
                f"storage_options must be a mapping (dict), got {type(storage_options).__name__}."
            )
        options = dict(storage_options or {})
        if fsspec.utils.get_protocol(target) in ("s3", "s3a"):
            options = _merged(S3_DEFAULT_OPTIONS, options)
        try:
            fs, root = fsspec.core.url_to_fs(target, **options)
        except (ValueError, ImportError, TypeError) as exc:
            raise UnsupportedTargetError(
                f"Cannot write to {target!r}: {exc}. Use a local path or a URL of an installed fsspec "
                "implementation (file://, s3://, memory://, ...) with valid storage options."
            ) from exc
        except OSError as exc:  # filesystems that connect on creation (ftp://, sftp://)
            raise TargetUnreachableError(
                f"Cannot reach {target!r}: {type(exc).__name__}: {exc}. Check the host, the port and the credentials."
            ) from exc
        if "s3" in fs.protocol:
            fs.retries = _S3FS_ATTEMPTS
        if isinstance(fs, LocalFileSystem):
            root = str(Path(root).resolve())
            url = Path(root).as_uri()
        else:
            url = fs.unstrip_protocol(root)
        return cls(fs, root, url=url)

    # --- naming -----------------------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        """Whether artifacts land on the local disk."""
        return isinstance(self.fs, LocalFileSystem)

    @property
    def _is_s3(self) -> bool:
        return "s3" in self.fs.protocol

    @property
    def protocol(self) -> str:
        """The filesystem's main protocol (``file``, ``s3``, ``memory``, ...)."""
        proto = self.fs.protocol
        return proto if isinstance(proto, str) else proto[0]

    def path(self, rel: str) -> str:
        """Full path of ``rel`` in the filesystem's own notation (``bucket/prefix/rel`` for S3)."""
        return f"{self.root.rstrip('/')}/{_check_relative(rel)}"

    def uri(self, rel: str) -> str:
        """Full URL of ``rel`` (``s3://bucket/prefix/rel``, ``file:///...``)."""
        return f"{self.url.rstrip('/')}/{_check_relative(rel)}"

    # --- probing ----------------------------------------------------------------------------------

    def probe(self) -> None:
        """Check once, before any encoding, that the target can take an export.

        A local target must be a folder (created if missing) that this process can write; an
        S3 target's bucket must exist and the credentials must be accepted.

        Raises:
            UnsupportedTargetError: a local ``out_dir`` is an existing file.
            TargetUnreachableError: no connection, missing bucket or rejected credentials.
            StorageError: the folder cannot be created or written (read-only, permissions).
        """
        with self._translated("reach the target"):
            if self.is_local:
                self._probe_local()
            elif self._is_s3:
                self._probe_s3()
            else:
                self.fs.makedirs(self.root, exist_ok=True)

    def _probe_local(self) -> None:
        root = Path(self.root)
        if root.exists() and not root.is_dir():
            raise UnsupportedTargetError(f"out_dir {root} is an existing file; give a folder (new or existing).")
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".darts-export-probe-{uuid.uuid4().hex}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()

    def _probe_s3(self) -> None:
        bucket, _, prefix = self.root.partition("/")
        try:
            self.fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except PermissionError as exc:
            # Allowed to write but not to list is a valid setup; the lease's write probes it next.
            if classify(exc) != "permission":
                raise
            logger.debug("cannot list %s (access denied); probing by the first write", self.url)

    # --- writing ----------------------------------------------------------------------------------

    def publish_bytes(self, rel: str, data: bytes | bytearray | memoryview, *, exclusive: bool = False) -> StoredObject:
        """Store ``data`` under ``rel``, whole or not at all, and return its size and checksum.

        Raises:
            ArtifactExistsError: ``exclusive`` and another writer's object is already there.
        """
        view = memoryview(data).cast("B")
        target = self.path(rel)
        started = time.perf_counter()
        with _described_meanwhile(rel, view) as described:
            try:
                with self._translated(f"upload {rel}", exclusive=exclusive):
                    if self.is_local:
                        self._write_local(target, lambda fh: fh.write(view), exclusive=exclusive)
                    else:
                        body = data if isinstance(data, bytes) else bytes(view)
                        mode = "create" if exclusive else "overwrite"
                        self.fs.pipe_file(target, body, mode=mode, **self._multipart)
            except ArtifactExistsError:
                # A retried conditional PUT whose first answer was lost finds its own object: that is success.
                if self.read_optional(rel) != bytes(view):
                    raise
            stored = described()
        logger.debug("published %s (%d bytes) in %.3f s", rel, stored.size, time.perf_counter() - started)
        return stored

    @property
    def _multipart(self) -> dict[str, int]:
        """s3fs's keyword for the part size (it goes multipart from two parts on); other filesystems take none."""
        return {"chunksize": MULTIPART_PART} if self._is_s3 else {}

    def publish_file(self, rel: str, local_path: str | os.PathLike[str], *, exclusive: bool = False) -> StoredObject:
        """Store the local file ``local_path`` under ``rel``, whole or not at all (multipart when large)."""
        source = Path(local_path)
        size = source.stat().st_size
        if not self.is_local and size <= _IN_MEMORY_UPLOAD:
            return self.publish_bytes(rel, source.read_bytes(), exclusive=exclusive)  # read once, not twice
        target = self.path(rel)
        started = time.perf_counter()
        with self._translated(f"upload {rel}", exclusive=exclusive):
            if self.is_local:
                digest = hashlib.sha256()

                def copy_into(fh: Any) -> None:
                    with source.open("rb") as src:
                        while chunk := src.read(_CHUNK):
                            digest.update(chunk)
                            fh.write(chunk)

                self._write_local(target, copy_into, exclusive=exclusive)
                stored = StoredObject(path=rel, size=size, checksum=multihash_sha256(digest.digest()))
            else:
                stored = StoredObject(path=rel, size=size, checksum=file_checksum(source))
                mode = "create" if exclusive else "overwrite"
                self.fs.put_file(str(source), target, mode=mode, **self._multipart)
        logger.debug("published %s (%d bytes) in %.3f s", rel, stored.size, time.perf_counter() - started)
        return stored

    def _write_local(self, target: str, write: Callable[[Any], object], *, exclusive: bool = False) -> None:
        """Write through a temporary sibling, then rename it into place, or hard-link it when ``exclusive``."""
        final = Path(target)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.partial")
        try:
            with tmp.open("wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            if exclusive:
                os.link(tmp, final)  # atomic, and fails if final exists
                tmp.unlink()
            else:
                tmp.replace(final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def remove(self, rel: str, *, recursive: bool = False, confirm: bool = True) -> None:
        """Delete ``rel`` (a file, or with ``recursive`` a directory) and confirm that nothing is left.

        Absent is not an error. Raises :class:`StorageError` when anything is still there after the
        delete (S3 batch deletes report failed keys in an HTTP 200 answer). ``confirm=False`` skips
        the confirming request of a single object (one round trip, for what expires anyway).
        """
        target = self.path(rel)
        with self._translated(f"remove {rel}"):
            if recursive and self._is_s3:
                objects = [self.path(p) for p in self.list(rel)]
                if objects:
                    self.fs.rm(objects)  # one batch delete per 1000 keys
                left = [self.path(p) for p in self.list(rel)] if objects else []
            elif recursive:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(target, recursive=True)  # folders too, not only their files
                left = [self.path(p) for p in self.list(rel)]
            else:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(target)
                left = [target] if confirm and self._is_file(target) else []
        if left:
            raise StorageError(
                f"Cannot remove {self.uri(rel)}: {len(left)} object(s) still there after the delete "
                f"(e.g. {left[0]}). Check delete permissions and retry the export."
            )

    def _is_file(self, target: str) -> bool:
        """Whether the object ``target`` exists: one HEAD on S3, where ``exists`` also lists the prefix."""
        self.fs.invalidate_cache(target)
        if "s3" not in self.fs.protocol:
            return bool(self.fs.isfile(target))
        bucket, key, _ = self.fs.split_path(target)
        try:
            self.fs.call_s3("head_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return False
        return True

    # --- reading ----------------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        """Whether something is stored under ``rel`` (asked of the store, not of a cached listing)."""
        target = self.path(rel)
        with self._translated(f"check {rel}"):
            self.fs.invalidate_cache(target)
            return bool(self.fs.exists(target))

    def read_bytes(self, rel: str) -> bytes:
        """The bytes stored under ``rel``."""
        data = self.read_optional(rel, missing_ok=False)
        if data is None:  # missing_ok=False raises instead; this keeps the type checker informed
            raise StorageError(f"Cannot read {self.uri(rel)}: it does not exist.")
        return data

    def read_optional(self, rel: str, *, missing_ok: bool = True) -> bytes | None:
        """The bytes stored under ``rel``, or ``None`` when there is no such object (one request)."""
        for attempt in range(1, _BODY_READS + 1):
            try:
                with self._translated(f"read {rel}"):
                    try:
                        return bytes(self.fs.cat_file(self.path(rel), **self._one_get))
                    except FileNotFoundError as exc:
                        if not missing_ok or classify(exc) == "bucket":
                            raise
                        return None
            except StorageError as exc:
                if attempt == _BODY_READS or exc.__cause__ is None or classify(exc.__cause__) != "body":
                    raise
                logger.debug("read %s: the answer was cut off (%s); reading it again", rel, exc.__cause__)
        raise StorageError(f"Cannot read {self.uri(rel)}: every answer was cut off.")

    @property
    def _one_get(self) -> dict[str, int]:
        """s3fs asks each object's size first (a HEAD) to split large reads: one GET is enough for these."""
        return {"max_concurrency": 1} if self._is_s3 else {}

    def list(self, rel: str | None = None) -> tuple[str, ...]:
        """Paths (relative to the root, sorted) of every object below ``rel`` (default: the root)."""
        base = self.path(rel) if rel else self.root
        with self._translated(f"list {rel or self.url}"):
            self.fs.invalidate_cache(base)
            try:
                found = self.fs.find(base)
            except FileNotFoundError:
                return ()
        top = self.root.rstrip("/")
        return tuple(sorted(str(p)[len(top) :].lstrip("/") for p in found if str(p).startswith(top)))

    def read_many(self, rels: Iterable[str]) -> dict[str, bytes]:
        """The bytes of several objects, fetched concurrently where the filesystem can; absent ones are left out."""
        wanted = {self.path(rel): rel for rel in rels}
        if not wanted:
            return {}
        with self._translated(f"read {len(wanted)} objects"):
            blobs = self.fs.cat(list(wanted), on_error="return", **self._one_get)
            if not isinstance(blobs, dict):  # a single path comes back as bytes
                blobs = {next(iter(wanted)): blobs}
            failed = [e for e in blobs.values() if isinstance(e, Exception) and not isinstance(e, FileNotFoundError)]
            if failed:
                raise failed[0]
        out = {}
        for full, data in blobs.items():
            if isinstance(data, Exception):
                continue
            rel = wanted.get(str(full).rstrip("/"))
            rel = rel or next((r for p, r in wanted.items() if str(full).endswith(p.lstrip("/"))), None)
            if rel is not None:
                out[rel] = bytes(data)
        return out

    def sizes(self) -> dict[str, int]:
        """Size of every object below the root, keyed by path relative to it, from one recursive listing."""
        base = self.root.rstrip("/")
        with self._translated("list"):
            self.fs.invalidate_cache(base)
            try:
                found = self.fs.find(base, detail=True)
            except FileNotFoundError:
                return {}
        return {
            str(path)[len(base) :].lstrip("/"): int(info.get("size") or 0)
            for path, info in found.items()
            if str(path).startswith(base) and info.get("type", "file") != "directory"
        }

    def describe(self, rel: str) -> StoredObject:
        """Re-read ``rel`` and report its actual size and checksum (streaming, constant memory).

        A body cut off or stalled past the read timeout is read again from the start: botocore
        retries requests, not the reading of an answer it has already handed over.
        """
        for attempt in range(1, _BODY_READS + 1):
            digest = hashlib.sha256()
            size = 0
            opened = False
            try:
                with self._translated(f"read {rel}"), self.fs.open(self.path(rel), "rb", block_size=_CHUNK) as fh:
                    opened = True
                    while chunk := fh.read(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                return StoredObject(path=rel, size=size, checksum=multihash_sha256(digest.digest()))
            except StorageError as exc:
                cause = exc.__cause__
                if not opened or attempt == _BODY_READS or cause is None or classify(cause) not in _BODY_FAILURES:
                    raise
                logger.debug("read %s: the answer broke off after %d bytes (%s); reading it again", rel, size, cause)
        raise StorageError(f"Cannot read {self.uri(rel)}: every answer broke off.")

    def describe_tree(self, rel: str) -> StoredObject:
        """Re-read every object of the directory ``rel`` and report its :func:`tree_object`."""
        with ThreadPoolExecutor(_READERS, thread_name_prefix="darts-read") as readers:
            return tree_object(rel, readers.map(self.describe, self.list(rel)))

    # --- errors -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self, what: str, *, exclusive: bool = False) -> Iterator[None]:
        """Turn backend exceptions into :class:`StorageError` and its subclasses (``raise … from``)."""
        try:
            yield
        except (ValueError, TypeError, ExportError):
            raise
        except Exception as exc:
            raise translate(exc, f"Cannot {what} at {self.url}", reached=self._reached, exclusive=exclusive) from exc
        self._reached = True

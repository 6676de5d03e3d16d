"""The storage seam: where an export's bytes go, and nothing about what they mean.

:class:`Storage` resolves ``out_dir`` (a local path, ``file://``, ``s3://``,
``memory://`` or any fsspec URL) to one filesystem once, then publishes named
artifacts under it:

* **whole or not at all** — local files are written to a temporary sibling and
  renamed into place; object stores get a single PUT or a completed multipart upload
  (s3fs aborts an incomplete one), so a reader never sees half an artifact;
* **with size and SHA-256** computed from the bytes as they are written, reported as a
  :class:`StoredObject` whose checksum is a multihash (``1220`` + hex digest, the form
  of STAC's ``file:checksum``);
* **with retries** (exponential backoff) on transient errors, and backend errors
  translated into :mod:`darts_export.errors` exceptions (``raise … from``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from darts_export.errors import StorageError, TargetUnreachableError, UnsupportedTargetError

__all__ = ["Storage", "StoredObject", "multihash_sha256", "url_problem"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_CHUNK = 8 * 2**20
_SHA256_MULTIHASH_PREFIX = "1220"  # multihash code 0x12 (sha2-256), length 0x20 (32 bytes)


def multihash_sha256(digest: bytes) -> str:
    """Encode a SHA-256 digest as a multihash hex string (``1220`` + hex), as STAC ``file:checksum`` does."""
    if len(digest) != 32:
        raise ValueError(f"a SHA-256 digest has 32 bytes, got {len(digest)}")
    return _SHA256_MULTIHASH_PREFIX + digest.hex()


@dataclass(frozen=True, kw_only=True)
class StoredObject:
    """What was stored under a relative path: its size in bytes and its multihash SHA-256."""

    path: str
    size: int
    checksum: str


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


# --- error classification -------------------------------------------------------------------------

_UNREACHABLE_NAMES = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "NoCredentialsError",
        "PartialCredentialsError",
        "CredentialRetrievalError",
        "ClientConnectorError",
        "ServerDisconnectedError",
        "InvalidAccessKeyId",
        "gaierror",
    }
)
_TRANSIENT_NAMES = frozenset(
    {"ReadTimeoutError", "ResponseStreamingError", "IncompleteReadError", "ClientPayloadError", "SlowDown"}
)


def _names(exc: BaseException) -> set[str]:
    """Class names of ``exc`` and of its causes: backends wrap their errors in several layers."""
    seen: set[str] = set()
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            break
        seen.update(cls.__name__ for cls in type(current).__mro__)
        code = getattr(current, "response", {})
        if isinstance(code, dict):
            seen.add(str(code.get("Error", {}).get("Code", "")))
        current = current.__cause__ or current.__context__
    return seen


def _is_unreachable(exc: BaseException) -> bool:
    names = _names(exc)
    if names & _UNREACHABLE_NAMES or "NoSuchBucket" in names:
        return True
    return isinstance(exc, ConnectionRefusedError | ConnectionResetError)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, PermissionError | FileNotFoundError | IsADirectoryError | NotADirectoryError | ValueError):
        return False
    names = _names(exc)
    return bool(names & _TRANSIENT_NAMES) or isinstance(exc, TimeoutError | ConnectionError)


class Storage:
    """Publishes artifacts under one root on one fsspec filesystem, atomically, with checksums.

    Build it with :meth:`Storage.open`; a ``Storage`` is cheap and safe to share between threads.
    """

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        root: str,
        *,
        url: str,
        retries: int = 3,
        backoff: float = 0.2,
    ) -> None:
        """Wrap filesystem ``fs`` rooted at ``root`` (a path in ``fs``'s own notation)."""
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.url = url
        self.retries = retries
        self.backoff = backoff

    @classmethod
    def open(
        cls,
        out_dir: str | os.PathLike[str],
        storage_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Storage:
        """Resolve ``out_dir`` and ``storage_options`` to a filesystem, once.

        Raises:
            UnsupportedTargetError: ``out_dir`` looks like a mistyped URL (see :func:`url_problem`), or no
                installed fsspec implementation knows its protocol.
            TargetUnreachableError: a filesystem that connects on creation (``ftp://``) cannot connect.
        """
        target = os.fspath(out_dir)
        if not target:
            raise UnsupportedTargetError("out_dir is empty; give a local folder or a URL such as s3://bucket/prefix.")
        if (problem := url_problem(target)) is not None:
            raise UnsupportedTargetError(f"Cannot use {target!r}: {problem}")
        options = dict(storage_options or {})
        try:
            fs, root = fsspec.core.url_to_fs(target, **options)
        except (ValueError, ImportError) as exc:
            raise UnsupportedTargetError(
                f"Cannot write to {target!r}: {exc}. Use a local path or a URL of an installed fsspec "
                "implementation (file://, s3://, memory://, ...)."
            ) from exc
        except OSError as exc:  # filesystems that connect on creation (ftp://, sftp://)
            raise TargetUnreachableError(
                f"Cannot reach {target!r}: {type(exc).__name__}: {exc}. Check the host, the port and the credentials."
            ) from exc
        if isinstance(fs, LocalFileSystem):
            root = str(Path(root).resolve())
            url = Path(root).as_uri()
        else:
            url = fs.unstrip_protocol(root)
        return cls(fs, root, url=url, **kwargs)

    # --- naming -----------------------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        """Whether artifacts land on the local disk."""
        return isinstance(self.fs, LocalFileSystem)

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

    # --- writing ----------------------------------------------------------------------------------

    def publish_bytes(self, rel: str, data: bytes | bytearray | memoryview) -> StoredObject:
        """Store ``data`` under ``rel``, whole or not at all, and return its size and checksum."""
        view = memoryview(data).cast("B")
        stored = StoredObject(path=rel, size=view.nbytes, checksum=multihash_sha256(hashlib.sha256(view).digest()))
        target = self.path(rel)
        started = time.perf_counter()
        if self.is_local:
            self._retry(f"write {rel}", lambda: self._write_local(target, lambda fh: fh.write(view)))
        else:
            self._retry(f"upload {rel}", lambda: self.fs.pipe_file(target, bytes(view)))
        logger.debug("published %s (%d bytes) in %.3f s", rel, stored.size, time.perf_counter() - started)
        return stored

    def publish_file(self, rel: str, local_path: str | os.PathLike[str]) -> StoredObject:
        """Store the local file ``local_path`` under ``rel``, whole or not at all (multipart when large)."""
        source = Path(local_path)
        stored = StoredObject(path=rel, size=source.stat().st_size, checksum=_file_checksum(source))
        target = self.path(rel)
        started = time.perf_counter()
        if self.is_local:

            def copy(fh: Any) -> None:
                with source.open("rb") as src:
                    shutil.copyfileobj(src, fh, _CHUNK)

            self._retry(f"write {rel}", lambda: self._write_local(target, copy))
        else:
            self._retry(f"upload {rel}", lambda: self.fs.put_file(str(source), target))
        logger.debug("published %s (%d bytes) in %.3f s", rel, stored.size, time.perf_counter() - started)
        return stored

    def _write_local(self, target: str, write: Callable[[Any], object]) -> None:
        """Write through a temporary sibling and rename it into place (atomic on POSIX)."""
        final = Path(target)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.partial")
        try:
            with tmp.open("wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def remove(self, rel: str, *, recursive: bool = False) -> None:
        """Delete ``rel`` (a file, or with ``recursive`` a directory); absent is not an error."""
        target = self.path(rel)
        with self._translated(f"remove {rel}"):
            if self.fs.exists(target):
                self.fs.rm(target, recursive=recursive)

    # --- reading ----------------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        """Whether something is stored under ``rel``."""
        return bool(self._retry(f"check {rel}", lambda: self.fs.exists(self.path(rel))))

    def read_bytes(self, rel: str) -> bytes:
        """The bytes stored under ``rel``."""
        return bytes(self._retry(f"read {rel}", lambda: self.fs.cat_file(self.path(rel))))

    def sizes(self) -> dict[str, int]:
        """Size of every object below the root, keyed by path relative to it, from one recursive listing."""
        base = self.root.rstrip("/")

        def listing() -> dict[str, int]:
            try:
                found = self.fs.find(base, detail=True)
            except FileNotFoundError:
                return {}
            return {
                str(path)[len(base) :].lstrip("/"): int(info.get("size") or 0)
                for path, info in found.items()
                if str(path).startswith(base) and info.get("type", "file") != "directory"
            }

        return self._retry("list", listing)

    def read_many(self, rels: list[str]) -> dict[str, bytes]:
        """The bytes of several objects, fetched concurrently where the filesystem can (s3fs batches ``cat``)."""
        if not rels:
            return {}
        paths = {self.path(rel): rel for rel in rels}
        blobs = self._retry("read", lambda: self.fs.cat(list(paths), on_error="raise"))
        if not isinstance(blobs, dict):  # a single path comes back as bytes
            return {rels[0]: bytes(blobs)}
        found = {str(k).rstrip("/"): bytes(v) for k, v in blobs.items()}
        return {rel: found[path] for path, rel in paths.items() if path in found}

    def describe(self, rel: str) -> StoredObject:
        """Re-read ``rel`` and report its actual size and checksum (streaming, constant memory)."""

        def read() -> StoredObject:
            digest = hashlib.sha256()
            size = 0
            with self.fs.open(self.path(rel), "rb", block_size=_CHUNK) as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
            return StoredObject(path=rel, size=size, checksum=multihash_sha256(digest.digest()))

        return self._retry(f"read {rel}", read)

    def describe_tree(self, rel: str) -> StoredObject:
        r"""Size and checksum of the directory ``rel`` (e.g. a Zarr store), defined over its objects.

        ``size`` is the sum of the objects' sizes. ``checksum`` is the multihash SHA-256 of a
        listing with one line per object, sorted by path: ``<path relative to rel>\t<size>\t<sha256 hex>\n``
        (UTF-8). Any added, removed, renamed or changed object changes it.
        """
        base = self.path(rel)

        def listing() -> list[str]:
            return sorted(str(p) for p in self.fs.find(base))

        lines = []
        total = 0
        for full in self._retry(f"list {rel}", listing):
            inner = full[len(base) :].lstrip("/") if full.startswith(base) else full.rsplit(base, 1)[-1].lstrip("/")
            obj = self.describe(f"{rel}/{inner}")
            total += obj.size
            lines.append(f"{inner}\t{obj.size}\t{obj.checksum[len(_SHA256_MULTIHASH_PREFIX) :]}\n")
        digest = hashlib.sha256("".join(lines).encode()).digest()
        return StoredObject(path=rel, size=total, checksum=multihash_sha256(digest))

    # --- errors -----------------------------------------------------------------------------------

    def _retry(self, what: str, operation: Callable[[], T]) -> T:
        """Run ``operation``, retrying transient failures with exponential backoff; translate errors."""
        attempt = 0
        while True:
            try:
                with self._translated(what):
                    return operation()
            except StorageError as exc:
                cause = exc.__cause__
                attempt += 1
                if isinstance(exc, TargetUnreachableError) or cause is None or not _is_transient(cause):
                    raise
                if attempt > self.retries:
                    raise
                delay = self.backoff * 2 ** (attempt - 1)
                logger.warning("%s failed (%s); retry %d/%d in %.1f s", what, cause, attempt, self.retries, delay)
                time.sleep(delay)

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """Turn backend exceptions into :class:`StorageError` / :class:`TargetUnreachableError`."""
        try:
            yield
        except (ValueError, TypeError):
            raise
        except Exception as exc:
            if _is_unreachable(exc):
                raise TargetUnreachableError(
                    f"Cannot {what} at {self.url}: the target is unreachable ({type(exc).__name__}: {exc}). "
                    "Check the endpoint, the credentials and that the bucket exists."
                ) from exc
            raise StorageError(f"Cannot {what} at {self.url}: {type(exc).__name__}: {exc}") from exc


def _file_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return multihash_sha256(digest.digest())

"""What a target stores, and the seam the orchestration writes through: :class:`StoredObject`, :class:`Sink`.

Kept apart from :mod:`darts_export.storage` (which implements :class:`Sink` over fsspec) so that
the definitions of sizes and checksums — a file's multihash SHA-256, a directory's tree checksum —
sit in one short module, and a test can satisfy the protocol without any filesystem.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["Sink", "StoredObject", "describe_bytes", "file_checksum", "multihash_sha256", "tree_object"]

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


def describe_bytes(rel: str, data: bytes | bytearray | memoryview) -> StoredObject:
    """What storing ``data`` under ``rel`` stores: its size and multihash SHA-256 (known before the upload)."""
    view = memoryview(data).cast("B")
    return StoredObject(path=rel, size=view.nbytes, checksum=multihash_sha256(hashlib.sha256(view).digest()))


def tree_object(rel: str, objects: Iterable[StoredObject]) -> StoredObject:
    r"""Size and checksum of the directory ``rel`` (e.g. a Zarr store), defined over its objects.

    ``size`` is the sum of the objects' sizes. ``checksum`` is the multihash SHA-256 of a
    listing with one line per object, sorted by path: ``<path relative to rel>\t<size>\t<sha256 hex>\n``
    (UTF-8). Any added, removed, renamed or changed object changes it.
    """
    prefix = rel.rstrip("/") + "/"
    lines = []
    total = 0
    for obj in sorted(objects, key=lambda o: o.path):
        if not obj.path.startswith(prefix):
            raise ValueError(f"{obj.path!r} does not lie inside {rel!r}")
        total += obj.size
        lines.append(f"{obj.path[len(prefix) :]}\t{obj.size}\t{obj.checksum[len(_SHA256_MULTIHASH_PREFIX) :]}\n")
    digest = hashlib.sha256("".join(lines).encode()).digest()
    return StoredObject(path=rel, size=total, checksum=multihash_sha256(digest))


@runtime_checkable
class Sink(Protocol):
    """What the orchestration needs from a target (tests give it a fake, see ``tests/helpers``)."""

    url: str

    def probe(self) -> None:
        """Fail now if the target cannot be written (before any encoding)."""

    def exists(self, rel: str) -> bool:
        """Whether something is stored under ``rel``."""

    def read_bytes(self, rel: str) -> bytes:
        """The bytes stored under ``rel``."""

    def read_optional(self, rel: str) -> bytes | None:
        """The bytes stored under ``rel``, or ``None`` when there is none."""

    def publish_bytes(self, rel: str, data: bytes, *, exclusive: bool = False) -> StoredObject:
        """Store ``data`` under ``rel`` whole or not at all; ``exclusive`` refuses an existing object."""

    def publish_file(self, rel: str, local_path: Path, *, exclusive: bool = False) -> StoredObject:
        """Store the local file under ``rel`` whole or not at all."""

    def remove(self, rel: str, *, recursive: bool = False, confirm: bool = True) -> None:
        """Delete ``rel`` (with ``recursive`` a directory) and confirm it is gone; absent is not an error.

        ``confirm=False`` may skip confirming the removal of a single object.
        """


def file_checksum(path: Path) -> str:
    """The multihash SHA-256 of a local file (streaming)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return multihash_sha256(digest.digest())

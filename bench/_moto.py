"""The benchmark's S3 server: moto's own, with ETags from CRC-32 instead of MD5 and objects kept in memory.

    python bench/_moto.py -H 127.0.0.1 -p 5000      # the arguments of ``python -m moto.server``

A real S3 computes each object's MD5 ETag on its own machines; moto computes it in Python on
the benchmark's two cores, where it was most of the server's CPU (MD5 runs at 0.2-0.5 GB/s here,
CRC-32 at 5 GB/s) and competed with the export it measures. No client in the benchmark checks an
ETag against the content, and their form (32 hex digits, ``-N`` after a multipart upload) is kept.
Objects up to 256 MiB stay in memory (moto's default spills those above 5 MiB to temporary files,
more copies on the same cores).
"""

from __future__ import annotations

import os
import struct
import zlib

os.environ.setdefault("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(256 * 2**20))

import moto.s3.models  # moto reads the buffer size above when it stores an object
from moto.server import main


class _Crc32Etag:
    """The part of ``hashlib.md5``'s interface moto uses for ETags: 16 bytes from CRC-32 and length."""

    def __init__(self, data: bytes = b"") -> None:
        self._crc = zlib.crc32(data)
        self._size = len(data)

    def update(self, data: bytes) -> None:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)

    def digest(self) -> bytes:
        return struct.pack(">IIQ", self._crc, 0, self._size)

    def hexdigest(self) -> str:
        return self.digest().hex()


def _etag_hash(data: bytes = b"", **_: object) -> _Crc32Etag:
    return _Crc32Etag(data)


moto.s3.models.md5_hash = _etag_hash  # type: ignore[attr-defined]

if __name__ == "__main__":
    main()

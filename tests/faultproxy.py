"""A fault-injecting HTTP proxy on loopback, in front of the moto S3 server.

Every request the S3 client sends is numbered (0, 1, 2, ...) and logged as a :class:`Request`;
a :class:`Fault` rule decides, by index or by a predicate on the request, whether it is
forwarded untouched or answered with one of the faults a real object store produces:

* ``500`` — HTTP 500 ``InternalError`` (not forwarded);
* ``503`` — HTTP 503 ``SlowDown`` (not forwarded);
* ``reset`` — the connection is reset (TCP RST) without an answer (not forwarded);
* ``stall`` — no answer for ``stall_seconds`` (past the client's read timeout), then a reset;
* ``truncate`` — forwarded, then the answer's body is cut short and the connection closed
  (a body-less answer announces bytes it never sends);
* ``delete-error`` — a ``DeleteObjects`` batch answered HTTP 200 with a per-key ``<Error>``
  for every key (what S3 does when single keys fail), or a single ``DELETE`` answered 204;
  nothing is deleted.

Modes: a fault at one index, persistently from an index on, for requests matching a
predicate, or at random with a given rate (seeded). The proxy only listens on 127.0.0.1 and
stops with :meth:`FaultProxy.stop`.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

FaultKind = Literal["500", "503", "reset", "stall", "truncate", "delete-error"]
FAULT_KINDS: tuple[FaultKind, ...] = ("500", "503", "reset", "stall", "truncate")

READ_TIMEOUT = 0.5
"""Seconds the S3 client waits for an answer in the fault tests; the proxy's stalls last longer."""
STALL_SECONDS = 1.0


def settled(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with botocore's default read timeout, for reading the results back once faults are reset.

    A starved machine can pause a healthy answer longer than :data:`READ_TIMEOUT`, and s3fs does not retry a
    timed-out body read (it surfaces as an ``IndexError`` from its own error handler): that would be the
    harness failing, not the export.
    """
    config = {k: v for k, v in options.get("config_kwargs", {}).items() if k != "read_timeout"}
    return {**options, "config_kwargs": config}


@dataclass(frozen=True)
class Request:
    """One request as the proxy saw it."""

    index: int
    method: str
    path: str
    query: str
    fault: FaultKind | None

    @property
    def key(self) -> str:
        """The object key (path without the bucket)."""
        return self.path.lstrip("/").partition("/")[2]


@dataclass
class Fault:
    """Which requests to fault, and how."""

    kind: FaultKind
    at: int | None = None  # this request index only
    persistent: bool = False  # ... and every request after it
    match: Callable[[Request], bool] | None = None  # every request for which this is true
    rate: float = 0.0  # or at random, with this probability
    seed: int = 0
    limit: int | None = None  # at most this many faults
    injected: int = 0
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def hits(self, request: Request) -> bool:
        if self.limit is not None and self.injected >= self.limit:
            return False
        if self.at is not None:
            hit = request.index == self.at or (self.persistent and request.index > self.at)
        elif self.match is not None:
            hit = self.match(request)
        else:
            hit = self._random.random() < self.rate
        if hit:
            self.injected += 1
        return hit


_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "expect"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a reset connection is what the proxy is for, not an error to print


class FaultProxy:
    """A threaded HTTP/1.1 proxy on 127.0.0.1 that forwards to ``upstream`` and injects faults."""

    def __init__(self, upstream: str, *, stall_seconds: float = 2.0) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.stall_seconds = stall_seconds
        self.faults: list[Fault] = []
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

            def finish(self) -> None:
                with contextlib.suppress(OSError):  # the proxy reset this connection itself
                    super().finish()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any  # noqa: N815

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def reset(self, *faults: Fault) -> None:
        """Forget the log and set new faults (none: forward everything)."""
        with self._lock:
            self.log = []
            self.faults = list(faults)

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --- one request -------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = _read_body(handler)
        path, _, query = handler.path.partition("?")
        with self._lock:
            probe = Request(len(self.log), handler.command, path, query, None)
            kind = next((f.kind for f in self.faults if f.hits(probe)), None)
            if kind == "delete-error" and not (handler.command == "DELETE" or "delete" in query):
                kind = None
            request = Request(probe.index, probe.method, probe.path, probe.query, kind)
            self.log.append(request)
        if kind in ("500", "503"):
            code, name = (
                ("InternalError", "We encountered an internal error.")
                if kind == "500"
                else (
                    "SlowDown",
                    "Please reduce your request rate.",
                )
            )
            _answer(handler, int(kind), _xml_error(code, name), head=handler.command == "HEAD")
        elif kind == "reset":
            _reset(handler)
        elif kind == "stall":
            self._stopping.wait(self.stall_seconds)
            _reset(handler)
        elif kind == "delete-error" and handler.command == "DELETE":
            _answer(handler, 204, b"")  # "deleted", and nothing was
        elif kind == "delete-error":
            keys = re.findall(rb"<Key>(.*?)</Key>", body)
            errors = b"".join(
                b"<Error><Key>" + k + b"</Key><Code>InternalError</Code><Message>injected</Message></Error>"
                for k in keys
            )
            _answer(handler, 200, b'<?xml version="1.0" encoding="UTF-8"?><DeleteResult>' + errors + b"</DeleteResult>")
        else:
            self._forward(handler, body, truncate=kind == "truncate")

    def _forward(self, handler: BaseHTTPRequestHandler, body: bytes, *, truncate: bool) -> None:
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_HEADERS}
            if body or handler.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(handler.command, handler.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            status, reply_headers = response.status, response.getheaders()
        finally:
            conn.close()
        head = handler.command == "HEAD"
        handler.send_response_only(status)
        for name, value in reply_headers:
            # A HEAD answer's Content-Length is the object's size: pass it on as it is.
            if name.lower() not in _HOP_HEADERS and (head or name.lower() != "content-length"):
                handler.send_header(name, value)
        if truncate:
            if not head:
                handler.send_header("Content-Length", str(max(len(data), 16)))
            handler.end_headers()
            if not head:
                handler.wfile.write(data[: len(data) // 2])
            handler.wfile.flush()
            _reset(handler)
            return
        if not head:
            handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if not head:
            handler.wfile.write(data)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += handler.rfile.read(size)
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _xml_error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
        "<RequestId>fault-proxy</RequestId></Error>"
    ).encode()


def _answer(handler: BaseHTTPRequestHandler, status: int, body: bytes, *, head: bool = False) -> None:
    handler.send_response_only(status)
    handler.send_header("Content-Type", "application/xml")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if not head:
        handler.wfile.write(body)


def _reset(handler: BaseHTTPRequestHandler) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0), as a crashed peer or middlebox does."""
    handler.close_connection = True
    sock = handler.connection
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass
    time.sleep(0)

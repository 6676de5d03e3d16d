"""A loopback HTTP proxy that gives an S3 server on loopback the latency and bandwidth of a real one.

    python bench/_proxy.py --upstream http://127.0.0.1:5000 --latency-ms 20 --bandwidth-mb 100

Every request waits ``--latency-ms`` before it is forwarded (real S3 answers the first byte in
10-50 ms; a loopback moto server in microseconds), request and response bodies are streamed
through at no more than ``--bandwidth-mb`` MB/s per request (one request at a time per HTTP/1.1
connection, so this is the per-connection cap), and every request is recorded: ``GET
/__proxy__/log`` returns them as JSON (method, path, bytes up, bytes down, arrival and answer on
the monotonic clock), ``POST /__proxy__/reset`` clears the log. Streaming the request body as it
arrives, rather than reading it whole first, cut the proxy's CPU from 1.0 to 0.8 ms per MB and
lets the server receive while the cap paces (bench/results/s3.md).

Runs in its own process (it prints ``PORT <n>`` when listening), so its event loop never
competes with the benchmarked export for the GIL; :func:`shaping_proxy` starts and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "content-length"}
)
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Request:
    """One request that went through the proxy."""

    method: str
    path: str
    up: int
    down: int
    start: float = 0.0
    """When the request arrived (``time.monotonic()``, comparable across processes on one machine)."""
    end: float = 0.0
    """When its answer was sent."""


class ProxyClient:
    """The benchmark's handle on a running proxy: its URL, its request log."""

    def __init__(self, url: str) -> None:
        self.url = url

    def log(self) -> list[Request]:
        with urllib.request.urlopen(f"{self.url}/__proxy__/log", timeout=30) as response:
            return [Request(**r) for r in json.loads(response.read())]

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/__proxy__/reset", method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass


@contextmanager
def shaping_proxy(upstream: str, *, latency_ms: float, bandwidth_mb: float) -> Iterator[ProxyClient]:
    """Run the proxy in its own process in front of ``upstream``; yields its client."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__)),
            "--upstream",
            upstream,
            "--latency-ms",
            str(latency_ms),
            "--bandwidth-mb",
            str(bandwidth_mb),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the proxy did not start: {line!r}")
        yield ProxyClient(f"http://127.0.0.1:{int(line.split()[1])}")
    finally:
        proc.terminate()
        proc.wait(10)


class _Shaper:
    def __init__(self, upstream: str, latency_s: float, bytes_per_s: float) -> None:
        self.upstream = upstream.rstrip("/")
        self.latency_s = latency_s
        self.bytes_per_s = bytes_per_s
        self.log: list[dict[str, Any]] = []
        self.session: ClientSession | None = None

    async def start(self, app: web.Application) -> None:
        self.session = ClientSession(
            connector=TCPConnector(limit=0), timeout=ClientTimeout(total=None), auto_decompress=False
        )

    async def stop(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def pace(self, started: float, nbytes: int) -> None:
        """Sleep until ``nbytes`` sent since ``started`` respect the bandwidth cap."""
        due = started + nbytes / self.bytes_per_s
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/__proxy__/log":
            return web.json_response(self.log)
        if request.path == "/__proxy__/reset":
            self.log.clear()
            return web.json_response({})
        arrived = time.monotonic()
        await asyncio.sleep(self.latency_s)
        started = time.perf_counter()
        up = [0]

        async def paced_body() -> AsyncIterator[bytes]:
            # Streamed as it arrives, in the sizes it arrives (no re-chunking, no copy of the whole body).
            async for chunk in request.content.iter_any():
                up[0] += len(chunk)
                await self.pace(started, up[0])
                yield chunk

        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        if request.content_length:
            headers["Content-Length"] = str(request.content_length)
        assert self.session is not None
        async with self.session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=paced_body() if request.content_length else None,
            allow_redirects=False,
        ) as upstream:
            out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP_BY_HOP:
                    out.headers.add(key, value)
            length = upstream.headers.get("Content-Length")
            if length is not None:
                out.content_length = int(length)
            await out.prepare(request)
            down, first = 0, time.perf_counter()
            if request.method != "HEAD":
                async for chunk in upstream.content.iter_chunked(_CHUNK):
                    await out.write(chunk)
                    down += len(chunk)
                    await self.pace(first, down)
            await out.write_eof()
        entry = {"method": request.method, "path": request.path, "up": up[0], "down": down}
        self.log.append(entry | {"start": arrived, "end": time.monotonic()})
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--bandwidth-mb", type=float, default=100.0, help="MB/s per request (10^6 bytes)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    shaper = _Shaper(args.upstream, args.latency_ms / 1000, args.bandwidth_mb * 1e6)
    app = web.Application(client_max_size=2**40)
    app.router.add_route("*", "/{tail:.*}", shaper.handle)
    app.on_startup.append(shaper.start)
    app.on_cleanup.append(shaper.stop)

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"PORT {port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()

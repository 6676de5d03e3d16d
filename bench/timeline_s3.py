"""Where the wall time of an export to S3 goes: every request at the shaping proxy beside the encoders' events.

    python bench/timeline_s3.py --size 4096 --latency-ms 20            # default bands
    python bench/timeline_s3.py --size 10980 --latency-ms 20 --debug   # with the debug store

Exports the synthetic tile once to a local folder and then ``--runs`` times to S3 (a moto server in
its own process) behind ``bench/_proxy.py``; prints, for the last run, one line per event relative
to the export's start: ``encoding``/``publishing``/``published`` from the export's ``progress``
callback and each request's arrival and answer at the proxy (monotonic clock, shared by the
processes), then the requests after the last encoder finished (the sequential tail).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import boto3

from _proxy import shaping_proxy
from darts_export import export_tile, make_synthetic_tile
from run import moto_server, remove, s3_options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--bandwidth-mb", type=float, default=100.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--no-local", action="store_true")
    parser.add_argument("--plain", action="store_true", help="also export to the moto server without the proxy")
    parser.add_argument("--quiet", action="store_true", help="no per-event timeline, only the times")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    tile = make_synthetic_tile(args.size, seed=0)
    meta = {"tile_id": f"timeline-{args.size}"}
    print(f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    if not args.no_local:
        local = Path(f"/tmp/darts-timeline-{uuid.uuid4().hex[:8]}")
        walls = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            export_tile(tile, local, metadata=meta, debug=args.debug)
            walls.append(time.perf_counter() - t0)
        remove(str(local), None)
        print(f"local: {statistics.median(walls):.2f} s  {[round(w, 2) for w in walls]}")
    with moto_server() as endpoint:
        bucket = f"tl-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        if args.plain:
            walls = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                url = f"s3://{bucket}/p"
                export_tile(tile, url, metadata=meta, debug=args.debug, storage_options=s3_options(endpoint))
                walls.append(time.perf_counter() - t0)
            remove(f"{bucket}/p", s3_options(endpoint))
            print(f"s3 plain: {statistics.median(walls):.2f} s  {[round(w, 2) for w in walls]}")
        with shaping_proxy(endpoint, latency_ms=args.latency_ms, bandwidth_mb=args.bandwidth_mb) as proxy:
            walls = []
            events: list[tuple[float, str, str]] = []

            def progress(event: str, path: str) -> None:
                events.append((time.monotonic(), event, path))

            for _ in range(args.runs):
                events.clear()
                proxy.reset()
                t0 = time.monotonic()
                export_tile(
                    tile,
                    f"s3://{bucket}/out",
                    metadata=meta,
                    debug=args.debug,
                    storage_options=s3_options(proxy.url),
                    progress=progress,
                )
                t1 = time.monotonic()
                walls.append(t1 - t0)
            log = proxy.log()
            print(f"s3 {args.latency_ms:g} ms: {statistics.median(walls):.2f} s  {[round(w, 2) for w in walls]}")
            print(f"requests {len(log)}, up {sum(r.up for r in log) / 1e6:.1f} MB")
    if args.quiet:
        return
    rows = [(t - t0, f"{event:<10} {path}") for t, event, path in events]
    for r in log:
        name = r.path.split("/", 3)[-1][:60]
        rows.append((r.start - t0, f"  >{r.method:<6} {name} up={r.up}"))
        rows.append((r.end - t0, f"  <{r.method:<6} {name} ({(r.end - r.start) * 1e3:.0f} ms)"))
    for t, text in sorted(rows):
        print(f"{t:7.3f} {text}")
    print(f"{t1 - t0:7.3f} export_tile returned")
    last_encoded = max((t for t, e, _ in events if e == "publishing"), default=t0) - t0
    tail = [r for r in log if r.start - t0 >= last_encoded - 1e-3]
    print(f"after the last encoder ({last_encoded:.3f} s): {len(tail)} requests, {t1 - t0 - last_encoded:.3f} s")


if __name__ == "__main__":
    main()

"""Where the wall time of an export to S3 goes: every request at the shaping proxy beside the encoders' events.

    python bench/timeline_s3.py --size 4096 --latency-ms 20            # default bands
    python bench/timeline_s3.py --size 10980 --latency-ms 20 --debug   # with the debug store

Exports the synthetic tile ``--runs`` times, each time to a local folder and right after to S3
(a moto server in its own process) behind ``bench/_proxy.py``, so each pair sees the same load;
reports the medians, the median of the pairs' ratios and differences, and the CPU seconds of the
export's process and of the measuring equipment (moto and the proxy). For the last run it prints
one line per event relative to the export's start: ``encoding``/``publishing``/``published``
from the export's ``progress`` callback and each request's arrival and answer at the proxy
(monotonic clock, shared by the processes), then the requests after the last encoder finished.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import time
import uuid
from pathlib import Path

import boto3
import psutil

from _proxy import shaping_proxy
from darts_export import export_tile, make_synthetic_tile
from run import moto_server, remove, s3_options


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _equipment_cpu() -> float:
    """CPU seconds of this process's children: the moto server and the proxy."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--bandwidth-mb", type=float, default=100.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no per-event timeline, only the times")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    tile = make_synthetic_tile(args.size, seed=0)
    meta = {"tile_id": f"timeline-{args.size}"}
    load = [os.getloadavg()[0]]
    local = Path(f"/tmp/darts-timeline-{uuid.uuid4().hex[:8]}")
    events: list[tuple[float, str, str]] = []

    def progress(event: str, path: str) -> None:
        events.append((time.monotonic(), event, path))

    with (
        moto_server() as endpoint,
        shaping_proxy(endpoint, latency_ms=args.latency_ms, bandwidth_mb=args.bandwidth_mb) as proxy,
    ):
        bucket = f"tl-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        local_walls, s3_walls, cpus, equipment = [], [], [], []
        try:
            for _ in range(args.runs):
                t0 = time.perf_counter()
                export_tile(tile, local, metadata=meta, debug=args.debug)
                local_walls.append(time.perf_counter() - t0)
                events.clear()
                proxy.reset()
                cpu0, eq0, t0 = _own_cpu(), _equipment_cpu(), time.monotonic()
                export_tile(
                    tile,
                    f"s3://{bucket}/out",
                    metadata=meta,
                    debug=args.debug,
                    storage_options=s3_options(proxy.url),
                    progress=progress,
                )
                t1 = time.monotonic()
                s3_walls.append(t1 - t0)
                cpus.append(_own_cpu() - cpu0)
                equipment.append(_equipment_cpu() - eq0)
            log = proxy.log()
        finally:
            shutil.rmtree(local, ignore_errors=True)
            remove(f"{bucket}/out", s3_options(endpoint))
    load.append(os.getloadavg()[0])
    ratios = [s / loc for s, loc in zip(s3_walls, local_walls, strict=True)]
    gaps = [s - loc for s, loc in zip(s3_walls, local_walls, strict=True)]
    print(f"size {args.size}, debug {args.debug}, {args.latency_ms:g} ms, load {load[0]:.2f} -> {load[1]:.2f}")
    print(f"local      {statistics.median(local_walls):.2f} s  {[round(w, 2) for w in local_walls]}")
    print(f"s3 {args.latency_ms:<4g} ms {statistics.median(s3_walls):.2f} s  {[round(w, 2) for w in s3_walls]}")
    print(f"pairs: s3/local {statistics.median(ratios):.3f} {[round(r, 2) for r in ratios]}")
    print(f"pairs: s3-local {statistics.median(gaps):.3f} s")
    print(f"cpu: export {statistics.median(cpus):.2f} s, equipment (moto + proxy) {statistics.median(equipment):.2f} s")
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

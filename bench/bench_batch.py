"""Batch export on each engine against a plain serial loop: S3 → S3 on a moto server in its own process.

    python bench/bench_batch.py --out bench/results                      # 16 tiles of 2048², 2 workers
    python bench/bench_batch.py --out bench/results --tiles 8 --engines serial local
    python bench/bench_batch.py --out bench/results --full-size 10980    # also one full tile, serially

Every engine exports the same input stores (Zarr, written to the server first) to its own prefix:

* ``serial``: a plain loop in this process, ``open_tile`` + ``export_tile`` per tile;
* ``local`` / ``dask`` / ``ray``: :func:`darts_export.batch.export_many` with ``--workers`` workers
  (a process pool, a ``LocalCluster``, a local Ray runtime), started by the batch itself.

Reported per engine: engine start-up (seconds, separately); "other": the rest outside the tiles
(listing the prefix for resume, engine shutdown, collection, ledger); "tiles": from the first tile
handed to the engine to the last result, and from it tiles per minute and the overhead over the
serial loop (ratio − 1: negative is faster); the mean seconds of one tile inside a worker; the peak
RSS of each worker process. Results go to
``<out>/batch-<size>x<tiles>.json``; the table is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import boto3
import xarray as xr

from _memory import PeakRss
from darts_export import export_tile, make_synthetic_tile
from darts_export.batch import export_many
from darts_export.inputs import open_tile
from darts_export.locations import output_for_input
from run import moto_server

_MIB = 2**20
LAMBDA_GB_SECOND_USD = 0.0000166667
"""AWS Lambda x86 price per GB-second (us-east-1, first pricing tier), for the estimate."""
LAMBDA_REQUEST_USD = 0.0000002


def shifted_tile(size: int, index: int, cache: dict[int, xr.Dataset]) -> xr.Dataset:
    """A synthetic tile (4 distinct ones, reused), shifted east by ``index`` tiles so that ids and footprints differ."""
    seed = index % 4
    if seed not in cache:
        cache[seed] = make_synthetic_tile(size, seed=seed, with_inputs=False)
    tile = cache[seed]
    return tile.assign_coords(x=tile.x + index * size * 10.0)


def put_inputs(bucket: str, tiles: int, size: int, options: dict[str, Any]) -> list[str]:
    cache: dict[int, xr.Dataset] = {}
    stores = []
    for i in range(tiles):
        store = f"s3://{bucket}/inputs/T{i:03d}/tile.zarr"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Consolidated metadata is currently not part", UserWarning)
            shifted_tile(size, i, cache).to_zarr(store, storage_options=options, consolidated=True, mode="w")
        stores.append(store)
    return stores


def run_serial(inputs: list[str], prefix: str, options: dict[str, Any]) -> dict[str, Any]:
    seconds = []
    started = time.perf_counter()
    with PeakRss() as peak:
        for store in inputs:
            t0 = time.perf_counter()
            with open_tile(store, storage_options=options) as tile:
                export_tile(tile, output_for_input(store, prefix), storage_options=options)
            seconds.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    return {
        "engine": "serial",
        "workers": 1,
        "startup_s": 0.0,
        "batch_s": wall,
        "other_s": 0.0,
        "tile_s_mean": sum(seconds) / len(seconds),
        "peak_mib_per_worker": [peak.peak / _MIB],
        "failed": 0,
    }


def run_engine(engine: str, inputs: list[str], prefix: str, workers: int, options: dict[str, Any]) -> dict[str, Any]:
    summary = export_many(inputs, prefix, engine=engine, workers=workers, storage_options=options)  # type: ignore[arg-type]
    peaks: dict[str, int] = {}
    for result in summary.results:
        if result.worker and result.worker_peak_bytes:
            peaks[result.worker] = max(peaks.get(result.worker, 0), result.worker_peak_bytes)
    exported = [r for r in summary.results if r.status == "exported"]
    return {
        "engine": engine,
        "workers": summary.workers,
        "startup_s": summary.startup_seconds,
        "batch_s": summary.run_seconds,
        "other_s": summary.seconds - summary.startup_seconds - summary.run_seconds,
        "tile_s_mean": sum(r.seconds for r in exported) / max(1, len(exported)),
        "peak_mib_per_worker": sorted(p / _MIB for p in peaks.values()),
        "failed": summary.counts["failed"],
    }


def run_full_tile(bucket: str, size: int, options: dict[str, Any]) -> dict[str, Any]:
    """One full tile, S3 → S3, serially: seconds and peak RSS for the estimate."""
    (store,) = put_inputs(f"{bucket}/full", 1, size, options)
    with PeakRss() as peak:
        t0 = time.perf_counter()
        with open_tile(store, storage_options=options) as tile:
            export_tile(tile, f"s3://{bucket}/full-out/T000", storage_options=options)
        seconds = time.perf_counter() - t0
    return {"size": size, "seconds": seconds, "peak_mib": peak.peak / _MIB}


def estimate(tile_s: float, peak_mib: float, overhead: float, workers: int) -> dict[str, Any]:
    """10,000 tiles on ``workers`` 2-core workers, and as one Lambda invocation per tile."""
    per_tile = tile_s * (1 + max(overhead, 0.0))
    lambda_gb = max(2.0, round(peak_mib * 1.25 / 1024 + 0.5))  # 25 % headroom, whole GB
    return {
        "tiles": 10_000,
        "workers": workers,
        "wall_h": 10_000 * per_tile / workers / 3600,
        "worker_core_h": 10_000 * per_tile * 2 / 3600,
        "lambda_memory_gb": lambda_gb,
        "lambda_usd_per_tile": lambda_gb * tile_s * LAMBDA_GB_SECOND_USD + LAMBDA_REQUEST_USD,
        "lambda_usd_total": 10_000 * (lambda_gb * tile_s * LAMBDA_GB_SECOND_USD + LAMBDA_REQUEST_USD),
    }


def print_table(result: dict[str, Any]) -> None:
    tiles, size = result["tiles"], result["size"]
    print(f"\n== {tiles} tiles of {size}², S3 → S3 (moto in its own process) ==")
    print(f"{'engine':<7} {'workers':>7} {'start s':>8} {'other s':>8} {'tiles s':>8} ", end="")
    print(f"{'tiles/min':>9} {'vs serial':>9} {'tile s':>7}  peak MiB per worker")
    for row in result["rows"]:
        print(
            f"{row['engine']:<7} {row['workers']:>7} {row['startup_s']:8.2f} {row['other_s']:8.2f} "
            f"{row['batch_s']:8.2f} "
            f"{row['tiles_per_min']:9.1f} {row['overhead_pct']:+8.1f}% {row['tile_s_mean']:7.2f}  "
            f"{', '.join(f'{p:.0f}' for p in row['peak_mib_per_worker'])}"
            + (f"  ({row['failed']} FAILED)" if row["failed"] else "")
        )
    if "full_tile" in result:
        full, est = result["full_tile"], result["estimate"]
        print(
            f"full tile {full['size']}²: {full['seconds']:.1f} s, peak {full['peak_mib']:.0f} MiB → 10,000 tiles on "
            f"{est['workers']} workers: {est['wall_h']:.1f} h; Lambda {est['lambda_memory_gb']} GB: "
            f"${est['lambda_usd_per_tile']:.5f} per tile, ${est['lambda_usd_total']:.0f} in all"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON results")
    parser.add_argument("--tiles", type=int, default=16)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--engines", nargs="+", default=["serial", "local", "dask", "ray"])
    parser.add_argument("--full-size", type=int, default=0, help="also export one tile of this size (e.g. 10980)")
    parser.add_argument("--estimate-workers", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    with moto_server() as endpoint:
        options = {"endpoint_url": endpoint, "key": "bench", "secret": "bench"}
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        credentials = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **credentials)
        s3.create_bucket(Bucket=bucket)
        t0 = time.perf_counter()
        inputs = put_inputs(bucket, args.tiles, args.size, options)
        print(f"{args.tiles} input stores written in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        rows = []
        for engine in args.engines:
            prefix = f"s3://{bucket}/out-{engine}"
            print(f"running {engine} ...", file=sys.stderr)
            if engine == "serial":
                rows.append(run_serial(inputs, prefix, options))
            else:
                rows.append(run_engine(engine, inputs, prefix, args.workers, options))
        serial = next((r for r in rows if r["engine"] == "serial"), None)
        for row in rows:
            row["tiles_per_min"] = 60 * args.tiles / row["batch_s"]
            row["overhead_pct"] = 100 * (row["batch_s"] / serial["batch_s"] - 1) if serial else 0.0
        result: dict[str, Any] = {"tiles": args.tiles, "size": args.size, "rows": rows}
        if args.full_size:
            full = run_full_tile(bucket, args.full_size, options)
            overhead = max((r["overhead_pct"] for r in rows if r["engine"] != "serial"), default=0.0) / 100
            result["full_tile"] = full
            result["estimate"] = estimate(full["seconds"], full["peak_mib"], overhead, args.estimate_workers)
    (args.out / f"batch-{args.size}x{args.tiles}.json").write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)


if __name__ == "__main__":
    main()

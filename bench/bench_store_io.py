"""The debug store and lazy input, end to end: the rows of ``bench/run.py`` that issue 15.2/15.3 are about.

    python bench/bench_store_io.py --size 4096
    flock /work/bench.lock python bench/bench_store_io.py --size 10980 --label after

Measured on the realistic synthetic tile, each a median of ``--repeat`` (wall, CPU seconds of
this process, peak RSS above the tile, bytes, requests at the shaping proxy):

* the default export to a local folder, and with ``debug=True``;
* with ``debug=True`` to S3 through the shaping proxy at ``--latency`` ms (``bench/_proxy.py``);
* lazy input: the debug store on S3 opened with ``open_tile`` and exported to a local folder,
  beside the time to read the needed variables' bytes alone (``bench/run.py``'s ``lazy_input``).

Run it with ``PYTHONPATH`` pointing at another checkout's ``src`` for an A/B on the same load.
Results: ``bench/results/store-io-<size>[-<label>].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import boto3

import darts_export
from _proxy import shaping_proxy
from darts_export import export_tile, make_synthetic_tile
from run import (
    Measurement,
    lazy_input,
    load,
    measure,
    measurement_rows,
    moto_server,
    put_debug_store,
    remove,
    s3_options,
)

BENCH = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--latency", type=float, default=20.0, help="ms added per request at the proxy")
    parser.add_argument("--bandwidth-mb", type=float, default=100.0, help="MB/s per connection at the proxy")
    parser.add_argument("--label", default="", help="suffix of the results files (e.g. before/after)")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--no-lazy", action="store_true", help="skip the lazy-input rows")
    parser.add_argument("--no-debug", action="store_true", help="skip the debug-store rows")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    load_start = load()
    t0 = time.perf_counter()
    tile = make_synthetic_tile(args.size, seed=0)
    synthetic_s = time.perf_counter() - t0
    results: list[Measurement] = []
    detail: dict[str, Any] = {}
    local_root = Path(tempfile.mkdtemp(prefix="darts-bench-"))
    with ExitStack() as stack:
        endpoint = stack.enter_context(moto_server())
        proxy = stack.enter_context(shaping_proxy(endpoint, latency_ms=args.latency, bandwidth_mb=args.bandwidth_mb))
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        lat = f"s3 {args.latency:g} ms"
        try:
            rows: list[tuple[str, str, dict[str, Any] | None, Any, bool]] = [
                ("local", str(local_root / "tile"), None, None, False),
                ("local", str(local_root / "tile"), None, None, True),
                (lat, f"s3://{bucket}/out", s3_options(proxy.url), proxy, True),
            ]
            for name, out, opts, shaped, debug in rows[:1] if args.no_debug else rows:

                def run(out: str = out, opts: Any = opts, debug: bool = debug) -> int:
                    manifest = export_tile(tile, out, metadata={"tile_id": "io"}, debug=debug, storage_options=opts)
                    return manifest.total_size

                results.append(measure(name, "default + debug" if debug else "default", run, args.repeat, shaped))
                remove(out, opts)
            if not args.no_lazy:
                input_url = f"s3://{bucket}/input/darts_inference_debug.zarr"
                put_debug_store(tile, f"s3://{bucket}/input", s3_options(endpoint))
                lazy, read, detail = lazy_input(input_url, s3_options(proxy.url), proxy, local_root, args.repeat)
                lazy.target = read.target = f"s3 input {args.latency:g} ms"
                results += [lazy, read]
        finally:
            shutil.rmtree(local_root, ignore_errors=True)
    by = {(m.target, m.what): m for m in results}
    local = by[("local", "default")]
    ratios = {}
    if not args.no_debug:
        ratios["s3_debug_over_local_debug"] = by[(lat, "default + debug")].wall / by[("local", "default + debug")].wall
    if not args.no_lazy:
        ratios["lazy_over_memory_plus_read"] = results[-2].wall / (local.wall + results[-1].wall)
    result = {
        "size": args.size,
        "label": args.label,
        "source": str(Path(darts_export.__file__).parent),
        "repeat": args.repeat,
        "latency_ms": args.latency,
        "load_average": [load_start, load()],
        "synthetic_tile_s": round(synthetic_s, 3),
        "measurements": [asdict(m) for m in results],
        "lazy_input": detail,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
    }
    stem = f"store-io-{args.size}" + (f"-{args.label}" if args.label else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(table(result))
    print(table(result))


def table(result: dict[str, Any]) -> str:
    lines = [
        f"## Debug store and lazy input, {result['size']}² ({result['label'] or 'this checkout'})",
        "",
        f"Median of {result['repeat']}; load average {result['load_average'][0]} → {result['load_average'][1]}; "
        f"code from {result['source']}.",
        "",
        *measurement_rows(result["measurements"]),
    ]
    lines += ["", *(f"- {k}: {v}" for k, v in result["ratios"].items())]
    lazy = result["lazy_input"]
    if lazy:
        lines.append(
            f"- lazy input read {', '.join(lazy['variables_read'])}; GETs per chunk {lazy['reads_per_chunk']}; "
            f"{lazy['bytes_needed'] / 1e6:.1f} MB needed"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""The darts-export benchmark suite: one command, realistic synthetic tiles, local and S3 targets.

    python bench/run.py --out bench-results                 # full Sentinel-2 tile (10980²) + scaling
    python bench/run.py --out bench-results --sizes 1024    # quick

For every size it builds the synthetic tile once and measures, for a local folder and for
S3 on a moto server running in its own process on loopback:

* each default product alone and all of them together (``export_tile``): wall seconds
  (median of ``--repeat``), CPU seconds, peak RSS above the tile, bytes written;
* the floor: GDAL COG-encoding just the probabilities and binarized rasters, same codec,
  both at once on all cores;
* the ratios of the targets: total/floor, S3/local, bytes vs. the original's 32.8 MB.

Results go to ``<out>/bench-<size>.json`` and a table is printed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import rasterio
import rasterio.shutil
from rasterio.io import MemoryFile

from _memory import PeakRss
from darts_export import DEFAULT_BANDS, export_tile, make_synthetic_tile
from darts_export.formats.cog import CogOptions, Resampling
from darts_export.formats.rasters import probabilities_to_percent
from darts_export.tile import TileView

ORIGINAL_BYTES = 32.8e6
ORIGINAL_SECONDS = 19.7


@dataclass
class Measurement:
    target: str
    what: str
    wall: float
    cpu: float
    peak_rss_mib: float
    bytes: int


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(target: str, what: str, fn: Callable[[], int], repeat: int) -> Measurement:
    walls, cpus, peaks, size = [], [], [], 0
    for _ in range(repeat):
        cpu0, t0 = _cpu(), time.perf_counter()
        with PeakRss() as sampler:
            size = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu() - cpu0)
        peaks.append(sampler.extra_mib)
    return Measurement(target, what, statistics.median(walls), statistics.median(cpus), max(peaks), size)


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server in its own process on a free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                    break
            except OSError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def gdal_cog(array: np.ndarray, view: TileView, resampling: Resampling) -> int:
    """Just GDAL: MEM dataset → COG driver with the export's creation options; bytes written."""
    profile = {"driver": "MEM", "width": view.georef.width, "height": view.georef.height, "count": 1}
    profile |= {"dtype": array.dtype.name, "crs": view.georef.crs, "transform": view.georef.transform, "nodata": 255}
    with rasterio.open("", "w", **profile) as mem:
        mem.write(array, 1)
        with MemoryFile(ext=".tif") as out:
            options = CogOptions().creation_options(array.dtype, resampling)
            rasterio.shutil.copy(mem, out.name, driver="COG", **options)
            return len(out.read())


def floor_inputs(view: TileView) -> tuple[np.ndarray, np.ndarray]:
    """The two rasters' uint8 arrays, prepared outside the timed floor."""
    percent = probabilities_to_percent(view.array("probabilities"))  # type: ignore[arg-type]
    return percent, view.array("binarized_segmentation").astype(np.uint8)


def floor_encode(view: TileView, percent: np.ndarray, mask: np.ndarray) -> int:
    """The floor: GDAL COG-encoding of just the two rasters, same codec, both at once (2 cores)."""
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(gdal_cog, percent, view, "AVERAGE")
        b = pool.submit(gdal_cog, mask, view, "NEAREST")
        return a.result() + b.result()


def run_size(size: int, repeat: int, s3_endpoint: str, products: bool) -> dict[str, Any]:
    tile = make_synthetic_tile(size, seed=0)
    view = TileView(tile)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    options = {"endpoint_url": s3_endpoint, "key": "bench", "secret": "bench"}
    local_root = Path(tempfile.mkdtemp(prefix="darts-bench-"))
    results: list[Measurement] = []
    try:
        percent, mask = floor_inputs(view)
        results.append(measure("-", "floor (2 COGs)", functools.partial(floor_encode, view, percent, mask), repeat))
        del percent, mask
        for name, out, opts in (("local", str(local_root / "tile"), None), ("s3", f"s3://{bucket}/tile", options)):
            meta: dict[str, Any] = {"tile_id": f"bench-{size}"}
            for band in [*(DEFAULT_BANDS if products else ()), "all"]:
                bands = list(DEFAULT_BANDS) if band == "all" else [band]

                def run(bands: list[str] = bands, out: str = out, opts: Any = opts, meta: Any = meta) -> int:
                    manifest = export_tile(tile, out, bands=bands, metadata=meta, storage_options=opts)
                    return manifest.total_size

                results.append(measure(name, band, run, repeat))
    finally:
        shutil.rmtree(local_root, ignore_errors=True)
    by = {(m.target, m.what): m for m in results}
    floor = by[("-", "floor (2 COGs)")].wall
    local, remote = by[("local", "all")], by[("s3", "all")]
    ratios = {
        "total_local_s": local.wall,
        "total_s3_s": remote.wall,
        "s3_over_local": remote.wall / local.wall,
        "local_over_floor": local.wall / floor,
        "peak_extra_gib": max(local.peak_rss_mib, remote.peak_rss_mib) / 1024,
        "bytes_vs_original": local.bytes / ORIGINAL_BYTES,
        "mpix_per_s_local": size * size / 1e6 / local.wall,
    }
    return {"size": size, "repeat": repeat, "measurements": [asdict(m) for m in results], "ratios": ratios}


def print_table(result: dict[str, Any]) -> None:
    print(f"\n== {result['size']}×{result['size']} px, median of {result['repeat']} ==")
    print(f"{'target':<7} {'product':<16} {'wall s':>8} {'cpu s':>8} {'peak+ MiB':>10} {'MB':>8}")
    for m in result["measurements"]:
        print(
            f"{m['target']:<7} {m['what']:<16} {m['wall']:8.2f} {m['cpu']:8.2f} {m['peak_rss_mib']:10.0f} "
            f"{m['bytes'] / 1e6:8.2f}"
        )
    r = result["ratios"]
    print(
        f"total local {r['total_local_s']:.2f} s (target ≤ 5.0) | S3/local {r['s3_over_local']:.2f} (≤ 1.15) | "
        f"local/floor {r['local_over_floor']:.2f} (≤ 1.5) | peak +{r['peak_extra_gib']:.2f} GiB (≤ 0.8) | "
        f"bytes {r['bytes_vs_original']:.2f}× original (≤ 1) | {r['mpix_per_s_local']:.1f} Mpx/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON results")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 10980])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--totals-only", action="store_true", help="skip the per-product runs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with moto_server() as endpoint:
        for size in args.sizes:
            result = run_size(size, args.repeat, endpoint, products=not args.totals_only)
            (args.out / f"bench-{size}.json").write_text(json.dumps(result, indent=2))
            print_table(result)


if __name__ == "__main__":
    main()

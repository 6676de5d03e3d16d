"""Measure COG codecs on the realistic probabilities and binarized rasters of a synthetic tile.

    python bench/bench_cog.py --size 10980 --repeat 3 [--json results/cog.json]
    python bench/bench_cog.py --size 10980 --compare     # encode_cog against GDAL alone

For each codec/predictor/level it reports the median wall seconds of encoding (``encode_cog``:
512 tiles, internal overviews, one thread) and the bytes written, next to the original's
choice (plain LZW strips without overviews, via the GTiff driver).

``--compare`` measures only the export's codec of each raster, ``encode_cog`` beside GDAL alone
(a MEM copy of the array, the COG driver building the overviews itself), with CPU seconds and
peak memory, and checks that both wrote the same bytes.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.io import MemoryFile

from _memory import PeakRss
from darts_export.formats.cog import CogOptions, Resampling, encode_cog
from darts_export.formats.rasters import probabilities_to_percent
from darts_export.synthetic import make_synthetic_tile
from darts_export.tile import TileView

CANDIDATES: list[tuple[str, CogOptions]] = [
    ("LZW", CogOptions(compression="LZW", level=None, predictor=False)),
    ("LZW+pred", CogOptions(compression="LZW", level=None, predictor=True)),
    ("DEFLATE6", CogOptions(compression="DEFLATE", level=6, predictor=False)),
    ("DEFLATE6+pred", CogOptions(compression="DEFLATE", level=6, predictor=True)),
    ("ZSTD1", CogOptions(compression="ZSTD", level=1, predictor=False)),
    ("ZSTD1+pred", CogOptions(compression="ZSTD", level=1, predictor=True)),
    ("ZSTD3", CogOptions(compression="ZSTD", level=3, predictor=False)),
    ("ZSTD3+pred", CogOptions(compression="ZSTD", level=3, predictor=True)),
    ("ZSTD9", CogOptions(compression="ZSTD", level=9, predictor=False)),
    ("ZSTD9+pred", CogOptions(compression="ZSTD", level=9, predictor=True)),
    ("ZSTD15+pred", CogOptions(compression="ZSTD", level=15, predictor=True)),
    ("ZSTD1+pred/ALL_CPUS", CogOptions(compression="ZSTD", level=1, predictor=True, threads="ALL_CPUS")),
    ("ZSTD9+pred/ALL_CPUS", CogOptions(compression="ZSTD", level=9, predictor=True, threads="ALL_CPUS")),
]


def original_lzw_strips(array: np.ndarray, view: TileView) -> bytes:
    """What the original wrote: a striped GTiff with LZW, no overviews."""
    g = view.georef
    with MemoryFile() as mf:
        with mf.open(
            driver="GTiff",
            width=g.width,
            height=g.height,
            count=1,
            dtype=array.dtype.name,
            crs=g.crs,
            transform=g.transform,
            compress="LZW",
        ) as ds:
            ds.write(array, 1)
        return bytes(mf.read())


def median_time(fn, repeat: int) -> tuple[float, bytes]:  # type: ignore[no-untyped-def]
    times, out = [], b""
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def gdal_alone(array: np.ndarray, view: TileView, nodata: int, resampling: Resampling, options: CogOptions) -> bytes:
    """GDAL by itself: a MEM copy of ``array``, its statistics, the COG driver building the overviews."""
    g = view.georef
    profile = {"driver": "MEM", "width": g.width, "height": g.height, "count": 1, "dtype": array.dtype.name}
    with rasterio.open("", "w", crs=g.crs, transform=g.transform, nodata=nodata, **profile) as mem:
        mem.write(array, 1)
        mem.stats(approx=False)
        with MemoryFile(ext=".tif") as out:
            rasterio.shutil.copy(mem, out.name, driver="COG", **options.creation_options(array.dtype, resampling))
            return bytes(out.read())


def measured(fn: Callable[[], bytes], repeat: int) -> tuple[dict[str, float], bytes]:
    """Median wall and CPU seconds and the largest peak RSS (MiB above the start) of ``fn``; its last output."""
    walls, cpus, peaks, out = [], [], [], b""
    for _ in range(repeat):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu0, t0 = usage.ru_utime + usage.ru_stime, time.perf_counter()
        with PeakRss() as peak:
            out = fn()
        walls.append(time.perf_counter() - t0)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpus.append(usage.ru_utime + usage.ru_stime - cpu0)
        peaks.append(peak.extra_mib)
    return {"seconds": statistics.median(walls), "cpu": statistics.median(cpus), "peak_mib": max(peaks)}, out


def compare(
    rasters: dict[str, tuple[np.ndarray, int, Resampling]], view: TileView, repeat: int
) -> list[dict[str, object]]:
    """encode_cog against GDAL alone with the export's codec of each raster: wall, CPU, peak, bytes."""
    codecs = {"probabilities": CogOptions(level=3), "binarized": CogOptions(level=3, predictor=False)}
    results: list[dict[str, object]] = []
    for name, (array, nodata, resampling) in rasters.items():
        options = codecs[name]
        alone, reference = measured(partial(gdal_alone, array, view, nodata, resampling, options), repeat)
        ours, data = measured(partial(_encode, array, view, nodata, resampling, options), repeat)
        for how, row, out in (("GDAL alone", alone, reference), ("encode_cog", ours, data)):
            results.append({"raster": name, "how": how, **row, "bytes": len(out), "same_bytes": data == reference})
            print(
                f"{name:<14} {how:<12} wall {row['seconds']:6.2f} s  CPU {row['cpu']:5.2f} s  "
                f"peak+ {row['peak_mib']:5.0f} MiB  {len(out) / 1e6:8.3f} MB  same bytes: {data == reference}"
            )
    return results


def _encode(array: np.ndarray, view: TileView, nodata: int, resampling: Resampling, options: CogOptions) -> bytes:
    return encode_cog([array], view.georef, nodata=nodata, resampling=resampling, options=options).data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10980)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--compare", action="store_true", help="only encode_cog against GDAL alone")
    args = parser.parse_args()

    view = TileView(make_synthetic_tile(args.size, seed=0, with_inputs=False))
    binarized = np.where(np.greater(view.array("extent"), 0), view.array("binarized_segmentation"), 255).astype(
        np.uint8
    )
    rasters: dict[str, tuple[np.ndarray, int, Resampling]] = {  # the contents of probabilities.tif, binarized.tif
        "probabilities": (
            probabilities_to_percent(np.asarray(view.array("probabilities"), dtype=np.float32)),
            255,
            "AVERAGE",
        ),
        "binarized": (binarized, 255, "NEAREST"),
    }
    if args.compare:
        print(f"size {args.size}x{args.size}, median of {args.repeat}")
        compared = compare(rasters, view, args.repeat)
        if args.json:
            args.json.write_text(json.dumps({"size": args.size, "repeat": args.repeat, "results": compared}, indent=2))
        return
    results = []
    print(f"size {args.size}x{args.size}, median of {args.repeat}")
    print(f"{'raster':<14} {'codec':<20} {'seconds':>8} {'MB':>8}")
    for name, (array, nodata, resampling) in rasters.items():
        seconds, data = median_time(lambda a=array: original_lzw_strips(a, view), args.repeat)
        results.append(
            {"raster": name, "codec": "original LZW strips, no overviews", "seconds": seconds, "bytes": len(data)}
        )
        print(f"{name:<14} {'orig LZW strips':<20} {seconds:8.3f} {len(data) / 1e6:8.2f}")
        for label, options in CANDIDATES:
            seconds, data = median_time(
                lambda a=array, o=options, n=nodata, r=resampling: (
                    encode_cog([a], view.georef, nodata=n, resampling=r, options=o).data
                ),
                args.repeat,
            )
            results.append({"raster": name, "codec": label, "seconds": seconds, "bytes": len(data)})
            print(f"{name:<14} {label:<20} {seconds:8.3f} {len(data) / 1e6:8.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"size": args.size, "repeat": args.repeat, "results": results}, indent=2))


if __name__ == "__main__":
    main()

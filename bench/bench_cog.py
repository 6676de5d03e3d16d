"""Measure COG codecs on the realistic probabilities and binarized rasters of a synthetic tile.

    python bench/bench_cog.py --size 10980 --repeat 3 [--json results/cog.json]

For each codec/predictor/level it reports the median wall seconds of encoding (GDAL COG
driver, 512 tiles, internal overviews, all cores) and the bytes written, next to the
original's choice (plain LZW strips without overviews, via the GTiff driver).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from rasterio.io import MemoryFile

from darts_export.formats.cog import CogOptions, encode_cog
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10980)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    view = TileView(make_synthetic_tile(args.size, seed=0, with_inputs=False))
    rasters = {
        "probabilities": (
            probabilities_to_percent(np.asarray(view.array("probabilities"), dtype=np.float32)),
            255,
            "AVERAGE",
        ),
        "binarized": (view.array("binarized_segmentation").astype(np.uint8), 255, "NEAREST"),
    }
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

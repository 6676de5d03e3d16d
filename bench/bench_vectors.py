"""Benchmark the vector products on a synthetic tile: polygonize objects and extent, encode both.

The objects are measured as the export builds them (:func:`darts_export.encoders.object_frame`:
tracing plus zonal statistics), once from the float probabilities and once from the percent
array the export already converted for the probabilities COG.

Usage::

    python bench/bench_vectors.py --size 10980 --repeat 3 [--json results.json]

Each step is timed with ``time.perf_counter`` (median of ``--repeat`` runs). Peak memory
is the highest resident set size during the step above the RSS just before it, after
``gc.collect()`` and glibc's ``malloc_trim`` so that memory freed by earlier steps does
not hide this step's allocations; the maximum over repeats is reported. On Linux the
kernel's own high-water mark is used (``VmHWM``, reset through ``/proc/self/clear_refs``),
so nothing runs beside the step; elsewhere a thread samples the RSS every 1 ms, which
competes for the GIL and inflates the times of Python-heavy steps.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from _memory import PeakRss
from darts_export.encoders import object_frame
from darts_export.formats.polygons import polygonize_extent
from darts_export.formats.rasters import probabilities_to_percent
from darts_export.formats.vector_files import encode_geoparquet, write_geopackage
from darts_export.synthetic import make_synthetic_tile
from darts_export.tile import TileView

_MIB = 1024 * 1024


@dataclass(frozen=True)
class Row:
    step: str
    seconds: float
    peak_mib: float
    rows: int | None = None
    nbytes: int | None = None


def measure(step: str, func: Callable[[], Any], repeat: int, size_of: Callable[[Any], dict[str, int]]) -> Row:
    times, peaks, result = [], [], None
    for _ in range(repeat):
        result = None
        with PeakRss() as rss:
            start = time.perf_counter()
            result = func()
            times.append(time.perf_counter() - start)
        peaks.append(rss.extra_mib)
    return Row(step, statistics.median(times), max(peaks), **size_of(result))


def run(size: int, repeat: int, seed: int) -> list[Row]:
    view = TileView(make_synthetic_tile(size, seed=seed, with_inputs=False))
    georef = view.georef
    mask = view.array("binarized_segmentation")
    probabilities = np.asarray(view.array("probabilities"), dtype=np.float32)
    valid = np.asarray(view.array("extent"), dtype=np.float32) > 0
    percent = probabilities_to_percent(probabilities)
    rows = [
        measure(
            "objects (probabilities)",
            lambda: object_frame(mask, georef, probabilities),
            repeat,
            lambda f: {"rows": len(f)},
        ),
        measure(
            "objects (percent given)",
            lambda: object_frame(mask, georef, percent=percent),
            repeat,
            lambda f: {"rows": len(f)},
        ),
        measure("polygonize_extent", lambda: polygonize_extent(valid, georef), repeat, lambda f: {"rows": len(f)}),
    ]
    frames = {"objects": object_frame(mask, georef, percent=percent), "extent": polygonize_extent(valid, georef)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, frame in frames.items():
            rows.append(
                measure(
                    f"geoparquet ({name})",
                    functools.partial(encode_geoparquet, frame),
                    repeat,
                    lambda b: {"nbytes": len(b)},
                )
            )
            path = Path(tmp) / f"{name}.gpkg"

            def gpkg(f: Any = frame, p: Path = path, layer: str = name) -> int:
                write_geopackage(f, p, layer=layer)
                return p.stat().st_size

            rows.append(measure(f"geopackage ({name})", gpkg, repeat, lambda n: {"nbytes": n}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10980, help="pixels per side of the synthetic tile")
    parser.add_argument("--repeat", type=int, default=3, help="runs per step; the median time is reported")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic tile")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    rows = run(args.size, args.repeat, args.seed)
    # As in the export: objects from the percent array already converted for the COG, plus the extent.
    total = sum(r.seconds for r in rows if r.step in ("objects (percent given)", "polygonize_extent"))
    print(f"size {args.size}x{args.size}, median of {args.repeat}, {np.__name__} {np.__version__}")
    print(f"{'step':<24}{'seconds':>9}{'peak MiB':>10}{'rows':>7}{'bytes':>11}")
    for r in rows:
        print(f"{r.step:<24}{r.seconds:>9.3f}{r.peak_mib:>10.1f}{r.rows or '':>7}{r.nbytes or '':>11}")
    print(f"{'objects + extent':<24}{total:>9.3f}")
    if args.json:
        payload = {"size": args.size, "repeat": args.repeat, "seed": args.seed, "rows": [asdict(r) for r in rows]}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()

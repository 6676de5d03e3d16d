"""Codecs and chunk sizes for the Zarr debug store, measured on the realistic synthetic tile.

    python bench/bench_debug_store.py                       # 4096², every candidate
    flock /work/bench.lock python bench/bench_debug_store.py --size 10980 --only chosen zstd3 --repeat 1

For each candidate the whole tile is written as a Zarr v3 store (xarray ``to_zarr``, the debug
store's own path) into a folder on tmpfs, so the disk does not blur the codec's cost, then read
back whole with ``xr.open_zarr`` and compared value by value (every candidate must be lossless).
Reported: bytes (total and per dtype), CPU seconds of this process (all threads) and wall
seconds to encode and to decode (the least CPU of ``--repeat`` runs: other processes' load only
adds), and the machine's load average. ``--threads`` sets zarr's thread pool (its chunk coders).
``chosen`` is what the debug store writes (``zarr_store.debug_compressors``), ``zstd3`` what it wrote before.

Results: ``bench/results/debug-store-<size>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec

from darts_export import make_synthetic_tile
from darts_export.formats.zarr_store import debug_compressors

BENCH = Path(__file__).resolve().parent


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


Shuffle = Literal["shuffle", "bitshuffle"]
Cname = Literal["lz4", "lz4hc", "zstd"]


def _blosc(cname: Cname, level: int, shuffle: Shuffle) -> Callable[[np.dtype[Any]], dict[str, Any]]:
    def make(dtype: np.dtype[Any]) -> dict[str, Any]:
        return {"compressors": (BloscCodec(cname=cname, clevel=level, shuffle=shuffle),)}

    return make


def _zstd(level: int) -> Callable[[np.dtype[Any]], dict[str, Any]]:
    def make(dtype: np.dtype[Any]) -> dict[str, Any]:
        return {"compressors": (ZstdCodec(level=level),)}

    return make


def _shuffle_zstd(level: int) -> Callable[[np.dtype[Any]], dict[str, Any]]:
    """numcodecs' byte shuffle as a bytes-to-bytes filter, then zstd (not a core Zarr v3 codec)."""

    def make(dtype: np.dtype[Any]) -> dict[str, Any]:
        from zarr.codecs.numcodecs import Shuffle

        compressors: tuple[Any, ...] = (ZstdCodec(level=level),)
        if dtype.itemsize > 1:
            compressors = (Shuffle(elementsize=dtype.itemsize), *compressors)
        return {"serializer": BytesCodec(), "compressors": compressors}

    return make


def _chosen(dtype: np.dtype[Any]) -> dict[str, Any]:
    """What the debug store writes now: Blosc LZ4 bit-shuffled for multi-byte dtypes, zstd 1 for one-byte ones."""
    return {"compressors": debug_compressors(dtype)}


CANDIDATES: dict[str, Callable[[np.dtype[Any]], dict[str, Any]]] = {
    "chosen": _chosen,
    "zstd3": _zstd(3),  # the previous debug store
    "zstd1": _zstd(1),
    "shuffle+zstd1": _shuffle_zstd(1),
    "shuffle+zstd3": _shuffle_zstd(3),
    "blosc-zstd1-shuffle": _blosc("zstd", 1, "shuffle"),
    "blosc-zstd3-shuffle": _blosc("zstd", 3, "shuffle"),
    "blosc-zstd5-shuffle": _blosc("zstd", 5, "shuffle"),
    "blosc-zstd1-bitshuffle": _blosc("zstd", 1, "bitshuffle"),
    "blosc-zstd3-bitshuffle": _blosc("zstd", 3, "bitshuffle"),
    "blosc-lz4-shuffle": _blosc("lz4", 5, "shuffle"),
    "blosc-lz4-bitshuffle": _blosc("lz4", 5, "bitshuffle"),
    "blosc-lz4hc-shuffle": _blosc("lz4hc", 5, "shuffle"),
}


def encoding_for(tile: xr.Dataset, candidate: str, chunk: int) -> dict[str, dict[str, Any]]:
    make = CANDIDATES[candidate]
    return {
        str(name): {"chunks": tuple(min(chunk, s) for s in var.shape), **make(var.dtype)}
        for name, var in tile.data_vars.items()
    }


def write(tile: xr.Dataset, folder: Path, encoding: dict[str, dict[str, Any]]) -> None:
    """The debug store's own write: xarray ``to_zarr``, every chunk written."""
    store = zarr.storage.LocalStore(str(folder))
    tile.to_zarr(store, mode="w-", zarr_format=3, consolidated=False, encoding=encoding, write_empty_chunks=True)


def read_back(folder: Path, tile: xr.Dataset, check: bool) -> None:
    opened = xr.open_zarr(str(folder), consolidated=False, mask_and_scale=False)
    for name, var in tile.data_vars.items():
        got = opened[name].values
        if check:
            assert got.dtype == var.dtype, (name, got.dtype, var.dtype)
            assert np.array_equal(got, var.values, equal_nan=got.dtype.kind == "f"), name
            if got.dtype.kind == "f":  # NaN payloads and signed zeros too: every bit
                assert np.array_equal(got.view(np.uint32), var.values.view(np.uint32)), name


def bytes_by_dtype(folder: Path, tile: xr.Dataset) -> dict[str, int]:
    sizes: dict[str, int] = defaultdict(int)
    for name, var in tile.data_vars.items():
        sizes[str(var.dtype)] += sum(p.stat().st_size for p in (folder / str(name)).rglob("*") if p.is_file())
    return dict(sizes)


def run(tile: xr.Dataset, candidate: str, chunk: int, repeat: int, root: Path) -> dict[str, Any]:
    """Best (least CPU) of ``repeat`` encodes and decodes: the other helpers' load only ever adds."""
    folder = root / f"{candidate}-{chunk}.zarr"
    encoding = encoding_for(tile, candidate, chunk)
    encodes, decodes = [], []
    for i in range(repeat):
        if i:
            shutil.rmtree(folder)
        cpu0, t0 = _cpu(), time.perf_counter()
        write(tile, folder, encoding)
        encodes.append((_cpu() - cpu0, time.perf_counter() - t0))
        cpu0, t0 = _cpu(), time.perf_counter()
        read_back(folder, tile, check=False)
        decodes.append((_cpu() - cpu0, time.perf_counter() - t0))
    (enc_cpu, enc_wall), (dec_cpu, dec_wall) = min(encodes), min(decodes)
    read_back(folder, tile, check=True)
    by_dtype = bytes_by_dtype(folder, tile)
    objects = sum(1 for p in folder.rglob("*") if p.is_file())
    shutil.rmtree(folder)
    return {
        "candidate": candidate,
        "chunk": chunk,
        "repeat": repeat,
        "bytes": sum(by_dtype.values()),
        "bytes_by_dtype": by_dtype,
        "objects": objects,
        "encode_wall": round(enc_wall, 3),
        "encode_cpu": round(enc_cpu, 3),
        "decode_wall": round(dec_wall, 3),
        "decode_cpu": round(dec_cpu, 3),
        "load": round(os.getloadavg()[0], 2),
    }


def table(result: dict[str, Any]) -> str:
    raw = result["raw_bytes_by_dtype"]
    lines = [
        f"## Debug store codecs, {result['size']}² (raw {sum(raw.values()) / 1e6:.0f} MB: "
        + ", ".join(f"{k} {v / 1e6:.0f} MB" for k, v in raw.items())
        + ")",
        "",
        f"Least CPU of {result['repeat']} runs each (wall of that run); zarr thread pool {result['threads']}; "
        f"on tmpfs; {result['cpus']} CPUs; every candidate read back bit-exact.",
        "",
        "| codec | chunk | MB | ratio | "
        + " | ".join(f"{k} MB" for k in raw)
        + " | objects | enc CPU s | enc wall s | dec CPU s | dec wall s | load |",
        "| --- | ---: | ---: | ---: | "
        + " | ".join("---:" for _ in raw)
        + " | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    total_raw = sum(raw.values())
    for r in result["runs"]:
        per = " | ".join(f"{r['bytes_by_dtype'].get(k, 0) / 1e6:.0f}" for k in raw)
        lines.append(
            f"| {r['candidate']} | {r['chunk']} | {r['bytes'] / 1e6:.0f} | "
            f"{r['bytes'] / total_raw:.3f} | {per} | {r['objects']} | {r['encode_cpu']:.2f} | "
            f"{r['encode_wall']:.2f} | {r['decode_cpu']:.2f} | {r['decode_wall']:.2f} | {r['load']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--only", nargs="+", choices=sorted(CANDIDATES), help="candidates (default: all)")
    parser.add_argument("--chunks", type=int, nargs="+", default=[2048])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="zarr's thread pool (default: zarr's)")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--name", default=None, help="results file stem (default debug-store-<size>)")
    args = parser.parse_args()
    if args.threads is not None:
        zarr.config.set({"threading.max_workers": args.threads})
    tile = make_synthetic_tile(args.size, seed=0)
    raw: dict[str, int] = defaultdict(int)
    for var in tile.data_vars.values():
        raw[str(var.dtype)] += var.nbytes
    root = Path(tempfile.mkdtemp(prefix="darts-bench-zarr-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    runs = []
    try:
        run(tile.isel(x=slice(0, 256), y=slice(0, 256)), "zstd3", 256, 1, root)  # warm-up: imports, thread pool
        for candidate in args.only or list(CANDIDATES):
            for chunk in args.chunks:
                r = run(tile, candidate, chunk, args.repeat, root)
                print(json.dumps(r), file=sys.stderr)
                runs.append(r)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "size": args.size,
        "threads": args.threads or "default",
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "raw_bytes_by_dtype": dict(raw),
        "runs": runs,
    }
    stem = args.name or f"debug-store-{args.size}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(table(result))
    print(table(result))


if __name__ == "__main__":
    main()

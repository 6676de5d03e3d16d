"""The darts-export benchmark: one command, the realistic synthetic tile, local disk and S3 with real latency.

    python bench/run.py                                   # 1024², 4096², 10980² into bench/results
    python bench/run.py --sizes 1024 --repeat 1           # quick
    python bench/run.py --sizes 10980 --products          # also each product alone

What it measures, for every size (wall seconds are the median of ``--repeat``; CPU seconds are
this process's user + system time, all threads; peak is the RSS above the tile):

* **the floor**: GDAL alone COG-encoding the probabilities and binarized rasters (the export's
  codec, overviews, both at once on two threads);
* **exports** of the default bands to a local folder, to S3 (a moto server in its own process on
  loopback, ``bench/_moto.py``: moto with cheaper ETags, since its CPU is taken from the same
  cores as the export's), and to S3 through a shaping proxy (``bench/_proxy.py``, its own process)
  that adds ``--latencies`` ms per request and caps each connection at ``--bandwidth-mb`` MB/s; the
  proxy at 0 ms separates the proxy's own cost from the latency. The targets take turns (one run
  of each, ``--repeat`` times), so the load's drift does not skew their ratios. Uploads are not
  payload-signed, as over https. Each also with ``debug=True`` (the Zarr debug store);
* **lazy S3 input**: the debug store written to S3 is opened with ``open_tile`` (as the handler
  and ``darts-export export`` do) and exported to a local folder, beside the export of the same
  tile from memory and the time to read the bytes of the variables it needs alone (every object
  at once through s3fs); the requests per variable are counted at the proxy (the store's
  ``quicklook`` group counts as one: the thumbnail's pixels of the optical bands);
* **bytes** against the original's: its rasters re-encoded as it wrote them (LZW strips, no
  overviews, truncated percent), its vector files and thumbnail counted at this export's sizes.

And once per run, the **cold start**: ``import darts_export`` (``-X importtime``, and the wall
time of the interpreter), ``darts-export --help``, and the cloud handler's first invocation of a
1024² tile in a new process against a second one (``bench/_cold.py``; wall and CPU seconds), in
this environment and as a runtime install sees it (the packages outside the core dependencies
hidden: installed, libraries import them on their own, e.g. xarray imports dask.array).

Results: ``<out>/bench-<size>.json`` and ``.md``, ``<out>/cold-start.json`` and ``.md``; the
tables are also printed. The machine's load average is recorded with every result.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import rasterio
import rasterio.shutil
import s3fs
import xarray as xr
from rasterio.io import MemoryFile

from _memory import PeakRss
from _proxy import ProxyClient, shaping_proxy
from darts_export import DEFAULT_BANDS, export_tile, make_synthetic_tile
from darts_export.formats.cog import CogOptions, Resampling
from darts_export.formats.rasters import probabilities_to_percent
from darts_export.inputs import open_tile
from darts_export.tile import TileView

BENCH = Path(__file__).resolve().parent
DEBUG_STORE = "darts_inference_debug.zarr"
GOALS = {
    "import_s": 0.3,
    "help_s": 0.5,
    "cold_over_warm": 2.0,
    "s3_20ms_over_local": 1.15,
    "s3_20ms_debug_over_local_debug": 1.3,
    "lazy_over_memory_plus_read": 1.3,
    "cpu_over_floor_cpu": 1.4,
    "peak_extra_gib": 0.5,
    "local_over_floor": 1.1,
    "bytes_over_original": 1.0,
}


@dataclass
class Measurement:
    target: str
    what: str
    wall: float
    cpu: float
    peak_mib: float
    bytes: int
    walls: list[float] = field(default_factory=list)
    requests: int = 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class _Spec:
    target: str
    what: str
    fn: Callable[[], int]
    proxy: ProxyClient | None = None
    runs: list[tuple[float, float, float, int, int]] = field(default_factory=list)

    def once(self) -> None:
        """Run once; record wall, CPU, peak, bytes and requests at the proxy."""
        if self.proxy is not None:
            self.proxy.reset()
        cpu0, t0 = _cpu(), time.perf_counter()
        with PeakRss() as sampler:
            size = self.fn()
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        self.runs.append((wall, cpu, sampler.extra_mib, size, len(self.proxy.log()) if self.proxy else 0))

    def measurement(self) -> Measurement:
        walls = [r[0] for r in self.runs]
        cpu = statistics.median(r[1] for r in self.runs)
        last = self.runs[-1]
        peak = max(r[2] for r in self.runs)
        return Measurement(self.target, self.what, statistics.median(walls), cpu, peak, last[3], walls, last[4])


def measure(
    target: str, what: str, fn: Callable[[], int], repeat: int, proxy: ProxyClient | None = None
) -> Measurement:
    spec = _Spec(target, what, fn, proxy)
    for _ in range(repeat):
        spec.once()
    return spec.measurement()


def measure_round_robin(specs: list[_Spec], repeat: int) -> list[Measurement]:
    """Each spec ``repeat`` times, taking turns, so that every target sees the same drift of the load."""
    for _ in range(repeat):
        for spec in specs:
            spec.once()
    return [spec.measurement() for spec in specs]


def load() -> float:
    return round(os.getloadavg()[0], 2)


# --- servers --------------------------------------------------------------------------------------


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server in its own process on a free loopback port (``bench/_moto.py``: cheaper ETags)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "_moto.py"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                    break
            except OSError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def s3_options(endpoint: str) -> dict[str, Any]:
    # Over https botocore does not sign S3 upload payloads (TLS and the checksum header protect them);
    # over the benchmark's loopback http it would hash every byte once more.
    return {
        "endpoint_url": endpoint,
        "key": "bench",
        "secret": "bench",
        "config_kwargs": {"s3": {"payload_signing_enabled": False}},
    }


# --- the floor and the original -------------------------------------------------------------------


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


def floor_encode(view: TileView, percent: np.ndarray, mask: np.ndarray) -> int:
    """The floor: GDAL COG-encoding of just the two rasters, same codec, both at once (2 cores)."""
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(gdal_cog, percent, view, "AVERAGE")
        b = pool.submit(gdal_cog, mask, view, "NEAREST")
        return a.result() + b.result()


def lzw_strips(array: np.ndarray, view: TileView) -> int:
    """Bytes of the original's raster: a striped GTiff with LZW, no predictor, no overviews."""
    g = view.georef
    profile = {"driver": "GTiff", "width": g.width, "height": g.height, "count": 1, "dtype": array.dtype.name}
    with MemoryFile() as mf:
        with mf.open(**profile, crs=g.crs, transform=g.transform, compress="LZW") as ds:
            ds.write(array, 1)
        return len(mf.read())


def original_bytes(view: TileView, artifacts: dict[str, int]) -> int:
    """The original's bytes for this tile: its two rasters as it wrote them, the other files at our sizes."""
    probabilities = view.array("probabilities")
    percent = np.where(np.isnan(probabilities), 255, probabilities * 100).astype(np.uint8)  # truncated, as it did
    rasters = lzw_strips(percent, view) + lzw_strips(view.array("binarized_segmentation").astype(np.uint8), view)
    others = sum(size for path, size in artifacts.items() if not path.endswith((".tif", ".json")))
    return rasters + others


# --- lazy input -----------------------------------------------------------------------------------


def variable_of(path: str) -> str | None:
    """The variable a request's path belongs to (``.../tile.zarr/<variable>/...``), if any."""
    match = re.search(rf"{re.escape(DEBUG_STORE)}/([^/]+)/", path)
    return match.group(1) if match else None


def lazy_input(
    tile_url: str, options: dict[str, Any], proxy: ProxyClient, local_root: Path, repeat: int
) -> tuple[Measurement, Measurement, dict[str, Any]]:
    """Export from the S3 debug store (lazy input) and read its needed variables' bytes alone."""
    out = str(local_root / "from-s3")

    def run() -> int:
        with open_tile(tile_url, storage_options=options) as tile:
            return export_tile(tile, out, metadata={"tile_id": "lazy"}).total_size

    lazy = measure("s3 input @proxy", "export from S3 input", run, repeat, proxy)
    log = proxy.log()  # of the last repeat
    gets = Counter(v for r in log if r.method == "GET" and (v := variable_of(r.path)) is not None)
    needed = sorted(gets)
    fs = s3fs.S3FileSystem(**{"endpoint_url": options["endpoint_url"], "key": "bench", "secret": "bench"})
    root = tile_url.removeprefix("s3://")
    objects = {
        v: [p for p in fs.find(f"{root}/{v}") if "/c/" in p or p.rsplit("/", 1)[-1][0].isdigit()] for v in needed
    }

    def read_alone() -> int:
        fs.invalidate_cache()
        paths = [p for paths in objects.values() for p in paths]
        return sum(len(b) for b in fs.cat(paths).values())

    read = measure("s3 input @proxy", "read needed bytes alone", read_alone, repeat, proxy)
    chunks = {v: len(p) for v, p in objects.items()}
    detail = {
        "variables_read": needed,
        "gets_per_variable": dict(gets),
        "chunks_per_variable": chunks,
        "reads_per_chunk": {v: round(gets[v] / max(chunks[v], 1), 2) for v in needed},
        "bytes_needed": read.bytes,
        "read_mb_per_s": round(read.bytes / 1e6 / read.wall, 1),
    }
    return lazy, read, detail


def remove(out: str, options: dict[str, Any] | None) -> None:
    """Delete an export (a local folder or an S3 prefix)."""
    if options is None:
        shutil.rmtree(out, ignore_errors=True)
        return
    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    if fs.exists(out):
        fs.rm(out, recursive=True)


def put_debug_store(tile: xr.Dataset, url: str, options: dict[str, Any]) -> None:
    """The tile in the debug store's layout on S3 (written by the export itself)."""
    export_tile(tile, url, bands=["metadata"], debug=True, storage_options=options)


# --- one size -------------------------------------------------------------------------------------


def run_size(args: argparse.Namespace, size: int, endpoint: str, stack: ExitStack) -> dict[str, Any]:
    load_start = load()
    t0 = time.perf_counter()
    tile = make_synthetic_tile(size, seed=0)
    synthetic_s = time.perf_counter() - t0
    view = TileView(tile)
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    local_root = Path(tempfile.mkdtemp(prefix="darts-bench-"))
    shm_root = Path(tempfile.mkdtemp(prefix="darts-bench-", dir="/dev/shm")) if Path("/dev/shm").is_dir() else None
    results: list[Measurement] = []
    repeat = args.repeat
    proxies = {
        lat: stack.enter_context(shaping_proxy(endpoint, latency_ms=lat, bandwidth_mb=args.bandwidth_mb))
        for lat in [0.0, *args.latencies]
    }
    lazy_detail: dict[str, Any] = {}
    try:
        percent = probabilities_to_percent(view.array("probabilities"))  # type: ignore[arg-type]
        mask = view.array("binarized_segmentation").astype(np.uint8)

        def gdal_only() -> int:
            return floor_encode(view, percent, mask)

        results.append(measure("-", "floor (2 COGs)", gdal_only, repeat))
        targets: list[tuple[str, str, dict[str, Any] | None, ProxyClient | None]] = [
            ("local", str(local_root / "tile"), None, None),
        ]
        if shm_root is not None:  # no fsync cost: the local target's pure compute
            targets.append(("local tmpfs", str(shm_root / "tile"), None, None))
        targets.append(("s3", f"s3://{bucket}/plain", s3_options(endpoint), None))
        for lat, shaped in proxies.items():
            targets.append((f"s3 {lat:g} ms", f"s3://{bucket}/lat{lat:g}", s3_options(shaped.url), shaped))
        artifacts: dict[str, int] = {}

        def exporter(out: str, opts: dict[str, Any] | None, debug: bool, name: str) -> Callable[[], int]:
            def run() -> int:
                manifest = export_tile(
                    tile, out, metadata={"tile_id": f"bench-{size}"}, debug=debug, storage_options=opts
                )
                if name == "local" and not debug:
                    artifacts.update({a.path: a.size for a in manifest.artifacts})
                return manifest.total_size

            return run

        # The default exports take turns (the ratios between targets are what the goals are about).
        specs = [_Spec(name, "default", exporter(out, opts, False, name), proxy) for name, out, opts, proxy in targets]
        rows = {(m.target, m.what): m for m in measure_round_robin(specs, repeat)}
        for name, out, opts, proxy in targets:
            if not args.no_debug:
                run = exporter(out, opts, True, name)
                rows[(name, "default + debug")] = measure(name, "default + debug", run, args.debug_repeat, proxy)
            remove(out, opts)  # a full tile's debug store is GBs: the S3 server holds it in memory
        results += [
            rows[(name, what)]
            for name, *_ in targets
            for what in ("default", "default + debug")
            if (name, what) in rows
        ]
        if args.products:
            for band in DEFAULT_BANDS:

                def alone(band: str = band) -> int:
                    out = str(local_root / f"only-{band}")
                    return export_tile(tile, out, bands=[band], metadata={"tile_id": "p"}).total_size

                results.append(measure("local", f"only {band}", alone, repeat))
        lat = args.latencies[0] if args.latencies else 0.0
        input_proxy = proxies[lat]
        input_url = f"s3://{bucket}/input/{DEBUG_STORE}"
        put_debug_store(tile, f"s3://{bucket}/input", s3_options(endpoint))
        lazy, read, lazy_detail = lazy_input(input_url, s3_options(input_proxy.url), input_proxy, local_root, repeat)
        lazy.target = read.target = f"s3 input {lat:g} ms"
        results += [lazy, read]
        original = original_bytes(view, artifacts)
    finally:
        shutil.rmtree(local_root, ignore_errors=True)
        if shm_root is not None:
            shutil.rmtree(shm_root, ignore_errors=True)
    by = {(m.target, m.what): m for m in results}
    floor = by[("-", "floor (2 COGs)")]
    local = by[("local", "default")]
    ratios: dict[str, float] = {
        "local_over_floor": local.wall / floor.wall,
        "cpu_over_floor_cpu": local.cpu / floor.cpu,
        "peak_extra_gib": local.peak_mib / 1024,
        "bytes_over_original": local.bytes / original,
        "s3_over_local": by[("s3", "default")].wall / local.wall,
        "lazy_over_memory_plus_read": lazy.wall / (local.wall + read.wall),
    }
    tmpfs = by.get(("local tmpfs", "default"))
    for lat in args.latencies:
        ratios[f"s3_{lat:g}ms_over_local"] = by[(f"s3 {lat:g} ms", "default")].wall / local.wall
        if tmpfs is not None:
            ratios[f"s3_{lat:g}ms_over_local_tmpfs"] = by[(f"s3 {lat:g} ms", "default")].wall / tmpfs.wall
        if not args.no_debug:
            local_debug = by[("local", "default + debug")]
            remote_debug = by[(f"s3 {lat:g} ms", "default + debug")]
            ratios[f"s3_{lat:g}ms_debug_over_local_debug"] = remote_debug.wall / local_debug.wall
    return {
        "size": size,
        "repeat": repeat,
        "debug_repeat": args.debug_repeat,
        "bandwidth_mb_per_connection": args.bandwidth_mb,
        "load_average": [load_start, load()],
        "cpus": os.cpu_count(),
        "synthetic_tile_s": round(synthetic_s, 3),
        "original_bytes": original,
        "measurements": [asdict(m) for m in results],
        "lazy_input": lazy_detail,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "goals": GOALS,
    }


# --- cold start -----------------------------------------------------------------------------------


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=600)
    return time.perf_counter() - t0


def cold_start(endpoint: str, repeat: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    python = sys.executable
    load_start = load()
    baseline = statistics.median(_wall([python, "-c", "pass"], env) for _ in range(repeat))
    imports = statistics.median(_wall([python, "-c", "import darts_export"], env) for _ in range(repeat))
    help_cmd = [python, "-c", "import sys; from darts_export.cli import main; sys.argv[1:] = ['--help']; main()"]
    help_s = statistics.median(_wall(help_cmd, env) for _ in range(repeat))
    self_reported = []
    for _ in range(repeat):
        done = subprocess.run(
            [python, "-X", "importtime", "-c", "import darts_export"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        last = [line for line in done.stderr.splitlines() if line.rstrip().endswith("| darts_export")][-1]
        self_reported.append(int(last.split("|")[1]) / 1e6)
    bucket = f"cold-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    source = f"s3://{bucket}/in/T1024/{DEBUG_STORE}"
    put_debug_store(make_synthetic_tile(1024, seed=0), f"s3://{bucket}/in/T1024", s3_options(endpoint))
    handler_env = {**env, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    hidden = not_in_a_runtime_install()
    variants = {"": handler_env, "runtime_": {**handler_env, "DARTS_COLD_HIDE": ",".join(hidden)}}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for i in range(repeat):
        for name, variant_env in variants.items():  # alternated, so both see the same load
            done = subprocess.run(
                [python, str(BENCH / "_cold.py"), source, f"s3://{bucket}/out/{name}{i}"],
                capture_output=True,
                text=True,
                env=variant_env,
                check=True,
                timeout=600,
            )
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    result: dict[str, Any] = {
        "repeat": repeat,
        "load_average": [load_start, load()],
        "python_pass_s": round(baseline, 3),
        "import_wall_s": round(imports, 3),
        "import_s": round(statistics.median(self_reported), 3),
        "help_s": round(help_s, 3),
        "hidden_in_runtime_install": hidden,
    }
    for name, measured in runs.items():
        for key in ("import_s", "first_s", "warm_s", "import_cpu_s", "first_cpu_s", "warm_cpu_s"):
            result[f"handler_{name}{key}"] = round(statistics.median(r[key] for r in measured), 3)
        result[f"{name}cold_over_warm"] = round(result[f"handler_{name}first_s"] / result[f"handler_{name}warm_s"], 2)
        cpu_ratio = result[f"handler_{name}first_cpu_s"] / result[f"handler_{name}warm_cpu_s"]
        result[f"{name}cold_over_warm_cpu"] = round(cpu_ratio, 2)
    result["goals"] = {k: GOALS[k] for k in ("import_s", "help_s", "cold_over_warm")}
    return result


def not_in_a_runtime_install() -> list[str]:
    """Top-level modules installed here that a runtime install lacks (the Lambda image: core dependencies only).

    Libraries import some packages whenever they are installed (xarray imports dask.array, dask
    imports scipy.sparse, aiobotocore imports httpx): this environment also holds the test and
    engine extras. boto3 and s3transfer stay: the Lambda Python base image provides them.
    """
    import importlib.metadata
    import tomllib

    from packaging.requirements import Requirement

    def distribution(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    dependencies = tomllib.loads((BENCH.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    needed, pending = {"darts-export", "boto3", "s3transfer"}, [Requirement(d) for d in dependencies]
    while pending:
        requirement = pending.pop()
        name = distribution(requirement.name)
        if name in needed or (requirement.marker is not None and not requirement.marker.evaluate({"extra": ""})):
            continue
        needed.add(name)
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            pending += [Requirement(r) for r in importlib.metadata.requires(requirement.name) or []]
    needed_modules: set[str] = set()
    hidden: set[str] = set()
    for dist in importlib.metadata.distributions():
        files = {str(f).split("/")[0].removesuffix(".py") for f in dist.files or []}
        modules = set((dist.read_text("top_level.txt") or "").split()) or files
        (needed_modules if distribution(dist.metadata["Name"]) in needed else hidden).update(modules)
    return sorted(m for m in hidden - needed_modules if m.isidentifier() and not m.startswith("_"))


# --- reporting ------------------------------------------------------------------------------------


def verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "NOT met"


def measurement_rows(measurements: list[dict[str, Any]]) -> list[str]:
    """The markdown table of measurements (as stored in the JSON results), header included."""
    rows = [
        "| target | what | wall s | CPU s | peak+ MiB | MB | requests |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in measurements:
        rows.append(
            f"| {m['target']} | {m['what']} | {m['wall']:.2f} | {m['cpu']:.2f} | {m['peak_mib']:.0f} | "
            f"{m['bytes'] / 1e6:.2f} | {m['requests'] or ''} |"
        )
    return rows


def size_table(result: dict[str, Any]) -> str:
    size = result["size"]
    lines = [
        f"## {size}×{size} px",
        "",
        f"Median of {result['repeat']} (debug-store rows: {result['debug_repeat']}); load average "
        f"{result['load_average'][0]} → {result['load_average'][1]} on {result['cpus']} CPUs; "
        f"synthetic tile made in {result['synthetic_tile_s']} s; proxy cap "
        f"{result['bandwidth_mb_per_connection']:g} MB/s per connection.",
        "",
        *measurement_rows(result["measurements"]),
    ]
    lines += [
        "",
        f"Original's bytes for this tile: {result['original_bytes'] / 1e6:.2f} MB.",
        "",
        "| ratio | value | goal | |",
        "| --- | ---: | ---: | --- |",
    ]
    for key, value in result["ratios"].items():
        goal = GOALS.get(key)
        lines.append(
            f"| {key} | {value:.3f} | {goal if goal is not None else ''} | "
            f"{verdict(value, goal) if goal is not None else ''} |"
        )
    lazy = result["lazy_input"]
    if lazy:
        lines += [
            "",
            f"Lazy input: variables read {', '.join(lazy['variables_read'])}; GETs per chunk "
            f"{lazy['reads_per_chunk']}; {lazy['bytes_needed'] / 1e6:.1f} MB needed, read alone at "
            f"{lazy['read_mb_per_s']} MB/s.",
        ]
    return "\n".join(lines) + "\n"


def cold_table(cold: dict[str, Any]) -> str:
    rows = [
        ("import darts_export (-X importtime)", cold["import_s"], GOALS["import_s"]),
        ("python -c 'import darts_export' (wall)", cold["import_wall_s"], None),
        ("python -c pass (wall)", cold["python_pass_s"], None),
        ("darts-export --help (wall)", cold["help_s"], GOALS["help_s"]),
        ("handler: import", cold["handler_import_s"], None),
        ("handler: first invocation, 1024², import included", cold["handler_first_s"], None),
        ("handler: warm invocation, 1024²", cold["handler_warm_s"], None),
        ("handler: first / warm", cold["cold_over_warm"], GOALS["cold_over_warm"]),
        ("handler: first / warm, CPU seconds", cold["cold_over_warm_cpu"], GOALS["cold_over_warm"]),
        ("runtime install: first invocation, import included", cold["handler_runtime_first_s"], None),
        ("runtime install: warm invocation", cold["handler_runtime_warm_s"], None),
        ("runtime install: first / warm", cold["runtime_cold_over_warm"], GOALS["cold_over_warm"]),
        ("runtime install: first / warm, CPU seconds", cold["runtime_cold_over_warm_cpu"], GOALS["cold_over_warm"]),
    ]
    lines = [
        "## Cold start",
        "",
        f"Median of {cold['repeat']}; load average {cold['load_average'][0]} → {cold['load_average'][1]}.",
        "",
        "| what | s | goal | |",
        "| --- | ---: | ---: | --- |",
    ]
    for what, value, goal in rows:
        lines.append(
            f"| {what} | {value} | {goal if goal is not None else ''} | "
            f"{verdict(value, goal) if goal is not None else ''} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="folder for the results")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 10980])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--debug-repeat", type=int, default=1, help="repeats of the debug-store exports")
    parser.add_argument("--latencies", type=float, nargs="*", default=[20.0, 50.0], help="ms added per request")
    parser.add_argument("--bandwidth-mb", type=float, default=100.0, help="MB/s per connection at the proxy")
    parser.add_argument("--no-debug", action="store_true", help="skip the debug-store exports")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-start measurements")
    parser.add_argument("--products", action="store_true", help="also export each default product alone")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with moto_server() as endpoint:
        if not args.no_cold:
            cold = cold_start(endpoint, args.repeat)
            (args.out / "cold-start.json").write_text(json.dumps(cold, indent=2) + "\n")
            (args.out / "cold-start.md").write_text(cold_table(cold))
            print(cold_table(cold))
        for size in args.sizes:
            with ExitStack() as stack:
                result = run_size(args, size, endpoint, stack)
            (args.out / f"bench-{size}.json").write_text(json.dumps(result, indent=2) + "\n")
            (args.out / f"bench-{size}.md").write_text(size_table(result))
            print(size_table(result))


if __name__ == "__main__":
    main()

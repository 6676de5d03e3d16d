"""The engines that run a batch's tiles: a local process pool, Dask ``distributed`` and Ray Data.

Each engine is a context manager: entering starts (or connects to) its workers, :meth:`run` ships
every :class:`~darts_export.batch.worker.TileTask` to them and reports exactly one
:class:`~darts_export.batch.worker.TileResult` per task, leaving starts the clean-up. Distribution,
placement and re-running a task whose worker died are the engine's own; a task the engine gives up
on is reported ``failed``, never lost.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from darts_export.batch.worker import TileResult, TileTask, failed_result, run_tile
from darts_export.errors import EngineUnavailableError, require_extra

__all__ = [
    "FULL_TILE_BYTES",
    "DaskEngine",
    "Engine",
    "EngineName",
    "LocalEngine",
    "RayEngine",
    "available_memory",
    "fitting_workers",
    "make_engine",
    "require_engine",
]

logger = logging.getLogger(__name__)

EngineName = Literal["local", "dask", "ray"]
OnResult = Callable[[TileResult], None]

FULL_TILE_BYTES = int(4.5 * 2**30)
"""Peak memory of one export of a full 10980² Sentinel-2 tile with every default product."""

EXPORT_RESOURCE = "export"
"""The Dask worker resource a task asks one unit of, when the workers declare it (``--resources export=1``)."""


class Engine(Protocol):
    """What :func:`darts_export.batch.export_many` needs of an engine."""

    name: EngineName
    workers: int
    startup_seconds: float

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def run(self, tasks: Sequence[TileTask], on_result: OnResult) -> None:
        """Run every task, calling ``on_result`` (in this thread) once per task as each finishes."""


def require_engine(name: EngineName) -> None:
    """Raise :class:`~darts_export.errors.MissingExtraError` unless the engine's packages are installed."""
    if name == "dask":
        require_extra("distributed", extra="dask", feature="The dask engine")
    elif name == "ray":
        require_extra("ray.data", extra="ray", feature="The ray engine")


def available_memory() -> int:
    """Bytes of memory available to new processes (psutil when installed, else the OS's free pages)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def fitting_workers(requested: int | None, memory_per_tile: int, tiles: int | None = None) -> int:
    """How many exports may run at once here: at most one per core and as many as fit in memory."""
    fit = max(1, available_memory() // max(1, memory_per_tile))
    wanted = requested if requested is not None else _cores()
    if wanted > fit:
        logger.warning(
            "%d workers asked for, but only %d exports of %.1f GiB fit in the available memory; starting %d",
            wanted,
            fit,
            memory_per_tile / 2**30,
            fit,
        )
    count = min(wanted, fit)
    return max(1, min(count, tiles) if tiles else count)


def _warm() -> int:
    """Import what an export needs, so that start-up is paid before the first tile; return the pid."""
    import darts_export.export
    import darts_export.inputs  # noqa: F401

    return os.getpid()


# --- local ----------------------------------------------------------------------------------------


class LocalEngine:
    """A pool of worker processes on this machine (``forkserver``: no fork of a threaded parent)."""

    name: EngineName = "local"

    def __init__(self, workers: int) -> None:
        """Start ``workers`` processes when entered."""
        self.workers = workers
        self.startup_seconds = 0.0
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Self:
        started = time.perf_counter()
        method = "forkserver" if sys.platform.startswith("linux") else "spawn"
        context = multiprocessing.get_context(method)
        if method == "forkserver":  # import the export stack once, in the server every worker forks from
            context.set_forkserver_preload(["darts_export.batch.worker", "darts_export.export", "darts_export.inputs"])
        self._pool = ProcessPoolExecutor(self.workers, mp_context=context)
        pids = {f.result() for f in [self._pool.submit(_warm) for _ in range(self.workers)]}
        self.startup_seconds = time.perf_counter() - started
        logger.info("local engine: %d worker processes %s in %.2f s", self.workers, sorted(pids), self.startup_seconds)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def run(self, tasks: Sequence[TileTask], on_result: OnResult) -> None:
        """Submit every task to the pool; a pool broken by a dying worker fails the tasks it still held."""
        if self._pool is None:
            raise RuntimeError("enter the engine (with LocalEngine(...) as engine) before run()")
        futures: dict[Future[TileResult], TileTask] = {self._pool.submit(run_tile, t): t for t in tasks}
        for future in as_completed(futures):
            try:
                result = future.result()
            except BrokenProcessPool as exc:
                result = failed_result(
                    futures[future],
                    EngineUnavailableError(f"a worker process died (killed, or out of memory): {exc}"),
                )
            on_result(result)


# --- dask -----------------------------------------------------------------------------------------


class DaskEngine:
    """A Dask ``distributed`` cluster: the one at ``scheduler`` (``tcp://…``) or a ``LocalCluster``.

    Tasks ask for one unit of the workers' ``export`` resource when they declare it, so a worker with
    many threads still runs one export at a time per unit; the scheduler re-runs a task whose worker
    died, up to its ``allowed-failures`` (``engine_retries`` for a cluster started here).
    """

    name: EngineName = "dask"

    def __init__(self, *, scheduler: str | None, workers: int, engine_retries: int) -> None:
        """Connect to ``scheduler`` (or start ``workers`` local worker processes) when entered."""
        self.scheduler = scheduler
        self.workers = workers
        self.engine_retries = engine_retries
        self.startup_seconds = 0.0
        self._client: Any = None
        self._cluster: Any = None

    def __enter__(self) -> Self:
        require_engine("dask")
        import dask
        from distributed import Client, LocalCluster

        started = time.perf_counter()
        try:
            if self.scheduler:
                self._client = Client(self.scheduler, timeout="30s")
            else:
                with dask.config.set({"distributed.scheduler.allowed-failures": self.engine_retries}):
                    self._cluster = LocalCluster(
                        n_workers=self.workers,
                        threads_per_worker=1,
                        processes=True,
                        resources={EXPORT_RESOURCE: 1},
                        dashboard_address=":0",  # a free port (logged below); 8787 may be taken
                    )
                self._client = Client(self._cluster)
            self._client.wait_for_workers(1, timeout=60)
        except (OSError, TimeoutError) as exc:
            self.__exit__(None, None, None)
            raise EngineUnavailableError(
                f"Cannot reach the Dask scheduler {self.scheduler or '(local cluster)'}: {exc}. "
                "Check the address (tcp://host:8786) and that workers are running."
            ) from exc
        pids = self._client.run(_warm)
        self.workers = len(pids)
        self.startup_seconds = time.perf_counter() - started
        logger.info(
            "dask engine: %d workers at %s in %.2f s; dashboard %s",
            self.workers,
            self._client.scheduler.address,
            self.startup_seconds,
            self._client.dashboard_link,
        )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def _resources(self) -> dict[str, float] | None:
        workers = self._client.scheduler_info(n_workers=-1)["workers"].values()
        if all(EXPORT_RESOURCE in (w.get("resources") or {}) for w in workers):
            return {EXPORT_RESOURCE: 1}
        logger.warning(
            "the Dask workers declare no %r resource; each runs as many exports at once as it has threads "
            "(start them with --resources %s=1 per ~%.1f GiB of memory)",
            EXPORT_RESOURCE,
            EXPORT_RESOURCE,
            FULL_TILE_BYTES / 2**30,
        )
        return None

    def run(self, tasks: Sequence[TileTask], on_result: OnResult) -> None:
        """Submit every task; a task the scheduler gave up on (``KilledWorker``) is reported failed."""
        from distributed import as_completed as dask_completed

        if self._client is None:
            raise RuntimeError("enter the engine (with DaskEngine(...) as engine) before run()")
        resources = self._resources()
        batch = uuid.uuid4().hex[:8]
        futures = {
            self._client.submit(run_tile, task, key=f"darts-export-{batch}-{i}", pure=False, resources=resources): task
            for i, task in enumerate(tasks)
        }
        for future in dask_completed(futures):
            try:
                result = future.result()
            except Exception as exc:  # KilledWorker, a lost scheduler: the tile is recorded as failed
                result = failed_result(futures[future], exc)
            future.release()
            on_result(result)


# --- ray ------------------------------------------------------------------------------------------


def _ray_export(row: dict[str, Any]) -> dict[str, Any]:
    # Rows hold pickled bytes: Arrow stores them as a binary column, with no conversion attempt per row.
    result = run_tile(pickle.loads(row["task"]))  # noqa: S301 - bytes this batch pickled itself
    return {"index": row["index"], "result": pickle.dumps(result)}


class RayEngine:
    """Ray Data over a Ray cluster: ``from_items(tasks).map(export, num_cpus=1)``, as the DARTS pipeline runs.

    Uses the runtime already initialised in this process, else ``ray.init(address)`` (``auto``,
    ``ray://head:10001``) or a local runtime with ``workers`` CPUs. Ray Data re-runs a task whose
    worker died; if the dataset fails nevertheless, every tile without a result is recorded as failed.
    """

    name: EngineName = "ray"

    def __init__(self, *, address: str | None, workers: int) -> None:
        """Initialise (or reuse) a Ray runtime when entered."""
        self.address = address
        self.workers = workers
        self.startup_seconds = 0.0
        self._owned = False

    def __enter__(self) -> Self:
        require_engine("ray")
        import ray
        import ray.data

        started = time.perf_counter()
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.address,
                    num_cpus=None if self.address else self.workers,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                )
            except (ConnectionError, RuntimeError) as exc:
                raise EngineUnavailableError(
                    f"Cannot start or reach Ray at {self.address or '(local)'}: {exc}."
                ) from exc
            self._owned = True
        self.workers = int(ray.cluster_resources().get("CPU", self.workers))
        warm = ray.remote(num_cpus=1)(_warm)
        ray.get([warm.remote() for _ in range(self.workers)])
        self.startup_seconds = time.perf_counter() - started
        logger.info("ray engine: %d CPUs in %.2f s", self.workers, self.startup_seconds)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._owned:
            import ray

            ray.shutdown()
            self._owned = False

    def run(self, tasks: Sequence[TileTask], on_result: OnResult) -> None:
        """One Ray Data map over the tasks, one block (one task) per tile; results stream back as they finish."""
        import ray.data

        with warnings.catch_warnings():  # ray 2.60's DataContext() sets its own deprecated fields on creation
            warnings.simplefilter("ignore", DeprecationWarning)
            context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        items = [{"index": i, "task": pickle.dumps(task)} for i, task in enumerate(tasks)]
        # Ray Data re-runs a task whose worker died by its own policy (no limit), as in the DARTS pipeline.
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map(_ray_export, num_cpus=1)
        done: set[int] = set()
        try:
            for row in dataset.iter_rows():
                done.add(int(row["index"]))
                on_result(pickle.loads(row["result"]))  # noqa: S301 - pickled by _ray_export above
        except Exception as exc:  # the dataset failed: every tile without a result is recorded as failed
            logger.error("the Ray dataset failed: %s", exc)
            for i, task in enumerate(tasks):
                if i not in done:
                    on_result(failed_result(task, exc))


def make_engine(
    name: EngineName, *, scheduler: str | None, workers: int, engine_retries: int
) -> LocalEngine | DaskEngine | RayEngine:
    """The engine called ``name``, not yet started."""
    if name == "local":
        return LocalEngine(workers)
    if name == "dask":
        return DaskEngine(scheduler=scheduler, workers=workers, engine_retries=engine_retries)
    return RayEngine(address=scheduler, workers=workers)

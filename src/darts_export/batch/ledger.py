"""The run ledger: one row per tile and the totals, written under the output prefix.

``<prefix>/_runs/<run-id>.parquet`` has one row per tile (input, output, status, seconds, bytes,
artifacts, tile id, worker, attempts, error); ``<prefix>/_runs/<run-id>.json`` has the totals and the
same rows. Both go through :class:`~darts_export.storage.Storage`, like every other byte written.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from darts_export.batch.worker import TileResult
from darts_export.locations import RUNS_FOLDER
from darts_export.storage import Storage

__all__ = ["BatchSummary", "ledger_paths", "write_ledger"]


@dataclass(frozen=True, kw_only=True)
class BatchSummary:
    """The outcome of a batch: the totals, and every tile's :class:`TileResult`."""

    run_id: str
    output_prefix: str
    engine: str
    workers: int
    started: str
    seconds: float
    startup_seconds: float
    """Starting (or connecting to) the engine's workers."""
    run_seconds: float
    """From the first tile handed to the engine to the last result; start-up and shutdown excluded."""
    results: tuple[TileResult, ...]
    ledger: str | None = None
    collection: str | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def counts(self) -> dict[str, int]:
        """Tiles per status (``exported``, ``skipped``, ``failed``; all three always present)."""
        counted = Counter(r.status for r in self.results)
        return {status: counted.get(status, 0) for status in ("exported", "skipped", "failed")}

    @property
    def ok(self) -> bool:
        """Whether no tile failed."""
        return self.counts["failed"] == 0

    @property
    def failed(self) -> tuple[TileResult, ...]:
        """The tiles that failed."""
        return tuple(r for r in self.results if r.status == "failed")

    def totals(self) -> dict[str, Any]:
        """The JSON-ready totals, without the per-tile rows."""
        exported = [r for r in self.results if r.status == "exported"]
        data = {k: v for k, v in asdict(self).items() if k != "results"}
        data["warnings"] = list(self.warnings)
        return {
            **data,
            "tiles": len(self.results),
            **self.counts,
            "bytes_exported": sum(r.bytes for r in exported),
            "export_seconds": round(sum(r.seconds for r in exported), 3),
            "tiles_per_minute": round(60 * len(exported) / self.run_seconds, 2) if self.run_seconds > 0 else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """The totals plus one entry per tile under ``tiles_detail``."""
        return {**self.totals(), "tiles_detail": [r.to_dict() for r in self.results]}


def ledger_paths(run_id: str) -> tuple[str, str]:
    """The ledger's Parquet table and JSON summary, relative to the output prefix."""
    return f"{RUNS_FOLDER}/{run_id}.parquet", f"{RUNS_FOLDER}/{run_id}.json"


def _table_bytes(results: Sequence[TileResult]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("input", pa.string()),
            ("output", pa.string()),
            ("status", pa.string()),
            ("seconds", pa.float64()),
            ("bytes", pa.int64()),
            ("artifacts", pa.int32()),
            ("tile_id", pa.string()),
            ("worker", pa.string()),
            ("attempts", pa.int32()),
            ("error", pa.string()),
            ("error_type", pa.string()),
            ("worker_peak_bytes", pa.int64()),
        ]
    )
    table = pa.Table.from_pylist([r.to_dict() for r in results], schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def write_ledger(storage: Storage, summary: BatchSummary) -> str:
    """Write the ledger of ``summary`` under ``storage`` (the output prefix); return the JSON summary's URL."""
    table_path, json_path = ledger_paths(summary.run_id)
    storage.publish_bytes(table_path, _table_bytes(summary.results))
    document = json.dumps(summary.to_dict(), indent=2, allow_nan=False) + "\n"
    storage.publish_bytes(json_path, document.encode())
    return storage.uri(json_path)

"""Batch export on the real engines: a local process pool, a Dask LocalCluster and a local Ray runtime.

Inputs are Zarr stores on the moto S3 server, outputs go to the same server; worker processes reach
it through the endpoint and fake credentials in ``storage_options``. One cluster and one Ray
runtime serve each module (``xdist_group`` keeps their tests on one xdist worker).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batch_helpers import assert_consistent, corrupt_store, input_tile, put_inputs
from darts_export.batch import BatchSummary, TileResult, export_many
from darts_export.batch.plan import complete_outputs, outputs_for, resolve_inputs
from darts_export.batch.worker import TileTask, run_tile
from darts_export.cli.main import ExitCode, main
from darts_export.errors import BatchInputError, InvalidTileError
from darts_export.products import DEFAULT_BANDS, expected_paths
from darts_export.storage import Storage

BANDS = ("probabilities", "binarized")
"""The engine tests export two COGs per tile (plus item and manifest): the engines are under test, not the products."""


class KillFirstWorker:
    """Progress that SIGKILLs the worker process of the first finished tile (it is busy with the next one)."""

    def __init__(self) -> None:
        self.killed: int | None = None

    def planned(self, tiles: int, skipped: int, workers: int) -> None:
        pass

    def finished(self, result: TileResult) -> None:
        if self.killed is None and result.worker is not None:
            self.killed = int(result.worker.rsplit(":", 1)[1])
            os.kill(self.killed, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def ledger(summary: BatchSummary, options: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    fs, _ = fsspec.core.url_to_fs(summary.output_prefix, **options)
    assert summary.ledger is not None
    totals = json.loads(fs.cat_file(summary.ledger))
    with fs.open(summary.ledger.removesuffix(".json") + ".parquet", "rb") as fh:
        rows = pq.read_table(fh).to_pylist()
    return totals, rows


# --- planning: no engine --------------------------------------------------------------------------


def test_inputs_from_a_prefix_a_glob_and_a_list_file(tmp_path: Path) -> None:
    for name in ("a/T1/tile.zarr", "a/T2/tile.zarr", "b/T3/tile.zarr"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "zarr.json").write_text("{}")
    (tmp_path / "a/T4").mkdir()
    (tmp_path / "a/T4/tile.nc").write_bytes(b"")
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# tiles of 2024\n{tmp_path}/b/T3/tile.zarr\n\ns3://bucket/T9/tile.zarr  # remote\n")

    assert resolve_inputs(str(tmp_path / "a")) == tuple(
        str(tmp_path / n) for n in ("a/T1/tile.zarr", "a/T2/tile.zarr", "a/T4/tile.nc")
    )
    assert resolve_inputs(str(tmp_path / "*/T[13]/tile.zarr")) == (
        str(tmp_path / "a/T1/tile.zarr"),
        str(tmp_path / "b/T3/tile.zarr"),
    )
    assert resolve_inputs([listing, str(tmp_path / "b/T3/tile.zarr")]) == (
        str(tmp_path / "b/T3/tile.zarr"),
        "s3://bucket/T9/tile.zarr",
    )
    assert outputs_for(["s3://in/x/T06WVS/tile.zarr", "/data/T07/tile.nc"], "s3://out/p") == (
        "s3://out/p/T06WVS",
        "s3://out/p/T07",
    )


def test_bad_batches_fail_before_anything_is_written(tmp_path: Path) -> None:
    store = tmp_path / "in/T1/tile.zarr"
    store.mkdir(parents=True)
    out = tmp_path / "out"
    with pytest.raises(BatchInputError, match="does not exist"):
        export_many(tmp_path / "missing", out)
    with pytest.raises(BatchInputError, match="shared by two inputs"):
        export_many([str(store), str(tmp_path / "in/T1/other.zarr")], out)
    with pytest.raises(BatchInputError, match="No input stores"):
        export_many(str(tmp_path / "empty*"), out)
    with pytest.raises(InvalidTileError, match="subset"):
        export_many(str(store), out, ensemble_subsets=["../up"])
    with pytest.raises(BatchInputError, match="Unknown engine"):
        export_many(str(store), out, engine="spark")  # type: ignore[arg-type]
    assert not out.exists()


def test_an_export_is_complete_only_with_every_artifact_at_its_size(tmp_path: Path) -> None:
    store = tmp_path / "in/T1/tile.zarr"
    input_tile(1).to_zarr(store, mode="w", consolidated=False, zarr_format=3)
    prefix = str(tmp_path / "out")
    (output,) = outputs_for([str(store)], prefix)
    result = run_tile(TileTask(input=str(store), output=output, bands=DEFAULT_BANDS))
    assert result.status == "exported", result.error
    storage = Storage.open(prefix)
    required = expected_paths(DEFAULT_BANDS)
    assert set(complete_outputs(storage, prefix, [output], required)) == {output}
    assert complete_outputs(storage, prefix, [output], [*required, "dem.tif"]) == {}  # asks for more
    task = TileTask(input=str(store), output=output, bands=DEFAULT_BANDS, verify_existing=True)
    assert run_tile(task).status == "skipped"  # verify="full": re-hashed on the worker
    thumbnail = tmp_path / "out/T1/thumbnail.jpg"
    thumbnail.write_bytes(thumbnail.read_bytes()[:-1])
    assert complete_outputs(storage, prefix, [output], required) == {}
    assert run_tile(task).status == "exported"
    assert set(complete_outputs(storage, prefix, [output], required)) == {output}


def test_cli_batch_reports_failures_by_exit_code_and_resumes(tmp_path: Path) -> None:
    for i in range(2):
        input_tile(i).to_zarr(tmp_path / f"in/T{i:02d}/tile.zarr", mode="w", consolidated=False, zarr_format=3)
    corrupt_store(str(tmp_path / "in/T01/tile.zarr"), None)
    listing = tmp_path / "inputs.txt"
    listing.write_text("".join(f"{tmp_path}/in/T{i:02d}/tile.zarr\n" for i in range(2)))
    out = str(tmp_path / "out")
    args = ["--workers", "1", "-b", "probabilities"]
    runner = CliRunner()

    first = runner.invoke(main, ["batch", str(tmp_path / "in"), out, *args, "--json"])

    assert first.exit_code == ExitCode.FAILED, first.output
    data = json.loads(first.stdout)
    assert (data["tiles"], data["exported"], data["failed"]) == (2, 1, 1)
    assert data["tiles_detail"][1]["error_type"] == "InvalidInputError"
    input_tile(1).to_zarr(tmp_path / "in/T01/tile.zarr", mode="w", consolidated=False, zarr_format=3)
    second = runner.invoke(main, ["batch", str(listing), out, *args])
    assert second.exit_code == ExitCode.OK, second.output
    assert "2 tiles, 1 exported, 1 skipped, 0 failed" in second.stdout
    missing = runner.invoke(main, ["batch", str(tmp_path / "nowhere"), out])
    assert missing.exit_code == ExitCode.BAD_INPUT
    assert "does not exist" in missing.stderr


# --- engines --------------------------------------------------------------------------------------


def test_local_pool_exports_skips_and_records_a_corrupt_input(
    s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    options = s3_storage_options
    inputs = put_inputs(f"s3://{s3_bucket}/inputs", 4, options)
    corrupt_store(inputs[1], options)
    prefix = f"s3://{s3_bucket}/exports"

    first = export_many(f"s3://{s3_bucket}/inputs", prefix, workers=2, bands=BANDS, storage_options=options)

    assert first.counts == {"exported": 3, "skipped": 0, "failed": 1}
    assert not first.ok
    (failed,) = first.failed
    assert failed.input == inputs[1]
    assert failed.error_type == "InvalidInputError"
    assert failed.attempts == 1  # bad input is not retried
    assert_consistent(first, inputs, options)
    totals, rows = ledger(first, options)
    assert (totals["tiles"], totals["exported"], totals["failed"]) == (4, 3, 1)
    assert [r["status"] for r in rows] == ["exported", "failed", "exported", "exported"]
    assert all(r["worker"] and r["seconds"] > 0 for r in rows)

    put_inputs(f"s3://{s3_bucket}/inputs", 4, options, only=1)  # T01 repaired
    second = export_many(f"s3://{s3_bucket}/inputs", prefix, workers=2, bands=BANDS, storage_options=options)
    assert [r.status for r in second.results] == ["skipped", "exported", "skipped", "skipped"]
    assert_consistent(second, inputs, options)


@pytest.mark.xdist_group("dask")
def test_dask_exports_every_tile_then_skips_them_all(
    dask_scheduler: str, s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    options = s3_storage_options
    inputs = put_inputs(f"s3://{s3_bucket}/inputs", 4, options)
    prefix = f"s3://{s3_bucket}/exports"

    summary = export_many(
        f"s3://{s3_bucket}/inputs/*/tile.zarr",
        prefix,
        engine="dask",
        scheduler=dask_scheduler,
        bands=BANDS,
        storage_options=options,
    )

    assert summary.counts == {"exported": 4, "skipped": 0, "failed": 0}
    assert summary.workers == 2
    assert_consistent(summary, inputs, options)
    fs, _ = fsspec.core.url_to_fs(prefix, **options)
    collection = json.loads(fs.cat_file(f"{prefix}/collection.json"))
    assert sorted(link["href"] for link in collection["links"] if link["rel"] == "item") == [
        f"./T{i:02d}/item.json" for i in range(4)
    ]
    again = export_many(inputs, prefix, engine="dask", scheduler=dask_scheduler, bands=BANDS, storage_options=options)
    assert again.counts == {"exported": 0, "skipped": 4, "failed": 0}
    assert again.startup_seconds == 0  # nothing to run: the engine is not even started
    assert len(fs.ls(f"{prefix}/_runs")) == 4  # two ledgers, two files each


@pytest.mark.xdist_group("dask")
def test_dask_worker_killed_mid_batch_loses_no_tile(
    dask_scheduler: str, s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    options = s3_storage_options
    inputs = put_inputs(f"s3://{s3_bucket}/inputs", 5, options)
    corrupt_store(inputs[4], options)
    killer = KillFirstWorker()

    summary = export_many(
        inputs,
        f"s3://{s3_bucket}/exports",
        engine="dask",
        scheduler=dask_scheduler,
        bands=BANDS,
        storage_options=options,
        progress=killer,
    )

    assert killer.killed is not None
    assert not pid_alive(killer.killed)
    assert_consistent(summary, inputs, options)
    assert [r.input for r in summary.failed] == [inputs[4]]  # the tile on the killed worker was re-run


@pytest.mark.xdist_group("ray")
def test_ray_exports_skips_and_survives_a_killed_worker(
    ray_runtime: None, s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    options = s3_storage_options
    inputs = put_inputs(f"s3://{s3_bucket}/inputs", 5, options)
    corrupt_store(inputs[2], options)
    prefix = f"s3://{s3_bucket}/exports"
    killer = KillFirstWorker()

    summary = export_many(inputs, prefix, engine="ray", bands=BANDS, storage_options=options, progress=killer)

    assert killer.killed is not None
    assert_consistent(summary, inputs, options)
    assert [r.input for r in summary.failed] == [inputs[2]]
    again = export_many(inputs[:2], prefix, engine="ray", bands=BANDS, storage_options=options)
    assert again.counts == {"exported": 0, "skipped": 2, "failed": 0}

"""The ``darts-export`` command line: every command through click's runner, and the console script once."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr
from click.testing import CliRunner, Result

from darts_export.cli.context import Settings
from darts_export.cli.main import ExitCode, main
from darts_export.lease import LEASE_NAME
from darts_export.manifest import Manifest
from darts_export.products import Product
from darts_export.synthetic import make_synthetic_tile
from darts_export.verify import verify
from helpers import closed_port, expected_binarized, expected_percent, get, keys, put_zarr
from stac_helpers import OfflineValidator, validate_offline

SIZE = 64
BANDS = ("probabilities", "binarized", "polygonized", "metadata")
COMMANDS = ("export", "demo", "verify", "sync", "stac")


@pytest.fixture(scope="module")
def tile() -> xr.Dataset:
    return make_synthetic_tile(SIZE, seed=3)


@pytest.fixture
def tile_zarr(tile: xr.Dataset, tmp_path: Path) -> Path:
    path = tmp_path / "tile.zarr"
    put_zarr(tile, str(path), None)
    return path


def invoke(*args: str | os.PathLike[str] | int, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="darts-export", env=env, catch_exceptions=False)


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def read_band(path: Path) -> tuple[np.ndarray[Any, Any], rasterio.crs.CRS]:
    with rasterio.open(path) as ds:
        return ds.read(1), ds.crs


# --- help and usage -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_explains_every_command_and_the_exit_codes(command: str) -> None:
    result = invoke(*([command] if command else []), "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output
    assert "Exit codes:" in result.output
    assert "5  an export already exists" in result.output
    if command:
        assert "--json" in result.output
        assert "--quiet" in result.output
    else:
        assert all(f"  {c} " in result.output for c in COMMANDS)


def test_version_and_unknown_options() -> None:
    assert invoke("--version").output.startswith("darts-export, version ")
    result = invoke("demo", "--no-such-option", "out")
    assert result.exit_code == ExitCode.USAGE
    assert "No such option '--no-such-option'" in result.stderr
    assert result.stderr.startswith("Usage: darts-export demo [OPTIONS] OUT_DIR")


# --- export -------------------------------------------------------------------------------------


def test_export_from_zarr_with_options_writes_what_the_library_writes(
    tile: xr.Dataset, tile_zarr: Path, tmp_path: Path
) -> None:
    meta_file = tmp_path / "meta.json"
    meta_file.write_text(json.dumps({"tile_id": "from-file", "model": "v2"}))
    out = tmp_path / "out"
    result = invoke(
        "export", tile_zarr, out,
        *("-b", "probabilities", "-b", "binarized", "--band", "polygonized", "-b", "metadata"),
        *("--meta-file", meta_file, "--meta", "tile_id=T1", "--meta", "year=2024", "--meta", "note=a b"),
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = Manifest.from_dict(as_json(result))
    assert manifest.tile_id == "T1"
    assert {a.path for a in manifest.artifacts} >= {
        "probabilities.tif",
        "binarized.tif",
        "prediction_segments.parquet",
        "prediction_segments.gpkg",
        "darts_inference.json",
    }
    assert verify(out).ok
    meta = json.loads((out / "darts_inference.json").read_text())
    assert (meta["tile_id"], meta["year"], meta["model"], meta["note"]) == ("T1", 2024, "v2", "a b")
    percent, crs = read_band(out / "probabilities.tif")
    assert crs == tile.rio.crs
    np.testing.assert_array_equal(percent, expected_percent(tile["probabilities"].values))


def test_export_from_netcdf_and_again_from_its_debug_store(tile: xr.Dataset, tmp_path: Path) -> None:
    source = tmp_path / "tile.nc"
    tile.to_netcdf(source, engine="h5netcdf")
    first, second = tmp_path / "first", tmp_path / "second"

    result = invoke("export", source, first, "-b", "binarized", "-b", "probabilities", "--debug", "-q")
    assert result.exit_code == 0, result.output
    assert f"to {first.as_uri()}: " in result.stdout
    mask, crs = read_band(first / "binarized.tif")
    assert crs == tile.rio.crs
    np.testing.assert_array_equal(
        mask, expected_binarized(tile["binarized_segmentation"].values, tile["extent"].values)
    )

    result = invoke("export", first / "darts_inference_debug.zarr", second, "-b", "binarized", "-b", "probabilities")
    assert result.exit_code == 0, result.output
    for name in ("binarized.tif", "probabilities.tif"):
        np.testing.assert_array_equal(read_band(second / name)[0], read_band(first / name)[0])


@pytest.mark.s3
@pytest.mark.parametrize("how", ["environment", "options"])
def test_export_from_s3_to_s3(
    how: str,
    tile: xr.Dataset,
    moto_endpoint: str,
    s3_bucket: str,
    s3_storage_options: dict[str, Any],
    s3_client: Any,
    tmp_path: Path,
) -> None:
    source, out = f"s3://{s3_bucket}/inputs/tile.zarr", f"s3://{s3_bucket}/exports/T1"
    put_zarr(tile, source, s3_storage_options)
    if how == "environment":  # the standard AWS environment, as in a container or on a workstation
        env, options = {"AWS_ENDPOINT_URL": moto_endpoint}, []
    else:  # explicit options, from a file and a flag; INPUT shares them as it has OUT_DIR's protocol
        options_file = tmp_path / "s3.json"
        options_file.write_text(json.dumps({"client_kwargs": {"region_name": "us-east-1"}}))
        env = {}
        options = ["--storage-options-file", str(options_file), "--storage-option", f"endpoint_url={moto_endpoint}"]
    result = invoke("export", source, out, "-b", "probabilities", "-b", "extent", *options, "--json", env=env)
    assert result.exit_code == 0, result.output
    assert as_json(result)["location"] == out
    written = set(keys(s3_client, s3_bucket, "exports/T1/"))
    assert {
        "exports/T1/probabilities.tif",
        "exports/T1/prediction_extent.parquet",
        "exports/T1/manifest.json",
    } <= written
    local = tmp_path / "probabilities.tif"
    local.write_bytes(get(s3_client, s3_bucket, "exports/T1/probabilities.tif"))
    np.testing.assert_array_equal(read_band(local)[0], expected_percent(tile["probabilities"].values))


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing.zarr", "out"], ExitCode.BAD_INPUT, "'missing.zarr' does not exist"),
        (["{zarr}", "out", "-b", "nonsense"], ExitCode.BAD_INPUT, "nonsense"),
        (["{zarr}", "out", "-s", "../up"], ExitCode.BAD_INPUT, "../up"),
        (["{zarr}", "out", "--meta", "novalue"], ExitCode.USAGE, "expected KEY=VALUE"),
        (["{zarr}", "nope://bucket/x"], ExitCode.USAGE, "nope"),
        (["{netcdf}", "out"], ExitCode.BAD_INPUT, "as a NetCDF file"),
    ],
)
def test_export_errors_have_their_exit_codes(
    args: list[str], code: ExitCode, message: str, tile_zarr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.nc").write_bytes(b"not a netcdf file")
    args = [a.format(zarr=tile_zarr, netcdf="broken.nc") for a in args]
    result = invoke("export", *args)
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_held_lease_exits_in_progress_and_writes_nothing(tile_zarr: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    held = {"owner": "another-run", "host": "h", "pid": 1, "expires": time.time() + 60}
    (out / LEASE_NAME).write_text(json.dumps(held))
    result = invoke("export", tile_zarr, out, "-b", "binarized", "--json")
    assert result.exit_code == ExitCode.IN_PROGRESS, result.output
    assert int(ExitCode.IN_PROGRESS) == 7  # documented in the README
    assert as_json(result)["error"]["type"] == "ExportInProgressError"
    assert sorted(p.name for p in out.iterdir()) == [LEASE_NAME]  # nothing written, the lease untouched
    assert json.loads((out / LEASE_NAME).read_text()) == held


def test_no_overwrite_refuses_an_existing_export_with_json_error(tile_zarr: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert invoke("export", tile_zarr, out, "-b", "binarized", "-q").exit_code == 0
    before = (out / "manifest.json").read_bytes()
    result = invoke("export", tile_zarr, out, "-b", "binarized", "--no-overwrite", "--json")
    assert result.exit_code == ExitCode.EXISTS
    error = as_json(result)["error"]
    assert (error["type"], error["exit_code"]) == ("ArtifactExistsError", 5)
    assert "use --overwrite" in error["message"]  # the flag, not the keyword argument
    assert "overwrite=" not in result.stderr
    assert (out / "manifest.json").read_bytes() == before


# --- demo ---------------------------------------------------------------------------------------


def test_demo_exports_every_product_and_verifies(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = invoke("demo", out, "--size", SIZE, "--json")
    assert result.exit_code == 0, result.output
    manifest = Manifest.from_dict(as_json(result))
    assert manifest.tile_id == f"demo-{SIZE}-0"
    assert set(manifest.options["bands"]) == set(Product)
    assert {"thumbnail.jpg", "prediction_extent.parquet", "item.json", "dem.tif"} <= {
        a.path for a in manifest.artifacts
    }
    assert result.stderr == ""  # not a terminal: no progress bars, and nothing went wrong

    result = invoke("verify", out)
    assert result.exit_code == 0
    assert result.stdout == f"OK: {len(manifest.artifacts)} artifacts at {out.as_uri()} match the manifest.\n"
    item = pystac.Item.from_file(str(out / "item.json"))
    assert validate_offline(item, OfflineValidator())
    assert invoke("demo", out, "--size", "8").exit_code == ExitCode.USAGE


def test_demo_progress_bar_when_stderr_is_a_terminal_and_quiet_silences_it(tmp_path: Path) -> None:
    terminal = {"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1", "COLUMNS": "160"}
    result = invoke("demo", tmp_path / "a", "--size", "32", env=terminal)
    assert result.exit_code == 0, result.output
    assert "demo 32×32" in result.stderr
    assert "Making a synthetic 32×32 tile" in result.stderr  # the spinner while the tile is made
    assert "manifest.json written" in result.stderr  # the last step
    quiet = invoke("-q", "demo", tmp_path / "b", "--size", "32", env=terminal)
    assert quiet.exit_code == 0
    assert quiet.stderr == ""


def test_global_options_before_or_after_the_subcommand(exported: Path) -> None:
    after = invoke("verify", exported, "--json")
    before = invoke("--json", "verify", exported)
    assert (before.exit_code, before.stdout) == (0, after.stdout)
    assert as_json(before)["ok"] is True
    # Storage options from anywhere merge: files in order, then the KEY=VALUE pairs on top.
    merged = Settings(option_files=[{"a": 1, "b": 1}, {"b": 2}], option_pairs={"a": 3})
    assert merged.storage_options == {"a": 3, "b": 2}
    assert Settings().storage_options is None


def test_export_progress_names_what_is_in_flight() -> None:
    from rich.console import Console

    from darts_export.cli.context import Run
    from darts_export.cli.progress import ExportProgress

    run = Run(as_json=False, quiet=False, verbose=0, console=Console(file=io.StringIO()))
    progress = ExportProgress(run, "T1", total=3)
    progress("encoding", "probabilities.tif")
    progress("encoding", "prediction_segments.parquet")
    assert progress.describe() == "encoding probabilities.tif, encoding prediction_segments.parquet"
    progress("publishing", "probabilities.tif")
    assert progress.describe() == "encoding prediction_segments.parquet, uploading probabilities.tif"
    progress("published", "probabilities.tif")
    progress("publishing", "prediction_segments.parquet")
    progress("published", "prediction_segments.parquet")
    assert progress.describe() == ""
    progress("publishing", "item.json")
    progress("published", "item.json")
    assert progress.describe() == "writing manifest.json"  # every artifact stored: the manifest is next


def test_verbose_logs_one_line_per_tile_and_debug_per_artifact(tmp_path: Path) -> None:
    info = invoke("demo", tmp_path / "a", "--size", "32", "-v")
    assert "INFO darts_export.export: exported tile demo-32-0" in info.stderr
    assert "DEBUG" not in info.stderr
    debug = invoke("-v", "demo", tmp_path / "b", "--size", "32", "-v")
    assert "DEBUG" in debug.stderr


def test_demo_to_s3_through_the_aws_environment(moto_endpoint: str, s3_bucket: str, s3_client: Any) -> None:
    env = {"AWS_ENDPOINT_URL": moto_endpoint}
    url = f"s3://{s3_bucket}/darts/demo"
    result = invoke("demo", url, "--size", "32", env=env)
    assert result.exit_code == 0, result.output
    assert "darts/demo/manifest.json" in keys(s3_client, s3_bucket)
    # The endpoint as a global option before the command, instead of the environment.
    result = invoke("--storage-option", f"endpoint_url={moto_endpoint}", "verify", url, "--json")
    assert result.exit_code == 0, result.output
    report = as_json(result)
    assert (report["ok"], report["location"], report["tile_id"]) == (True, url, "demo-32-0")


# --- verify -------------------------------------------------------------------------------------


@pytest.fixture
def exported(tile_zarr: Path, tmp_path: Path) -> Path:
    out = tmp_path / "exported"
    assert invoke("export", tile_zarr, out, "-b", "probabilities", "-b", "binarized", "-b", "metadata").exit_code == 0
    return out


def test_verify_names_a_corrupted_and_a_missing_artifact(exported: Path) -> None:
    tif = exported / "binarized.tif"
    data = bytearray(tif.read_bytes())
    data[-1] ^= 0xFF
    tif.write_bytes(bytes(data))
    (exported / "darts_inference.json").unlink()

    result = invoke("verify", exported)
    assert result.exit_code == ExitCode.FAILED
    lines = result.stdout.splitlines()
    assert lines[0].startswith("binarized.tif: checksum (expected 1220")
    assert lines[1] == "darts_inference.json: missing (expected present, found absent)"
    assert lines[2] == f"FAILED: 2 problem(s) at {exported.as_uri()}."
    assert result.stderr == ""  # the problems are the output, not repeated as warnings

    report = as_json(invoke("verify", exported, "--json"))
    assert report["ok"] is False
    assert [(p["path"], p["reason"]) for p in report["problems"]] == [
        ("binarized.tif", "checksum"),
        ("darts_inference.json", "missing"),
    ]


def test_verify_without_manifest_fails(tmp_path: Path) -> None:
    result = invoke("verify", tmp_path)
    assert result.exit_code == ExitCode.FAILED
    assert "manifest.json: missing" in result.stdout


# --- fallback and sync --------------------------------------------------------------------------


@pytest.mark.s3
def test_export_falls_back_when_unreachable_then_sync_publishes(
    tile_zarr: Path, tmp_path: Path, moto_endpoint: str, s3_bucket: str, s3_client: Any
) -> None:
    fallback = tmp_path / "fallback"
    target = f"s3://{s3_bucket}/darts/T1"
    unreachable = [
        *("--storage-option", f"endpoint_url=http://127.0.0.1:{closed_port()}"),
        *("--storage-option", 'config_kwargs={"connect_timeout": 1, "retries": {"max_attempts": 1}}'),
    ]
    result = invoke("export", tile_zarr, target, "-b", "binarized", "-b", "metadata", "--fallback-dir", fallback,
                    "--meta", "tile_id=T1", *unreachable, "--json")  # fmt: skip
    assert result.exit_code == ExitCode.FELL_BACK, result.output
    manifest = Manifest.from_dict(as_json(result))
    local = fallback / "s3" / s3_bucket / "darts" / "T1"
    assert (manifest.fell_back, manifest.target, manifest.location) == (True, target, local.resolve().as_uri())
    assert f"darts-export sync {fallback}" in result.stderr
    assert keys(s3_client, s3_bucket) == []
    # Without --json, stdout says so too: where the export went and how to publish it.
    text = invoke("export", tile_zarr, target, "-b", "binarized", "-b", "metadata", "--fallback-dir", fallback,
                  "--meta", "tile_id=T1", *unreachable, "-q")  # fmt: skip
    assert text.exit_code == ExitCode.FELL_BACK, text.output
    assert text.stdout.startswith(
        f"Fell back: {target} was unreachable, so T1 was exported to {local.resolve().as_uri()}"
    )
    assert text.stdout.rstrip().endswith(f"darts-export sync {fallback}")
    assert "Exported" not in text.stdout

    # Still unreachable: nothing moves, exit code 4.
    result = invoke("sync", fallback, *unreachable)
    assert result.exit_code == ExitCode.STORAGE, result.output
    assert (local / "manifest.json").is_file()

    dry = invoke("sync", fallback, f"s3://{s3_bucket}", "--dry-run", "--json", env={"AWS_ENDPOINT_URL": moto_endpoint})
    assert dry.exit_code == 0, dry.output
    assert [r["status"] for r in as_json(dry)["results"]] == ["skipped"]

    result = invoke("sync", fallback, f"s3://{s3_bucket}", "--json", env={"AWS_ENDPOINT_URL": moto_endpoint})
    assert result.exit_code == 0, result.output
    report = as_json(result)
    assert [(r["status"], r["target"], r["artifacts"]) for r in report["results"]] == [
        ("synced", target, len(manifest.artifacts))
    ]
    assert not local.exists()
    assert set(keys(s3_client, s3_bucket, "darts/T1/")) == {
        f"darts/T1/{p}" for p in ("binarized.tif", "darts_inference.json", "item.json", "manifest.json")
    } | {f"darts/T1/{a.path}" for a in manifest.artifacts}
    verified = invoke("verify", target, env={"AWS_ENDPOINT_URL": moto_endpoint})
    assert verified.exit_code == 0, verified.output

    nothing = invoke("sync", fallback)
    assert (nothing.exit_code, nothing.stdout) == (0, "Nothing to sync.\n")


# --- stac ---------------------------------------------------------------------------------------


def test_stac_builds_the_collection_over_exports(tile: xr.Dataset, tile_zarr: Path, tmp_path: Path) -> None:
    root = tmp_path / "exports"
    for name in ("A", "B"):
        result = invoke("export", tile_zarr, root / name, "-b", "probabilities", "--meta", f"tile_id={name}", "-q")
        assert result.exit_code == 0, result.output

    dry = invoke("stac", root, "--dry-run", "--json", "--id", "darts-test")
    assert dry.exit_code == 0, dry.output
    assert as_json(dry)["id"] == "darts-test"
    assert not (root / "collection.json").exists()

    result = invoke("stac", root, "--id", "darts-test", "--title", "Test exports")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Wrote STAC collection 'darts-test' over {root}: 2 items.\n"
    collection = pystac.Collection.from_file(str(root / "collection.json"))
    assert (collection.id, collection.title) == ("darts-test", "Test exports")
    assert sorted(item.id for item in collection.get_items()) == ["A", "B"]
    assert validate_offline(collection, OfflineValidator())
    assert all(validate_offline(item, OfflineValidator()) for item in collection.get_items())

    empty = invoke("stac", tmp_path / "nothing-here")
    assert empty.exit_code == ExitCode.BAD_INPUT
    assert "item.json" in empty.stderr


def test_items_parquet_without_stac_geoparquet_fails_before_writing(
    tile_zarr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "exports"
    assert invoke("export", tile_zarr, root / "A", "-b", "probabilities", "-q").exit_code == 0
    before = sorted(root.rglob("*"))
    monkeypatch.setitem(sys.modules, "stac_geoparquet", None)  # how Python marks a module as not importable
    result = invoke("stac", root, "--items-parquet")
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    assert 'pip install "darts-export[parquet-catalog]"' in result.stderr
    assert "Traceback" not in result.output
    assert sorted(root.rglob("*")) == before  # no collection.json, no items.parquet


# --- the console script -------------------------------------------------------------------------


def test_console_script_runs_demo(tmp_path: Path) -> None:
    script = shutil.which("darts-export", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert script is not None, "the darts-export console script is not installed (pip install -e .)"
    out = tmp_path / "demo"
    run = subprocess.run(
        [script, "demo", str(out), "--size", "32", "--json"], capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr
    manifest = Manifest.from_dict(json.loads(run.stdout))
    assert all((out / a.path).exists() for a in manifest.artifacts)
    assert (out / "manifest.json").is_file()
    assert "Traceback" not in run.stderr
    assert "━" not in run.stderr  # stderr is a pipe: no progress bar

    failed = subprocess.run([script, "verify", str(tmp_path)], capture_output=True, text=True, timeout=120, check=False)
    assert failed.returncode == ExitCode.FAILED
    assert "manifest.json: missing" in failed.stdout

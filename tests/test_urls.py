"""URL hygiene: a mistyped URL or a scheme no filesystem handles is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr
from click.testing import CliRunner

from darts_export.cli.main import ExitCode, main
from darts_export.errors import InvalidInputError, TargetUnreachableError, UnsupportedTargetError
from darts_export.export import export_tile
from darts_export.inputs import open_tile
from darts_export.storage import Storage, url_problem
from helpers import closed_port

# (url, words the hint contains)
MISTYPED = [
    ("s3:/bucket/x", "did you mean s3://bucket/x"),
    ("s3:bucket/x", "did you mean s3://bucket/x"),
    ("S3://bucket/x", "did you mean s3://bucket/x"),
    ("memory:/x", "did you mean memory://x"),
    ("nope://bucket/x", "no fsspec filesystem handles nope://"),
    ("gs://bucket/x", "gcsfs"),  # known to fsspec, but its package is not installed here
]
FINE = ["out", "./out", "/tmp/out", "C:/data/out", "file:///tmp/out", "memory://x", "s3://bucket/x", "a:b"]


@pytest.mark.parametrize("url", FINE)
def test_ordinary_paths_and_urls_pass(url: str) -> None:
    assert url_problem(url) is None


@pytest.mark.parametrize(("url", "hint"), MISTYPED)
def test_mistyped_target_is_refused_before_writing(
    url: str, hint: str, small_tile: xr.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where `s3:/bucket/x` used to become a folder
    problem = url_problem(url)
    assert problem is not None
    assert hint in problem
    with pytest.raises(UnsupportedTargetError, match=hint):
        Storage.open(url)
    with pytest.raises(UnsupportedTargetError, match=hint):
        export_tile(small_tile, url, bands=["binarized"])
    with pytest.raises(InvalidInputError, match=hint):
        open_tile(url)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("url", "hint"), MISTYPED[:3])
def test_cli_refuses_a_mistyped_target_or_input_as_usage_error(
    url: str, hint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args in (["demo", url, "--size", "16"], ["export", url, "out"], ["verify", url], ["stac", url]):
        result = runner.invoke(main, args, prog_name="darts-export")
        assert result.exit_code == ExitCode.USAGE, (args, result.output)
        assert hint in result.stderr
        assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_unreachable_ftp_target_fails_cleanly_before_writing(
    small_tile: xr.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ftp:// has an fsspec filesystem (stdlib ftplib), which connects as soon as it is made.
    monkeypatch.chdir(tmp_path)
    url = f"ftp://127.0.0.1:{closed_port()}/exports/T1"
    assert url_problem(url) is None
    with pytest.raises(TargetUnreachableError, match="Cannot reach"):
        export_tile(small_tile, url, bands=["binarized"])
    result = CliRunner().invoke(main, ["demo", url, "--size", "16"], prog_name="darts-export")
    assert result.exit_code == ExitCode.STORAGE, result.output
    assert "Cannot reach" in result.stderr
    assert list(tmp_path.iterdir()) == []

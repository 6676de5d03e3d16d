"""The commit operation, tested against a fake storage sink: lease, old marker gone first, marker last, fail fast."""

from __future__ import annotations

import json
import time

import pytest
import xarray as xr

from darts_export import export_tile
from darts_export.errors import ArtifactExistsError, ExportInProgressError, StorageError
from darts_export.lease import LEASE_NAME
from darts_export.synthetic import make_synthetic_tile
from helpers import FakeSink

BANDS = ["probabilities", "binarized", "polygonized", "metadata"]


@pytest.fixture(scope="module")
def tile() -> xr.Dataset:
    return make_synthetic_tile(64, seed=3, with_inputs=False)


def test_lease_then_old_marker_gone_then_artifacts_then_marker_then_no_lease(tile: xr.Dataset) -> None:
    sink = FakeSink()
    sink.objects["manifest.json"] = b"{}"  # an older export
    export_tile(tile, sink, bands=BANDS, debug=True)
    ops = [c for c in sink.calls if c[0] in ("probe", "publish", "remove")]
    assert ops[0] == ("probe", "")
    assert ops[1] == ("publish", LEASE_NAME)
    assert ops[2] == ("remove", "manifest.json")
    assert ops[-2:] == [("publish", "manifest.json"), ("remove", LEASE_NAME)]
    published = sink.published()
    assert published.index("item.json") == len(published) - 2  # after every artifact, before the marker
    assert any(p.startswith("darts_inference_debug.zarr/") for p in published)
    manifest = json.loads(sink.objects["manifest.json"])
    assert [a["path"] for a in manifest["artifacts"]][-2:] == ["darts_inference_debug.zarr", "item.json"]
    assert LEASE_NAME not in sink.objects


def test_encoding_overlaps_the_preamble_but_no_upload_starts_before_the_old_marker_is_gone(tile: xr.Dataset) -> None:
    seen: dict[str, float] = {}

    def slow_removal(op: str, rel: str) -> Exception | None:
        if (op, rel) == ("remove", "manifest.json"):
            time.sleep(0.5)  # the old marker's removal takes long: the encoders run meanwhile
            seen["marker gone"] = time.monotonic()
        elif op == "publish" and rel != LEASE_NAME:
            seen.setdefault("first upload", time.monotonic())
        return None

    sink = FakeSink(slow_removal)
    sink.objects["manifest.json"] = b"{}"
    encoding: list[float] = []
    export_tile(tile, sink, bands=BANDS, progress=lambda event, _: encoding.append(time.monotonic()))
    assert min(encoding) < seen["marker gone"] < seen["first upload"]
    assert [c for c in sink.calls if c[0] != "read"][:3] == [
        ("probe", ""),
        ("publish", LEASE_NAME),
        ("remove", "manifest.json"),
    ]


def test_marker_that_cannot_be_removed_stops_the_export_before_any_artifact(tile: xr.Dataset) -> None:
    def fail(op: str, rel: str) -> Exception | None:
        return StorageError("injected: 1 object(s) still there") if (op, rel) == ("remove", "manifest.json") else None

    sink = FakeSink(fail)
    sink.objects["manifest.json"] = b"{}"
    with pytest.raises(StorageError, match="injected"):
        export_tile(tile, sink, bands=BANDS)
    assert sink.published() == [LEASE_NAME]
    assert set(sink.objects) == {"manifest.json"}  # the old export untouched, the lease dropped


@pytest.mark.parametrize("failing", ["binarized.tif", "darts_inference_debug.zarr/probabilities/zarr.json"])
def test_an_upload_failing_for_good_fails_the_export_and_commits_nothing(tile: xr.Dataset, failing: str) -> None:
    def fail(op: str, rel: str) -> Exception | None:
        return StorageError(f"injected: {rel}") if (op, rel) == ("publish", failing) else None

    sink = FakeSink(fail)
    with pytest.raises(StorageError, match="injected"):
        export_tile(tile, sink, bands=BANDS, debug=True)
    assert "manifest.json" not in sink.objects
    assert "item.json" not in sink.published()
    assert LEASE_NAME not in sink.objects


def test_queued_uploads_are_cancelled_when_one_fails() -> None:
    tile = make_synthetic_tile(64, seed=4)  # every input band: a debug store of ~30 objects

    def fail(op: str, rel: str) -> Exception | None:
        if op == "publish" and rel.startswith("darts_inference_debug.zarr/"):
            time.sleep(0.02)
            return StorageError("injected outage")
        return None

    sink = FakeSink(fail)
    with pytest.raises(StorageError, match="injected"):
        export_tile(tile, sink, bands=["binarized"], debug=True)
    store_attempts = [p for p in sink.published() if p.startswith("darts_inference_debug.zarr/")]
    assert 1 <= len(store_attempts) <= 8  # those in flight on the 8 upload threads; the queued rest cancelled


def test_without_overwrite_an_existing_export_is_refused_before_any_artifact(tile: xr.Dataset) -> None:
    sink = FakeSink()
    sink.objects["manifest.json"] = b"{}"
    with pytest.raises(ArtifactExistsError, match="overwrite=True"):
        export_tile(tile, sink, bands=BANDS, overwrite=False)
    assert sink.published() == [LEASE_NAME]
    assert sink.objects == {"manifest.json": b"{}"}


def test_a_live_lease_refuses_a_second_writer_and_an_expired_one_is_taken_over(tile: xr.Dataset) -> None:
    sink = FakeSink()
    held = {"owner": "other", "host": "h", "pid": 1, "expires": time.time() + 60}
    sink.objects[LEASE_NAME] = json.dumps(held).encode()
    with pytest.raises(ExportInProgressError, match="Another export is writing"):
        export_tile(tile, sink, bands=BANDS)
    assert sink.published() == [LEASE_NAME]  # the refused conditional create, nothing else
    assert json.loads(sink.objects[LEASE_NAME]) == held

    sink.objects[LEASE_NAME] = json.dumps({**held, "expires": time.time() - 1}).encode()
    export_tile(tile, sink, bands=BANDS)
    assert "manifest.json" in sink.objects
    assert LEASE_NAME not in sink.objects

"""One faulted export and the invariants it must keep; shared by tests/test_faults.py and bench/bench_faults.py.

The export is small (64² tile, one ensemble subset, metadata, debug store) so every request can
be enumerated. For one fault, :func:`run_case` checks what must hold whatever happens:

* the export ends **complete** (manifest present, ``verify`` passes, every requested product
  listed) or raises a ``StorageError``/``TargetUnreachableError`` (a **clean error**) and no new
  manifest exists (an older export's manifest may stay only if it was never touched and verifies);
* ``missing_outputs`` agrees with ``verify``;
* a rerun without faults completes after a failed export (after expiring the lease if the failed
  export could not remove it — then it is counted).

Anything else is a **false complete** (a manifest that does not hold) or a **bad error**.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

import xarray as xr

from darts_export import export_tile
from darts_export.errors import ExportInProgressError, StorageError
from darts_export.lease import LEASE_NAME
from darts_export.products import MANIFEST_NAME, expected_paths
from darts_export.synthetic import make_synthetic_tile
from darts_export.verify import missing_outputs, verify
from faultproxy import Fault, FaultProxy, Request, settled

BANDS = ("probabilities", "binarized", "metadata")
SUBSETS = ("a",)
STAGES = ("probe+lease", "old marker", "artifacts", "debug store", "item", "manifest")

Result = Literal["complete", "clean error", "false complete", "bad error"]


def fault_tile(size: int = 64) -> xr.Dataset:
    """The suite's tile: the three model outputs, and the same again as ensemble subset ``a``."""
    tile = make_synthetic_tile(size, seed=13, with_inputs=False)
    tile["probabilities-a"] = tile["probabilities"]
    tile["binarized_segmentation-a"] = tile["binarized_segmentation"]
    return tile


def stage_of(request: Request) -> str:
    """Which stage of the export a request belongs to."""
    key = request.key
    query = parse_qs(request.query, keep_blank_values=True)
    if key.endswith(LEASE_NAME):
        return "probe+lease"
    if "list-type" in query:
        listed = query.get("prefix", [""])[0]
        return "debug store" if ".zarr" in listed or "darts_inference_debug" in listed else "probe+lease"
    if "delete" in query or ".zarr" in key:
        return "debug store"
    if key.endswith(MANIFEST_NAME):
        return "manifest" if request.method == "PUT" else "old marker"
    if key.endswith("item.json"):
        return "item"
    return "artifacts"


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What one faulted export did."""

    kind: str
    index: int
    persistent: bool
    overwrite: bool
    stage: str
    injected: int
    result: Result
    error: str
    seconds: float
    dropped: int
    missing_agrees: bool
    rerun: Literal["complete", "complete after lease expiry", "failed", "not needed"]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def export(tile: xr.Dataset, url: str, options: dict[str, Any]) -> None:
    export_tile(tile, url, bands=BANDS, ensemble_subsets=SUBSETS, debug=True, storage_options=options)


def enumerate_requests(
    proxy: FaultProxy, tile: xr.Dataset, url: str, options: dict[str, Any]
) -> tuple[list[Request], list[Request]]:
    """The requests of a fresh export at ``url`` and of its overwrite, without faults."""
    proxy.reset()
    export(tile, url, options)
    fresh = list(proxy.log)
    proxy.reset()
    export(tile, url, options)
    overwrite = list(proxy.log)
    proxy.reset()
    return fresh, overwrite


def run_case(
    proxy: FaultProxy,
    s3_client: Any,
    tile: xr.Dataset,
    bucket: str,
    prefix: str,
    options: dict[str, Any],
    fault: Fault,
    *,
    overwrite: bool,
    rerun_complete: bool = False,
) -> Outcome:
    """Export once under ``fault`` (over an older export when ``overwrite``), check the invariants, rerun.

    The rerun is skipped after a complete export unless ``rerun_complete``: it would prove nothing new.
    """
    url = f"s3://{bucket}/{prefix}"
    if overwrite:
        proxy.reset()
        export(tile, url, options)
    old = _get(s3_client, bucket, f"{prefix}/{MANIFEST_NAME}")
    proxy.reset(fault)
    started = time.perf_counter()
    error = ""
    try:
        export(tile, url, options)
        raised: Exception | None = None
    except (StorageError, OSError, ValueError) as exc:
        raised = exc
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    faulted = [r for r in proxy.log if r.fault]
    proxy.reset()

    report = verify(url, storage_options=settled(options))
    manifest = _get(s3_client, bucket, f"{prefix}/{MANIFEST_NAME}")
    wanted = [p for p in expected_paths(BANDS, SUBSETS, debug=True) if p != MANIFEST_NAME]
    listed = {a.path for a in report.manifest.artifacts} if report.manifest is not None else set()
    result: Result
    dropped = 0
    if raised is None:
        dropped = len([p for p in wanted if p not in listed])
        result = "complete" if report.ok and dropped == 0 else "false complete"
    elif not isinstance(raised, StorageError) or isinstance(raised, ExportInProgressError):
        result = "bad error"
    elif manifest is None or (manifest == old and report.ok):
        result = "clean error"
    else:
        result = "false complete"
    agrees = (missing_outputs(url, BANDS, SUBSETS, debug=True, storage_options=settled(options)) == "none") == report.ok

    rerun: Literal["complete", "complete after lease expiry", "failed", "not needed"] = "failed"
    if result == "complete" and not rerun_complete:
        rerun = "not needed"
    for attempt in ("complete", "complete after lease expiry") if rerun == "failed" else ():
        try:
            export(tile, url, options)
        except ExportInProgressError:
            _expire_lease(s3_client, bucket, prefix)
            continue
        except StorageError:
            break
        rerun = attempt
        break
    if rerun in ("complete", "complete after lease expiry") and not verify(url, storage_options=settled(options)).ok:
        rerun = "failed"
    return Outcome(
        kind=fault.kind,
        index=fault.at if fault.at is not None else -1,
        persistent=fault.persistent,
        overwrite=overwrite,
        stage=stage_of(faulted[0]) if faulted else "none",
        injected=len(faulted),
        result=result,
        error=error[:300],
        seconds=round(seconds, 3),
        dropped=dropped,
        missing_agrees=agrees,
        rerun=rerun,
    )


def pick_indices(requests: list[Request], stages: tuple[str, ...] = STAGES) -> dict[str, int]:
    """One request index per stage: the middle request of that stage."""
    by_stage: dict[str, list[int]] = {}
    for request in requests:
        by_stage.setdefault(stage_of(request), []).append(request.index)
    return {stage: by_stage[stage][len(by_stage[stage]) // 2] for stage in stages if stage in by_stage}


def _get(s3_client: Any, bucket: str, key: str) -> bytes | None:
    try:
        return bytes(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3_client.exceptions.NoSuchKey:
        return None


def _expire_lease(s3_client: Any, bucket: str, prefix: str) -> None:
    """Stand in for two minutes passing: the failed export's lease, left behind, expires."""
    key = f"{prefix}/{LEASE_NAME}"
    record = json.loads(_get(s3_client, bucket, key) or b"{}")
    s3_client.put_object(Bucket=bucket, Key=key, Body=json.dumps({**record, "expires": 0}).encode())

"""Resource checks before an export: staging disk space (fatal when short) and memory (logged)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING

from darts_export.errors import InsufficientSpaceError
from darts_export.products import Kind, PlannedProduct

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["check_resources"]

logger = logging.getLogger(__name__)

MiB = 2**20
GPKG_BYTES_PER_PIXEL = 0.25
"""Staging bound per GeoPackage: a wide margin over the measured sizes, for busier real predictions
(bench/results/HISTORY.md)."""
GPKG_FIXED_BYTES = 1 * MiB
STAGING_MARGIN_BYTES = 64 * MiB
WORKING_BYTES_PER_PIXEL = 8
"""Peak memory of an export on top of the input arrays, with a margin (bench/results/bench-10980.md)."""


def check_resources(tile: xr.Dataset, planned: Sequence[PlannedProduct], *, memory_mb: int | None) -> None:
    """Fail before exporting if the staging disk is too small; log memory need against the configured size."""
    pixels = _pixels(tile)
    debug = any(p.kind == Kind.DEBUG_STORE for p in planned)
    names = set(tile.data_vars) if debug else {v for p in planned for v in (*p.required, *p.optional)}
    input_bytes = sum(int(tile[n].nbytes) for n in names if n in tile.data_vars)
    gpkgs = sum(1 for p in planned for o in p.outputs if o.path.endswith(".gpkg"))
    staging = gpkgs * (int(pixels * GPKG_BYTES_PER_PIXEL) + GPKG_FIXED_BYTES) + STAGING_MARGIN_BYTES
    if debug:
        staging += int(tile.nbytes)  # bound for a locally staged debug store
    tmp = tempfile.gettempdir()
    free = shutil.disk_usage(tmp).free
    if free < staging:
        raise InsufficientSpaceError(
            f"{tmp} has {free / MiB:.0f} MiB free but the export may stage up to {staging / MiB:.0f} MiB "
            f"({gpkgs} GeoPackage(s){' and the debug store' if debug else ''}); raise the function's ephemeral "
            "storage or export fewer products."
        )
    needed_mb = (input_bytes + WORKING_BYTES_PER_PIXEL * pixels) / MiB
    logger.info(
        "tile %d px: ~%.0f MiB memory needed, %s MiB configured; %.0f MiB staging of %.0f MiB free in %s",
        pixels,
        needed_mb,
        memory_mb if memory_mb is not None else "?",
        staging / MiB,
        free / MiB,
        tmp,
    )
    if memory_mb is not None and needed_mb > memory_mb:
        logger.warning("the tile may need ~%.0f MiB but the function has %d MiB", needed_mb, memory_mb)


def _pixels(tile: xr.Dataset) -> int:
    sizes = dict(tile.sizes)
    pixels = int(sizes.get("x", 0)) * int(sizes.get("y", 0))
    return pixels or max((int(v.size) for v in tile.data_vars.values()), default=0)

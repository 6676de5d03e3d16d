"""A deterministic, realistic synthetic DARTS tile for tests, the demo and benchmarks.

The tile looks like what the DARTS pipeline hands to the exporter after
``prepare_export``: a smooth, low background probability with elliptical thaw-slump
blobs whose above-50 % area spans 30-3000 pixels, a ragged nodata edge (a swath
border with pixel-scale jitter) leaving about 70 % of the tile valid, and optical,
terrain and TCVIS bands with plausible value ranges. The same ``seed`` and ``size``
always give the same tile.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from scipy import ndimage

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["SENTINEL2_SIZE", "make_synthetic_tile"]

SENTINEL2_SIZE = 10980
"""Pixels per side of a Sentinel-2 L2A tile at 10 m."""

_OBJECTS_PER_FULL_TILE = 1000
_PIXEL_SIZE = 10.0
_ORIGIN = (399960.0, 7700040.0)  # upper-left corner of a UTM zone 6N tile
_EPSG = 32606


def _interpolation_weights(size: int, n: int) -> NDArray[np.float32]:
    """A (size, n) matrix that linearly interpolates ``n`` evenly spread samples onto ``size`` pixels."""
    pos = np.linspace(0, n - 1, size, dtype=np.float64)
    lo = np.minimum(pos.astype(np.int64), n - 2)
    frac = (pos - lo).astype(np.float32)
    weights = np.zeros((size, n), dtype=np.float32)
    rows = np.arange(size)
    weights[rows, lo] = 1 - frac
    weights[rows, lo + 1] = frac
    return weights


def _smooth_field(rng: np.random.Generator, size: int, cell: int) -> NDArray[np.float32]:
    """Bilinearly upsampled uniform noise in [0, 1]: large, soft structures, computed as two small matrix products."""
    n = size // cell + 2
    coarse = rng.random((n, n), dtype=np.float32)
    weights = _interpolation_weights(size, n)
    return np.ascontiguousarray((weights @ coarse) @ weights.T)


def _valid_mask(rng: np.random.Generator, size: int) -> NDArray[np.bool_]:
    """A swath border running top to bottom that leaves ~70 % valid, ragged at the pixel scale."""
    rows = np.arange(size, dtype=np.float64)
    wander = np.cumsum(rng.normal(0.0, 1.0, size)) * math.sqrt(size) / 60.0
    border = 0.30 * size + 0.08 * size * (rows / size - 0.5) + wander - wander.mean()
    jitter = ndimage.uniform_filter1d(rng.normal(0.0, 6.0, size), 3)
    border = np.clip(border + jitter, 0, size).astype(np.int64)
    cols = np.arange(size)
    valid: NDArray[np.bool_] = cols[None, :] >= border[:, None]
    return valid


def _add_blobs(rng: np.random.Generator, prob: NDArray[np.float32], n: int) -> None:
    """Add ``n`` rotated elliptical Gaussian bumps whose >0.5 area spans 30-3000 px, in place."""
    size = prob.shape[0]
    for _ in range(n):
        area = math.exp(rng.uniform(math.log(30), math.log(3000)))
        peak = rng.uniform(0.7, 1.0)
        aspect = rng.uniform(1.0, 2.5)
        angle = rng.uniform(0, math.pi)
        r0 = math.sqrt(area / math.pi)
        sigma = r0 / math.sqrt(2.0 * math.log(peak / 0.5 + 1e-9))
        sa, sb = sigma * math.sqrt(aspect), sigma / math.sqrt(aspect)
        half = math.ceil(3.2 * sa) + 1
        cy, cx = (int(v) for v in rng.integers(half, size - half, 2)) if size > 2 * half + 1 else (size // 2, size // 2)
        ys, xs = np.ogrid[-half : half + 1, -half : half + 1]
        u = xs * math.cos(angle) + ys * math.sin(angle)
        v = -xs * math.sin(angle) + ys * math.cos(angle)
        bump = (peak * np.exp(-0.5 * ((u / sa) ** 2 + (v / sb) ** 2))).astype(np.float32)
        y0, x0 = max(cy - half, 0), max(cx - half, 0)
        y1, x1 = min(cy + half + 1, size), min(cx + half + 1, size)
        window = prob[y0:y1, x0:x1]
        np.maximum(window, bump[y0 - cy + half : y1 - cy + half, x0 - cx + half : x1 - cx + half], out=window)


def make_synthetic_tile(
    size: int = 1024,
    *,
    seed: int = 0,
    n_objects: int | None = None,
    with_inputs: bool = True,
) -> xr.Dataset:
    """Build a synthetic DARTS tile of ``size`` × ``size`` pixels (10 m, EPSG:32606).

    Args:
        size: Pixels per side; 10980 is a full Sentinel-2 tile.
        seed: Seed of the random generator; equal seeds give equal tiles.
        n_objects: Number of thaw-slump blobs; by default ~1000 per full Sentinel-2 tile,
            scaled with the area (at least 3).
        with_inputs: Also add the optical (``red green blue nir``), terrain
            (``slope relative_elevation``) and TCVIS (``tc_brightness tc_greenness tc_wetness``) bands.

    Returns:
        A dataset with ``probabilities`` (float32 in [0, 1], NaN where invalid),
        ``binarized_segmentation`` (bool), ``extent`` (uint8, 1 = valid) and, with
        ``with_inputs``, the input bands; georeferenced with rioxarray.
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    rng = np.random.default_rng(seed)
    if n_objects is None:
        n_objects = max(3, round(_OBJECTS_PER_FULL_TILE * (size / SENTINEL2_SIZE) ** 2))
    valid = _valid_mask(rng, size)
    prob = _smooth_field(rng, size, cell=max(size // 40, 4))
    prob *= np.float32(0.3)
    _add_blobs(rng, prob, n_objects)
    binarized = (prob > 0.5) & valid
    prob[~valid] = np.nan

    x = _ORIGIN[0] + _PIXEL_SIZE * (np.arange(size) + 0.5)
    y = _ORIGIN[1] - _PIXEL_SIZE * (np.arange(size) + 0.5)
    variables: dict[str, tuple[tuple[str, str], NDArray[np.generic]]] = {
        "probabilities": (("y", "x"), prob),
        "binarized_segmentation": (("y", "x"), binarized),
        "extent": (("y", "x"), valid.astype(np.uint8)),
    }
    if with_inputs:
        variables.update(_input_bands(rng, size, valid, binarized))
    tile = xr.Dataset(variables, coords={"x": x, "y": y})
    for name in ("tc_brightness", "tc_greenness", "tc_wetness"):
        if name in tile:
            tile[name].rio.write_nodata(0, encoded=False, inplace=True)
    tile.rio.write_crs(f"EPSG:{_EPSG}", inplace=True)
    tile.rio.write_coordinate_system(inplace=True)
    return tile


def _input_bands(
    rng: np.random.Generator, size: int, valid: NDArray[np.bool_], objects: NDArray[np.bool_]
) -> dict[str, tuple[tuple[str, str], NDArray[np.generic]]]:
    """Optical reflectances, terrain and TCVIS indices; slumps are brighter and less green."""
    cell = max(size // 64, 4)
    land = _smooth_field(rng, size, cell)
    veg = _smooth_field(rng, size, cell)
    bright = objects.astype(np.float32)
    bands: dict[str, tuple[tuple[str, str], NDArray[np.generic]]] = {}
    for name, base, gain, slump in (
        ("red", 0.05, 0.10, 0.08),
        ("green", 0.06, 0.08, 0.06),
        ("blue", 0.04, 0.05, 0.05),
        ("nir", 0.20, 0.20, -0.05),
    ):
        band = base + gain * (0.6 * land + 0.4 * (veg if name == "nir" else 1 - veg)) + slump * bright
        band[~valid] = np.nan
        bands[name] = (("y", "x"), band.astype(np.float32))
    slope = 25.0 * land**2 + 10.0 * bright
    relief = 40.0 * (land - 0.5) - 3.0 * bright
    for name, band in (("slope", slope), ("relative_elevation", relief)):
        band[~valid] = np.nan
        bands[name] = (("y", "x"), band.astype(np.float32))
    for name, band in (
        ("tc_brightness", 80.0 + 80.0 * land + 40.0 * bright),
        ("tc_greenness", 60.0 + 100.0 * veg - 40.0 * bright),
        ("tc_wetness", 120.0 - 60.0 * land),
    ):
        bands[name] = (("y", "x"), np.where(valid, np.clip(band, 0, 255), 0).astype(np.uint8))
    return bands

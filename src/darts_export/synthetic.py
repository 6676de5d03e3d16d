"""A deterministic, realistic synthetic DARTS tile for tests, the demo and benchmarks.

The tile looks like what the DARTS pipeline hands to the exporter after ``prepare_export``,
and costs as much to export as a real one:

* **probabilities** are a model's output: a smooth low background, elliptical thaw-slump
  bumps whose above-50 % area spans 32-5,300 pixels (about 925 objects on a full 10980²
  Sentinel-2 tile, scaled with the area), and per-pixel noise of σ ≈ 0.006 everywhere, so
  they compress like real predictions rather than like a smooth field;
* a **ragged swath** border leaves about 70 % of the tile valid; outside it the
  probabilities and float bands are NaN and the extent is 0;
* the **optical, terrain and TCVIS bands** are an arctic landscape at physical scales (10 m
  pixels): hill-shaded rolling terrain, thermokarst lakes in the lowlands, vegetation greener
  to the south and in the lowlands, and the slumps as bright bare-soil scars, plus per-pixel
  surface texture.

Smooth fields are made on a grid 8 times coarser and bilinearly upsampled row block by
row block, and the input bands are one small matrix product per block, so a full tile
costs little beyond writing its own arrays (``bench/results`` has the timings). The same
``seed`` and ``size`` always give the same tile, with or without the input bands.
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import xarray as xr
    from numpy.typing import NDArray

__all__ = ["SENTINEL2_SIZE", "make_synthetic_tile"]

SENTINEL2_SIZE = 10980
"""Pixels per side of a Sentinel-2 L2A tile at 10 m."""

_OBJECTS_PER_FULL_TILE = 925
_MIN_OBJECT_PX, _MAX_OBJECT_PX = 32, 5300
_PROBABILITY_NOISE = 0.006
_PIXEL_SIZE = 10.0
_ORIGIN = (399960.0, 7700040.0)  # upper-left corner of a UTM zone 6N tile
_EPSG = 32606
_COARSE = 8  # pixels per coarse cell of the smooth fields
_BLOCK_ROWS = 32  # a block's fields stay in the CPU cache
_LAKE_FRACTION = 0.12

# Surface reflectance (Sentinel-2 L2A, 0-1) of the landscape's parts: red, green, blue, nir.
_BARREN = (0.090, 0.080, 0.055, 0.19)  # dry upland tundra, lichen and gravel
_LUSH = (0.030, 0.055, 0.030, 0.33)  # wet sedge and shrub tundra
_SCAR = (0.17, 0.15, 0.12, 0.21)  # thawed bare soil of a slump floor
_WATER = (0.015, 0.025, 0.040, 0.010)  # deep, clear lake water
_SHADE = (0.020, 0.020, 0.014, 0.05)  # reflectance change from a flat slope to one facing the sun
_SHALLOWS = (0.045, 0.065, 0.070, 0.025)  # lake margins: sediment and the bottom show through
_TEXTURE = (0.0025, 0.0025, 0.0015, 0.008)  # σ of the per-pixel surface texture


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
        n_objects: Number of thaw-slump objects; by default ~925 per full Sentinel-2 tile,
            scaled with the area (at least 3).
        with_inputs: Also add the optical (``red green blue nir``), terrain
            (``slope relative_elevation``) and TCVIS (``tc_brightness tc_greenness tc_wetness``) bands.

    Returns:
        A dataset with ``probabilities`` (float32 in [0, 1], NaN where invalid),
        ``binarized_segmentation`` (bool), ``extent`` (uint8, 1 = valid) and, with
        ``with_inputs``, the input bands; georeferenced with rioxarray.
    """
    import numpy as np
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr

    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    rng = np.random.default_rng(seed)
    if n_objects is None:
        n_objects = max(3, round(_OBJECTS_PER_FULL_TILE * (size / SENTINEL2_SIZE) ** 2))
    valid = _valid_mask(rng, size)
    grid = _Grid(size)
    land = _landscape(rng, grid.m)
    prob = grid.upsample(0.02 + 0.16 * _fractal(rng, grid.m, (3000.0, 800.0), (0.7, 0.3)) ** 2)
    _add_objects(rng, prob, valid, land[_LAKES], n_objects)
    binarized = (prob > 0.5) & valid
    block_seeds = np.random.SeedSequence(int(rng.integers(2**63))).spawn(2 * len(grid.blocks))
    bands = _input_bands(grid, land, prob, valid, block_seeds[len(grid.blocks) :]) if with_inputs else {}
    _add_noise(prob, valid, block_seeds[: len(grid.blocks)], grid.blocks)

    x = _ORIGIN[0] + _PIXEL_SIZE * (np.arange(size) + 0.5)
    y = _ORIGIN[1] - _PIXEL_SIZE * (np.arange(size) + 0.5)
    variables: dict[str, tuple[tuple[str, str], NDArray[np.generic]]] = {
        "probabilities": (("y", "x"), prob),
        "binarized_segmentation": (("y", "x"), binarized),
        "extent": (("y", "x"), valid.view(np.uint8)),
    }
    variables.update({name: (("y", "x"), band) for name, band in bands.items()})
    tile = xr.Dataset(variables, coords={"x": x, "y": y})
    for name in ("tc_brightness", "tc_greenness", "tc_wetness"):
        if name in tile:
            tile[name].rio.write_nodata(0, encoded=False, inplace=True)
    tile.rio.write_crs(f"EPSG:{_EPSG}", inplace=True)
    tile.rio.write_coordinate_system(inplace=True)
    return tile


class _Grid:
    """A grid 8 times coarser under the tile, and its bilinear upsampling (row block by row block).

    Coarse node ``i`` sits on the top-left corner of pixel ``8 i``, so the centre of pixel
    ``8 i + j`` lies at fraction ``(j + 0.5) / 8`` between nodes ``i`` and ``i + 1``: the
    upsampling is eight strided multiply-adds, with no gather.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.m = math.ceil(size / _COARSE) + 2
        self.blocks = [slice(r, min(r + _BLOCK_ROWS, size)) for r in range(0, size, _BLOCK_ROWS)]

    def columns(self, coarse: NDArray[np.float32]) -> NDArray[np.float32]:
        """``coarse`` (..., m, m) upsampled along its last axis to (..., m, size)."""
        import numpy as np

        out = np.empty((*coarse.shape[:-1], self.size), dtype=np.float32)
        _lerp_into(out, coarse, axis=-1)
        return out

    def rows(self, wide: NDArray[np.float32], block: slice, out: NDArray[np.float32]) -> None:
        """Rows ``block`` (starting at a multiple of 8) of ``wide`` (..., m, size) upsampled into ``out``."""
        first = block.start // _COARSE
        _lerp_into(out, wide[..., first : first + out.shape[-2] // _COARSE + 2, :], axis=-2)

    def upsample(self, coarse: NDArray[np.float32]) -> NDArray[np.float32]:
        """A coarse field upsampled to a full ``size`` × ``size`` array."""
        import numpy as np

        wide = self.columns(coarse)
        full = np.empty((self.size, self.size), dtype=np.float32)
        for block in self.blocks:
            self.rows(wide, block, full[block])
        return full


def _lerp_into(out: NDArray[np.float32], coarse: NDArray[np.float32], *, axis: int) -> None:
    """Fill ``out`` along ``axis`` with the linear interpolation of ``coarse`` at 8 pixels per cell."""
    import numpy as np

    n = out.shape[axis]
    for j in range(_COARSE):
        count = len(range(j, n, _COARSE))
        if count == 0:
            continue
        frac = (j + 0.5) / _COARSE
        target = np.moveaxis(out, axis, -1)[..., j::_COARSE]
        source = np.moveaxis(coarse, axis, -1)
        np.multiply(source[..., :count], np.float32(1 - frac), out=target)
        target += np.float32(frac) * source[..., 1 : count + 1]


def _smooth(rng: np.random.Generator, m: int, cell: tuple[float, float]) -> NDArray[np.float32]:
    """Uniform knots every ``cell`` (rows, columns) coarse pixels, cubic-B-spline interpolated onto m × m."""
    import numpy as np

    def weights(cell_px: float) -> NDArray[np.float32]:
        n = max(4, math.ceil(m / cell_px) + 4)
        pos = np.arange(m, dtype=np.float64) / cell_px + rng.random()
        lo = pos.astype(np.int64)
        t = pos - lo
        taps = ((1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3)
        w = np.zeros((m, n), dtype=np.float32)
        for k, tap in enumerate(taps):
            w[np.arange(m), lo + k] = tap / 6
        return w

    rows, cols = weights(cell[0]), weights(cell[1])
    knots = rng.random((rows.shape[1], cols.shape[1]), dtype=np.float32)
    return np.ascontiguousarray((rows @ knots) @ cols.T)


def _fractal(
    rng: np.random.Generator, m: int, scales_m: tuple[float, ...], weights: tuple[float, ...], stretch: float = 1.0
) -> NDArray[np.float32]:
    """A sum of smooth fields at physical scales (metres; ``stretch``× longer north-south), scaled to [0, 1]."""
    import numpy as np

    coarse = _PIXEL_SIZE * _COARSE
    field = np.zeros((m, m), dtype=np.float32)
    for scale, weight in zip(scales_m, weights, strict=True):
        field += np.float32(weight) * _smooth(rng, m, (stretch * scale / coarse, scale / coarse))
    field -= field.min()
    field *= np.float32(1 / max(float(field.max()), 1e-6))
    return field


def _valid_mask(rng: np.random.Generator, size: int) -> NDArray[np.bool_]:
    """A swath border running top to bottom that leaves ~70 % valid, ragged at the pixel scale."""
    import numpy as np

    rows = np.arange(size, dtype=np.float64)
    wander = np.cumsum(rng.normal(0.0, 1.0, size)) * math.sqrt(size) / 60.0
    border = 0.30 * size + 0.08 * size * (rows / size - 0.5) + wander - wander.mean()
    jitter = np.convolve(rng.normal(0.0, 6.0, size), np.full(3, 1 / 3), mode="same")
    edge = np.clip(border + jitter, 0, size).astype(np.int64)
    valid: NDArray[np.bool_] = np.arange(size)[None, :] >= edge[:, None]
    return valid


def _add_objects(
    rng: np.random.Generator, prob: NDArray[np.float32], valid: NDArray[np.bool_], lakes: NDArray[np.float32], n: int
) -> None:
    """Raise ``n`` rotated elliptical bumps whose >0.5 area spans 32-5300 px, in place, inside the swath.

    A bump is only placed on land inside the swath where it meets no earlier object, so each
    bump is one object of the intended size; a tile too small for more gets fewer. Slumps
    favour lake shores (``lakes`` is the coarse lake depth: > 0 in water, falling away inland).
    """
    import numpy as np

    size = prob.shape[0]
    placed = attempts = 0
    while placed < n and attempts < 20 * n:
        attempts += 1
        area = math.exp(rng.uniform(math.log(_MIN_OBJECT_PX + 4), math.log(_MAX_OBJECT_PX)))
        peak = rng.uniform(0.7, 1.0)
        aspect = rng.uniform(1.0, 2.5)
        angle = rng.uniform(0, math.pi)
        sigma = math.sqrt(area / math.pi) / math.sqrt(2.0 * math.log(peak / 0.5))
        sa, sb = sigma * math.sqrt(aspect), sigma / math.sqrt(aspect)
        half = math.ceil(2.6 * sa) + 1
        if size <= 2 * half + 1:
            continue
        cy, cx = (int(v) for v in rng.integers(half, size - half, 2))
        window = (slice(cy - half, cy + half + 1), slice(cx - half, cx + half + 1))
        depth = float(lakes[round((cy + 0.5) / _COARSE), round((cx + 0.5) / _COARSE)])
        if depth > -0.05 or (depth < -0.3 and rng.random() < 0.6):
            continue  # in or at a lake, or far from one (kept less often)
        if not valid[window].all() or prob[window].max() > 0.3:
            continue
        ys, xs = np.ogrid[-half : half + 1, -half : half + 1]
        u = xs * math.cos(angle) + ys * math.sin(angle)
        v = -xs * math.sin(angle) + ys * math.cos(angle)
        bump = (peak * np.exp(-0.5 * ((u / sa) ** 2 + (v / sb) ** 2))).astype(np.float32)
        np.maximum(prob[window], bump, out=prob[window])
        placed += 1


def _noise(
    seed: np.random.SeedSequence, shape: tuple[int, int], out: NDArray[np.float32] | None = None
) -> NDArray[np.float32]:
    """Per-pixel N(0, 1) noise, quantised to 256 levels: one random byte per pixel, cheaper than true normals."""
    import numpy as np

    draws = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    return np.take(_gaussian_bytes(), draws, out=out)


@functools.cache
def _gaussian_bytes() -> NDArray[np.float32]:
    """Standard normal quantiles of the 256 byte values: one random byte → one N(0, 1) sample."""
    import numpy as np

    normal = NormalDist()
    return np.array([normal.inv_cdf((i + 0.5) / 256) for i in range(256)], dtype=np.float32)


def _add_noise(
    prob: NDArray[np.float32], valid: NDArray[np.bool_], seeds: list[np.random.SeedSequence], blocks: list[slice]
) -> None:
    """Per-pixel model noise on the probabilities, clipped to [0, 1]; NaN outside the swath."""
    import numpy as np

    for seed, block in zip(seeds, blocks, strict=True):
        rows = prob[block]
        noise = _noise(seed, rows.shape)
        noise *= _PROBABILITY_NOISE
        rows += noise
        np.clip(rows, 0.0, 1.0, out=rows)
        rows *= np.where(valid[block], np.float32(1), np.float32(np.nan))


# The input bands are one matrix product per row block: bands = _BANDS @ fields, with the fields
# (constant, vegetation, light, texture, scar, relief, slope, water, shallows) as rows. In water the
# land fields (vegetation, light, scar) are zeroed, so a lake pixel gets its own reflectance.
_FIELDS = ("one", "veg", "light", "texture", "scar", "relief", "slope", "water", "shallows")
_OPTICAL = ("red", "green", "blue", "nir")
_FLOAT_BANDS = (*_OPTICAL, "slope", "relative_elevation")
_TCVIS_BANDS = ("tc_brightness", "tc_greenness", "tc_wetness")


def _band_matrix() -> NDArray[np.float32]:
    import numpy as np

    rows = []
    for i in range(4):
        typical = (_BARREN[i] + _LUSH[i]) / 2
        rows.append(
            (
                _BARREN[i],
                _LUSH[i] - _BARREN[i],
                _SHADE[i],
                _TEXTURE[i],
                _SCAR[i] - typical,
                0,
                0,
                _WATER[i] - _BARREN[i],
                _SHALLOWS[i] - _WATER[i],
            )
        )
    rows.append((0, 0, 0, 0, 15.0, 0, 1, 0, 0))  # slope, degrees: headwalls are steep
    rows.append((-45.0, 0, 0, 0.3, -3.0, 1, 0, 0, 0))  # relative elevation, m: slump floors sink
    rows.append((150.0, -70.0, 0, 4.0, 70.0, 0, 0, -100.0, 10.0))  # TCVIS: bright bare soil
    rows.append((70.0, 90.0, 0, 4.0, -50.0, 0, 0, -40.0, 0))  # ... lost greenness
    rows.append((110.0, -40.0, 0, 4.0, 20.0, 0, 0, 90.0, -20.0))  # ... wet lakes
    return np.array(rows, dtype=np.float32)


_VEGETATION, _LIGHT, _RELIEF, _SLOPE, _LAKES = range(5)


def _landscape(rng: np.random.Generator, m: int) -> NDArray[np.float32]:
    """The coarse landscape: vegetation (0-1), light (-1 shaded .. 1 sunlit), relief (m), slope (°), lakes.

    ``lakes`` is a depth: 0 at the shore, 1 in the deepest lake, negative on land.
    """
    import numpy as np

    elevation = _fractal(rng, m, (9000.0, 2500.0, 600.0), (0.6, 0.3, 0.1))
    relief_m = 90.0 * elevation
    dy, dx = np.gradient(relief_m, _PIXEL_SIZE * _COARSE)
    light = np.clip((dx - dy) / 0.05, -1.0, 1.0)  # sun in the north-west; ±1 from a 3° slope on
    slope = np.degrees(np.arctan(np.hypot(dx, dy)))
    south = np.linspace(0.0, 1.0, m, dtype=np.float32)[:, None]
    vegetation = 0.45 * south + 0.45 * _fractal(rng, m, (4000.0, 1000.0), (0.7, 0.3)) + 0.5 * (0.5 - elevation)
    lakes = _fractal(rng, m, (1200.0, 400.0), (0.75, 0.25), stretch=1.6) - 0.5 * elevation  # oriented N-S
    lakes -= float(np.quantile(lakes, 1 - _LAKE_FRACTION))
    lakes *= 1 / max(float(lakes.max()), 1e-6)
    return np.stack([np.clip(vegetation, 0, 1), light, relief_m, slope, lakes]).astype(np.float32)


def _input_bands(
    grid: _Grid,
    land: NDArray[np.float32],
    prob: NDArray[np.float32],
    valid: NDArray[np.bool_],
    seeds: list[np.random.SeedSequence],
) -> dict[str, NDArray[np.generic]]:
    """Optical reflectances, terrain and TCVIS indices of the landscape around the slumps."""
    import numpy as np

    size = grid.size
    wide = grid.columns(land)

    matrix = _band_matrix()
    n_float = len(_FLOAT_BANDS)
    floats = np.empty((n_float, size, size), dtype=np.float32)
    tcvis = np.empty((len(_TCVIS_BANDS), size, size), dtype=np.uint8)
    fields = np.empty((len(_FIELDS), _BLOCK_ROWS, size), dtype=np.float32)
    index = np.empty((len(_TCVIS_BANDS), _BLOCK_ROWS, size), dtype=np.float32)
    lake = np.empty((_BLOCK_ROWS, size), dtype=np.float32)
    for seed, block in zip(seeds, grid.blocks, strict=True):
        n = block.stop - block.start
        f = fields[:, :n]
        f[0] = 1.0
        grid.rows(wide[0:2], block, f[1:3])  # vegetation, light
        grid.rows(wide[2:4], block, f[5:7])  # relief, slope
        grid.rows(wide[4], block, lake[:n])
        water = lake[:n] > 0
        _noise(seed, (n, size), out=f[3])
        np.subtract(prob[block], 0.3, out=f[4])
        f[4] *= 4.0
        np.clip(f[4], 0.0, 1.0, out=f[4])  # the slump floor and a soft rim
        np.copyto(f[7], water)
        np.subtract(1.0, 8.0 * lake[:n], out=f[8])
        np.clip(f[8], 0.0, 1.0, out=f[8])  # shallows: the first eighth of the depth
        f[8] *= f[7]
        land = 1.0 - f[7]
        for row in (1, 2, 4):
            f[row] *= land
        f[3] *= 0.3 + 0.7 * land  # calm water: less texture, and no negative reflectance
        # einsum's own loops: OpenBLAS would start threads for these thin products and spin them.
        np.einsum("bf,frc->brc", matrix[:n_float], f, out=floats[:, block])
        np.einsum("bf,frc->brc", matrix[n_float:], f, out=index[:, :n])
        np.clip(index[:, :n], 1, 255, out=index[:, :n])
        tcvis[:, block] = index[:, :n]
        in_swath = valid[block]
        floats[:, block] *= np.where(in_swath, np.float32(1), np.float32(np.nan))  # NaN outside the swath
        tcvis[:, block] *= in_swath
    bands: dict[str, NDArray[np.generic]] = dict(zip(_FLOAT_BANDS, floats, strict=True))
    bands.update(zip(_TCVIS_BANDS, tcvis, strict=True))
    return bands

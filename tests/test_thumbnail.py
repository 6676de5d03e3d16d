"""Tests of the quick-look JPEG: size, overlays at known places, fallbacks, purity, input checks, export."""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from numpy.typing import NDArray
from PIL import Image

from darts_export.export import export_tile
from darts_export.formats.thumbnail import CONTOUR_COLOUR, EXTENT_COLOUR, NODATA_COLOUR, render_thumbnail
from darts_export.synthetic import make_synthetic_tile
from darts_export.tile import TileView
from helpers import Target, multihash, read_back

# A 400 x 600 tile rendered at 600 px: one thumbnail pixel per input pixel.
HEIGHT, WIDTH, SIZE = 400, 600, 600
SCALE = SIZE / WIDTH
EDGE_COL = 60  # first valid column
BLOB = (110.0, 190.0)  # centre (row, col) of the probability bump, in input pixels
SIGMA = 30.0  # p = exp(-(d / SIGMA)²), so p = 0.5 at d = SIGMA * sqrt(ln 2) ≈ 25 px
RADIUS = SIGMA * math.sqrt(math.log(2))
JPEG_TOLERANCE = 70  # per-channel difference allowed after JPEG compression


def known_tile(
    height: int = HEIGHT, width: int = WIDTH, *, optical: bool = True, extent: bool = True, crs: str = "EPSG:32606"
) -> xr.Dataset:
    """A tile with one Gaussian probability bump and a straight, vertical extent edge at EDGE_COL."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    valid = cols >= EDGE_COL
    prob = np.exp(-(((rows - BLOB[0]) ** 2 + (cols - BLOB[1]) ** 2) / SIGMA**2)).astype(np.float32)
    prob[~valid] = np.nan
    variables: dict[str, tuple[tuple[str, str], NDArray[np.generic]]] = {"probabilities": (("y", "x"), prob)}
    if extent:
        variables["extent"] = (("y", "x"), valid.astype(np.uint8))
    if optical:
        # Smooth gradients: the stretched image never comes close to magenta or cyan by chance.
        for name, band in (
            ("red", 0.03 + 0.10 * cols / width),
            ("green", 0.04 + 0.08 * rows / height),
            ("blue", 0.05 + 0.02 * (rows + cols) / (height + width)),
        ):
            variables[name] = (("y", "x"), np.where(valid, band, np.nan).astype(np.float32))
    x = 500_000.0 + 10.0 * (np.arange(width) + 0.5)
    y = 7_000_000.0 - 10.0 * (np.arange(height) + 0.5)
    tile = xr.Dataset(variables, coords={"x": x, "y": y})
    with_crs: xr.Dataset = tile.rio.write_crs(crs)
    return with_crs


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def pixels(data: bytes) -> NDArray[np.int16]:
    return np.asarray(decode(data).convert("RGB")).astype(np.int16)


def near(pixel: NDArray[np.int16], colour: tuple[int, int, int]) -> bool:
    return bool(np.abs(pixel - np.asarray(colour)).max() <= JPEG_TOLERANCE)


@pytest.mark.parametrize(
    ("height", "width", "max_size", "expected"),
    [
        (256, 256, 1024, (256, 256)),  # never upscaled
        (256, 256, 512, (256, 256)),
        (200, 300, 600, (300, 200)),
        (2000, 3000, 600, (600, 400)),
        (3000, 2000, 512, (341, 512)),
        (1500, 1100, 1024, (751, 1024)),
    ],
)
def test_jpeg_of_the_right_size(height: int, width: int, max_size: int, expected: tuple[int, int]) -> None:
    data = render_thumbnail(TileView(known_tile(height, width)), title="T", max_size=max_size)
    image = decode(data)
    assert image.format == "JPEG"
    assert image.mode == "RGB"
    assert image.size == expected  # (width, height)


def test_synthetic_tile_default_size(small_tile: xr.Dataset) -> None:
    data = render_thumbnail(TileView(small_tile), title="T06WVS")
    assert decode(data).size == (256, 256)  # the tile's own size: never upscaled
    assert data.startswith(b"\xff\xd8")


@pytest.mark.parametrize("optical", [True, False], ids=["rgb", "probabilities"])
@pytest.mark.parametrize("extent", [True, False], ids=["extent", "finite"])
def test_overlays_along_known_contour_and_edge(optical: bool, extent: bool) -> None:
    img = pixels(render_thumbnail(TileView(known_tile(optical=optical, extent=extent)), title="T", max_size=SIZE))
    assert img.shape == (HEIGHT * SCALE, WIDTH * SCALE, 3)
    cy, cx, r = BLOB[0] * SCALE, BLOB[1] * SCALE, RADIUS * SCALE
    for angle in np.linspace(0, 2 * math.pi, 24, endpoint=False):
        dy, dx = math.sin(angle), math.cos(angle)
        ring = [img[round(cy + (r + k) * dy), round(cx + (r + k) * dx)] for k in range(-3, 4)]
        assert any(near(p, CONTOUR_COLOUR) for p in ring), f"no 0.5 contour at {math.degrees(angle):.0f}°"
        # Well inside and well outside the 0.5 line there is no contour colour.
        for k in (-12, 12):
            p = img[round(cy + (r + k) * dy), round(cx + (r + k) * dx)]
            assert not near(p, CONTOUR_COLOUR), f"contour colour {k} px off the 0.5 line at {angle:.2f} rad"
    edge = EDGE_COL * SCALE
    for row in range(60, int(img.shape[0]) - 10, 20):
        strip = img[row, round(edge) - 3 : round(edge) + 3]
        assert any(near(p, EXTENT_COLOUR) for p in strip), f"no extent outline in row {row}"
        assert near(img[row, round(edge) - 12], NODATA_COLOUR)
        assert not near(img[row, round(edge) + 12], EXTENT_COLOUR)
    assert not near(img[round(cy), round(cx)], CONTOUR_COLOUR)
    assert not near(img[round(cy), round(cx)], EXTENT_COLOUR)


def test_outlines_are_those_of_the_exported_objects_when_the_tile_has_them() -> None:
    # One square object; the probability bump is not an object (as if min_object_size had removed it).
    tile = known_tile()
    objects = np.zeros((HEIGHT, WIDTH), dtype=bool)
    objects[120:160, 330:370] = True  # below the title band, away from the bump
    img = pixels(render_thumbnail(TileView(tile.assign(binarized_segmentation=(("y", "x"), objects))), title="T"))
    scale = img.shape[1] / WIDTH
    for k in range(330, 370, 5):  # on the square's top and left edges, not inside or outside it
        assert near(img[round(120 * scale), round(k * scale)], CONTOUR_COLOUR)
        assert near(img[round((k - 210) * scale), round(330 * scale)], CONTOUR_COLOUR)
        assert not near(img[round(140 * scale), round(350 * scale)], CONTOUR_COLOUR)
    cy, cx, r = BLOB[0] * scale, BLOB[1] * scale, RADIUS * scale
    for angle in np.linspace(0, 2 * math.pi, 12, endpoint=False):
        ring = [img[round(cy + (r + k) * math.sin(angle)), round(cx + (r + k) * math.cos(angle))] for k in range(-3, 4)]
        assert not any(near(p, CONTOUR_COLOUR) for p in ring), f"0.5 contour drawn at {math.degrees(angle):.0f}°"


def test_probabilities_are_the_image_without_optical_bands() -> None:
    img = pixels(render_thumbnail(TileView(known_tile(optical=False)), title="T", max_size=SIZE))
    centre = img[round(BLOB[0] * SCALE), round(BLOB[1] * SCALE)]
    far = img[350, 560]  # probability ~0 there
    assert centre.min() > 200  # p = 1: white
    assert far.max() < 50  # p = 0: black
    assert np.abs(centre - centre.mean()).max() <= 10  # grey


def test_optical_bands_are_the_image_when_present() -> None:
    img = pixels(render_thumbnail(TileView(known_tile(optical=True)), title="T", max_size=SIZE))
    # Red grows to the east, green to the south (2-98 % stretch over the valid pixels).
    assert img[300, 560, 0] > img[300, 160, 0] + 100
    assert img[380, 300, 1] > img[60, 300, 1] + 100


def test_title_changes_only_the_top_band() -> None:
    view = TileView(known_tile())
    a = pixels(render_thumbnail(view, title="T06WVS", max_size=SIZE))
    b = pixels(render_thumbnail(view, title="X", max_size=SIZE))
    other_crs = pixels(render_thumbnail(TileView(known_tile(crs="EPSG:32607")), title="T06WVS", max_size=SIZE))
    band = 40
    assert np.abs(a[:band] - b[:band]).max() > 100
    assert np.abs(a[:band] - other_crs[:band]).max() > 100  # the EPSG code is in the title
    assert np.abs(a[band + 16 :] - b[band + 16 :]).max() <= 2  # JPEG blocks near the band may differ slightly


def test_long_title_fits() -> None:
    data = render_thumbnail(TileView(known_tile()), title="T" * 500, max_size=512)
    assert decode(data).size == (512, 341)


def test_deterministic_and_thread_safe() -> None:
    views = [TileView(known_tile()), TileView(make_synthetic_tile(128, seed=3))]
    expected = [render_thumbnail(v, title=f"tile-{i}") for i, v in enumerate(views)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda i: render_thumbnail(views[i % 2], title=f"tile-{i % 2}"), range(8)))
    assert results == [expected[i % 2] for i in range(8)]


def test_south_up_tile_gives_the_same_image() -> None:
    tile = known_tile()
    flipped = tile.isel(y=slice(None, None, -1))
    assert render_thumbnail(TileView(flipped), title="T") == render_thumbnail(TileView(tile), title="T")


def test_callers_tile_unchanged() -> None:
    tile = known_tile()
    before = tile.copy(deep=True)
    render_thumbnail(TileView(tile), title="T")
    xr.testing.assert_identical(tile, before)
    assert all(tile[name].values.flags.writeable for name in tile.data_vars)


def test_all_invalid_tile_still_renders() -> None:
    tile = known_tile()
    nothing = tile.assign(extent=tile["extent"] * 0, probabilities=tile["probabilities"].where(tile["extent"] < 0))
    img = pixels(render_thumbnail(TileView(nothing), title="T", max_size=512))
    assert near(img[200, 256], NODATA_COLOUR)


@pytest.mark.parametrize("max_size", [0, -1, 511, 1025, 4096, 800.0, True, "1024", None])
def test_bad_max_size(max_size: object) -> None:
    with pytest.raises(ValueError, match="max_size must be an integer from 512 to 1024"):
        render_thumbnail(TileView(known_tile()), title="T", max_size=max_size)  # type: ignore[arg-type]


@pytest.mark.parametrize("quality", [0, 96, 50.5])
def test_bad_quality(quality: object) -> None:
    with pytest.raises(ValueError, match="quality must be an integer from 1 to 95"):
        render_thumbnail(TileView(known_tile()), title="T", quality=quality)  # type: ignore[arg-type]


def test_exported_thumbnail_is_the_rendered_one(target: Target) -> None:
    tile = known_tile()
    manifest = export_tile(
        tile,
        target.out_dir,
        bands=["thumbnail"],
        metadata={"tile_id": "T06WVS"},
        storage_options=target.storage_options,
    )
    stored = read_back(target, "thumbnail.jpg")
    assert stored == render_thumbnail(TileView(tile), title="T06WVS")
    artifact = manifest.artifact("thumbnail.jpg")
    assert artifact.media_type == "image/jpeg"
    assert (artifact.size, artifact.checksum) == (len(stored), multihash(stored))
    assert decode(stored).size == (WIDTH, HEIGHT)  # smaller than 1024: not upscaled

"""The quick-look JPEG of a tile: an RGB (or probability) image with the object outlines and the valid extent.

Design:

* **Decimate first, at the pixel centres of the output grid.** Every variable is read through
  :class:`~darts_export.tile.TileView` and sampled with one fancy-indexing gather at the centre
  of each output pixel (nearest neighbour; upsampling for tiles smaller than the thumbnail). Only
  ``max_size``² values per variable are ever touched, so a full 10980² Sentinel-2 tile costs about
  as much as a 1024² one; nothing is reprojected or block-averaged at full resolution.
* **Draw with numpy and Pillow, not matplotlib.** The overlays are pixel masks (the boundary of
  the objects and of the valid extent), coloured directly in the RGB array, and the
  title is one ``ImageDraw.text`` call. This is several times faster than a matplotlib figure,
  cannot leak a figure, holds no global state (safe on several threads: every call builds its own
  image, font and buffers) and gives the same bytes for the same input.
* **The outlines are those of the exported objects**: ``binarized_segmentation`` (the mask the
  polygons are traced from, after whatever filtering the pipeline applied) when the tile has
  it, else ``probabilities >= 0.5`` on the 0..1 probabilities (never on values in percent).

Colours (chosen to be saturated, so they never occur in the grey probability image and rarely in
tundra imagery):

* :data:`CONTOUR_COLOUR` magenta ``(255, 0, 255)``: the outline of the objects.
* :data:`EXTENT_COLOUR` cyan ``(0, 255, 255)``: the outline of the valid extent (including where it
  meets the tile border).
* :data:`NODATA_COLOUR` black: pixels outside the valid extent.

Both outlines are two pixels wide: one pixel on each side of the boundary. The object
outline is drawn over the extent outline. The title (``"<title> | EPSG:<code>"``) sits on a darkened
band across the top of the image, so the JPEG is exactly the thumbnail size.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Final

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from darts_export.tile import TileView

__all__ = [
    "CONTOUR_COLOUR",
    "EXTENT_COLOUR",
    "MAX_THUMBNAIL_SIZE",
    "MIN_THUMBNAIL_SIZE",
    "NODATA_COLOUR",
    "render_thumbnail",
]

logger = logging.getLogger(__name__)

MIN_THUMBNAIL_SIZE: Final = 512
"""Smallest allowed long side of the thumbnail, in pixels."""
MAX_THUMBNAIL_SIZE: Final = 1024
"""Largest allowed long side of the thumbnail, in pixels."""
CONTOUR_COLOUR: Final = (255, 0, 255)
"""Magenta: the outline of the objects (``binarized_segmentation``, else ``probabilities >= 0.5``)."""
EXTENT_COLOUR: Final = (0, 255, 255)
"""Cyan: the outline of the valid extent."""
NODATA_COLOUR: Final = (0, 0, 0)
"""Black: pixels outside the valid extent."""

_OPTICAL: Final = ("red", "green", "blue")
_OBJECTS: Final = "binarized_segmentation"
_STRETCH_PERCENTILES: Final = (2.0, 98.0)
_STRETCH_SAMPLE: Final = 262_144  # values per band used to find the percentiles
_PROBABILITY_THRESHOLD: Final = 0.5
_TITLE_DARKEN: Final = 0.35


def render_thumbnail(view: TileView, *, title: str, max_size: int = 1024, quality: int = 85) -> bytes:
    """Render the quick-look of a tile as JPEG bytes.

    The image is the red/green/blue reflectance with a per-band 2-98 % stretch over the valid
    pixels, or the probabilities in grey (0 black, 1 white) when a band is missing. On it: the
    outline of the objects (:data:`CONTOUR_COLOUR`), the valid-extent outline
    (:data:`EXTENT_COLOUR`) and a title with ``title`` and the tile's EPSG code.

    Args:
        view: The tile; only ``probabilities``, ``binarized_segmentation`` (optional; the
            objects, else ``probabilities >= 0.5``), ``extent`` (optional; else the finite
            probabilities are the valid area) and ``red``/``green``/``blue`` (optional) are read.
        title: Usually the tile id.
        max_size: Longest side in pixels, 512-1024; a smaller tile keeps its own size
            (never upscaled). The short side keeps the tile's aspect ratio.
        quality: JPEG quality, 1-95.

    Returns:
        The JPEG file's bytes (4:4:4 chroma, so the one-pixel-scale outlines keep their colour).

    Raises:
        ValueError: ``max_size`` or ``quality`` is out of range.
        InvalidTileError: The tile has no ``probabilities``.
    """
    _check_int("max_size", max_size, MIN_THUMBNAIL_SIZE, MAX_THUMBNAIL_SIZE)
    _check_int("quality", quality, 1, 95)
    georef = view.georef
    height, width = georef.shape
    scale = min(1.0, max_size / max(height, width))  # never upscale: a small tile keeps its own pixels
    out_h, out_w = max(1, round(height * scale)), max(1, round(width * scale))
    rows = _centres(height, out_h)
    cols = _centres(width, out_w)

    def sample(name: str) -> NDArray[np.generic]:
        return view.sample(name, rows, cols)

    prob = sample("probabilities").astype(np.float32, copy=False)
    finite = np.isfinite(prob)
    valid = (sample("extent") != 0) & finite if "extent" in view else finite
    if all(band in view for band in _OPTICAL):
        rgb = _stretched_rgb([sample(band) for band in _OPTICAL], valid)
    else:
        grey = np.round(np.clip(np.where(finite, prob, 0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
    rgb[~valid] = NODATA_COLOUR
    rgb[_boundary(valid, edge=False)] = EXTENT_COLOUR
    if _OBJECTS in view:
        objects = sample(_OBJECTS) != 0
    else:
        objects = np.greater_equal(prob, _PROBABILITY_THRESHOLD, where=finite, out=np.zeros(prob.shape, dtype=bool))
    rgb[_boundary(objects, edge=True)] = CONTOUR_COLOUR

    epsg = georef.epsg
    image = _with_title(rgb, f"{title} | {'EPSG:' + str(epsg) if epsg is not None else 'no EPSG code'}")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, subsampling=0)
    logger.debug("rendered a %d x %d thumbnail of a %d x %d tile", out_w, out_h, width, height)
    return buffer.getvalue()


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}.")


def _centres(n_in: int, n_out: int) -> NDArray[np.intp]:
    """Indices of the input pixels under the centres of ``n_out`` output pixels."""
    idx = ((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)).astype(np.intp)
    return np.minimum(idx, n_in - 1)


def _stretched_rgb(bands: list[NDArray[np.generic]], valid: NDArray[np.bool_]) -> NDArray[np.uint8]:
    """Stack three bands into uint8 RGB, each stretched between its 2nd and 98th percentile."""
    mask = valid.copy()
    floats = [band.astype(np.float32, copy=False) for band in bands]
    for band in floats:
        mask &= np.isfinite(band)
    rgb = np.zeros((*mask.shape, 3), dtype=np.uint8)
    if not mask.any():
        return rgb
    for i, band in enumerate(floats):
        values = band[mask]
        values = values[:: max(1, values.size // _STRETCH_SAMPLE)]
        low, high = (float(v) for v in np.percentile(values, _STRETCH_PERCENTILES))
        if high > low:
            scaled = (np.where(mask, band, low) - low) * (255.0 / (high - low))
            rgb[:, :, i] = np.round(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)
        else:
            rgb[:, :, i] = 128
    return rgb


def _boundary(mask: NDArray[np.bool_], *, edge: bool) -> NDArray[np.bool_]:
    """Pixels with a 4-neighbour of the other value: a two-pixel-wide line along every boundary.

    With ``edge=True`` the image border does not count as a boundary (the mask is extended
    outwards); with ``edge=False`` everything outside the image counts as ``False``, so a mask
    that touches the border is outlined there too.
    """
    padded = np.pad(mask, 1, mode="edge") if edge else np.pad(mask, 1, mode="constant", constant_values=False)
    centre = padded[1:-1, 1:-1]
    line: NDArray[np.bool_] = (
        (centre != padded[:-2, 1:-1])
        | (centre != padded[2:, 1:-1])
        | (centre != padded[1:-1, :-2])
        | (centre != padded[1:-1, 2:])
    )
    return line


def _with_title(rgb: NDArray[np.uint8], text: str) -> Image.Image:
    """Darken a band across the top of ``rgb`` and write ``text`` on it in white."""
    height, width = rgb.shape[:2]
    font_size = max(10, round(max(height, width) / 40))
    band = min(height, round(font_size * 1.6))
    rgb[:band] = (rgb[:band] * _TITLE_DARKEN).astype(np.uint8)
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=font_size)
    margin = font_size // 2
    shown, kept = text, len(text)
    while kept > 0 and draw.textlength(shown, font=font) > width - 2 * margin:
        kept -= 1
        shown = text[:kept] + "..."
    draw.text((margin, band // 2), shown, fill=(255, 255, 255), font=font, anchor="lm")
    return image

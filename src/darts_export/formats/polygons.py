"""Polygons of a tile: its objects (labelled, packed and traced) and its valid-data extent.

:func:`polygonize_objects` and :func:`polygonize_extent` turn a boolean raster into a
:class:`geopandas.GeoDataFrame` in the tile's CRS; the objects also say which pixels make
each row, for the zonal statistics (:mod:`darts_export.formats.zonal`).

Geometry model: a *region* is a set of set pixels that is 8-connected (pixels touching
only at a corner belong together), and each region is one row. Its geometry is the exact
union of its pixel squares: corners at ``transform * (col, row)``, holes kept, nothing
simplified. A region whose pixels touch only at a corner is not a valid ``Polygon``, so
every row is a valid ``MultiPolygon`` (usually with one part): one geometry type per
layer, whatever the data. Exterior rings run counter-clockwise, holes clockwise.

Speed: GDAL traces only what needs tracing. Objects are found through a coarse grid of
occupied cells, and only their bounding windows are labelled and traced; the extent is
traced at block resolution where blocks are fully valid and at pixel resolution only
along its border, then the pieces are unioned. The windows are packed side by side into
one canvas and traced in a single GDAL call (``rasterio.features.shapes`` builds a
credentialled GDAL session per call whenever AWS credentials are in the
environment), then every polygon is moved back by its window's offset. All
geometry work happens in integer pixel coordinates, so shifts and union are exact, and
the affine transform is applied last.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import geopandas as gpd
import numpy as np
import pyproj
import shapely
from affine import Affine
from shapely.geometry.base import BaseGeometry

from darts_export.errors import InvalidTileError
from darts_export.formats._gdal import local_gdal_env, polygonize

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from darts_export.tile import GeoRef

__all__ = ["EXTENT_COLUMNS", "ObjectPolygons", "polygonize_extent", "polygonize_objects"]

logger = logging.getLogger(__name__)

EXTENT_COLUMNS: Final = ("Region_ID", "geometry")
"""Columns of :func:`polygonize_extent`, in order."""

_OBJECT_CELL: Final = 32
"""Side of the coarse cells used to find object windows."""
_EXTENT_BLOCK: Final = 128
"""Side of the blocks traced whole when fully valid."""


@dataclass(frozen=True, kw_only=True)
class ObjectPolygons:
    """The objects of a mask, one row each, and the pixels that make every row."""

    frame: gpd.GeoDataFrame
    """``Region_ID`` (int64, 1..n in raster order of each object's first pixel) and the
    ``MultiPolygon`` geometry, with the tile's CRS."""
    pixels: NDArray[np.intp]
    """Flat (row-major) index into the tile of every object pixel."""
    regions: NDArray[np.int64]
    """The 0-based row of :attr:`frame` that each of :attr:`pixels` belongs to."""

    @property
    def count(self) -> int:
        """The number of objects."""
        return len(self.frame)


def polygonize_objects(mask: NDArray[Any], georef: GeoRef) -> ObjectPolygons:
    """One row per 8-connected object of ``mask``.

    Args:
        mask: 2-D north-up mask of the tile (e.g. ``binarized_segmentation``); non-zero is set.
        georef: The tile's georeference; ``mask.shape`` must equal ``georef.shape``.

    Returns:
        The objects' frame (``Region_ID`` and geometry; no object gives an empty frame with
        the same columns and dtypes) and, for every object pixel, its row in the frame.

    Raises:
        InvalidTileError: ``mask`` is not 2-D with the tile's shape.
    """
    started = time.perf_counter()
    with local_gdal_env():  # no credentialled GDAL environment per GDAL call
        objects = _trace_objects(_as_mask(mask, georef, "mask"))
    geometries = _group_multipolygons(objects.polygons, objects.owners, objects.count)
    order = _raster_order(geometries)
    row_of = np.empty(objects.count, dtype=np.int64)
    row_of[order] = np.arange(objects.count, dtype=np.int64)
    columns: dict[str, NDArray[Any]] = {"Region_ID": np.arange(1, objects.count + 1, dtype=np.int64)}
    frame = _frame(columns, geometries[order], georef)
    logger.debug("Polygonized %d objects in %.3f s", objects.count, time.perf_counter() - started)
    return ObjectPolygons(frame=frame, pixels=objects.pixels, regions=row_of[objects.pixel_owner])


def polygonize_extent(valid: NDArray[Any], georef: GeoRef) -> gpd.GeoDataFrame:
    """One row per 8-connected region of valid data (e.g. ``extent > 0``).

    Args:
        valid: 2-D north-up mask of valid pixels; non-zero is valid.
        georef: The tile's georeference; ``valid.shape`` must equal ``georef.shape``.

    Returns:
        A frame with :data:`EXTENT_COLUMNS`: ``Region_ID`` (int64, 1..n in raster order of
        each region's first pixel) and the ``MultiPolygon`` geometry, with the tile's CRS.

    Raises:
        InvalidTileError: ``valid`` is not 2-D with the tile's shape.
    """
    started = time.perf_counter()
    with local_gdal_env():
        pieces = _extent_pieces(_as_mask(valid, georef, "valid"))
    # The union keeps a vertex wherever a block seam met the outline; dropping exactly collinear
    # vertices (tolerance 0, integer coordinates) changes no edge, only how it is written.
    parts = shapely.get_parts(shapely.simplify(shapely.union_all(_make_valid(pieces)), 0.0)) if pieces.size else pieces
    regions = _touching_groups(parts)
    count = int(regions.max()) + 1 if regions.size else 0
    geometries = _group_multipolygons(parts, regions, count)
    order = _raster_order(geometries)
    columns: dict[str, NDArray[Any]] = {"Region_ID": np.arange(1, count + 1, dtype=np.int64)}
    frame = _frame(columns, geometries[order], georef)
    logger.debug("Polygonized %d extent regions in %.3f s", count, time.perf_counter() - started)
    return frame


# --- inputs and outputs -------------------------------------------------------------


def _as_mask(array: NDArray[Any], georef: GeoRef, name: str) -> NDArray[np.bool_]:
    """``array`` as a boolean mask of the tile's shape (a view when it already is one)."""
    data = np.asarray(array)
    if data.shape != georef.shape:
        raise InvalidTileError(
            f"{name} has shape {data.shape} but the tile is {georef.shape} (height, width); "
            "pass a 2-D array of the tile itself."
        )
    return data if data.dtype == np.bool_ else data != 0


def _frame(columns: dict[str, NDArray[Any]], geometries: NDArray[np.object_], georef: GeoRef) -> gpd.GeoDataFrame:
    """A frame of ``columns`` plus the pixel-space ``geometries`` moved into the tile's CRS."""
    t = georef.transform
    scale, offset = np.array([t.a, t.e]), np.array([t.c, t.f])
    moved = shapely.transform(geometries, lambda xy: xy * scale + offset)
    oriented = shapely.orient_polygons(moved, exterior_cw=False)  # y flips, so re-orient after moving
    crs = pyproj.CRS.from_wkt(georef.crs.to_wkt(version="WKT2_2019"))
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(oriented, crs=crs))


# --- tracing --------------------------------------------------------------------------


def _trace(raster: NDArray[Any], *, mask: NDArray[np.bool_], scale: int = 1) -> tuple[list[shapely.Polygon], list[int]]:
    """GDAL's 8-connected polygons of ``raster`` where ``mask``, with their values; each cell spans ``scale`` pixels."""
    return polygonize(raster, mask=mask, transform=Affine.scale(scale))


def _block_counts(mask: NDArray[np.bool_], block: int) -> NDArray[np.int64]:
    """Number of set pixels in each ``block`` × ``block`` cell; the last row/column of cells may be smaller."""
    height, width = mask.shape
    starts = np.arange(0, width, block)
    counts = np.empty((-(-height // block), starts.size), dtype=np.int64)
    pixels = mask.view(np.uint8)
    for i, top in enumerate(range(0, height, block)):
        column_sums = pixels[top : top + block].sum(axis=0, dtype=np.uint16)
        counts[i] = np.add.reduceat(column_sums, starts, dtype=np.int64)
    return counts


def _object_windows(mask: NDArray[np.bool_]) -> Iterator[tuple[slice, slice, NDArray[np.bool_]]]:
    """Windows that together hold every object whole, each once, with the pixels of other windows cleared.

    Cells with any set pixel are grouped 8-connectedly; two 8-connected pixels always lie
    in the same or in touching cells, so an object never spans two groups.
    """
    cell = _OBJECT_CELL
    occupied = _block_counts(mask, cell) > 0
    runs = _Runs.of(occupied)
    group, count = runs.components()
    groups = runs.paint(occupied.shape, group + 1, np.int32)
    top = runs.row[np.unique(group, return_index=True)[1]]  # a group's first run is on its top row
    bottom, left, right = np.zeros(count, np.intp), np.full(count, occupied.shape[1], np.intp), np.zeros(count, np.intp)
    np.maximum.at(bottom, group, runs.row + 1)
    np.minimum.at(left, group, runs.first)
    np.maximum.at(right, group, runs.end)
    height, width = mask.shape
    boxes = zip(top.tolist(), bottom.tolist(), left.tolist(), right.tolist(), strict=True)
    for group_id, (cell_top, cell_bottom, cell_left, cell_right) in enumerate(boxes, start=1):
        cell_rows, cell_cols = slice(cell_top, cell_bottom), slice(cell_left, cell_right)
        rows = slice(cell_top * cell, min(cell_bottom * cell, height))
        cols = slice(cell_left * cell, min(cell_right * cell, width))
        window = mask[rows, cols]
        cells = groups[cell_rows, cell_cols]
        if np.any((cells != group_id) & (cells != 0)):  # the bounding box reaches into another group
            inside = np.repeat(np.repeat(cells == group_id, cell, axis=0), cell, axis=1)
            window = window & inside[: window.shape[0], : window.shape[1]]
        yield rows, cols, window


@dataclass(frozen=True, kw_only=True)
class _Objects:
    """Objects traced window by window; ids are 0-based in the order they were found."""

    count: int
    polygons: NDArray[np.object_]  # GDAL polygons, pixel coordinates
    owners: NDArray[np.int64]  # the object of each polygon
    pixels: NDArray[np.intp]  # flat index of every object pixel in the tile
    pixel_owner: NDArray[np.int64]  # the object of each of those pixels


def _trace_objects(mask: NDArray[np.bool_]) -> _Objects:
    """Label (8-connected) every object of ``mask`` inside its window, then trace all windows in one call.

    Objects are numbered window by window, and in each window in raster order of their first pixel;
    their pixels are listed in the same order, each window's in raster order.
    """
    windows = list(_object_windows(mask))
    if not windows:
        empty = np.empty(0, dtype=np.int64)
        return _Objects(
            count=0, polygons=_object_array([]), owners=empty, pixels=empty.astype(np.intp), pixel_owner=empty
        )
    canvas, corners = _packed_canvas([window.shape for _, _, window in windows])
    for index, ((_, _, window), (top, left)) in enumerate(zip(windows, corners.tolist(), strict=True), start=1):
        canvas[top : top + window.shape[0], left : left + window.shape[1]][window] = index
    # Windows are a pixel apart on the canvas: one labelling of the canvas labels every window at once.
    runs = _Runs.of(canvas > 0)
    label, count = runs.components()  # in the canvas's raster order
    window_of_run = canvas.reshape(-1)[runs.row * canvas.shape[1] + runs.first].astype(np.intp) - 1
    window_of = window_of_run[np.unique(label, return_index=True)[1]]
    by_window = np.lexsort((np.arange(count), window_of))  # a window's objects keep their raster order
    number = np.empty(count, dtype=np.int64)
    number[by_window] = np.arange(count, dtype=np.int64)
    canvas[...] = 0
    canvas.reshape(-1)[runs.pixels(canvas.shape[1])] = np.repeat(number[label] + 1, runs.length)
    origins = np.array([(rows.start, cols.start) for rows, cols, _ in windows], dtype=np.int64)
    offsets = origins - corners  # tile (row, column) minus canvas (row, column), per window
    in_tile = np.argsort(window_of_run, kind="stable")  # window by window, each in raster order
    tile_row = runs.row[in_tile] + offsets[window_of_run[in_tile], 0]
    tile_first = runs.first[in_tile] + offsets[window_of_run[in_tile], 1]
    tile_runs = _Runs(row=tile_row, first=tile_first, end=tile_first + runs.length[in_tile])
    polygons, values = _trace(canvas, mask=canvas > 0)
    owners = np.asarray(values, dtype=np.int64) - 1
    shifts = offsets[window_of[by_window]][:, ::-1]  # (column, row) per object number
    return _Objects(
        count=count,
        polygons=_shifted(_object_array(polygons), shifts[owners]),
        owners=owners,
        pixels=tile_runs.pixels(mask.shape[1]),
        pixel_owner=np.repeat(number[label][in_tile], tile_runs.length),
    )


def _extent_pieces(valid: NDArray[np.bool_]) -> NDArray[np.object_]:
    """Polygons that exactly tile ``valid``: fully valid blocks traced whole, the rest pixel by pixel.

    The rest are the runs of partly valid blocks along each row of blocks, packed into one
    canvas where each run's valid pixels hold its 1-based index.
    """
    block = _EXTENT_BLOCK
    counts = _block_counts(valid, block)
    full = counts == block * block  # smaller edge blocks never qualify and are traced per pixel
    pieces, _ = _trace(full.view(np.uint8), mask=full, scale=block)
    edges = np.diff(((counts > 0) & ~full).astype(np.int8), axis=1, prepend=0, append=0)
    block_rows, starts = np.nonzero(edges == 1)
    stops = np.nonzero(edges == -1)[1]  # row-major like the starts, so the i-th stop ends the i-th run
    windows = [
        valid[row * block : (row + 1) * block, start * block : stop * block]
        for row, start, stop in zip(block_rows.tolist(), starts.tolist(), stops.tolist(), strict=True)
    ]
    if not windows:
        return _object_array(pieces)
    canvas, corners = _packed_canvas([window.shape for window in windows], len(windows))
    for run, (window, (top, left)) in enumerate(zip(windows, corners.tolist(), strict=True), start=1):
        canvas[top : top + window.shape[0], left : left + window.shape[1]][window] = run
    traced, values = _trace(canvas, mask=canvas > 0)
    runs = np.asarray(values, dtype=np.int64) - 1
    order = np.argsort(runs, kind="stable")  # the pieces of each run together, in the order GDAL found them
    origins = np.column_stack((starts * block, block_rows * block)).astype(np.int64)
    shifts = origins[runs] - corners[runs][:, ::-1]
    return np.concatenate((_object_array(pieces), _shifted(_object_array(traced), shifts)[order]))


def _packed_canvas(
    shapes: Sequence[tuple[int, ...]], largest: int = np.iinfo(np.int32).max
) -> tuple[NDArray[np.integer[Any]], NDArray[np.int64]]:
    """A zeroed canvas holding windows of ``shapes`` side by side, and each window's (row, column) corner.

    The canvas has the smallest type GDAL traces that holds values up to ``largest``.

    Shelf packing, tallest windows first: windows are at least one pixel apart, so the
    pixels of two windows never touch, not even at a corner.
    """
    sizes = np.array(shapes, dtype=np.int64).reshape(-1, 2)
    width = max(int(sizes[:, 1].max(initial=0)), int(np.ceil(np.sqrt(np.prod(sizes + 1, axis=1).sum()))))
    corners = np.empty_like(sizes)
    top = left = shelf = 0
    for i in np.argsort(-sizes[:, 0], kind="stable").tolist():
        height, span = sizes[i].tolist()
        if left + span > width:  # start a new shelf below the tallest (first) window of this one
            top, left, shelf = top + shelf + 1, 0, 0
        corners[i] = top, left
        left, shelf = left + span + 1, max(shelf, height)
    dtype = np.min_scalar_type(largest) if largest <= np.iinfo(np.uint16).max else np.dtype(np.int32)
    return np.zeros((top + shelf, width), dtype=dtype), corners


def _shifted(polygons: NDArray[np.object_], shifts: NDArray[np.int64]) -> NDArray[np.object_]:
    """``polygons`` (fresh from :func:`_trace`, changed in place) each moved by its (column, row) shift."""
    if polygons.size == 0:
        return polygons
    xy, owner = shapely.get_coordinates(polygons, return_index=True)
    return np.asarray(shapely.set_coordinates(polygons, xy + shifts[owner]), dtype=object)


# --- labelling ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Runs:
    """Horizontal runs of set pixels in raster order: each run's row, first column and end column (exclusive)."""

    row: NDArray[np.intp]
    first: NDArray[np.intp]
    end: NDArray[np.intp]

    @classmethod
    def of(cls, mask: NDArray[np.bool_]) -> _Runs:
        """The runs of ``mask``."""
        height, width = mask.shape
        framed = np.zeros((height, width + 1), dtype=np.bool_)  # a clear column ends each row's last run
        framed[:, :width] = mask
        flat = framed.reshape(-1)
        edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        if flat.size and flat[0]:
            edges = np.concatenate((np.zeros(1, dtype=edges.dtype), edges))
        row, first = np.divmod(edges[0::2], width + 1)
        return cls(row=row, first=first, end=first + (edges[1::2] - edges[0::2]))

    @property
    def length(self) -> NDArray[np.intp]:
        """Pixels per run."""
        return self.end - self.first

    def pixels(self, width: int) -> NDArray[np.intp]:
        """Flat (row-major) index of every pixel of the runs in an image ``width`` wide, run by run."""
        length = self.length
        starts = self.row * width + self.first
        before = np.cumsum(length) - length
        return np.repeat(starts - before, length) + np.arange(int(length.sum()), dtype=np.intp)

    def paint(self, shape: tuple[int, int], values: NDArray[Any], dtype: type[np.integer[Any]]) -> NDArray[Any]:
        """An image of ``shape`` with each run's pixels set to its value, zero elsewhere."""
        image = np.zeros(shape, dtype=dtype)
        image.reshape(-1)[self.pixels(shape[1])] = np.repeat(values, self.length)
        return image

    def components(self) -> tuple[NDArray[np.intp], int]:
        """The 8-connected region of each run, numbered in raster order of the regions' first pixels.

        Regions and numbering are those of ``scipy.ndimage.label`` with a 3 × 3 structure.
        """
        width = int(self.end.max(initial=0)) + 2  # row stride of the positions below; wider than any row
        start, stop = self.row * width + self.first, self.row * width + self.end
        # Run j of the next row touches run i (corners included) when j.first <= i.end and j.end >= i.first.
        low = np.searchsorted(stop, start + width, side="left")
        high = np.searchsorted(start, stop + width, side="right")
        touching = np.maximum(high - low, 0)
        left = np.repeat(np.arange(start.size, dtype=np.intp), touching)
        step = np.arange(int(touching.sum()), dtype=np.intp) - np.repeat(np.cumsum(touching) - touching, touching)
        return _components(start.size, left, np.repeat(low, touching) + step)


def _components(count: int, left: NDArray[np.intp], right: NDArray[np.intp]) -> tuple[NDArray[np.intp], int]:
    """The connected component of each of ``count`` nodes joined by edges ``left[i]``-``right[i]``, and their number.

    Components are numbered from 0 in the order of their smallest node (as
    ``scipy.sparse.csgraph.connected_components`` numbers them). Roots are hooked under the smaller
    root of each edge, then every node jumps to its root, until no edge joins two roots.
    """
    root = np.arange(count, dtype=np.intp)
    while True:
        a, b = root[left], root[right]
        apart = a != b
        if not apart.any():
            break
        a, b = a[apart], b[apart]
        np.minimum.at(root, np.maximum(a, b), np.minimum(a, b))
        while True:
            up = root[root]
            if np.array_equal(up, root):
                break
            root = up
    roots, component = np.unique(root, return_inverse=True)
    return component.astype(np.intp, copy=False), int(roots.size)


# --- geometry -------------------------------------------------------------------------


def _object_array(geometries: Sequence[BaseGeometry]) -> NDArray[np.object_]:
    array = np.empty(len(geometries), dtype=object)
    array[:] = geometries
    return array


def _make_valid(geometries: NDArray[np.object_]) -> NDArray[np.object_]:
    """Repair GDAL's self-touching rings (at diagonal pinches) without changing the covered area."""
    invalid = ~shapely.is_valid(geometries)
    if not invalid.any():
        return geometries
    repaired = geometries.copy()
    repaired[invalid] = shapely.make_valid(geometries[invalid], method="structure", keep_collapsed=False)
    return repaired


def _group_multipolygons(polygons: NDArray[np.object_], owners: NDArray[np.int64], count: int) -> NDArray[np.object_]:
    """One valid MultiPolygon per owner ``0 .. count - 1``, the union of that owner's polygons."""
    if count == 0:
        return _object_array([])
    polygons = _make_valid(polygons)
    order = np.argsort(owners, kind="stable")
    groups = np.split(polygons[order], np.flatnonzero(np.diff(owners[order])) + 1)
    merged = _object_array([group[0] if len(group) == 1 else shapely.union_all(group) for group in groups])
    parts, owner = shapely.get_parts(merged, return_index=True)
    return np.asarray(shapely.multipolygons(parts, indices=owner), dtype=object)


def _touching_groups(parts: NDArray[np.object_]) -> NDArray[np.int64]:
    """Group polygons that touch (at a corner: 8-connected pixels); 0-based group per part."""
    if parts.size == 0:
        return np.empty(0, dtype=np.int64)
    left, right = shapely.STRtree(parts).query(parts, predicate="intersects")
    return _components(parts.size, left, right)[0].astype(np.int64)


def _raster_order(geometries: NDArray[np.object_]) -> NDArray[np.intp]:
    """The order of pixel-space ``geometries`` by their first pixel in raster order (top row, then left).

    That pixel's top-left corner is the geometry's vertex with the least row, then column.
    """
    if geometries.size == 0:
        return np.empty(0, dtype=np.intp)
    xy, owner = shapely.get_coordinates(geometries, return_index=True)
    by_corner = np.lexsort((xy[:, 0], xy[:, 1], owner))
    first = by_corner[np.flatnonzero(np.diff(owner[by_corner], prepend=-1))]
    return np.lexsort((xy[first, 0], xy[first, 1]))

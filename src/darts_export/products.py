"""The registry of export products: band words, the tile variables they read, and their file names.

The writer (:mod:`darts_export.export`) and the completeness check
(:func:`darts_export.verify.missing_outputs`) both read file names from
:func:`plan_products`, so they cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, cast

from darts_export.errors import InvalidTileError

__all__ = [
    "DEFAULT_BANDS",
    "GEOMETRY_TYPE",
    "ITEM_NAME",
    "MANIFEST_NAME",
    "MAX_NAME_BYTES",
    "PROBABILITY_NODATA",
    "Kind",
    "MediaType",
    "OutputFile",
    "PlannedProduct",
    "Product",
    "asset_key",
    "expected_paths",
    "is_reserved_name",
    "plan_products",
    "validate_subset_name",
]

MANIFEST_NAME = "manifest.json"
"""The commit marker, written after every artifact it lists."""

ITEM_NAME = "item.json"
"""The STAC Item of the export, written after every artifact and before the manifest."""

PROBABILITY_NODATA: Final = 255
"""The nodata value of the byte rasters: probabilities in percent (0-100) and the binarized mask (0/1)."""

GEOMETRY_TYPE: Final = "MultiPolygon"
"""The geometry type of every row of the vector products (objects and extent)."""


class Product(StrEnum):
    """The band words of ``export_tile(bands=...)``; any other word names a tile variable."""

    PROBABILITIES = "probabilities"
    BINARIZED = "binarized"
    POLYGONIZED = "polygonized"
    EXTENT = "extent"
    THUMBNAIL = "thumbnail"
    OPTICAL = "optical"
    DEM = "dem"
    TCVIS = "tcvis"
    METADATA = "metadata"


DEFAULT_BANDS: tuple[str, ...] = (
    Product.PROBABILITIES,
    Product.BINARIZED,
    Product.POLYGONIZED,
    Product.EXTENT,
    Product.THUMBNAIL,
)
"""The products exported when ``bands`` is not given (as in the original)."""

DEBUG_PRODUCT = "debug"
DEBUG_STORE_NAME = "darts_inference_debug.zarr"


class Kind(StrEnum):
    """How a product is encoded."""

    PROBABILITY_RASTER = "probability-raster"  # float [0, 1] -> uint8 percent COG, 255 = nodata
    MASK_RASTER = "mask-raster"  # bool -> uint8 0/1 COG, 255 = nodata outside the valid extent
    BAND_RASTER = "band-raster"  # one or more variables -> COG with band descriptions
    VECTOR = "vector"  # mask -> GeoParquet + GeoPackage
    THUMBNAIL = "thumbnail"  # quick-look JPEG
    METADATA_JSON = "metadata-json"  # the metadata dict as JSON
    DEBUG_STORE = "debug-store"  # the whole tile as Zarr


class MediaType(StrEnum):
    """Media types of the artifacts: pystac's values, so STAC clients recognise them.

    Spelled out rather than read from ``pystac.MediaType``, whose import (all of pystac) would
    otherwise be paid by ``import darts_export``; tests/test_imports.py asserts they are equal.
    """

    COG = "image/tiff; application=geotiff; profile=cloud-optimized"
    GEOPARQUET = "application/vnd.apache.parquet"
    GEOPACKAGE = "application/geopackage+sqlite3"
    JPEG = "image/jpeg"
    JSON = "application/json"
    GEOJSON = "application/geo+json"
    ZARR = "application/vnd.zarr"  # pystac's ZARR (vnd+zarr) is deprecated


@dataclass(frozen=True, kw_only=True)
class OutputFile:
    """One artifact of a product: its path relative to ``out_dir``, media type and STAC roles."""

    path: str
    media_type: MediaType
    roles: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class PlannedProduct:
    """A product to write: what it reads from the tile and which files it produces."""

    product: str
    kind: Kind
    subset: str | None
    required: tuple[str, ...]
    optional: tuple[str, ...]
    outputs: tuple[OutputFile, ...]
    descriptions: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class _Spec:
    kind: Kind
    stem: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    per_subset: bool = False
    descriptions: tuple[str, ...] = ()


_SPECS: dict[Product, _Spec] = {
    Product.PROBABILITIES: _Spec(
        kind=Kind.PROBABILITY_RASTER, stem="probabilities", required=("probabilities",), per_subset=True
    ),
    Product.BINARIZED: _Spec(
        kind=Kind.MASK_RASTER, stem="binarized", required=("binarized_segmentation",), per_subset=True
    ),
    Product.POLYGONIZED: _Spec(
        kind=Kind.VECTOR,
        stem="prediction_segments",
        required=("binarized_segmentation",),
        optional=("probabilities",),
        per_subset=True,
    ),
    Product.EXTENT: _Spec(kind=Kind.VECTOR, stem="prediction_extent", required=("extent",)),
    Product.THUMBNAIL: _Spec(
        kind=Kind.THUMBNAIL,
        stem="thumbnail",
        required=("probabilities",),
        optional=("red", "green", "blue", "extent", "binarized_segmentation"),
    ),
    Product.OPTICAL: _Spec(
        kind=Kind.BAND_RASTER,
        stem="optical",
        required=("red", "green", "blue", "nir"),
        descriptions=("red", "green", "blue", "nir"),
    ),
    Product.DEM: _Spec(
        kind=Kind.BAND_RASTER,
        stem="dem",
        required=("slope", "relative_elevation"),
        descriptions=("slope", "relative_elevation"),
    ),
    Product.TCVIS: _Spec(
        kind=Kind.BAND_RASTER,
        stem="tcvis",
        required=("tc_brightness", "tc_greenness", "tc_wetness"),
        descriptions=("tc_brightness", "tc_greenness", "tc_wetness"),
    ),
    Product.METADATA: _Spec(kind=Kind.METADATA_JSON, stem="darts_inference", required=()),
}

_SUFFIXES: dict[Kind, tuple[tuple[str, MediaType, tuple[str, ...]], ...]] = {
    Kind.PROBABILITY_RASTER: ((".tif", MediaType.COG, ("data",)),),
    Kind.MASK_RASTER: ((".tif", MediaType.COG, ("data",)),),
    Kind.BAND_RASTER: ((".tif", MediaType.COG, ("data",)),),
    Kind.VECTOR: ((".parquet", MediaType.GEOPARQUET, ("data",)), (".gpkg", MediaType.GEOPACKAGE, ("data",))),
    Kind.THUMBNAIL: ((".jpg", MediaType.JPEG, ("thumbnail",)),),
    Kind.METADATA_JSON: ((".json", MediaType.JSON, ("metadata",)),),
    Kind.DEBUG_STORE: (("", MediaType.ZARR, ("debug",)),),
}

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")
MAX_NAME_BYTES = 255
"""The longest file or folder name every target accepts (ext4, APFS, NTFS, S3 key segments)."""
_RESERVED_STEMS = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
)  # Windows device names: no file may be called so, whatever its extension
_FORMAT_SUFFIXED = frozenset({"parquet", "gpkg"})  # formats written in pairs with one stem
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def validate_subset_name(name: str) -> str:
    """Return ``name`` if it is safe inside a file name, else raise :class:`InvalidTileError`."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise InvalidTileError(
            f"Ensemble subset name {name!r} is not safe in a file name: use letters, digits and '_.+=-', "
            "starting with a letter or digit (no '/', no '..', not empty)."
        )
    return name


def _validate_band_word(band: str) -> str:
    if not isinstance(band, str) or not _SAFE_NAME.fullmatch(band) or ".." in band:
        raise InvalidTileError(
            f"Band {band!r} cannot be exported: band names become file names; use letters, digits and '_.+=-'."
        )
    return band


def is_reserved_name(name: str) -> bool:
    """Whether ``name`` (a file or folder name) is a Windows device name such as ``con.tif`` or ``NUL``."""
    return name.split(".", 1)[0].upper() in _RESERVED_STEMS


def asset_key(path: str) -> str:
    """The STAC asset key of the artifact at ``path``.

    The file name without its extension (``probabilities-with_tcvis.tif`` →
    ``probabilities-with_tcvis``, ``darts_inference_debug.zarr`` → ``darts_inference_debug``),
    except for the vector formats written in pairs under one stem, which keep their format:
    ``prediction_segments.parquet`` → ``prediction_segments-parquet``,
    ``prediction_segments.gpkg`` → ``prediction_segments-gpkg``. Characters other than
    letters, digits, ``_`` and ``-`` become ``_``.
    """
    stem, dot, ext = path.rpartition(".")
    if not dot or "/" in ext:
        stem, ext = path, ""
    key = f"{stem}-{ext}" if ext in _FORMAT_SUFFIXED else stem
    return _UNSAFE_KEY_CHARS.sub("_", key)


def _names(value: object, what: str, example: str) -> tuple[str, ...]:
    """The names in ``value``: any iterable of strings (a list, a tuple, ``dict.keys()``), never a single string."""
    if isinstance(value, str | bytes):
        raise InvalidTileError(f"{what} must be a list of names, not the single string {value!r}; write [{value!r}].")
    try:
        return tuple(cast("Iterable[str]", value))
    except TypeError as exc:
        raise InvalidTileError(
            f"{what} must be a list of names such as {example}, got {type(value).__name__} {value!r}."
        ) from exc


def _outputs(kind: Kind, stem: str) -> tuple[OutputFile, ...]:
    return tuple(
        OutputFile(path=f"{stem}{suffix}", media_type=media, roles=roles) for suffix, media, roles in _SUFFIXES[kind]
    )


def _subset_variant(spec: _Spec, product: str, subset: str) -> PlannedProduct:
    return PlannedProduct(
        product=product,
        kind=spec.kind,
        subset=subset,
        required=tuple(f"{v}-{subset}" for v in spec.required),
        optional=tuple(f"{v}-{subset}" for v in spec.optional),
        outputs=_outputs(spec.kind, f"{spec.stem}-{subset}"),
        descriptions=spec.descriptions,
    )


def plan_products(
    bands: Iterable[str], ensemble_subsets: Iterable[str] = (), *, debug: bool = False
) -> tuple[PlannedProduct, ...]:
    """Expand band words and ensemble subsets into the products to write, in a stable order.

    Duplicate band words are written once. A word that is not a :class:`Product` names a
    tile variable, exported as ``{word}.tif``.

    ``bands`` and ``ensemble_subsets`` may be any iterable of strings (``dict.keys()`` too),
    but not a single string.

    Raises:
        InvalidTileError: ``bands`` is empty, a band word or subset name is unsafe in a file name, or
            two products would write the same file or the same STAC asset key.
    """
    band_words = _names(bands, "bands", "['probabilities', 'binarized']")
    if not band_words:
        raise InvalidTileError(
            f"bands is empty, so there is nothing to export; leave it out for the defaults {list(DEFAULT_BANDS)}."
        )
    subsets: Sequence[str] = tuple(
        dict.fromkeys(validate_subset_name(s) for s in _names(ensemble_subsets, "ensemble_subsets", "['with_tcvis']"))
    )
    planned: list[PlannedProduct] = []
    for band in dict.fromkeys(_validate_band_word(b) for b in band_words):
        if band in Product.__members__.values():
            spec = _SPECS[Product(band)]
            planned.append(
                PlannedProduct(
                    product=band,
                    kind=spec.kind,
                    subset=None,
                    required=spec.required,
                    optional=spec.optional,
                    outputs=_outputs(spec.kind, spec.stem),
                    descriptions=spec.descriptions,
                )
            )
            if spec.per_subset:
                planned.extend(_subset_variant(spec, band, s) for s in subsets)
        else:
            planned.append(
                PlannedProduct(
                    product=band,
                    kind=Kind.BAND_RASTER,
                    subset=None,
                    required=(band,),
                    optional=(),
                    outputs=_outputs(Kind.BAND_RASTER, band),
                    descriptions=(band,),
                )
            )
    if debug:
        planned.append(
            PlannedProduct(
                product=DEBUG_PRODUCT,
                kind=Kind.DEBUG_STORE,
                subset=None,
                required=(),
                optional=(),
                outputs=_outputs(Kind.DEBUG_STORE, DEBUG_STORE_NAME),
            )
        )
    _check_outputs(planned, band_words)
    return tuple(planned)


def _check_outputs(planned: Sequence[PlannedProduct], bands: Sequence[str]) -> None:
    """Every output has a legal, unique file name and its own STAC asset key."""
    paths = [o.path for p in planned for o in p.outputs]
    clashes = {p for p in paths if paths.count(p) > 1}
    if clashes:
        raise InvalidTileError(f"Bands {list(bands)} would write {sorted(clashes)} more than once; drop one of them.")
    overhead: dict[tuple[str, bool], int] = {}  # bytes each band or subset name gets around it, at most
    for product in planned:
        for output in product.outputs:
            name = product.subset or product.product
            slot = (name, product.subset is not None)
            overhead[slot] = max(overhead.get(slot, 0), len(output.path.encode()) - len(name.encode()))
    for (name, is_subset), extra in overhead.items():
        if len(name.encode()) + extra > MAX_NAME_BYTES:
            raise InvalidTileError(
                f"The {'ensemble subset' if is_subset else 'band'} name {name[:32]!r}... ({len(name)} characters) "
                f"makes file names of up to {len(name.encode()) + extra} bytes, more than the {MAX_NAME_BYTES} every "
                f"target allows; shorten it to at most {MAX_NAME_BYTES - extra} characters."
            )
    keys: dict[str, str] = {}
    for product in planned:
        for output in product.outputs:
            name = product.subset or product.product
            if is_reserved_name(output.path):
                raise InvalidTileError(
                    f"The file name {output.path!r} is a reserved device name on Windows; rename {name!r}."
                )
            key = asset_key(output.path)
            if key in keys:
                raise InvalidTileError(
                    f"{keys[key]!r} and {output.path!r} would share the STAC asset key {key!r}; "
                    f"rename the tile variable or drop one of the bands {list(bands)}."
                )
            keys[key] = output.path


def expected_paths(
    bands: Iterable[str], ensemble_subsets: Iterable[str] = (), *, debug: bool = False
) -> tuple[str, ...]:
    """Every path an export with these options writes, the STAC item and the manifest included."""
    planned = plan_products(bands, ensemble_subsets, debug=debug)
    return (*(o.path for p in planned for o in p.outputs), ITEM_NAME, MANIFEST_NAME)

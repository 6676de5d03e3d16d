"""The orchestration: validate a tile, encode every requested product, publish, commit the manifest.

Encoding (array → bytes) happens in :mod:`~darts_export.rasters`, :mod:`~darts_export.vectors`,
:mod:`~darts_export.thumbnail`; where bytes go is :mod:`~darts_export.storage`. Only this
module talks to both. Uploads run on a background thread while the next product encodes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from darts_export.__about__ import __version__
from darts_export.cog import CogOptions, RasterBand
from darts_export.errors import ArtifactExistsError, InvalidTileError
from darts_export.manifest import Artifact, Manifest
from darts_export.products import DEFAULT_BANDS, MANIFEST_NAME, Kind, OutputFile, PlannedProduct, plan_products
from darts_export.rasters import EncodedRaster, encode_band_raster, encode_mask_raster, encode_probability_raster
from darts_export.storage import Storage, StoredObject
from darts_export.tile import GeoRef, TileView

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["export_tile"]

logger = logging.getLogger(__name__)

EXPORT_DATE_KEY = "DARTS_exportdate"
_TILE_ID_KEYS = ("tile_id", "scene_id", "id")
_MAX_PENDING_UPLOADS = 4


def export_tile(
    tile: xr.Dataset,
    out_dir: str | os.PathLike[str],
    bands: Iterable[str] = DEFAULT_BANDS,
    ensemble_subsets: Iterable[str] = (),
    metadata: Mapping[str, Any] | None = None,
    debug: bool = False,
    *,
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = True,
    cog_options: CogOptions | None = None,
) -> Manifest:
    """Export a processed DARTS tile to a local folder or object storage.

    Writes the requested products (see :class:`~darts_export.products.Product`) as
    Cloud-Optimized GeoTIFFs, GeoParquet + GeoPackage, JPEG and JSON under ``out_dir``,
    then ``manifest.json`` listing every artifact with size and SHA-256 — written last,
    so its presence means the export is complete.

    Args:
        tile: The tile from DARTS ``prepare_export``: an ``xarray.Dataset`` with a rioxarray
            CRS and transform. It is not modified.
        out_dir: A local folder, ``file://``, ``s3://bucket/prefix``, ``memory://...`` or any fsspec URL.
        bands: Products to write: ``probabilities``, ``binarized``, ``polygonized``, ``extent``,
            ``thumbnail``, ``optical``, ``dem``, ``tcvis``, ``metadata`` or the name of any tile
            variable (written as ``{name}.tif``).
        ensemble_subsets: Ensemble members exported separately as ``{product}-{subset}`` files.
        metadata: Written as GDAL tags on every raster and, with the ``metadata`` band, as
            ``darts_inference.json``; ``DARTS_exportdate`` is added (to a copy). Must be JSON-serialisable.
        debug: Also write the whole tile as a Zarr store ``darts_inference_debug.zarr``.
        storage_options: Passed unchanged to fsspec (e.g. ``endpoint_url``, ``key``, ``secret`` for
            s3fs); without them the standard AWS environment applies.
        overwrite: Replace an existing export at ``out_dir``; with ``False`` an existing manifest
            raises :class:`~darts_export.errors.ArtifactExistsError`.
        cog_options: Codec and tiling of the GeoTIFFs.

    Returns:
        The manifest that was written.

    Raises:
        InvalidTileError: (a ``ValueError``) bad tile, band, subset or metadata — before anything is written.
        UnsupportedTargetError: ``out_dir`` has a protocol no installed fsspec implementation knows.
        StorageError: writing failed after retries; the manifest is then not written.
    """
    started = time.perf_counter()
    view = TileView(tile)
    planned = plan_products(list(bands), list(ensemble_subsets), debug=debug)
    _check_variables(planned, view)
    meta = _prepare_metadata(metadata)
    tile_id = _tile_id(meta, view.georef)
    storage = Storage.open(out_dir, storage_options)
    _prepare_target(storage, overwrite=overwrite)

    job = _Job(view=view, storage=storage, metadata=meta, tags=_raster_tags(meta), cog_options=cog_options)
    with tempfile.TemporaryDirectory(prefix="darts-export-") as staging, ThreadPoolExecutor(1) as uploads:
        job.staging = Path(staging)
        job.uploads = uploads
        for product in planned:
            product_started = time.perf_counter()
            job.write(product)
            logger.debug(
                "%s%s encoded in %.3f s", product.product, _suffix(product), time.perf_counter() - product_started
            )
        artifacts = job.collect()

    manifest = Manifest(
        tile_id=tile_id,
        crs=view.georef.crs_code,
        crs_wkt=view.georef.crs.to_wkt(),
        shape=view.georef.shape,
        transform=tuple(view.georef.transform)[:6],
        bounds=view.georef.bounds,
        created=meta[EXPORT_DATE_KEY],
        version=__version__,
        options={
            "bands": [p.product for p in planned if p.subset is None],
            "ensemble_subsets": sorted({p.subset for p in planned if p.subset is not None}),
            "debug": debug,
            "overwrite": overwrite,
        },
        artifacts=tuple(artifacts),
        location=storage.url,
        target=storage.url,
        warnings=tuple(job.warnings),
    )
    storage.publish_bytes(MANIFEST_NAME, manifest.to_json())
    logger.info(
        "exported tile %s to %s: %d artifacts, %d bytes in %.2f s",
        tile_id,
        storage.url,
        len(manifest.artifacts),
        manifest.total_size,
        time.perf_counter() - started,
    )
    return manifest


def _suffix(product: PlannedProduct) -> str:
    return f"-{product.subset}" if product.subset else ""


@dataclass(kw_only=True)
class _Job:
    """The state of one export while products are encoded and uploaded."""

    view: TileView
    storage: Storage
    metadata: Mapping[str, Any]
    tags: Mapping[str, str]
    cog_options: CogOptions | None
    staging: Path = field(default_factory=Path)
    uploads: ThreadPoolExecutor | None = None
    pending: list[tuple[OutputFile, PlannedProduct, Future[StoredObject]]] = field(default_factory=list)
    raster_bands: dict[str, tuple[RasterBand, ...]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def write(self, product: PlannedProduct) -> None:
        """Encode ``product`` and queue its artifacts for upload."""
        match product.kind:
            case Kind.PROBABILITY_RASTER:
                self._raster(
                    product,
                    encode_probability_raster(self.view, product.required[0], tags=self.tags, options=self.cog_options),
                )
            case Kind.MASK_RASTER:
                self._raster(
                    product,
                    encode_mask_raster(self.view, product.required[0], tags=self.tags, options=self.cog_options),
                )
            case Kind.BAND_RASTER:
                self._raster(
                    product, encode_band_raster(self.view, product.required, tags=self.tags, options=self.cog_options)
                )
            case Kind.METADATA_JSON:
                data = (json.dumps(self.metadata, indent=2, ensure_ascii=False) + "\n").encode()
                self._queue(product, product.outputs[0], data)
            case _:
                raise InvalidTileError(f"Product {product.product!r} ({product.kind}) cannot be written yet.")

    def _raster(self, product: PlannedProduct, encoded: EncodedRaster) -> None:
        output = product.outputs[0]
        self.raster_bands[output.path] = encoded.bands
        self._queue(product, output, encoded.data)

    def _queue(self, product: PlannedProduct, output: OutputFile, data: bytes | Path) -> None:
        assert self.uploads is not None
        while len([f for *_, f in self.pending if not f.done()]) >= _MAX_PENDING_UPLOADS:
            next(f for *_, f in self.pending if not f.done()).result()
        if isinstance(data, Path):
            future = self.uploads.submit(self._publish_staged, output.path, data)
        else:
            future = self.uploads.submit(self.storage.publish_bytes, output.path, data)
        self.pending.append((output, product, future))

    def _publish_staged(self, rel: str, path: Path) -> StoredObject:
        try:
            return self.storage.publish_file(rel, path)
        finally:
            path.unlink(missing_ok=True)

    def collect(self) -> list[Artifact]:
        """Wait for every upload; the artifacts in plan order. Re-raises the first failure."""
        artifacts = []
        for output, product, future in self.pending:
            stored = future.result()
            artifacts.append(
                Artifact(
                    path=stored.path,
                    size=stored.size,
                    checksum=stored.checksum,
                    media_type=str(output.media_type),
                    roles=output.roles,
                    product=product.product,
                    subset=product.subset,
                )
            )
        return artifacts


def _check_variables(planned: Iterable[PlannedProduct], view: TileView) -> None:
    """Every requested product finds the variables it needs, else one clear error listing them all."""
    missing: dict[str, list[str]] = {}
    for product in planned:
        absent = [v for v in product.required if v not in view]
        if absent:
            missing[f"{product.product}{_suffix(product)}"] = absent
    if missing:
        details = "; ".join(f"{name} needs {vars_}" for name, vars_ in missing.items())
        raise InvalidTileError(
            f"Band(s) not found in tile for export: {details}. Available variables are: {list(view.variables)}."
        )


def _prepare_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """A JSON-safe copy of ``metadata`` with ``DARTS_exportdate`` added; the caller's dict is untouched."""
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidTileError(f"metadata must be a mapping (dict), got {type(metadata).__name__}.")
    meta = dict(metadata or {})
    bad_keys = [k for k in meta if not isinstance(k, str)]
    if bad_keys:
        raise InvalidTileError(f"metadata keys must be strings; got {bad_keys!r}.")
    meta[EXPORT_DATE_KEY] = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    try:
        return dict(json.loads(json.dumps(meta, allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise InvalidTileError(
            f"metadata must be JSON-serialisable (strings, numbers, booleans, lists, dicts; no NaN): {exc}. "
            "Convert dates and numpy values with str() or .item() first."
        ) from exc


def _raster_tags(meta: Mapping[str, Any]) -> dict[str, str]:
    """Metadata as GDAL tags: strings stay as they are, everything else becomes JSON."""
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in meta.items()}


def _tile_id(meta: Mapping[str, Any], georef: GeoRef) -> str:
    """The tile id from metadata (``tile_id``, ``scene_id``, ``id``), else derived from the georeference."""
    for key in _TILE_ID_KEYS:
        value = meta.get(key)
        if isinstance(value, str | int) and str(value):
            return str(value)
    left, _, _, top = georef.bounds
    crs = georef.crs_code.replace(":", "") if georef.epsg is not None else "CRS"
    pixel = abs(georef.transform.a)
    return f"{crs}_{math.floor(left)}_{math.floor(top)}_{georef.width}x{georef.height}_{pixel:g}m"


def _prepare_target(storage: Storage, *, overwrite: bool) -> None:
    """Refuse or invalidate an earlier export at the target before the first artifact is written."""
    if storage.exists(MANIFEST_NAME):
        if not overwrite:
            raise ArtifactExistsError(
                f"An export already exists at {storage.url} ({MANIFEST_NAME} found); pass overwrite=True to replace it."
            )
        # The manifest is the commit marker: remove it first so a failed re-export never looks complete.
        storage.remove(MANIFEST_NAME)

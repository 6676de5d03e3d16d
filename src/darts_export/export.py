"""The orchestration: validate a tile, encode every requested product, publish, commit the manifest.

Encoding (array → bytes) happens in :mod:`~darts_export.formats.rasters`, :mod:`~darts_export.formats.polygons`,
:mod:`~darts_export.formats.thumbnail`; where bytes go is :mod:`~darts_export.storage`. Only this
module talks to both. Uploads run on a bounded pool while the next product encodes, inside one
commit transaction (:mod:`~darts_export.commit`: probe, lease, old manifest gone — while the first
products encode, before any upload — manifest last).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from darts_export.__about__ import __version__
from darts_export.commit import transaction
from darts_export.encoders import EncodeContext, Encoded, encode_product
from darts_export.errors import TargetUnreachableError
from darts_export.formats.cog import CogOptions, RasterBand
from darts_export.formats.rasters import probabilities_to_percent
from darts_export.inputs import load_needed
from darts_export.manifest import Artifact, Manifest
from darts_export.metadata import EXPORT_DATE_KEY, ExportMetadata, decide_metadata
from darts_export.preflight import check_arguments, check_variables, flag, open_target
from darts_export.products import (
    DEFAULT_BANDS,
    ITEM_NAME,
    MANIFEST_NAME,
    Kind,
    MediaType,
    OutputFile,
    PlannedProduct,
    plan_products,
)
from darts_export.stac.footprint import footprint
from darts_export.stac.item import build_item, encode_item
from darts_export.stac.placement import DEFAULT_COLLECTION, ItemPlacement
from darts_export.staging import staging_folder, sweep_stale_staging
from darts_export.storage import Sink, StoredObject, describe_bytes
from darts_export.tile import TileView

if TYPE_CHECKING:
    import xarray as xr
    from numpy.typing import NDArray

__all__ = ["ProgressEvent", "export_tile", "fallback_location"]

logger = logging.getLogger(__name__)

ProgressEvent = Literal["encoding", "publishing", "published"]
"""What ``export_tile``'s ``progress`` callback reports about an artifact path."""


def export_tile(
    tile: xr.Dataset,
    out_dir: str | os.PathLike[str] | Sink,
    bands: Iterable[str] = DEFAULT_BANDS,
    ensemble_subsets: Iterable[str] = (),
    metadata: Mapping[str, Any] | None = None,
    debug: bool = False,
    *,
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = True,
    fallback_dir: str | os.PathLike[str] | None = None,
    cog_options: CogOptions | None = None,
    progress: Callable[[ProgressEvent, str], None] | None = None,
    collection: str | None = DEFAULT_COLLECTION,
    href_base: str | None = None,
) -> Manifest:
    """Export a processed DARTS tile to a local folder or object storage.

    Writes the requested products (see :class:`~darts_export.products.Product`) as
    Cloud-Optimized GeoTIFFs, GeoParquet + GeoPackage, JPEG and JSON under ``out_dir``,
    then ``manifest.json`` listing every artifact with size and SHA-256 — written last,
    so its presence means the export is complete.

    Args:
        tile: The tile from DARTS ``prepare_export``: an ``xarray.Dataset`` with a rioxarray
            CRS and transform. It is not modified. Its ``attrs`` give the tile id, the acquisition
            time and the source scene's STAC properties when ``metadata`` does not
            (see :mod:`darts_export.metadata`).
        out_dir: A local folder, ``file://``, ``s3://bucket/prefix``, ``memory://...`` or any fsspec URL.
        bands: Products to write: ``probabilities``, ``binarized``, ``polygonized``, ``extent``,
            ``thumbnail``, ``optical``, ``dem``, ``tcvis``, ``metadata`` or the name of any tile
            variable (written as ``{name}.tif``). Any iterable of strings, not a single string.
        ensemble_subsets: Ensemble members exported separately as ``{product}-{subset}`` files;
            any iterable of strings (``models.keys()`` too).
        metadata: Written as GDAL tags on every raster, as ``darts:<key>`` STAC properties and, with
            the ``metadata`` band, as ``darts_inference.json``. Must be JSON-serialisable under keys
            GDAL can store. ``DARTS_exportdate`` (the export time) is added to a copy; give it
            yourself, or set ``SOURCE_DATE_EPOCH``, for byte-identical re-exports. ``tile_id`` /
            ``DARTS_tileid`` and ``datetime`` override the tile's attributes.
        debug: Also write the whole tile as a Zarr store ``darts_inference_debug.zarr``.
        storage_options: Passed unchanged to fsspec (e.g. ``endpoint_url``, ``key``, ``secret`` for
            s3fs); without them the standard AWS environment applies.
        overwrite: Replace an existing export at ``out_dir``; with ``False`` an existing manifest
            raises :class:`~darts_export.errors.ArtifactExistsError`.
        fallback_dir: A local folder to write to when the target is unreachable (connection refused or
            timed out, missing credentials, missing bucket). The export then lands in
            :func:`fallback_location`, its manifest records the intended ``target``, a warning is
            logged, and :func:`darts_export.sync.sync` can publish it later. Without it, such a
            target raises :class:`~darts_export.errors.TargetUnreachableError`.
        cog_options: Codec and tiling of the GeoTIFFs.
        progress: Called as ``progress(event, path)`` from worker threads: ``"encoding"`` when a product
            starts encoding (``path``: its first file), ``"publishing"`` when an artifact starts
            uploading and ``"published"`` once it is stored.
        collection: The STAC collection id the item names (with ``collection``/``root``/``parent``
            links to ``../collection.json``); ``None`` for an item without a collection.
        href_base: The public URL of the folder that holds the export folders (the collection
            root, e.g. ``s3://bucket/darts`` or ``https://data.example.org/darts``): the item's
            hrefs become ``{href_base}/{export folder name}/{file}``. By default they are
            relative, so the export folder is portable.

    Returns:
        The manifest that was written. Unless the export time was given, its ``clock_fields``
        name every value taken from the clock; nothing else differs between two exports.

    Raises:
        InvalidTileError: (a ``ValueError``) bad tile, band, subset, variable values, metadata or
            option — before anything is written.
        UnsupportedTargetError: ``out_dir`` has a protocol no installed fsspec implementation knows,
            or ``out_dir``/``storage_options`` have the wrong type, or paths would be too long.
        TargetUnreachableError: the target cannot be reached and no ``fallback_dir`` was given.
        ExportInProgressError: another export or sync holds the lease on ``out_dir``; nothing was written.
        StorageError: writing failed after retries (the debug store included); the manifest is then
            not written.
    """
    started = time.perf_counter()
    TileView(tile)  # the georeference is checked before any byte of a lazy tile is read
    planned = plan_products(bands, ensemble_subsets, debug=flag(debug, "debug"))
    view = TileView(load_needed(tile, planned))  # a lazily opened tile is read once, not per product
    check_variables(planned, view)
    meta = decide_metadata(metadata, view.dataset.attrs, view.georef)
    check_arguments(overwrite=overwrite, fallback_dir=fallback_dir, cog_options=cog_options, progress=progress)
    storage = out_dir if isinstance(out_dir, Sink) else open_target(out_dir, storage_options, planned, view)
    placement = ItemPlacement.create(collection=collection, href_base=href_base, target_url=storage.url)
    fallback = (
        open_target(fallback_location(fallback_dir, storage.url), None, planned, view)
        if fallback_dir is not None
        else None
    )
    job = _Job(
        view=view,
        planned=planned,
        meta=meta,
        cog_options=cog_options,
        options={
            "bands": list(dict.fromkeys(p.product for p in planned if p.subset is None)),
            "ensemble_subsets": list(dict.fromkeys(p.subset for p in planned if p.subset is not None)),
            "debug": debug,
            "overwrite": overwrite,
        },
        progress=progress,
        placement=placement,
    )
    try:
        manifest = job.run(storage, target=storage.url, overwrite=overwrite)
    except TargetUnreachableError as exc:
        if fallback is None:
            raise
        logger.warning(
            "target %s is unreachable (%s); writing the export to %s instead", storage.url, exc, fallback.url
        )
        job.warnings.append(f"target unreachable, written to the local fallback: {exc}")
        manifest = job.run(fallback, target=storage.url, overwrite=True)
    logger.info(
        "exported tile %s to %s: %d artifacts, %d bytes in %.2f s",
        manifest.tile_id,
        manifest.location,
        len(manifest.artifacts),
        manifest.total_size,
        time.perf_counter() - started,
    )
    return manifest


def fallback_location(fallback_dir: str | os.PathLike[str], target_url: str) -> Path:
    """Where an export meant for ``target_url`` lands under ``fallback_dir``.

    The target URL is mirrored below the folder (``s3://bucket/a/b`` → ``fallback_dir/s3/bucket/a/b``)
    so exports for different targets never collide and ``sync`` can tell where each belongs.
    """
    protocol, _, rest = target_url.partition("://")
    parts = [p for p in rest.split("/") if p not in ("", ".", "..")]
    return Path(fallback_dir).joinpath(protocol or "local", *parts)


@dataclass(kw_only=True)
class _Job:
    """One export: what to write, and how to encode, upload and commit it."""

    view: TileView
    planned: tuple[PlannedProduct, ...]
    meta: ExportMetadata
    cog_options: CogOptions | None
    options: Mapping[str, Any]
    progress: Callable[[ProgressEvent, str], None] | None = None
    placement: ItemPlacement = field(default_factory=ItemPlacement)
    warnings: list[str] = field(default_factory=list)

    def run(self, storage: Sink, *, target: str, overwrite: bool) -> Manifest:
        """Encode every product (two at a time) while publishing (concurrently), then the item and the manifest.

        Every write goes through one :func:`~darts_export.commit.transaction`: the target is probed
        and leased and its old manifest removed while the first products encode, before the first
        upload; the manifest comes last.
        """
        sweep_stale_staging()
        encodable = [p for p in self.planned if p.kind is not Kind.DEBUG_STORE]
        debug = [p for p in self.planned if p.kind is Kind.DEBUG_STORE]
        # Longest first, so the two encoder threads finish together.
        order = sorted(encodable, key=lambda p: _COST[p.kind], reverse=True)
        uploads: list[tuple[OutputFile, PlannedProduct, Future[StoredObject], Literal["file", "directory"]]] = []
        raster_bands: dict[str, tuple[RasterBand, ...]] = {}
        with (
            staging_folder() as staging,
            transaction(storage, overwrite=overwrite, progress=self._report) as tx,
            ThreadPoolExecutor(_ENCODER_THREADS, thread_name_prefix="darts-encode") as encoders,
        ):
            ctx = EncodeContext(
                view=self.view,
                tile_id=self.meta.tile_id,
                metadata=dict(self.meta.values),
                tags=self.meta.tags,
                cog_options=self.cog_options,
                staging=staging,
                percent=self._first_percent(order, encoders),
            )
            encoded: list[Future[Any]] = [encoders.submit(self._encode, p, ctx) for p in order]
            stores: dict[Future[Any], PlannedProduct] = {
                encoders.submit(self._encode_store, p, staging / p.outputs[0].path): p for p in debug
            }
            for store, product in stores.items():  # its chunks go up while the rest is still written
                rel = product.outputs[0].path
                upload = tx.publisher.publish_tree(rel, staging / rel, consume=True, writing=store, final=_written_once)
                uploads.append((product.outputs[0], product, upload, "directory"))
            footprint_future = encoders.submit(footprint, self.view)  # for the item; queued last
            try:
                for future in as_completed([tx.ready, *encoded, *stores]):
                    if future is tx.ready:
                        future.result()  # fail fast: the target cannot be used, or another export holds it
                        continue
                    tx.publisher.raise_if_failed()  # fail fast: an upload failed for good
                    if future in stores:
                        future.result()  # its objects are on their way already
                        continue
                    result = cast("Encoded", future.result())
                    raster_bands.update(result.raster_bands)
                    for output, data in result.payloads:
                        upload = tx.publisher.publish(output.path, data, consume=True)
                        uploads.append((output, result.product, upload, "file"))
                tx.publisher.wait()
                artifacts = [_artifact(o, p, f.result(), kind=k) for o, p, f, k in uploads]
                rank = {o.path: i for i, o in enumerate(o for p in self.planned for o in p.outputs)}
                artifacts.sort(key=lambda a: rank[a.path])
                draft = self._manifest(storage, target, artifacts)
                item = encode_item(
                    build_item(
                        draft,
                        self.view,
                        metadata=self.meta,
                        raster_bands=raster_bands,
                        geometry=footprint_future.result(),
                        placement=self.placement,
                    )
                )
            except BaseException:
                for pending in [*encoded, *stores, footprint_future]:
                    pending.cancel()
                raise
            tx.publisher.publish(ITEM_NAME, item)  # stored before the manifest: commit waits for every upload
            stored_item = describe_bytes(ITEM_NAME, item)
            item_artifact = Artifact(
                path=ITEM_NAME,
                size=stored_item.size,
                checksum=stored_item.checksum,
                media_type=str(MediaType.GEOJSON),
                roles=("metadata",),
                product="stac",
            )
            manifest = self._manifest(storage, target, [*artifacts, item_artifact])
            tx.commit(manifest.to_json())
        return manifest

    def _first_percent(self, order: list[PlannedProduct], encoders: ThreadPoolExecutor) -> dict[str, NDArray[np.uint8]]:
        """Convert the first probability raster to percent on both encoder threads at once.

        Its COG is the longest single task, so its conversion would otherwise sit alone on the
        critical path while the other thread runs out of work (bench/results/HISTORY.md). Only
        the first: each converted array is held (one byte per pixel) until its COG is done.
        """
        first = next((p for p in order if p.kind is Kind.PROBABILITY_RASTER), None)
        if first is None:
            return {}
        variable = first.required[0]
        probabilities = cast("NDArray[np.floating[Any]]", self.view.array(variable))
        percent = np.empty(probabilities.shape, dtype=np.uint8)
        middle = probabilities.shape[0] // 2
        halves = [slice(0, middle), slice(middle, None)]
        for future in [encoders.submit(probabilities_to_percent, probabilities[h], percent[h]) for h in halves]:
            future.result()
        percent.flags.writeable = False
        return {variable: percent}

    def _manifest(self, storage: Sink, target: str, artifacts: list[Artifact]) -> Manifest:
        georef = self.view.georef
        kinds = {o.path: p.kind for p in self.planned for o in p.outputs}
        return Manifest(
            tile_id=self.meta.tile_id,
            crs=georef.crs_code,
            crs_wkt=georef.crs.to_wkt(),
            shape=georef.shape,
            transform=tuple(georef.transform)[:6],
            bounds=georef.bounds,
            created=self.meta.created_text,
            clock_fields=() if self.meta.export_time_given else _clock_fields(self.meta, kinds, artifacts),
            version=__version__,
            options=self.options,
            artifacts=tuple(artifacts),
            location=storage.url,
            target=target,
            warnings=tuple(self.warnings),
        )

    def _report(self, event: ProgressEvent, path: str) -> None:
        if self.progress is not None:
            self.progress(event, path)

    def _encode(self, product: PlannedProduct, ctx: EncodeContext) -> Encoded:
        self._report("encoding", product.outputs[0].path)
        return encode_product(product, ctx)

    def _encode_store(self, product: PlannedProduct, folder: Path) -> Path:
        from darts_export.formats.zarr_store import write_debug_store  # zarr and rioxarray only with debug=True

        self._report("encoding", product.outputs[0].path)
        return write_debug_store(self.view.dataset, folder)


def _written_once(path: Path) -> bool:
    """Whether a file of the debug store is final while the store is still written.

    Zarr renames each object into place whole (``*.partial`` until then) and writes each chunk
    once; its ``zarr.json`` files are rewritten until the store is done (consolidation).
    """
    return path.name != "zarr.json" and not path.name.endswith(".partial")


_ENCODER_THREADS = 2
# Relative encoding cost per kind (CPU seconds of each encoder at 10980²; bench/results/HISTORY.md): the longest are
# started first so the two encoder threads finish together (longest-processing-time first).
_COST = {
    Kind.PROBABILITY_RASTER: 0.65,
    Kind.BAND_RASTER: 11.0,  # not in the default bands: float bands compress slowly
    Kind.MASK_RASTER: 0.25,
    Kind.VECTOR: 0.25,
    Kind.THUMBNAIL: 0.06,
    Kind.METADATA_JSON: 0.0,
    Kind.DEBUG_STORE: 0.0,
}


def _clock_fields(meta: ExportMetadata, kinds: Mapping[str, Kind], artifacts: Iterable[Artifact]) -> tuple[str, ...]:
    """``path#field`` of every value taken from the clock (the artifacts holding one differ in checksum too)."""
    fields = [f"{MANIFEST_NAME}#created"]
    for artifact in artifacts:
        kind = kinds.get(artifact.path)
        if kind in (Kind.PROBABILITY_RASTER, Kind.MASK_RASTER, Kind.BAND_RASTER, Kind.METADATA_JSON):
            fields.append(f"{artifact.path}#{EXPORT_DATE_KEY}")  # a GeoTIFF tag, or the JSON entry
        elif artifact.path == ITEM_NAME:
            fields += [f"{ITEM_NAME}#properties.created", f"{ITEM_NAME}#properties.darts:{EXPORT_DATE_KEY}"]
            if meta.acquisition is None:
                fields.append(f"{ITEM_NAME}#properties.datetime")
    return tuple(fields)


def _artifact(
    output: OutputFile, product: PlannedProduct, stored: StoredObject, *, kind: Literal["file", "directory"] = "file"
) -> Artifact:
    return Artifact(
        path=stored.path,
        size=stored.size,
        checksum=stored.checksum,
        media_type=str(output.media_type),
        roles=output.roles,
        product=product.product,
        subset=product.subset,
        type=kind,
    )

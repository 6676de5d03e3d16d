"""Before the first byte: resolve a batch's inputs into tiles, and find the tiles already exported.

Inputs are input stores (Zarr stores, NetCDF-4 files) given as local paths or URLs, a glob
(``s3://bucket/inputs/*/tile.zarr``), a folder or prefix listed recursively (every ``*.zarr``
store and NetCDF file below it), or a text file with one input per line (``#`` starts a comment).
Each tile's output folder is :func:`darts_export.locations.output_for_input`, the rule the cloud
handler uses too.

An export counts as complete, and its tile is skipped without reading its input, when its
``manifest.json`` lists every file the batch asks for and every listed artifact has the recorded
size. That takes one recursive listing of the output prefix and one read per manifest, however
many tiles there are; checksums are only re-computed with ``verify="full"``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from darts_export.errors import BatchInputError, InvalidLocationError, VerificationError
from darts_export.inputs import NETCDF_SUFFIXES, ZARR_SUFFIXES
from darts_export.locations import RUNS_FOLDER, output_for_input
from darts_export.manifest import Manifest
from darts_export.products import MANIFEST_NAME
from darts_export.storage import Storage

__all__ = ["complete_outputs", "outputs_for", "resolve_inputs"]

logger = logging.getLogger(__name__)

_GLOB_CHARS = frozenset("*?[")
_STORE_SUFFIXES = ZARR_SUFFIXES + NETCDF_SUFFIXES


def _is_store_name(name: str) -> bool:
    return name.rstrip("/").lower().endswith(_STORE_SUFFIXES)


def resolve_inputs(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[str, ...]:
    """Every input store the ``inputs`` name, in the order given, without duplicates.

    Raises:
        BatchInputError: an input does not exist, a list file cannot be read, or nothing was found.
    """
    entries = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    found: dict[str, None] = {}
    for entry in entries:
        for store in _expand(os.fspath(entry), storage_options):
            found.setdefault(store, None)
    if not found:
        raise BatchInputError(
            f"No input stores found in {[os.fspath(e) for e in entries]}; give Zarr stores (*.zarr), NetCDF files, "
            "a folder or prefix holding them, a glob, or a text file with one per line."
        )
    return tuple(found)


def _expand(entry: str, options: Mapping[str, Any] | None) -> list[str]:
    entry = entry.strip()
    if not entry:
        return []
    fs, path = _fs(entry, options)
    try:
        if _GLOB_CHARS & set(path):
            stores = []
            for match in sorted(fs.glob(path)):
                if _is_store_name(match):
                    stores.append(_url(fs, entry, match))
                elif fs.isdir(match):
                    stores.extend(_stores_below(fs, entry, match))
            return stores
        if _is_store_name(path):
            return [entry]
        if fs.isfile(path):
            return _read_list(fs, path, entry)
        if fs.isdir(path):
            if any(fs.exists(f"{path.rstrip('/')}/{marker}") for marker in ("zarr.json", ".zgroup")):
                return [entry]  # a Zarr store without the .zarr suffix, named directly
            return _stores_below(fs, entry, path)
    except OSError as exc:
        raise BatchInputError(f"Cannot list the input {entry!r}: {type(exc).__name__}: {exc}") from exc
    raise BatchInputError(f"The input {entry!r} does not exist; give an existing store, folder, glob or list file.")


def _fs(entry: str, options: Mapping[str, Any] | None) -> tuple[fsspec.AbstractFileSystem, str]:
    is_url = "://" in entry and not entry.startswith("file://")
    try:
        fs, path = fsspec.core.url_to_fs(entry, **(dict(options or {}) if is_url else {}))
    except (ValueError, ImportError) as exc:
        raise BatchInputError(f"Cannot read the input {entry!r}: {exc}.") from exc
    return fs, str(path)


def _url(fs: fsspec.AbstractFileSystem, entry: str, path: str) -> str:
    """``path`` (in ``fs``'s notation) in the form the user gave ``entry``: a plain path or a URL."""
    if isinstance(fs, LocalFileSystem) and "://" not in entry:
        return path
    return str(fs.unstrip_protocol(path))


def _stores_below(fs: fsspec.AbstractFileSystem, entry: str, root: str) -> list[str]:
    """Every ``*.zarr`` store and NetCDF file below ``root``, from one recursive listing."""
    base = root.rstrip("/")
    stores: dict[str, None] = {}
    for full in sorted(fs.find(base)):
        parts = str(full)[len(base) :].strip("/").split("/")
        if RUNS_FOLDER in parts[:1]:
            continue
        for depth, part in enumerate(parts):
            if part.lower().endswith(ZARR_SUFFIXES) and depth < len(parts) - 1:
                stores.setdefault("/".join([base, *parts[: depth + 1]]), None)
                break
        else:
            if parts[-1].lower().endswith(NETCDF_SUFFIXES):
                stores.setdefault(str(full), None)
    return [_url(fs, entry, s) for s in stores]


def _read_list(fs: fsspec.AbstractFileSystem, path: str, entry: str) -> list[str]:
    try:
        text = fs.cat_file(path).decode()
    except UnicodeDecodeError as exc:
        raise BatchInputError(
            f"{entry!r} is a file but neither an input store (*.zarr, *.nc) nor a text list of inputs."
        ) from exc
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [line for line in lines if line]


def outputs_for(inputs: Sequence[str], output_prefix: str) -> tuple[str, ...]:
    """The output folder of every input; raises :class:`BatchInputError` when two inputs share one."""
    outputs: list[str] = []
    owners: dict[str, str] = {}
    clashes: list[str] = []
    for source in inputs:
        try:
            output = output_for_input(source, output_prefix)
        except InvalidLocationError as exc:
            raise BatchInputError(str(exc)) from exc
        if output in owners:
            clashes.append(f"{owners[output]} and {source} → {output}")
        owners.setdefault(output, source)
        outputs.append(output)
    if clashes:
        raise BatchInputError(
            f"{len(clashes)} output folder(s) would be shared by two inputs: {'; '.join(clashes[:5])}. "
            "Each input store must lie in its own folder named after the tile."
        )
    return tuple(outputs)


def complete_outputs(
    storage: Storage, output_prefix: str, outputs: Sequence[str], required: Iterable[str]
) -> dict[str, Manifest]:
    """The outputs (folders under ``output_prefix``, the root of ``storage``) that hold a complete export.

    Complete: ``manifest.json`` exists, lists every path in ``required`` (the debug store included: an
    export whose store failed commits nothing) and every artifact it lists has the recorded size (a directory:
    the summed size of its objects).
    """
    sizes = storage.sizes()
    base = output_prefix.rstrip("/") + "/"
    rels = {}
    for output in outputs:
        rel = output[len(base) :].strip("/") if output.startswith(base) else None
        if rel and f"{rel}/{MANIFEST_NAME}" in sizes:
            rels[output] = rel
    blobs = storage.read_many([f"{rel}/{MANIFEST_NAME}" for rel in rels.values()])
    needed = set(required)
    complete = {}
    for output, rel in rels.items():
        try:
            manifest = Manifest.from_json(blobs[f"{rel}/{MANIFEST_NAME}"])
        except (KeyError, VerificationError) as exc:
            logger.info("%s: manifest unreadable (%s); re-exporting", output, exc)
            continue
        listed = {a.path for a in manifest.artifacts} | {MANIFEST_NAME}
        if not needed <= listed:
            logger.info("%s: the export lacks %s; re-exporting", output, sorted(needed - listed))
            continue
        if all(_size(sizes, f"{rel}/{a.path}", directory=a.type == "directory") == a.size for a in manifest.artifacts):
            complete[output] = manifest
        else:
            logger.info("%s: an artifact's size differs from its manifest; re-exporting", output)
    return complete


def _size(sizes: Mapping[str, int], rel: str, *, directory: bool) -> int | None:
    if not directory:
        return sizes.get(rel)
    prefix = rel + "/"
    return sum(size for path, size in sizes.items() if path.startswith(prefix))

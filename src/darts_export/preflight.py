"""Everything ``export_tile`` checks before the first byte is written.

The argument types, the plan against the tile (every variable present and holding what its
product expects), the names the tile gives to files and folders, and the target's path
limits. Each check raises an :class:`~darts_export.errors.InvalidTileError` or
:class:`~darts_export.errors.UnsupportedTargetError` that names the bad value and what to
do; none of them touches the target (opening a :class:`~darts_export.storage.Storage`
resolves a filesystem, it does not connect).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping

import numpy as np

from darts_export.errors import InvalidTileError, UnsupportedTargetError
from darts_export.formats.cog import CogOptions
from darts_export.products import DEBUG_STORE_NAME, MAX_NAME_BYTES, Kind, PlannedProduct, is_reserved_name
from darts_export.storage import Storage
from darts_export.tile import Role, TileView

__all__ = ["check_arguments", "check_variables", "flag", "open_target"]


def check_variables(planned: Iterable[PlannedProduct], view: TileView) -> None:
    """Every requested product finds the variables it needs, and they hold what it expects."""
    missing: dict[str, list[str]] = {}
    roles: dict[str, Role] = {}
    for product in planned:
        absent = [v for v in product.required if v not in view]
        if absent:
            missing[product.product + (f"-{product.subset}" if product.subset else "")] = absent
        for variable in (*product.required, *(v for v in product.optional if v in view)):
            role = _ROLES.get(variable.split("-", 1)[0], "band") if product.kind is not Kind.BAND_RASTER else "band"
            roles[variable] = "band" if roles.get(variable, role) != role else role  # conflicting roles: dtype only
    if missing:
        details = "; ".join(f"{name} needs {vars_}" for name, vars_ in missing.items())
        raise InvalidTileError(
            f"Band(s) not found in tile for export: {details}. Available variables are: {list(view.variables)}."
        )
    for variable, role in roles.items():
        view.check_variable(variable, role)
    if any(p.kind is Kind.DEBUG_STORE for p in planned):
        for name in (*view.dataset.data_vars, *view.dataset.coords):
            _check_store_name(name)


_ROLES: dict[str, Role] = {"probabilities": "probability", "binarized_segmentation": "mask", "extent": "mask"}
_MAX_PATH_BYTES = 1024  # S3's key limit, and a sane total for local paths
_STORE_DEPTH = 40  # bytes below a variable in the Zarr store: "/c/12/34/zarr.json" and the like


def _check_store_name(name: Hashable) -> None:
    """A tile variable's name becomes a folder of the Zarr debug store: it must be legal on every target."""
    text = name if isinstance(name, str) else ""
    if (
        not text
        or text.strip(".") == ""
        or text.startswith("__")  # reserved by Zarr v3
        or any(c in text for c in "/\\")
        or any(ord(c) < 32 or ord(c) == 127 for c in text)
        or len(text.encode()) > MAX_NAME_BYTES
        or is_reserved_name(text)
    ):
        raise InvalidTileError(
            f"The tile variable {name!r} cannot be a folder of the debug store: rename it with "
            f"tile.rename({{{name!r}: 'new_name'}}) to at most {MAX_NAME_BYTES} bytes without '/', '\\', "
            "control characters or a leading '__', or export without debug=True."
        )


def flag(value: object, name: str) -> bool:
    """``value`` if it is a boolean (``numpy.bool_`` too), else :class:`InvalidTileError` naming option ``name``."""
    if not isinstance(value, bool | np.bool_):
        raise InvalidTileError(f"{name} must be True or False, got {type(value).__name__} {value!r}.")
    return bool(value)


def check_arguments(*, overwrite: object, fallback_dir: object, cog_options: object, progress: object) -> None:
    """The keyword options have the types ``export_tile`` documents."""
    flag(overwrite, "overwrite")
    if fallback_dir is not None and not isinstance(fallback_dir, str | os.PathLike):
        raise UnsupportedTargetError(
            f"fallback_dir must be a local folder (str or pathlib.Path), got {type(fallback_dir).__name__}."
        )
    if cog_options is not None and not isinstance(cog_options, CogOptions):
        raise InvalidTileError(
            f"cog_options must be a darts_export.formats.cog.CogOptions, got {type(cog_options).__name__}."
        )
    if progress is not None and not callable(progress):
        raise InvalidTileError(f"progress must be a function of (event, path), got {type(progress).__name__}.")


# Types of the storage options whose wrong type would only fail deep inside s3fs or botocore.
_OPTION_TYPES: dict[str, type | tuple[type, ...]] = {
    "endpoint_url": str,
    "key": str,
    "secret": str,
    "token": str,
    "profile": str,
    "anon": bool,
    "use_ssl": bool,
    "requester_pays": bool,
    "skip_instance_cache": bool,
    "auto_mkdir": bool,
    "client_kwargs": Mapping,
    "config_kwargs": Mapping,
    "s3_additional_kwargs": Mapping,
}


def open_target(out_dir: object, storage_options: object, planned: Iterable[PlannedProduct], view: TileView) -> Storage:
    """``Storage.open`` after checking the argument types and that every path fits the target's limits."""
    if not isinstance(out_dir, str | os.PathLike):
        raise UnsupportedTargetError(
            f"out_dir must be a folder or URL (str or pathlib.Path), got {type(out_dir).__name__} {out_dir!r}."
        )
    if storage_options is not None:
        if not isinstance(storage_options, Mapping) or not all(isinstance(k, str) for k in storage_options):
            raise UnsupportedTargetError(
                "storage_options must be a dict of fsspec options such as {'endpoint_url': 'https://...'}, "
                f"got {type(storage_options).__name__} {storage_options!r}."
            )
        client = storage_options.get("client_kwargs")
        nested = {f"client_kwargs.{k}": v for k, v in client.items()} if isinstance(client, Mapping) else {}
        for key, value in {**storage_options, **nested}.items():
            expected = _OPTION_TYPES.get(key.removeprefix("client_kwargs."))
            if expected is not None and value is not None and not isinstance(value, expected):
                raise UnsupportedTargetError(
                    f"storage option {key}={value!r} has type {type(value).__name__}; "
                    f"it must be {getattr(expected, '__name__', expected)}."
                )
    storage = Storage.open(out_dir, storage_options)
    longest = max(
        [len(o.path.encode()) for p in planned for o in p.outputs]
        + [len(f"{DEBUG_STORE_NAME}/{name}".encode()) + _STORE_DEPTH for name in view.variables]
    )
    total = len(storage.path("x").encode()) - 1 + longest
    if total > _MAX_PATH_BYTES:
        raise UnsupportedTargetError(
            f"Paths under {storage.url} would be up to {total} bytes long, more than the {_MAX_PATH_BYTES} "
            "an S3 key (and a sane local path) may have; choose a shorter out_dir."
        )
    return storage

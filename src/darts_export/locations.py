"""Where things land under an output prefix: the one naming rule the batch, the CLI and the cloud handler share."""

from __future__ import annotations

from darts_export.errors import InvalidLocationError

__all__ = ["RUNS_FOLDER", "output_for_input"]

RUNS_FOLDER = "_runs"
"""The folder under an output prefix that holds the ledgers of batch runs (never an export)."""


def output_for_input(input_url: str, output_prefix: str) -> str:
    """The output folder of an input store: ``output_prefix/<folder holding the store>``.

    ``s3://in/inputs/T06WVS_2024/tile.zarr`` → ``<output_prefix>/T06WVS_2024``; a store at the bucket
    root (or a bare relative name) gives its own name without ``.zarr``/``.nc``.

    Raises:
        InvalidLocationError: no folder name can be derived (e.g. ``s3://bucket/.zarr``).
    """
    protocol, _, rest = input_url.rstrip("/").rpartition("://")
    parts = rest.split("/")
    if protocol and len(parts) > 1:
        parts = parts[1:]  # drop the bucket
    name = parts[-2] if len(parts) > 1 else parts[-1].rsplit(".", 1)[0]
    if name in ("", ".", "..", RUNS_FOLDER):
        raise InvalidLocationError(
            f"Cannot derive an output folder name from input {input_url!r}; "
            "put the store in a folder named after the tile."
        )
    return f"{output_prefix.rstrip('/')}/{name}"

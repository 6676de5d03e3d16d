"""The handler's configuration, read from the environment (and nowhere else in the package).

``DARTS_OUTPUT_PREFIX``, ``DARTS_BANDS`` / ``DARTS_ENSEMBLE_SUBSETS`` (comma-separated defaults),
``DARTS_DEBUG``, ``DARTS_COLLECTION`` (the STAC collection of the items; empty for none) and
``DARTS_HREF_BASE`` (public URL of the folder holding the exports: absolute item hrefs),
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (passed to s3fs explicitly, so that
its instance cache never mixes endpoints) and ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from darts_export.errors import ConfigurationError, InvalidTileError
from darts_export.products import DEFAULT_BANDS
from darts_export.stac.placement import DEFAULT_COLLECTION, normalise_href_base

__all__ = ["HandlerConfig"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


@dataclass(frozen=True, kw_only=True)
class HandlerConfig:
    """The handler's settings, read from the environment once per invocation."""

    output_prefix: str | None = None
    bands: tuple[str, ...] = DEFAULT_BANDS
    ensemble_subsets: tuple[str, ...] = ()
    debug: bool = False
    collection: str | None = DEFAULT_COLLECTION
    href_base: str | None = None
    endpoint_url: str | None = None
    memory_mb: int | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> HandlerConfig:
        """Read ``DARTS_*``, the S3 endpoint and the Lambda memory size from ``environ``."""

        def words(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
            value = environ.get(name)
            return default if value is None else tuple(w.strip() for w in value.split(",") if w.strip())

        debug = environ.get("DARTS_DEBUG", "").strip().lower()
        if debug not in _TRUE | _FALSE:
            raise ConfigurationError(f"DARTS_DEBUG must be true or false, got {debug!r}.")
        memory = environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        try:
            href_base = normalise_href_base(environ.get("DARTS_HREF_BASE") or None)
        except InvalidTileError as exc:
            raise ConfigurationError(f"DARTS_HREF_BASE: {exc}") from exc
        return cls(
            output_prefix=environ.get("DARTS_OUTPUT_PREFIX", "").rstrip("/") or None,
            bands=words("DARTS_BANDS", DEFAULT_BANDS),
            ensemble_subsets=words("DARTS_ENSEMBLE_SUBSETS", ()),
            debug=debug in _TRUE,
            collection=environ.get("DARTS_COLLECTION", DEFAULT_COLLECTION).strip() or None,
            href_base=href_base,
            endpoint_url=environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None,
            memory_mb=int(memory) if memory.isdigit() else None,
        )

    def storage_options(self, url: str) -> dict[str, Any] | None:
        """Fsspec options for ``url``: the configured endpoint for ``s3://`` URLs, else none."""
        from fsspec.utils import get_protocol

        if self.endpoint_url and get_protocol(url) in ("s3", "s3a"):
            return {"endpoint_url": self.endpoint_url}
        return None

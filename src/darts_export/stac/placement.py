"""Where an export's STAC item sits: its collection and the base of its hrefs.

Light on purpose (no pystac, no numpy): the cloud handler's configuration validates
``DARTS_HREF_BASE`` with it at cold start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from darts_export.errors import InvalidTileError

__all__ = ["COLLECTION_NAME", "DEFAULT_COLLECTION", "ItemPlacement", "normalise_href_base"]

COLLECTION_NAME = "collection.json"
"""The collection document at the root of a prefix of exports (``darts-export stac`` writes it)."""

DEFAULT_COLLECTION = "darts"
"""The collection every export belongs to unless told otherwise."""

_COLLECTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, kw_only=True)
class ItemPlacement:
    """Where an export's item sits: its collection and the base of its hrefs.

    ``href_base`` is the public URL of the *collection root*, the folder that holds the export
    folders (``s3://bucket/darts``, ``https://data.example.org/darts``); the export lives in
    ``folder`` below it. Without it every href is relative (``./probabilities.tif``,
    ``../collection.json``), so the export folder can be moved or mirrored as it is; with it
    every href is absolute: ``{href_base}/{folder}/probabilities.tif``,
    ``{href_base}/collection.json``, and a ``self`` link ``{href_base}/{folder}/item.json``.
    """

    collection: str | None = DEFAULT_COLLECTION
    href_base: str | None = None
    folder: str = ""

    @classmethod
    def create(cls, *, collection: str | None, href_base: str | None, target_url: str) -> ItemPlacement:
        """Validated placement of the export at ``target_url``; the folder is the URL's last part.

        Raises:
            InvalidTileError: ``collection`` is not a plain identifier, or ``href_base`` is not
                an absolute URL or path.
        """
        if collection is not None and (not isinstance(collection, str) or not _COLLECTION_ID.fullmatch(collection)):
            raise InvalidTileError(
                f"collection={collection!r} is not a usable STAC collection id: use letters, digits and '_.-', "
                "starting with a letter or digit (or None for an item without a collection)."
            )
        base = normalise_href_base(href_base)
        folder = target_url.rstrip("/").rpartition("/")[2]
        if base is not None and folder in ("", ".", ".."):
            raise InvalidTileError(
                f"href_base needs the export in a folder below the collection root; {target_url!r} has none."
            )
        return cls(collection=collection, href_base=base, folder=folder)

    def href(self, rel: str) -> str:
        """The href of ``rel`` (a path inside the export) as the item states it."""
        return f"./{rel}" if self.href_base is None else f"{self.href_base}/{self.folder}/{rel}"

    @property
    def collection_href(self) -> str:
        """The href of the collection document, from the item."""
        return f"../{COLLECTION_NAME}" if self.href_base is None else f"{self.href_base}/{COLLECTION_NAME}"


def normalise_href_base(href_base: str | None) -> str | None:
    """``href_base`` without a trailing slash; ``None`` stays ``None``.

    Raises:
        InvalidTileError: not an absolute URL (``scheme://...``) or absolute path.
    """
    if href_base is None:
        return None
    text = str(href_base).rstrip("/")
    scheme, sep, rest = text.partition("://")
    absolute_url = bool(sep) and scheme.isascii() and scheme.replace("+", "").replace("-", "").isalnum() and rest
    if not (absolute_url or (text.startswith("/") and not sep)) or any(c in text for c in "?#"):
        raise InvalidTileError(
            f"href_base={href_base!r} is not an absolute URL or path; give the public URL of the folder that holds "
            "the exports, e.g. 's3://bucket/darts' or 'https://data.example.org/darts'."
        )
    return text

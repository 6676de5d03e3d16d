"""The manifest: the record of one export, written last as its commit marker.

``manifest.json`` lists every artifact with its size and SHA-256 multihash, plus
the tile's georeference and the options of the export, so a downstream tool can check
completeness and integrity without listing the bucket.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from darts_export.errors import VerificationError

__all__ = ["MANIFEST_SCHEMA_VERSION", "Artifact", "Manifest"]

MANIFEST_SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """One exported artifact, as recorded in the manifest.

    ``path`` is relative to the export folder. ``checksum`` is the SHA-256 as a multihash
    hex string (``1220`` + digest), the form of STAC's ``file:checksum``. A ``directory``
    artifact (the Zarr debug store) has the total size of its objects and the checksum
    defined in :meth:`darts_export.storage.Storage.describe_tree`.
    """

    path: str
    size: int
    checksum: str
    media_type: str
    roles: tuple[str, ...]
    product: str
    subset: str | None = None
    type: Literal["file", "directory"] = "file"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Artifact:
        """Read an artifact record from its JSON form."""
        return cls(
            path=str(data["path"]),
            size=int(data["size"]),
            checksum=str(data["checksum"]),
            media_type=str(data["media_type"]),
            roles=tuple(data.get("roles", ())),
            product=str(data["product"]),
            subset=data.get("subset"),
            type=data.get("type", "file"),
        )


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """The record of one export: where the tile lies, what was written, and how."""

    tile_id: str
    crs: str
    crs_wkt: str
    shape: tuple[int, int]
    transform: tuple[float, float, float, float, float, float]
    bounds: tuple[float, float, float, float]
    created: str
    version: str
    options: Mapping[str, Any]
    artifacts: tuple[Artifact, ...]
    location: str
    target: str | None = None
    software: str = "darts-export"
    schema_version: int = MANIFEST_SCHEMA_VERSION
    warnings: tuple[str, ...] = field(default=())
    clock_fields: tuple[str, ...] = field(default=())
    """``path#field`` of every value taken from the clock; empty when the export time was given."""

    @property
    def fell_back(self) -> bool:
        """Whether the export landed somewhere other than its intended target (local fallback)."""
        return self.target is not None and self.target != self.location

    @property
    def total_size(self) -> int:
        """Bytes of all listed artifacts."""
        return sum(a.size for a in self.artifacts)

    def artifact(self, path: str) -> Artifact:
        """The artifact recorded under ``path``."""
        for artifact in self.artifacts:
            if artifact.path == path:
                return artifact
        raise KeyError(f"{path!r} is not in the manifest; it lists {[a.path for a in self.artifacts]}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (lists for tuples)."""
        data = asdict(self)
        data["options"] = dict(self.options)
        return json.loads(json.dumps(data))  # type: ignore[no-any-return]

    def to_json(self) -> bytes:
        """UTF-8 JSON, indented, keys in a stable order."""
        return (json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n").encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Read a manifest from its JSON form.

        Raises:
            VerificationError: the document is not a darts-export manifest this version can read.
        """
        try:
            version = int(data.get("schema_version", 0))
            if data.get("software") != "darts-export" or version > MANIFEST_SCHEMA_VERSION:
                raise VerificationError(
                    f"Not a darts-export manifest of schema version <= {MANIFEST_SCHEMA_VERSION} "
                    f"(software={data.get('software')!r}, schema_version={version}); upgrade darts-export."
                )
            return cls(
                tile_id=str(data["tile_id"]),
                crs=str(data["crs"]),
                crs_wkt=str(data["crs_wkt"]),
                shape=(int(data["shape"][0]), int(data["shape"][1])),
                transform=tuple(float(v) for v in data["transform"]),  # type: ignore[arg-type]
                bounds=tuple(float(v) for v in data["bounds"]),  # type: ignore[arg-type]
                created=str(data["created"]),
                version=str(data["version"]),
                options=dict(data.get("options", {})),
                artifacts=tuple(Artifact.from_dict(a) for a in data["artifacts"]),
                location=str(data["location"]),
                target=data.get("target"),
                software=str(data["software"]),
                schema_version=version,
                warnings=tuple(data.get("warnings", ())),
                clock_fields=tuple(str(f) for f in data.get("clock_fields", ())),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise VerificationError(f"The manifest is malformed ({type(exc).__name__}: {exc}).") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Parse ``manifest.json``."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise VerificationError(f"The manifest is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise VerificationError("The manifest is not a JSON object.")
        return cls.from_dict(data)

"""Publish exports that fell back to a local folder to the targets they were meant for.

When the target of :func:`~darts_export.export.export_tile` is unreachable and a
``fallback_dir`` is given, the export lands in a local folder whose manifest records the
intended ``target``. :func:`sync` finds those folders and, for each one:

1. verifies the local copy (a corrupt export is never pushed);
2. uploads every artifact through the storage seam, concurrently (a Zarr store object by
   object), in the same commit transaction as an export (:mod:`~darts_export.commit`: lease,
   old manifest removed and confirmed gone first);
3. writes the manifest last, with ``location`` set to the target and a note in ``warnings``;
4. verifies the target;
5. only then removes the local copy.

A failing export stays local and is reported; the others go on.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from darts_export.commit import PublishEvent, transaction
from darts_export.errors import ExportError, TargetUnreachableError, VerificationError
from darts_export.manifest import Manifest
from darts_export.products import ITEM_NAME, MANIFEST_NAME
from darts_export.storage import Storage
from darts_export.verify import read_manifest, verify

__all__ = ["FallbackExport", "SyncReport", "SyncResult", "find_fallback_exports", "sync"]

logger = logging.getLogger(__name__)

SyncStatus = Literal["synced", "failed", "skipped"]
SyncReason = Literal[
    "unreachable", "storage", "local-corrupt", "target-corrupt", "newer-at-target", "filtered", "dry-run"
]


@dataclass(frozen=True, kw_only=True)
class FallbackExport:
    """An export found under the fallback folder, waiting to be published to ``manifest.target``."""

    path: Path
    manifest: Manifest

    @property
    def target(self) -> str:
        """The URL the export was meant for."""
        return self.manifest.target or ""


@dataclass(frozen=True, kw_only=True)
class SyncResult:
    """What happened to one fallback export."""

    local_path: str
    target: str
    status: SyncStatus
    artifacts: int
    bytes: int
    reason: SyncReason | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (every field)."""
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class SyncReport:
    """The outcome of :func:`sync`: one :class:`SyncResult` per export found."""

    fallback_dir: str
    target: str | None
    dry_run: bool
    results: tuple[SyncResult, ...]

    def _with(self, status: SyncStatus) -> tuple[SyncResult, ...]:
        return tuple(r for r in self.results if r.status == status)

    @property
    def synced(self) -> tuple[SyncResult, ...]:
        """The exports now at their target (their local copies are gone)."""
        return self._with("synced")

    @property
    def failed(self) -> tuple[SyncResult, ...]:
        """The exports that could not be published; their local copies remain."""
        return self._with("failed")

    @property
    def skipped(self) -> tuple[SyncResult, ...]:
        """The exports left alone (another target, a newer export at the target, or a dry run)."""
        return self._with("skipped")

    @property
    def ok(self) -> bool:
        """Whether no export failed."""
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form."""
        return {
            "fallback_dir": self.fallback_dir,
            "target": self.target,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "synced": len(self.synced),
            "failed": len(self.failed),
            "skipped": len(self.skipped),
            "results": [r.to_dict() for r in self.results],
        }


def find_fallback_exports(fallback_dir: str | os.PathLike[str]) -> Iterator[FallbackExport | tuple[Path, str]]:
    """Every export under ``fallback_dir`` whose manifest records a target other than its location.

    Yields a :class:`FallbackExport` per export, or ``(folder, error message)`` for a folder
    whose ``manifest.json`` cannot be read.
    """
    for manifest_path in sorted(Path(fallback_dir).rglob(MANIFEST_NAME)):
        folder = manifest_path.parent
        try:
            manifest = read_manifest(Storage.open(folder))
        except ExportError as exc:
            yield folder, f"unreadable {MANIFEST_NAME}: {exc}"
            continue
        if manifest.fell_back:
            yield FallbackExport(path=folder, manifest=manifest)


def sync(
    fallback_dir: str | os.PathLike[str],
    target: str | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    dry_run: bool = False,
    progress: Callable[[FallbackExport, str], None] | None = None,
) -> SyncReport:
    """Publish every export under ``fallback_dir`` to its recorded target, then remove the local copy.

    Args:
        fallback_dir: The ``fallback_dir`` given to :func:`~darts_export.export.export_tile`.
        target: Only exports whose recorded target is this URL or lies below it (``s3://bucket``
            matches ``s3://bucket/darts/T1``, not ``s3://bucket2``); the others are skipped.
        storage_options: fsspec options for the targets (endpoint, credentials); without them the
            standard environment applies. The recorded target URL is used as it is; only how it is
            reached comes from here.
        dry_run: Check the local copies and report what would be published, without writing or removing.
        progress: Called with the export and each artifact path once it is uploaded (the manifest last).

    Returns:
        One result per export found. A failed export keeps its local copy; the others go on.

    Raises:
        FileNotFoundError: ``fallback_dir`` is not a folder.
    """
    root = Path(fallback_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"Fallback folder {os.fspath(fallback_dir)!r} does not exist or is not a folder.")
    prefix = _normalise_target(target) if target else None
    results = []
    for found in find_fallback_exports(root):
        if isinstance(found, tuple):
            folder, message = found
            logger.error("cannot sync %s: %s", folder, message)
            results.append(
                SyncResult(
                    local_path=str(folder),
                    target="",
                    status="failed",
                    artifacts=0,
                    bytes=0,
                    reason="local-corrupt",
                    error=message,
                )
            )
            continue
        if prefix is not None and not _below(found.target, prefix):
            results.append(_result(found, "skipped", reason="filtered", error=f"target is not below {prefix}"))
            continue
        results.append(_sync_one(found, root, storage_options=storage_options, dry_run=dry_run, progress=progress))
    report = SyncReport(fallback_dir=str(root), target=prefix, dry_run=dry_run, results=tuple(results))
    logger.info(
        "sync of %s: %d synced, %d failed, %d skipped",
        root,
        len(report.synced),
        len(report.failed),
        len(report.skipped),
    )
    return report


def _sync_one(
    export: FallbackExport,
    root: Path,
    *,
    storage_options: Mapping[str, Any] | None,
    dry_run: bool,
    progress: Callable[[FallbackExport, str], None] | None,
) -> SyncResult:
    started = time.perf_counter()
    local = verify(export.path)
    if not local.ok:
        listing = "; ".join(str(p) for p in local.problems)
        logger.error("not syncing %s: the local copy does not verify: %s", export.path, listing)
        return _result(export, "failed", reason="local-corrupt", error=f"local copy does not verify: {listing}")
    if dry_run:
        return _result(export, "skipped", reason="dry-run", error="dry run: would be published")
    try:
        remote = Storage.open(export.target, storage_options)
        existing = _existing_manifest(remote)
        checked = None
        if existing is not None and _same_artifacts(existing, export.manifest):
            logger.info("%s already holds this export (an earlier sync?); checking it", export.target)
            checked = verify(export.target, storage_options=storage_options)
        elif existing is not None and existing.created > export.manifest.created:
            message = f"target already holds a newer export (created {existing.created}); local copy kept"
            logger.warning("not syncing %s: %s", export.path, message)
            return _result(export, "skipped", reason="newer-at-target", error=message)
        if checked is None or not checked.ok:
            _upload(export, remote, progress)
            checked = verify(export.target, storage_options=storage_options)
    except TargetUnreachableError as exc:
        logger.error("cannot sync %s: %s", export.path, exc)
        return _result(export, "failed", reason="unreachable", error=str(exc))
    except (ExportError, OSError) as exc:
        logger.error("cannot sync %s: %s", export.path, exc)
        return _result(export, "failed", reason="storage", error=f"{type(exc).__name__}: {exc}")
    if not checked.ok:
        listing = "; ".join(str(p) for p in checked.problems)
        logger.error("%s does not verify after the upload (%s); local copy kept", export.target, listing)
        return _result(export, "failed", reason="target-corrupt", error=f"target does not verify: {listing}")
    _remove_local(export.path, root)
    logger.info(
        "synced %s to %s: %d artifacts, %d bytes in %.2f s",
        export.path,
        export.target,
        len(export.manifest.artifacts),
        export.manifest.total_size,
        time.perf_counter() - started,
    )
    return _result(export, "synced")


def _upload(export: FallbackExport, remote: Storage, progress: Callable[[FallbackExport, str], None] | None) -> None:
    """Every artifact, then the manifest (``location`` = target), in the commit transaction export uses."""

    def report(event: PublishEvent, rel: str) -> None:
        if progress is not None and event == "published":
            progress(export, rel)

    with transaction(remote, overwrite=True, progress=report) as tx:
        items = [a for a in export.manifest.artifacts if a.path == ITEM_NAME]
        for batch in ([a for a in export.manifest.artifacts if a.path != ITEM_NAME], items):  # the item after the rest
            uploads = []
            for artifact in batch:
                source = export.path / artifact.path
                if artifact.type == "directory":
                    uploads.append((artifact, tx.publisher.publish_tree(artifact.path, source)))
                else:
                    uploads.append((artifact, tx.publisher.publish(artifact.path, source)))
            for artifact, upload in uploads:
                stored = upload.result()
                if stored.checksum != artifact.checksum or stored.size != artifact.size:
                    raise VerificationError(
                        f"{export.path / artifact.path} changed while it was uploaded "
                        f"(checksum {stored.checksum}, manifest {artifact.checksum})."
                    )
        synced_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        manifest = replace(
            export.manifest,
            location=export.target,
            warnings=(
                *export.manifest.warnings,
                f"synced from the local fallback {export.manifest.location} at {synced_at}",
            ),
        )
        tx.commit(manifest.to_json())
    report("published", MANIFEST_NAME)


def _existing_manifest(remote: Storage) -> Manifest | None:
    if not remote.exists(MANIFEST_NAME):
        return None
    try:
        return read_manifest(remote)
    except VerificationError:
        return None  # unreadable: overwrite it


def _same_artifacts(a: Manifest, b: Manifest) -> bool:
    return {(x.path, x.checksum) for x in a.artifacts} == {(x.path, x.checksum) for x in b.artifacts}


def _remove_local(folder: Path, root: Path) -> None:
    """Delete the local copy, manifest first, then the empty folders above it up to ``root``."""
    (folder / MANIFEST_NAME).unlink(missing_ok=True)
    shutil.rmtree(folder)
    parent = folder.parent
    root = root.resolve()
    while parent.resolve() != root and root in parent.resolve().parents:
        try:
            parent.rmdir()
        except OSError:
            break  # not empty: other exports live here
        parent = parent.parent


def _normalise_target(target: str) -> str:
    """A target filter as manifests record it: URLs unchanged, local paths as ``file://`` URLs."""
    url = target if "://" in target else Path(target).resolve().as_uri()
    return url.rstrip("/") if not url.endswith("://") else url


def _below(recorded: str, prefix: str) -> bool:
    recorded = recorded.rstrip("/")
    return recorded == prefix or recorded.startswith(prefix if prefix.endswith("/") else prefix + "/")


def _result(
    export: FallbackExport, status: SyncStatus, *, reason: SyncReason | None = None, error: str | None = None
) -> SyncResult:
    return SyncResult(
        local_path=str(export.path),
        target=export.target,
        status=status,
        artifacts=len(export.manifest.artifacts),
        bytes=export.manifest.total_size,
        reason=reason,
        error=error,
    )

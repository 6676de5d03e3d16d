"""Completeness and integrity checks of an export, for local folders and URLs alike.

:func:`missing_outputs` asks the product registry which paths an export with given
options writes (the same registry the writer uses) and checks which exist.
:func:`verify` re-reads every artifact listed in ``manifest.json`` and compares
sizes and checksums.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from darts_export.errors import StorageError, VerificationError
from darts_export.manifest import Artifact, Manifest
from darts_export.products import DEFAULT_BANDS, MANIFEST_NAME, expected_paths
from darts_export.storage import Storage

__all__ = ["Problem", "VerificationReport", "missing_outputs", "read_manifest", "verify"]

logger = logging.getLogger(__name__)


def missing_outputs(
    out_dir: str | os.PathLike[str],
    bands: Iterable[str] = DEFAULT_BANDS,
    ensemble_subsets: Iterable[str] = (),
    *,
    debug: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> Literal["all", "some", "none"]:
    """Which of the outputs of an export with these options are missing at ``out_dir``.

    The manifest is the commit marker: without it the export is incomplete whatever files lie
    there, and with it a product counts only if the manifest lists it (a product that failed
    is never listed, even if some of its files remain).

    Returns:
        ``"none"`` when the manifest exists and lists every product file, which exists; ``"all"``
        when none of them exists (also for a folder or prefix that does not exist), else ``"some"``.
    """
    storage = Storage.open(out_dir, storage_options)
    paths = [p for p in expected_paths(list(bands), list(ensemble_subsets), debug=debug) if p != MANIFEST_NAME]
    listed: set[str] | None = None
    if storage.exists(MANIFEST_NAME):
        try:
            listed = {a.path for a in read_manifest(storage).artifacts}
        except VerificationError:
            listed = None  # unreadable: as good as absent
    present = sum(storage.exists(p) and (listed is None or p in listed) for p in paths)
    if listed is not None and present == len(paths):
        return "none"
    return "all" if present == 0 and listed is None else "some"


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One artifact that does not match its manifest record."""

    path: str
    reason: Literal["missing", "size", "checksum", "unreadable"]
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason} (expected {self.expected}, found {self.actual})"


@dataclass(frozen=True, kw_only=True)
class VerificationReport:
    """The outcome of :func:`verify`."""

    location: str
    manifest: Manifest | None
    checked: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        """Whether the manifest exists and every artifact matches it."""
        return self.manifest is not None and not self.problems

    def raise_for_problems(self) -> None:
        """Raise :class:`VerificationError` listing every problem, if there is any."""
        if not self.ok:
            listing = "; ".join(str(p) for p in self.problems) or f"no {MANIFEST_NAME}"
            raise VerificationError(f"Export at {self.location} does not verify: {listing}.")


_READERS = 8  # artifacts re-read at once: an object store answers each request after 10-50 ms


def _check(storage: Storage, artifact: Artifact) -> Problem | None:
    """The problem with one artifact, or ``None`` when it matches its record."""
    try:
        if artifact.type == "directory":
            if not storage.list(artifact.path):
                return Problem(path=artifact.path, reason="missing", expected="present", actual="absent")
            actual = storage.describe_tree(artifact.path)
        else:
            actual = storage.describe(artifact.path)
    except StorageError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            return Problem(path=artifact.path, reason="missing", expected="present", actual="absent")
        return Problem(path=artifact.path, reason="unreadable", expected="readable", actual=str(exc))
    if actual.size != artifact.size:
        return Problem(path=artifact.path, reason="size", expected=str(artifact.size), actual=str(actual.size))
    if actual.checksum != artifact.checksum:
        return Problem(path=artifact.path, reason="checksum", expected=artifact.checksum, actual=actual.checksum)
    return None


def read_manifest(storage: Storage) -> Manifest:
    """Read and parse ``manifest.json`` from ``storage``."""
    return Manifest.from_json(storage.read_bytes(MANIFEST_NAME))


def verify(
    out_dir: str | os.PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> VerificationReport:
    """Re-read every artifact listed in the manifest at ``out_dir`` and compare size and checksum.

    A missing manifest is reported as a problem (``report.ok`` is false), not raised.
    """
    storage = Storage.open(out_dir, storage_options)
    data = storage.read_optional(MANIFEST_NAME)
    if data is None:
        problem = Problem(path=MANIFEST_NAME, reason="missing", expected="present", actual="absent")
        return VerificationReport(location=storage.url, manifest=None, checked=0, problems=(problem,))
    manifest = Manifest.from_json(data)
    with ThreadPoolExecutor(_READERS, thread_name_prefix="darts-verify") as readers:
        checked = list(readers.map(lambda a: _check(storage, a), manifest.artifacts))
    problems = [p for p in checked if p is not None]
    for problem in problems:
        logger.warning("verification problem at %s: %s", storage.url, problem)
    return VerificationReport(
        location=storage.url, manifest=manifest, checked=len(manifest.artifacts), problems=tuple(problems)
    )

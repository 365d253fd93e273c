"""Garbage collection: delete blobs no manifest refers to, while the registry keeps serving.

Mark: every manifest of every repository (tagged or not, unless ``delete_untagged``),
its config and layers, its index children and its subject. Sweep: every stored blob
that is not marked *and* is older than ``grace`` seconds.

Why both, and why it is safe online:

* A manifest PUT checks its blobs and links itself while holding the store's lock
  shared; gc marks and sweeps holding it exclusively. So a manifest is either marked by
  this gc, or it is checked after the sweep and refused (MANIFEST_BLOB_UNKNOWN) if a
  blob it names is gone — never stored pointing at nothing.
* A blob pushed but whose manifest is not put yet is referenced by nothing. The grace
  period keeps it: a blob's age is its file's mtime, which completing an upload, a
  mount, or a client's existence check (HEAD, at most every 10 minutes) renews. A
  client that takes longer than ``grace`` between pushing its blobs and its manifest
  gets MANIFEST_BLOB_UNKNOWN and must push again; nothing it relied on was corrupted.
  (The CNCF registry instead requires gc to run with the registry stopped or read-only.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from kapal.content import digest as digests
from kapal.registry import manifests
from kapal.registry.storage import RegistryStorage
from kapal.registry.uploads import UploadSessions

log = logging.getLogger("kapal.registry.gc")


@dataclass
class GcReport:
    marked: set[str] = field(default_factory=set)
    blobs: list[str] = field(default_factory=list)
    manifests: list[tuple[str, str]] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)
    kept_young: int = 0


def _parse(storage: RegistryStorage, name: str, digest: str) -> manifests.ParsedManifest | None:
    try:
        return manifests.parse(storage.manifest_bytes(digest), storage.manifest_media_type(name, digest))
    except Exception as error:  # noqa: BLE001 - one unreadable manifest must not stop gc
        log.warning("%s@%s: cannot read manifest: %s", name, digest, error)
        return None


def _untagged(storage: RegistryStorage, name: str) -> list[str]:
    """Manifests of *name* no tag reaches (through index children or as a referrer of one)."""
    revisions = set(storage.revisions(name))
    parsed = {digest: _parse(storage, name, digest) for digest in revisions}
    reachable: set[str] = set()
    pending = [target for _, target in storage.tag_targets(name)]
    while pending:
        digest = pending.pop()
        if digest in reachable:
            continue
        reachable.add(digest)
        document = parsed.get(digest)
        if document is not None:
            pending.extend(document.children)
        pending.extend(item["digest"] for item in storage.referrers(name, digest))
    return sorted(revisions - reachable)


def collect_garbage(
    root: Path,
    dry_run: bool = False,
    grace: float = 3600.0,
    upload_ttl: float = 86400.0,
    delete_untagged: bool = False,
) -> GcReport:
    storage = RegistryStorage(root)
    report = GcReport()
    with storage.gc_lock():
        names = storage.repositories()
        if delete_untagged:
            for name in names:
                for digest in _untagged(storage, name):
                    report.manifests.append((name, digest))
                    if not dry_run:
                        storage.delete_manifest(name, digest)
        for name in names:
            for digest in storage.revisions(name):
                report.marked.add(digest)
                document = _parse(storage, name, digest)
                if document is None:
                    continue
                report.marked.update(document.blobs)
                report.marked.update(document.children)
                if document.subject:
                    report.marked.add(document.subject)
        now = time.time()
        for digest, _ in list(storage.content.walk()):
            if digest in report.marked:
                continue
            try:
                age = now - storage.content.path(digest).stat().st_mtime
            except FileNotFoundError:
                continue
            if age < grace:
                report.kept_young += 1
                continue
            report.blobs.append(digest)
            if not dry_run:
                storage.content.delete(digest)
        if not dry_run:
            _remove_dangling_links(storage, storage.repositories(with_blobs_only=True))
            storage.content.remove_abandoned_ingests()
    report.uploads = UploadSessions(storage).purge(upload_ttl, dry_run=dry_run)
    return report


def _remove_dangling_links(storage: RegistryStorage, names: list[str]) -> None:
    """Drop repository links to blobs that are no longer stored (so HEAD answers 404 at once)."""
    for name in names:
        base = storage.repo_dir(name) / "_layers"
        for algorithm in ("sha256", "sha512"):
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(base / algorithm):
                    digest = f"{algorithm}:{entry.name}"
                    if digests.is_digest(digest) and not storage.content.exists(digest):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)

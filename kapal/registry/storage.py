"""The registry's storage: one content-addressed blob store, and repositories of links into it.

Layout under the root::

    blobs/<alg>/<hex>                                  every blob and manifest, once (kapal.content)
    repositories/<name>/_layers/<alg>/<hex>            empty: the blob is part of <name>
    repositories/<name>/_manifests/revisions/<alg>/<hex>   holds the manifest's media type
    repositories/<name>/_manifests/tags/<tag>          holds the digest the tag points at
    repositories/<name>/_referrers/<alg>/<subject-hex>/<alg>-<hex>   a referrer's descriptor (JSON)
    uploads/<uuid>/                                    upload sessions (kapal.registry.uploads)
    gc.lock                                            shared by manifest writes, exclusive for gc

A repository sees only blobs and manifests it links to, so one repository's content is
not readable through another's name without a mount. Blobs are written whole and
verified before a rename publishes them; links and tags are written by rename too, so a
reader never sees half a file and a kill leaves either the old state or the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from kapal.content import digest as digests
from kapal.content.store import ContentStore, fsync_dir
from kapal.registry import manifests
from kapal.registry.errors import RegistryError

# The spec's <name> and <reference> grammars (distribution-spec "Pulling manifests").
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*", re.ASCII)
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", re.ASCII)
NAME_MAX = 255
# Directory names reserved for the repository's own bookkeeping.
_RESERVED = {"_layers", "_manifests", "_referrers", "_uploads"}


def check_name(name: str) -> str:
    if len(name) > NAME_MAX or not NAME_RE.fullmatch(name):
        raise RegistryError("NAME_INVALID", detail={"name": name})
    return name


def check_digest(digest: str, code: str = "DIGEST_INVALID") -> str:
    if not digests.is_digest(digest):
        raise RegistryError(code, f"invalid digest {digest!r}", detail={"digest": digest}, status=400)
    return digest


def write_atomic(path: Path, data: bytes) -> None:
    """Replace *path* with *data*: temporary file, fsync, rename, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def _remove(path: Path) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


class RegistryStorage:
    """Blobs, manifests, tags and referrers of every repository under one root."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.content = ContentStore(self.root)
        self.repos_dir = self.root / "repositories"
        self.uploads_dir = self.root / "uploads"
        self.repos_dir.mkdir(parents=True, exist_ok=True)
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        self.lock_path = self.root / "gc.lock"
        self.lock_path.touch()
        # Blob touched by a mount or existence check within this many seconds count as fresh for gc.
        self.freshen_after = 600.0

    # --- paths -----------------------------------------------------------------------------
    def repo_dir(self, name: str) -> Path:
        return self.repos_dir / check_name(name)

    def _layer_link(self, name: str, digest: str) -> Path:
        algorithm, hexpart = digests.split(digest)
        return self.repo_dir(name) / "_layers" / algorithm / hexpart

    def _revision_link(self, name: str, digest: str) -> Path:
        algorithm, hexpart = digests.split(digest)
        return self.repo_dir(name) / "_manifests" / "revisions" / algorithm / hexpart

    def _tag_path(self, name: str, tag: str) -> Path:
        return self.repo_dir(name) / "_manifests" / "tags" / tag

    def _referrers_dir(self, name: str, subject: str) -> Path:
        algorithm, hexpart = digests.split(subject)
        return self.repo_dir(name) / "_referrers" / algorithm / hexpart

    def blob_path(self, digest: str) -> Path:
        return self.content.path(digest)

    # --- repositories ----------------------------------------------------------------------
    def repository_exists(self, name: str) -> bool:
        return self.repo_dir(name).is_dir()

    def repositories(self, with_blobs_only: bool = False) -> list[str]:
        """Every repository holding a manifest (or also just blobs), in lexical order."""
        found = []
        for dirpath, dirnames, _ in os.walk(self.repos_dir):
            if "_manifests" in dirnames or (with_blobs_only and "_layers" in dirnames):
                found.append(os.path.relpath(dirpath, self.repos_dir))
            dirnames[:] = [d for d in dirnames if d not in _RESERVED]
        return sorted(found)

    # --- blobs -----------------------------------------------------------------------------
    def blob_stat(self, name: str, digest: str) -> os.stat_result:
        """The blob's stat if *name* links it and it is stored, else BLOB_UNKNOWN."""
        check_digest(digest)
        try:
            if not os.path.exists(self._layer_link(name, digest)):
                # Manifests are blobs too (distribution serves them from the blobs endpoint as well).
                os.stat(self._revision_link(name, digest))
            stat = os.stat(self.content.path(digest))
        except FileNotFoundError:
            raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest}) from None
        if time.time() - stat.st_mtime > self.freshen_after:
            # A client that saw the blob exists will not upload it again: keep it out of gc's reach.
            with contextlib.suppress(OSError):
                os.utime(self.content.path(digest))
        return stat

    def link_blob(self, name: str, digest: str) -> None:
        link = self._layer_link(name, digest)
        if link.exists():
            return
        link.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(link, os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)
        fsync_dir(link.parent)

    def mount_blob(self, name: str, source: str, digest: str) -> bool:
        """Link *source*'s blob into *name*; False when the source does not have it."""
        check_name(source)
        try:
            self.blob_stat(source, digest)
        except RegistryError:
            return False
        with contextlib.suppress(OSError):
            os.utime(self.content.path(digest))
        self.link_blob(name, digest)
        return True

    def delete_blob(self, name: str, digest: str) -> None:
        """Unlink the blob from *name*; the bytes go when gc finds nothing refers to them."""
        check_digest(digest)
        if not _remove(self._layer_link(name, digest)):
            raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest})

    # --- manifests -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDONLY)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)

    def manifest_write_lock(self) -> contextlib.AbstractContextManager[None]:
        """Held (shared) while a manifest is checked and linked, so gc cannot sweep in between."""
        return self._locked(fcntl.LOCK_SH)

    def gc_lock(self) -> contextlib.AbstractContextManager[None]:
        return self._locked(fcntl.LOCK_EX)

    def resolve(self, name: str, reference: str) -> str:
        """The digest *reference* (a tag or digest) names in *name*, or MANIFEST_UNKNOWN."""
        if ":" in reference:
            check_digest(reference)
            if not os.path.exists(self._revision_link(name, reference)):
                raise RegistryError("MANIFEST_UNKNOWN", detail={"digest": reference})
            return reference
        if not TAG_RE.fullmatch(reference):
            raise RegistryError("MANIFEST_INVALID", f"invalid tag {reference!r}", detail={"tag": reference})
        try:
            digest = self._tag_path(name, reference).read_text()
        except FileNotFoundError:
            if not self.repository_exists(name):
                raise RegistryError("NAME_UNKNOWN", detail={"name": name}) from None
            raise RegistryError("MANIFEST_UNKNOWN", detail={"tag": reference}) from None
        return digest

    def manifest_media_type(self, name: str, digest: str) -> str:
        try:
            return self._revision_link(name, digest).read_text()
        except FileNotFoundError:
            raise RegistryError("MANIFEST_UNKNOWN", detail={"digest": digest}) from None

    def manifest_bytes(self, digest: str) -> bytes:
        return self.content.read_bytes(digest)

    def put_manifest(
        self,
        name: str,
        reference: str,
        data: bytes,
        content_type: str | None,
        tags: list[str],
        check_references: bool = True,
    ) -> tuple[str, manifests.ParsedManifest]:
        """Store a manifest under its digest in *name* and point the tags at it.

        *check_references* is off only for the pull-through cache, which fetches blobs on demand.
        """
        check_name(name)
        if ":" in reference:
            check_digest(reference)
            algorithm = reference.partition(":")[0]
            digest = digests.of_bytes(data, algorithm)
            if digest != reference:
                raise RegistryError("DIGEST_INVALID", detail={"digest": reference})
        else:
            if not TAG_RE.fullmatch(reference):
                raise RegistryError("TAG_INVALID", f"invalid tag {reference!r}", status=400)
            digest = digests.of_bytes(data)
            tags = [reference, *tags]
        for tag in tags:
            if not TAG_RE.fullmatch(tag):
                raise RegistryError("TAG_INVALID", f"invalid tag {tag!r}", status=400)
        parsed = manifests.parse(data, content_type)
        with self.manifest_write_lock():
            for blob in parsed.blobs if check_references else []:
                if not (self._layer_link(name, blob).exists() and self.content.exists(blob)):
                    raise RegistryError("MANIFEST_BLOB_UNKNOWN", detail={"digest": blob})
            for child in parsed.children if check_references else []:
                if not (self._revision_link(name, child).exists() and self.content.exists(child)):
                    raise RegistryError("MANIFEST_BLOB_UNKNOWN", detail={"digest": child})
            self.content.put_bytes(data, digest)
            write_atomic(self._revision_link(name, digest), parsed.media_type.encode())
            if parsed.subject:
                descriptor = {"mediaType": parsed.media_type, "digest": digest, "size": len(data)}
                if parsed.artifact_type:
                    descriptor["artifactType"] = parsed.artifact_type
                if parsed.annotations:
                    descriptor["annotations"] = parsed.annotations
                algorithm, hexpart = digests.split(digest)
                path = self._referrers_dir(name, parsed.subject) / f"{algorithm}-{hexpart}"
                write_atomic(path, json.dumps(descriptor).encode())
            for tag in tags:
                write_atomic(self._tag_path(name, tag), digest.encode())
        return digest, parsed

    def delete_manifest(self, name: str, reference: str) -> None:
        """Delete a manifest by digest (and every tag on it), or just a tag."""
        if ":" not in reference:
            if not TAG_RE.fullmatch(reference) or not _remove(self._tag_path(name, reference)):
                raise RegistryError("MANIFEST_UNKNOWN", detail={"tag": reference})
            return
        digest = self.resolve(name, reference)
        try:
            parsed = manifests.parse(self.manifest_bytes(digest), self.manifest_media_type(name, digest))
        except Exception:  # noqa: BLE001 - a manifest that no longer parses is still deletable
            parsed = None
        for tag, target in self.tag_targets(name):
            if target == digest:
                _remove(self._tag_path(name, tag))
        if parsed is not None and parsed.subject:
            algorithm, hexpart = digests.split(digest)
            _remove(self._referrers_dir(name, parsed.subject) / f"{algorithm}-{hexpart}")
        _remove(self._revision_link(name, digest))

    # --- tags and referrers ----------------------------------------------------------------
    def tags(self, name: str) -> list[str]:
        try:
            entries = os.listdir(self.repo_dir(name) / "_manifests" / "tags")
        except FileNotFoundError:
            if not self.repository_exists(name):
                raise RegistryError("NAME_UNKNOWN", detail={"name": name}) from None
            return []
        return sorted(entry for entry in entries if not entry.startswith("."))

    def tag_targets(self, name: str) -> Iterator[tuple[str, str]]:
        for tag in self.tags(name):
            try:
                yield tag, self._tag_path(name, tag).read_text()
            except FileNotFoundError:
                continue

    def tag_age(self, name: str, tag: str) -> float:
        """Seconds since the tag was last written (the pull-through cache's TTL clock)."""
        return time.time() - os.stat(self._tag_path(name, tag)).st_mtime

    def referrers(self, name: str, subject: str) -> list[dict]:
        check_digest(subject)
        directory = self._referrers_dir(name, subject)
        found = []
        try:
            entries = sorted(os.listdir(directory))
        except FileNotFoundError:
            return []
        for entry in entries:
            if entry.startswith("."):
                continue
            try:
                found.append(json.loads((directory / entry).read_bytes()))
            except (FileNotFoundError, ValueError):
                continue
        return found

    def revisions(self, name: str) -> Iterator[str]:
        """Every manifest digest *name* holds."""
        base = self.repo_dir(name) / "_manifests" / "revisions"
        for algorithm in ("sha256", "sha512"):
            try:
                entries = os.listdir(base / algorithm)
            except FileNotFoundError:
                continue
            for entry in entries:
                if not entry.startswith("."):
                    yield f"{algorithm}:{entry}"

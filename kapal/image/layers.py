"""The layer store: each image layer unpacked once, as an overlayfs lower directory.

Layers are keyed by diff ID (the digest of the uncompressed tar). With overlayfs
a layer's directory holds only that layer's changes, whiteouts included, so it
does not depend on its parents and one directory serves every image that has
the layer, whatever lies below it.

A layer is unpacked into ``layers/tmp-*`` and renamed into place only after its
diff ID was verified; start-up removes the ``tmp-*`` left by a crash.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kapal.content import digest as digests
from kapal.content.lease import Lease, LeaseRegistry
from kapal.content.store import storage_error
from kapal.errors import DigestMismatch, NotFound
from kapal.image.compression import open_decompressed
from kapal.image.layer_tar import apply_layer
from kapal.image.read_ahead import ReadAhead
from kapal.metadata import Database

_libc = ctypes.CDLL(None, use_errno=True)
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_TOPDIR_FL = 0x00020000


def sync_filesystem(path: str | os.PathLike) -> None:
    """Flush the filesystem holding *path* (one syncfs instead of an fsync per file)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error), os.fspath(path))
    finally:
        os.close(fd)


def spread_subdirectories(path: str | os.PathLike) -> bool:
    """Ask the filesystem to place each subdirectory of *path* away from the others (best effort).

    ext4 puts a new directory near its parent, and a file in its directory's
    block group. Where something was deleted in the last minutes, creating an
    inode there scans past every freed one (ext4 without a journal does not
    reuse them at once) and costs up to a millisecond. Marked as the top of
    independent trees (``chattr +T``), a directory gets its subdirectories
    placed in the least used groups instead, so each layer unpacks where
    nothing was freed. Whether the filesystem took the hint is returned.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        flags = bytearray(4)  # the kernel reads and writes an int, whatever the ioctl's name says
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags)
        value = int.from_bytes(flags, "little")
        if not value & _FS_TOPDIR_FL:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, (value | _FS_TOPDIR_FL).to_bytes(4, "little"))
        return True
    except OSError:  # tmpfs, overlayfs, xfs...: no such flag, their own placement
        return False
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Layer:
    diff_id: str
    size: int


def _remove_later(tree: Path) -> None:
    """Remove a tree in the background (it keeps its ``tmp-`` name, so a crash leaves it to start-up)."""
    threading.Thread(target=shutil.rmtree, args=(tree,), kwargs={"ignore_errors": True}, daemon=True).start()


class LayerStore:
    def __init__(self, root: str | os.PathLike, db: Database, leases: LeaseRegistry) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # Device nodes from images live here: keep every other user out.
        os.chmod(self.root, 0o700)
        spread_subdirectories(self.root)
        self._db = db
        self._leases = leases
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()

    def path(self, diff_id: str) -> Path:
        """The lower directory of a layer, as overlayfs mounts it."""
        return self.root / digests.split(diff_id)[1] / "diff"

    def get(self, diff_id: str) -> Layer | None:
        rows = self._db.query("SELECT diff_id, size FROM layers WHERE diff_id = ?", (diff_id,))
        return Layer(rows[0]["diff_id"], rows[0]["size"]) if rows else None

    def require(self, diff_id: str) -> Layer:
        layer = self.get(diff_id)
        if layer is None:
            raise NotFound(f"layer {diff_id} not found")
        return layer

    def _lock(self, diff_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks[diff_id]

    def unpack(self, blob: BinaryIO, diff_id: str | None, lease: Lease) -> Layer:
        """Unpack a (possibly compressed) layer blob, verifying its diff ID on the way.

        With *diff_id* None (an import) the layer is named by what it hashes to.
        """
        if diff_id is not None:
            lease.add(diff_id)
            existing = self.get(diff_id)
            if existing is not None:
                return existing
        lock = self._lock(diff_id) if diff_id else threading.Lock()
        with lock:
            if diff_id is not None and (existing := self.get(diff_id)) is not None:
                return existing
            tmp = Path(tempfile.mkdtemp(prefix="tmp-", dir=self.root))
            try:
                (tmp / "diff").mkdir()
                stream, _ = open_decompressed(blob)
                reader = digests.DigestingReader(stream)
                # Download hand-off, hashing and gunzip in one thread; parsing (and the large files) in
                # this one, the small files in the file writers' pool.
                with ReadAhead(reader) as ahead:
                    stats = apply_layer(ahead, tmp / "diff")
                reader.drain()
                actual = reader.digest()
                if diff_id is not None and actual != diff_id:
                    raise DigestMismatch(f"layer diff ID mismatch: expected {diff_id}, got {actual}")
                lease.add(actual)
                final = self.root / digests.split(actual)[1]
                if final.exists():
                    if self.get(actual) is not None:
                        shutil.rmtree(tmp)
                        return self.require(actual)
                    shutil.rmtree(final)  # left by a crash between rename and insert
                os.rename(tmp, final)
                # Registered only once durable: one syncfs covers every file and the rename
                # (a crash before the row is written leaves an orphan that sweep removes).
                sync_filesystem(final)
            except OSError as error:
                shutil.rmtree(tmp, ignore_errors=True)
                raise storage_error(error, "unpacking layer") from error
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            with self._db.transaction() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO layers (diff_id, size, added) VALUES (?, ?, ?)",
                    (actual, stats.size, time.time()),
                )
            return Layer(actual, stats.size)

    def adopt(self, tree: Path, diff_id: str, size: int, lease: Lease) -> Layer:
        """Take a layer already laid out as overlayfs wants it (a build step's upper dir).

        *tree* is ``<root>/tmp-*`` holding ``diff/``; it is renamed into place, so a layer
        written by the builder is never unpacked a second time. Its diff ID was computed
        by the caller from the layer tar of that very tree.
        """
        lease.add(diff_id)
        with self._lock(diff_id):
            if (existing := self.get(diff_id)) is not None:
                _remove_later(tree)
                return existing
            final = self.root / digests.split(diff_id)[1]
            try:
                if final.exists():
                    shutil.rmtree(final)  # left by a crash between rename and insert
                os.rename(tree, final)
            except OSError as error:
                shutil.rmtree(tree, ignore_errors=True)
                raise storage_error(error, "storing layer") from error
            with self._db.transaction() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO layers (diff_id, size, added) VALUES (?, ?, ?)",
                    (diff_id, size, time.time()),
                )
        return Layer(diff_id, size)

    def all(self) -> list[Layer]:
        return [
            Layer(row["diff_id"], row["size"]) for row in self._db.query("SELECT diff_id, size FROM layers")
        ]

    def usage(self) -> int:
        rows = self._db.query("SELECT COALESCE(SUM(size), 0) AS total FROM layers")
        return int(rows[0]["total"])

    def sweep(self, referenced: set[str]) -> list[str]:
        """Remove layers nothing references and no lease holds (caller holds ``collecting``)."""
        removed = []
        for layer in self.all():
            if layer.diff_id in referenced or self._leases.held(layer.diff_id):
                continue
            with self._db.transaction() as conn:
                conn.execute("DELETE FROM layers WHERE diff_id = ?", (layer.diff_id,))
            shutil.rmtree(self.root / digests.split(layer.diff_id)[1], ignore_errors=True)
            removed.append(layer.diff_id)
        known = {digests.split(layer.diff_id)[1] for layer in self.all()}
        for entry in os.scandir(self.root):
            # Directories no row names: a crash after rename, before insert.
            orphan = not entry.name.startswith("tmp-") and entry.name not in known
            if orphan and not self._leases.held(f"sha256:{entry.name}"):
                shutil.rmtree(entry.path, ignore_errors=True)
        return removed

    def remove_abandoned(self) -> None:
        """At start-up: unpacks that a crash interrupted."""
        for entry in os.scandir(self.root):
            if entry.name.startswith("tmp-"):
                shutil.rmtree(entry.path, ignore_errors=True)

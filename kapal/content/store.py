"""The content store: blobs addressed by their digest.

Layout (containerd's): ``blobs/<algorithm>/<hex>`` for committed blobs and
``ingest/`` for writes in progress. A blob becomes visible only by an atomic
rename after its bytes were fsynced and its digest checked, so a killed write
leaves at most an orphan in ``ingest/`` (removed at the next start) and never
a blob that lies about its content. Two writers of the same blob each write
their own temporary file; the second rename replaces identical bytes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from kapal.content import digest as digests
from kapal.content.lease import Lease, LeaseRegistry
from kapal.errors import DigestMismatch, NotFound, StorageError

CHUNK = 1 << 20


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def storage_error(error: OSError, what: str) -> StorageError:
    if error.errno == errno.ENOSPC:
        return StorageError(f"{what}: no space left on device")
    return StorageError(f"{what}: {error.strerror or error}")


class BlobWriter:
    """Streams one blob into ``ingest/``; ``commit`` publishes it under its digest."""

    def __init__(self, store: ContentStore, expected: str | None, lease: Lease | None) -> None:
        self._store = store
        self._expected = digests.validate(expected) if expected else None
        algorithm = self._expected.partition(":")[0] if self._expected else "sha256"
        self._algorithm = algorithm
        self._hash = digests.hasher(algorithm)
        self._lease = lease
        self.size = 0
        fd, self._tmp = tempfile.mkstemp(dir=store.ingest_dir, prefix="blob-")
        # The lock marks the file as live: start-up cleanup only removes files nobody holds.
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._done = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        try:
            self._file.write(data)
        except OSError as error:
            self.abort()
            raise storage_error(error, "writing blob") from error
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def commit(self, expected: str | None = None, size: int | None = None) -> str:
        expected = expected or self._expected
        actual = f"{self._algorithm}:{self._hash.hexdigest()}"
        try:
            if expected and expected != actual:
                raise DigestMismatch(f"blob digest mismatch: expected {expected}, got {actual}")
            if size is not None and size != self.size:
                raise DigestMismatch(f"blob {actual} size mismatch: expected {size}, got {self.size}")
            if self._lease is not None:
                self._lease.add(actual)
            try:
                os.fsync(self._file.fileno())
                final = self._store.path(actual)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(self._tmp, 0o444)
                os.rename(self._tmp, final)
                fsync_dir(final.parent)
            except OSError as error:
                raise storage_error(error, f"storing blob {actual}") from error
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._file.close()
        return actual

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._file.close()
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()


class ContentStore:
    def __init__(self, root: str | os.PathLike, leases: LeaseRegistry | None = None) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs"
        self.ingest_dir = self.root / "ingest"
        self.leases = leases or LeaseRegistry()
        for directory in (self.blobs_dir / "sha256", self.blobs_dir / "sha512", self.ingest_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        algorithm, hexpart = digests.split(digest)
        return self.blobs_dir / algorithm / hexpart

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")  # noqa: SIM115 - the caller owns the file
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def read_bytes(self, digest: str) -> bytes:
        """Read a small blob (manifest, config) whole, verifying it on the way."""
        with self.open(digest) as blob:
            data = blob.read()
        if digests.of_bytes(data, digest.partition(":")[0]) != digest:
            raise DigestMismatch(f"blob {digest} is corrupt on disk")
        return data

    def writer(self, expected: str | None = None, lease: Lease | None = None) -> BlobWriter:
        return BlobWriter(self, expected, lease)

    def put_bytes(self, data: bytes, expected: str | None = None, lease: Lease | None = None) -> str:
        digest = expected or digests.of_bytes(data)
        if self.exists(digest):
            if lease is not None:
                lease.add(digest)
            if digests.of_bytes(data, digest.partition(":")[0]) != digest:
                raise DigestMismatch(f"content does not match digest {digest}")
            return digest
        with self.writer(expected, lease) as writer:
            writer.write(data)
            return writer.commit()

    def ingest(self, stream: BinaryIO, expected: str | None = None, lease: Lease | None = None) -> str:
        with self.writer(expected, lease) as writer:
            while chunk := stream.read(CHUNK):
                writer.write(chunk)
            return writer.commit()

    def walk(self) -> Iterator[tuple[str, int]]:
        for algorithm_dir in self.blobs_dir.iterdir():
            for entry in os.scandir(algorithm_dir):
                yield f"{algorithm_dir.name}:{entry.name}", entry.stat().st_size

    def usage(self) -> int:
        return sum(size for _, size in self.walk())

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass

    def sweep(self, referenced: set[str], candidates: Iterable[str] | None = None) -> list[str]:
        """Delete blobs that nothing references and no lease holds.

        The caller holds ``leases.collecting`` and computed *referenced* under it.
        """
        removed = []
        pool = candidates if candidates is not None else [d for d, _ in self.walk()]
        for digest in pool:
            if digest in referenced or self.leases.held(digest) or not self.exists(digest):
                continue
            self.delete(digest)
            removed.append(digest)
        return removed

    def remove_abandoned_ingests(self) -> int:
        """Remove temporary files whose writer died (nobody holds their lock)."""
        removed = 0
        for entry in os.scandir(self.ingest_dir):
            try:
                fd = os.open(entry.path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            try:
                os.unlink(entry.path)
                removed += 1
            finally:
                os.close(fd)
        return removed

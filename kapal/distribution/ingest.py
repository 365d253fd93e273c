"""Blob downloads that survive interruptions, and the hand-off from the network to the unpacker.

A download is written to ``ingest/pull-<algorithm>-<hex>`` and published
under its digest only once its bytes hashed right, so a broken connection or a
killed registry leaves a partial file the next attempt continues with an HTTP
``Range`` request, and never a blob that lies about its content.

The event loop receives the bytes; a worker thread stores, hashes, decompresses
and unpacks them as they arrive (:class:`Feed` carries them across, bounded so
a slow disk slows the download instead of filling memory).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import fcntl
import os
import threading
from pathlib import Path
from typing import Any

from kapal.content import digest as digests
from kapal.content.lease import Lease
from kapal.content.store import ContentStore, fsync_dir, storage_error
from kapal.errors import Conflict, DigestMismatch

_READ = 1 << 20
# Writeback is started every this many bytes, so the fsync at the end has little left to wait for.
_WRITEBACK_STEP = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2
_libc = ctypes.CDLL(None, use_errno=True)


class FeedAbandoned(Exception):
    """The reading side stopped (it failed); the writer should stop sending."""


class Feed:
    """Chunks from the event loop to one reading thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = 32 << 20) -> None:
        self._loop = loop
        self._limit = limit
        self._chunks: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._eof = False
        self._error: BaseException | None = None
        self._abandoned = False
        self._writer_waiting = False
        self._space = asyncio.Event()

    async def put(self, chunk: bytes) -> None:
        while True:
            with self._cond:
                if self._abandoned:
                    raise FeedAbandoned
                if self._bytes < self._limit:
                    self._chunks.append(chunk)
                    self._bytes += len(chunk)
                    self._cond.notify()
                    return
                self._writer_waiting = True
                self._space.clear()
            await self._space.wait()

    def close(self, error: BaseException | None = None) -> None:
        with self._cond:
            self._eof = True
            self._error = error
            self._cond.notify()

    def abandon(self) -> None:
        with self._cond:
            self._abandoned = True
            self._chunks.clear()
            self._bytes = 0
            if self._writer_waiting:
                self._writer_waiting = False
                self._loop.call_soon_threadsafe(self._space.set)

    def take(self) -> bytes:
        """The next chunk; b"" at the end; raises the writer's error if it failed."""
        with self._cond:
            while not self._chunks and not self._eof:
                self._cond.wait()
            if self._chunks:
                chunk = self._chunks.popleft()
                self._bytes -= len(chunk)
                if self._writer_waiting and self._bytes < self._limit:
                    self._writer_waiting = False
                    self._loop.call_soon_threadsafe(self._space.set)
                return chunk
            if self._error is not None:
                raise self._error
            return b""


class PartialBlob:
    """``ingest/pull-<alg>-<hex>``: the bytes of one blob received so far."""

    def __init__(self, store: ContentStore, digest: str) -> None:
        algorithm, hexpart = digests.split(digest)
        self.store = store
        self.digest = digest
        self.path = Path(store.ingest_dir) / f"pull-{algorithm}-{hexpart}"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            # The lock marks the file as live (start-up cleanup skips held files) and as ours.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise Conflict(f"blob {digest} is being downloaded by another operation") from None
        self._fd = fd
        self.size = os.fstat(fd).st_size
        self._flushed = self.size
        os.lseek(fd, 0, os.SEEK_END)

    def reset(self) -> None:
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self.size = self._flushed = 0

    def append(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as error:
            raise storage_error(error, f"writing blob {self.digest}") from error
        self.size += len(data)
        if self.size - self._flushed >= _WRITEBACK_STEP:
            # Asynchronous: the kernel starts writing while the download goes on.
            _libc.sync_file_range(
                self._fd,
                ctypes.c_int64(self._flushed),
                ctypes.c_int64(self.size - self._flushed),
                _SYNC_FILE_RANGE_WRITE,
            )
            self._flushed = self.size

    def read_at(self, offset: int, n: int) -> bytes:
        return os.pread(self._fd, n, offset)

    def commit(self, lease: Lease) -> None:
        """Publish the (verified) bytes under the digest."""
        lease.add(self.digest)
        final = self.store.path(self.digest)
        try:
            os.fsync(self._fd)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.fchmod(self._fd, 0o444)
            os.rename(self.path, final)
            fsync_dir(final.parent)
        except OSError as error:
            raise storage_error(error, f"storing blob {self.digest}") from error
        self.close()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LayerSource:
    """What the unpacker reads: the partial file's earlier bytes, then the feed's, all hashed once.

    Bytes from the feed are appended to the partial file as they pass, so an
    interruption keeps everything received.
    """

    def __init__(self, partial: PartialBlob, feed: Feed, algorithm: str = "sha256") -> None:
        self._partial = partial
        self._feed = feed
        self._hash = digests.hasher(algorithm)
        self._algorithm = algorithm
        self._local_end = partial.size
        self._offset = 0
        self._pending = memoryview(b"")
        self.count = 0

    def readable(self) -> bool:
        return True

    def _next(self) -> memoryview:
        if self._offset < self._local_end:
            data = self._partial.read_at(self._offset, min(_READ, self._local_end - self._offset))
            if not data:
                raise DigestMismatch(f"blob {self._partial.digest}: partial download shrank")
            self._offset += len(data)
        else:
            data = self._feed.take()
            if data:
                self._partial.append(data)
        self._hash.update(data)
        self.count += len(data)
        return memoryview(data)

    def read(self, n: int = -1) -> bytes:
        if not self._pending:
            self._pending = self._next()
            if not self._pending:
                return b""
        if n is None or n < 0 or n >= len(self._pending):
            out, self._pending = self._pending, memoryview(b"")
        else:
            out, self._pending = self._pending[:n], self._pending[n:]
        return bytes(out)

    def readinto(self, buffer: Any) -> int:
        if not self._pending:
            self._pending = self._next()
            if not self._pending:
                return 0
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def drain(self) -> None:
        self._pending = memoryview(b"")
        while self._next():
            pass

    def digest(self) -> str:
        return f"{self._algorithm}:{self._hash.hexdigest()}"

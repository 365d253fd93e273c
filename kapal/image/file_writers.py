"""Small files of a layer created by a few threads while its tar stream goes on being parsed.

Creating a file costs far more than writing its bytes: ext4 without a journal
scans its inode table past every inode freed in the last minutes before it
picks one (0.1–1 ms a file after big deletions), and a layer has thousands of
small files. The thread that parses the tar would wait for each in turn; here
it hands finished work orders to a shared pool and reads on, and the kernel's
part runs on every core.

Nothing is decided in the pool. The unpacker checks every name against its
model of the tree, picks the mode and owner, reads the bytes from the stream,
and records the file in its model before handing it over; a worker only
creates that name (``O_EXCL | O_NOFOLLOW``, relative to the layer's directory
descriptor), writes, sets metadata and closes. What depends on a handed-over
file waits for it: the unpacker calls :meth:`SmallFileWriter.wait` before it
removes or replaces anything, links to a file, changes an existing
directory's metadata, or sets directory times.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

# Larger files are written by the parsing thread itself, straight from the stream.
SMALL_FILE = 256 << 10
# Each directory's files go to one of these threads, always the same: the kernel serialises
# creations in a directory (its lock), and more threads queueing on it only spin.
_WORKERS = 4
# Work orders go out in batches so that the hand-off costs little next to the files.
_BATCH_FILES = 32
_BATCH_BYTES = 1 << 20
# Bytes read from the stream but not yet written, per layer: what a slow disk may hold in memory.
_MAX_PENDING_BYTES = 16 << 20

# (entry name for errors, relative path, creation mode, bytes, (uid, gid, mode) or None, mtime in ns)
Order = tuple[str, str, int, bytes, "tuple[int, int, int] | None", int]

_workers: list[ThreadPoolExecutor] = []
_workers_guard = threading.Lock()


def _worker_for(directory: str) -> ThreadPoolExecutor:
    """The thread that creates files in *directory*; layers unpacked at the same time share them."""
    with _workers_guard:
        if not _workers:
            _workers.extend(ThreadPoolExecutor(1, thread_name_prefix="layer-files") for _ in range(_WORKERS))
    return _workers[hash(directory) % _WORKERS]


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


class SmallFileWriter:
    """Creates one layer's small files in the shared threads, in batches of one directory's files.

    *flags* open a new file (they must include ``O_CREAT | O_EXCL``);
    *error_for* turns a failed system call into the error the unpacker
    reports for that entry. A failure is raised by the next :meth:`add` or
    :meth:`wait`.
    """

    def __init__(self, dir_fd: int, flags: int, error_for: Callable[[OSError, str], Exception]) -> None:
        self._dir_fd = dir_fd
        self._flags = flags
        self._error_for = error_for
        self._batch: list[Order] = []
        self._batch_bytes = 0
        self._batch_dir = ""
        self._pending: deque[tuple[Future[None], int]] = deque()
        self._pending_bytes = 0

    def add(
        self, name: str, rel: str, mode: int, data: bytes, owner: tuple[int, int, int] | None, mtime_ns: int
    ) -> None:
        """Create *rel* with *data*; *owner* (uid, gid, mode) when creation alone does not give them."""
        directory = rel.rpartition("/")[0]
        if directory != self._batch_dir:
            self._submit()  # a batch holds one directory's files
            self._batch_dir = directory
        self._batch.append((name, rel, mode, data, owner, mtime_ns))
        self._batch_bytes += len(data)
        if len(self._batch) >= _BATCH_FILES or self._batch_bytes >= _BATCH_BYTES:
            self._submit()

    def _submit(self) -> None:
        if self._batch:
            future = _worker_for(self._batch_dir).submit(self._write, self._batch)
            self._pending.append((future, self._batch_bytes))
            self._pending_bytes += self._batch_bytes
            self._batch, self._batch_bytes = [], 0
        # Collect what is done (raising its failure early), and bound the memory held.
        pending = self._pending
        while pending and (pending[0][0].done() or self._pending_bytes > _MAX_PENDING_BYTES):
            future, size = pending.popleft()
            self._pending_bytes -= size
            future.result()

    def _write(self, batch: list[Order]) -> None:
        dir_fd, flags = self._dir_fd, self._flags
        for name, rel, mode, data, owner, mtime_ns in batch:
            try:
                fd = os.open(rel, flags, mode, dir_fd=dir_fd)
                try:
                    if data:
                        _write_all(fd, memoryview(data))
                    if owner is not None:
                        # chown clears setuid/setgid bits, so it goes first.
                        os.fchown(fd, owner[0], owner[1])
                        os.fchmod(fd, owner[2])
                    os.utime(fd, ns=(mtime_ns, mtime_ns))
                finally:
                    os.close(fd)
            except OSError as error:
                raise self._error_for(error, name) from error

    def wait(self) -> None:
        """Return once every file handed over exists; raises the first failure."""
        self._submit()
        while self._pending:
            future, size = self._pending.popleft()
            self._pending_bytes -= size
            future.result()

    def close(self) -> None:
        """Wait for every file handed over, ignoring failures (the unpack is failing already)."""
        self._batch, self._batch_bytes = [], 0
        while self._pending:
            future, _ = self._pending.popleft()
            try:
                future.result()
            except Exception:  # noqa: S110 - the caller is already raising the error that matters
                pass
        self._pending_bytes = 0

"""Blob upload sessions, kept on disk so a restarted registry resumes them.

A session is ``uploads/<uuid>/`` with ``repository`` (the name it was started in) and
``data`` (the bytes so far; its size is the session's offset). Nothing else is needed
to resume: a restart loses only the running hash, which is rebuilt from ``data`` when
the upload completes. Completion verifies the digest, fsyncs, and renames ``data`` into
the blob store, so a blob is never visible before it is whole and checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from kapal.content import digest as digests
from kapal.content.store import fsync_dir
from kapal.registry.errors import RegistryError
from kapal.registry.storage import RegistryStorage, check_digest

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_READ = 1 << 20
_BATCH = 1 << 20


@dataclass
class _RunningHash:
    offset: int
    hashers: dict[str, hashlib._Hash]


def _write_and_hash(fd: int, chunks: list[bytes], hasher: hashlib._Hash | None) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
        if hasher is not None:
            hasher.update(chunk)


async def _write_stream(fd: int, body: AsyncIterator[bytes], hasher: hashlib._Hash | None) -> int:
    """Append *body* to *fd*, hashing it; disk writes and hashing run in a thread (both release
    the GIL), one batch at a time while the event loop receives the next."""
    loop = asyncio.get_running_loop()
    pending: asyncio.Future | None = None
    batch: list[bytes] = []
    batched = written = 0
    async for chunk in body:
        batch.append(chunk)
        batched += len(chunk)
        if batched >= _BATCH:
            if pending is not None:
                await pending
            pending = loop.run_in_executor(None, _write_and_hash, fd, batch, hasher)
            written += batched
            batch, batched = [], 0
    if pending is not None:
        await pending
    if batch:
        _write_and_hash(fd, batch, hasher)
        written += batched
    return written


class UploadSessions:
    def __init__(self, storage: RegistryStorage) -> None:
        self.storage = storage
        self.directory = storage.uploads_dir
        # Hashes of sessions this process has been writing, valid while their offset matches.
        self._running: dict[str, _RunningHash] = {}

    def _dir(self, name: str, session: str) -> Path:
        if not _UUID_RE.fullmatch(session):
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": session})
        path = self.directory / session
        try:
            owner = (path / "repository").read_text()
        except FileNotFoundError:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": session}) from None
        if owner != name:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": session})
        return path

    def _open_locked(self, name: str, session: str) -> int:
        """The session's data file, opened for appending and locked: one writer (or finisher) at a time,
        across worker processes too."""
        path = self._dir(name, session) / "data"
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": session}) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise RegistryError(
                    "BLOB_UPLOAD_INVALID", "another request is writing this upload", status=416
                ) from None
            raise
        try:
            # Finished (renamed into the blob store) or cancelled between our open and our lock?
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(fd).st_ino:
            os.close(fd)
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": session})
        return fd

    def start(self, name: str) -> str:
        session = str(uuid.uuid4())
        path = self.directory / session
        path.mkdir()
        (path / "data").touch()
        (path / "repository").write_text(name)
        return session

    def offset(self, name: str, session: str) -> int:
        try:
            return (self._dir(name, session) / "data").stat().st_size
        except FileNotFoundError:  # finished or cancelled by a racing request since _dir looked
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": session}) from None

    async def append(
        self, name: str, session: str, body: AsyncIterator[bytes], start: int | None, length: int | None
    ) -> int:
        """Add *body* at the end of the session; *start* (from Content-Range) must be that end."""
        fd = self._open_locked(name, session)
        try:
            offset = os.fstat(fd).st_size
            if start is not None and start != offset:
                error = RegistryError(
                    "BLOB_UPLOAD_INVALID", f"chunk starts at {start}, upload is at {offset}", status=416
                )
                error.headers = {"Range": f"0-{offset - 1}" if offset else "0-0"}
                raise error
            running = self._running.pop(session, None)
            if running is None or running.offset != offset:
                running = None if offset else _RunningHash(0, {"sha256": hashlib.sha256()})
            hasher = running.hashers["sha256"] if running is not None else None
            written = await _write_stream(fd, body, hasher)
            if length is not None and written != length:
                # The chunk is not what the client announced: take it back out.
                os.ftruncate(fd, offset)
                raise RegistryError("SIZE_INVALID", f"chunk has {written} bytes, announced {length}")
            if running is not None:
                running.offset = offset + written
                self._running[session] = running
            return offset + written
        finally:
            os.close(fd)

    def _digest_of(self, session: str, path: Path, algorithm: str) -> str:
        running = self._running.pop(session, None)
        size = path.stat().st_size
        if running is not None and running.offset == size and algorithm in running.hashers:
            return f"{algorithm}:{running.hashers[algorithm].hexdigest()}"
        hasher = digests.hasher(algorithm)
        with open(path, "rb") as data:
            while chunk := data.read(_READ):
                hasher.update(chunk)
        return f"{algorithm}:{hasher.hexdigest()}"

    def finish(self, name: str, session: str, expected: str) -> int:
        """Verify the session's bytes hash to *expected* and publish them as that blob."""
        check_digest(expected)
        directory = self._dir(name, session)
        data = directory / "data"
        fd = self._open_locked(name, session)
        try:
            algorithm = expected.partition(":")[0]
            actual = self._digest_of(session, data, algorithm)
            if actual != expected:
                raise RegistryError(
                    "DIGEST_INVALID",
                    f"upload hashes to {actual}, not {expected}",
                    detail={"digest": expected},
                )
            size = os.fstat(fd).st_size
            final = self.storage.blob_path(expected)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.fsync(fd)
            os.fchmod(fd, 0o444)
            os.rename(data, final)
            fsync_dir(final.parent)
        finally:
            os.close(fd)
        self.storage.link_blob(name, expected)
        shutil.rmtree(directory, ignore_errors=True)
        return size

    def cancel(self, name: str, session: str) -> None:
        directory = self._dir(name, session)
        self._running.pop(session, None)
        shutil.rmtree(directory, ignore_errors=True)

    def purge(self, older_than: float, dry_run: bool = False) -> list[str]:
        """Remove sessions untouched for *older_than* seconds (abandoned by their client)."""
        removed = []
        now = time.time()
        for entry in os.scandir(self.directory):
            with contextlib.suppress(FileNotFoundError):
                mtime = os.stat(os.path.join(entry.path, "data")).st_mtime
                if now - mtime > older_than:
                    if not dry_run:
                        shutil.rmtree(entry.path, ignore_errors=True)
                    removed.append(entry.name)
        return removed

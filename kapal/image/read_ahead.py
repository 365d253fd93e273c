"""A stream read by a thread of its own, a few chunks ahead of its consumer.

Unpacking a layer is two kinds of work: producing the tar (download hand-off,
hashing, gunzip) and creating files. Done in one thread they add up; with a
reader thread in front they overlap, and the C parts of both (isal, hashlib,
the system calls) run without the GIL. The producer is stopped and joined
before the ``with`` block ends, so the source is never read by two threads.
"""

from __future__ import annotations

import collections
import threading
from types import TracebackType
from typing import Any, BinaryIO

_CHUNK = 1 << 20


class ReadAhead:
    """``read``/``readinto`` over *source*, filled by a background thread (at most *depth* chunks)."""

    def __init__(self, source: BinaryIO, chunk: int = _CHUNK, depth: int = 4) -> None:
        self._source = source
        self._chunk = chunk
        self._depth = depth
        self._chunks: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition()
        self._stopped = False
        self._ended = False
        self._error: BaseException | None = None
        self._pending = memoryview(b"")
        self._pending_chunk = b""  # what _pending views, handed out whole without a copy
        self._thread = threading.Thread(target=self._fill, name="layer-read-ahead", daemon=True)

    def __enter__(self) -> ReadAhead:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        with self._cond:
            self._stopped = True
            self._chunks.clear()
            self._cond.notify_all()
        self._thread.join()

    def _fill(self) -> None:
        try:
            while True:
                with self._cond:
                    while len(self._chunks) >= self._depth and not self._stopped:
                        self._cond.wait()
                    if self._stopped:
                        return
                data = self._source.read(self._chunk)
                with self._cond:
                    if data:
                        self._chunks.append(data)
                    else:
                        self._ended = True
                    self._cond.notify_all()
                if not data:
                    return
        except BaseException as error:  # handed to the consumer, which raises it as its own
            with self._cond:
                self._error = error
                self._ended = True
                self._cond.notify_all()

    def _next(self) -> memoryview:
        with self._cond:
            while not self._chunks and not self._ended:
                self._cond.wait()
            if self._chunks:
                data = self._chunks.popleft()
                self._cond.notify_all()
                self._pending_chunk = data
                return memoryview(data)
            if self._error is not None:
                raise self._error
            return memoryview(b"")

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if not self._pending:
            self._pending = self._next()
        if n is None or n < 0:
            parts = [bytes(self._pending)]
            while chunk := self._next():
                parts.append(bytes(chunk))
            self._pending = memoryview(b"")
            return b"".join(parts)
        if n >= len(self._pending) and len(self._pending) == len(self._pending_chunk):
            out_chunk, self._pending = self._pending_chunk, memoryview(b"")
            return out_chunk
        out, self._pending = self._pending[:n], self._pending[n:]
        return bytes(out)

    def readinto(self, buffer: Any) -> int:
        if not self._pending:
            self._pending = self._next()
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

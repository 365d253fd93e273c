"""ReadAhead: a reader thread in front of layer unpacking."""

from __future__ import annotations

import io
import threading

import pytest

from kapal.errors import InvalidArgument
from kapal.image.read_ahead import ReadAhead


class Source:
    """Hands out *data* in small pieces, then raises *error* (if any) instead of ending."""

    def __init__(self, data: bytes, error: BaseException | None = None) -> None:
        self._data = io.BytesIO(data)
        self._error = error
        self.reads = 0
        self.readers: set[int] = set()

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        self.readers.add(threading.get_ident())
        chunk = self._data.read(min(n, 1000))
        if not chunk and self._error is not None:
            raise self._error
        return chunk


def test_read_and_readinto_return_the_stream_in_order() -> None:
    data = bytes(range(256)) * 1000
    with ReadAhead(Source(data), chunk=4096, depth=2) as ahead:  # type: ignore[arg-type]
        out = bytearray(ahead.read(10))
        buffer = bytearray(3000)
        while n := ahead.readinto(memoryview(buffer)):
            out += buffer[:n]
        assert ahead.read(10) == b""
    assert bytes(out) == data


def test_the_sources_error_is_raised_to_the_consumer_as_is() -> None:
    error = InvalidArgument("invalid layer: truncated gzip stream")
    with ReadAhead(Source(b"x" * 5000, error)) as ahead:  # type: ignore[arg-type]
        assert ahead.read(5000) == b"x" * 1000
        with pytest.raises(InvalidArgument) as raised:
            while ahead.read(1 << 20):
                pass
    assert raised.value is error


def test_leaving_early_stops_the_reader_before_the_caller_reads_again() -> None:
    source = Source(b"y" * 1_000_000)
    with ReadAhead(source, chunk=1000, depth=3) as ahead:  # type: ignore[arg-type]
        assert ahead.read(1) == b"y"
    reads = source.reads
    assert reads <= 5  # at most depth chunks ahead (plus the one in flight)
    assert threading.get_ident() not in source.readers
    # The thread has ended: the caller owns the source again.
    assert source.read(1000) == b"y" * 1000 and source.reads == reads + 1

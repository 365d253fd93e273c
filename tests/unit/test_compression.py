"""Compression sniffing, decoding from non-seekable streams, and blob writers."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os

import pytest
import zstandard

from kapal.errors import InvalidArgument
from kapal.image.compression import (
    Compression,
    compress_writer,
    detect,
    media_type_suffix,
    open_decompressed,
)

# Incompressible and very compressible parts, larger than every internal chunk.
PAYLOAD = os.urandom(300_000) + b"layer " * 400_000


class ReadOnly:
    """Only read(), and stingy with it: like a socket, it returns short reads."""

    def __init__(self, data: bytes, max_read: int = 1 << 30) -> None:
        self._data = io.BytesIO(data)
        self._max = max_read

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._max
        return self._data.read(min(n, self._max))


def compressed(compression: Compression, data: bytes = PAYLOAD, level: int | None = None) -> bytes:
    out = io.BytesIO()
    writer = compress_writer(out, compression, level)
    writer.write(data[:1000])
    writer.write(data[1000:])
    writer.close()
    assert not out.closed  # the caller still has to hash and rename the blob
    return out.getvalue()


def decoded(blob: bytes, max_read: int = 1 << 30) -> tuple[bytes, Compression]:
    stream, compression = open_decompressed(ReadOnly(blob, max_read))  # type: ignore[arg-type]
    return stream.read(), compression


@pytest.mark.parametrize("compression", list(Compression))
def test_round_trip(compression: Compression) -> None:
    blob = compressed(compression)
    if compression is not Compression.NONE:
        assert len(blob) < len(PAYLOAD)
    assert detect(blob[:8]) is compression
    assert decoded(blob) == (PAYLOAD, compression)


@pytest.mark.parametrize("compression", list(Compression))
def test_read_sizes_are_exact_and_readinto_fills(compression: Compression) -> None:
    blob = compressed(compression)
    stream, _ = open_decompressed(ReadOnly(blob, max_read=4096))  # type: ignore[arg-type]
    assert stream.read(10) == PAYLOAD[:10]
    assert stream.read(1 << 20) == PAYLOAD[10 : 10 + (1 << 20)]
    buffer = bytearray(1 << 20)
    got = bytearray()
    while n := stream.readinto(buffer):
        assert n == len(buffer) or len(got) + n == len(PAYLOAD) - 10 - (1 << 20)
        got += buffer[:n]
    assert bytes(got) == PAYLOAD[10 + (1 << 20) :]
    assert stream.read(10) == b""


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (b"\x1f\x8b\x08\x00", Compression.GZIP),
        (b"\x28\xb5\x2f\xfd\x00", Compression.ZSTD),
        (b"\x50\x2a\x4d\x18\x04\x00", Compression.ZSTD),  # skippable frame
        (b"\x5f\x2a\x4d\x18\x04\x00", Compression.ZSTD),
        (b"BZh91AY&SY", Compression.BZIP2),
        (b"BZh9", Compression.BZIP2),
        (b"BZh9\x17rE8P\x90", Compression.BZIP2),  # an empty bzip2 stream
        (b"BZh.txt\x00\x00\x00", Compression.NONE),  # a tar whose first file is BZh.txt
        (b"BZh9notbzip", Compression.NONE),
        (b"\x1f\x8b\x07", Compression.NONE),
        (b"\xfd7zXZ\x00\x00", Compression.XZ),
        (b"bin/\x00\x00\x00", Compression.NONE),
        (b"", Compression.NONE),
        (b"\x1f", Compression.NONE),
    ],
)
def test_detect(prefix: bytes, expected: Compression) -> None:
    assert detect(prefix) is expected


def test_multi_member_gzip_decodes_to_the_concatenation() -> None:
    blob = (
        gzip.compress(b"first member, ") + compressed(Compression.GZIP, b"second, ") + gzip.compress(b"third")
    )
    assert decoded(blob) == (b"first member, second, third", Compression.GZIP)


def test_multi_frame_zstd_with_a_skippable_frame_decodes_every_frame() -> None:
    skippable = (0x184D2A50).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"meta!"
    compressor = zstandard.ZstdCompressor(level=3)
    blob = skippable + compressor.compress(b"frame one, ") + compressor.compress(PAYLOAD)
    blob += zstandard.ZstdCompressor(write_checksum=True).compress(b", the end")
    assert decoded(blob, max_read=1000) == (b"frame one, " + PAYLOAD + b", the end", Compression.ZSTD)


def test_bzip2_and_xz_multi_stream() -> None:
    assert decoded(bz2.compress(b"a") + bz2.compress(b"b")) == (b"ab", Compression.BZIP2)
    assert decoded(lzma.compress(b"a") + lzma.compress(b"b")) == (b"ab", Compression.XZ)


def test_peek_survives_one_byte_reads() -> None:
    blob = compressed(Compression.XZ, b"tiny")
    assert decoded(blob, max_read=1) == (b"tiny", Compression.XZ)
    assert decoded(b"plain", max_read=1) == (b"plain", Compression.NONE)


def test_empty_input_is_an_empty_plain_stream() -> None:
    assert decoded(b"") == (b"", Compression.NONE)


@pytest.mark.parametrize("compression", [c for c in Compression if c is not Compression.NONE])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.999])
def test_truncation_is_invalid_argument(compression: Compression, fraction: float) -> None:
    blob = compressed(compression)
    with pytest.raises(InvalidArgument, match=f"invalid {compression.value} stream"):
        decoded(blob[: max(7, int(len(blob) * fraction))])


@pytest.mark.parametrize("compression", [c for c in Compression if c is not Compression.NONE])
def test_corruption_is_invalid_argument(compression: Compression) -> None:
    blob = bytearray(compressed(compression))
    for i in range(20, len(blob), 97):
        blob[i] ^= 0x5A
    with pytest.raises(InvalidArgument, match=f"invalid {compression.value} stream"):
        decoded(bytes(blob))


def test_zstd_truncated_at_every_block_boundary_is_caught() -> None:
    """python-zstandard's reader stops silently on truncation; the frame tracker must not."""
    blob = zstandard.ZstdCompressor(level=1).compress(PAYLOAD)
    for cut in range(8, len(blob), max(1, len(blob) // 300)):
        with pytest.raises(InvalidArgument, match="truncated"):
            decoded(blob[:cut])


def test_errors_of_the_source_pass_through() -> None:
    class Broken:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, n: int = -1) -> bytes:
            self.calls += 1
            if self.calls == 1:
                return gzip.compress(PAYLOAD)[:100]
            raise ConnectionResetError(104, "reset by peer")

    stream, _ = open_decompressed(Broken())  # type: ignore[arg-type]
    with pytest.raises(ConnectionResetError):
        stream.read()


def test_gzip_writer_is_deterministic_and_names_no_file() -> None:
    class Named(io.BytesIO):
        name = "/var/lib/kapal/blobs/tmp-123"

    first, second = Named(), Named()
    for out in (first, second):
        with compress_writer(out, Compression.GZIP) as writer:
            writer.write(PAYLOAD)
    assert first.getvalue() == second.getvalue()
    header = first.getvalue()[:10]
    assert header[3] & 0x08 == 0  # no FNAME
    assert header[4:8] == b"\0\0\0\0"  # no mtime
    assert gzip.decompress(first.getvalue()) == PAYLOAD


def test_zstd_writer_output_is_standard_zstd() -> None:
    blob = compressed(Compression.ZSTD, level=5)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(blob) == PAYLOAD


def test_invalid_levels_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        compress_writer(io.BytesIO(), Compression.GZIP, 9)
    with pytest.raises(InvalidArgument):
        compress_writer(io.BytesIO(), Compression.ZSTD, 99)
    with pytest.raises(InvalidArgument):
        compress_writer(io.BytesIO(), Compression.BZIP2, 0)


def test_media_type_suffix() -> None:
    assert media_type_suffix(Compression.NONE) == ""
    assert media_type_suffix(Compression.GZIP) == "+gzip"
    assert media_type_suffix(Compression.ZSTD) == "+zstd"
    with pytest.raises(InvalidArgument):
        media_type_suffix(Compression.XZ)


@pytest.mark.parametrize("compression", list(Compression))
def test_empty_payload_round_trips(compression: Compression) -> None:
    assert decoded(compressed(compression, b"")) == (b"", compression)

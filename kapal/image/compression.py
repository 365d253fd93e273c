"""Compression of layer blobs and ``docker load`` archives.

Registries serve layers as plain tar, gzip or zstd, and ``docker save`` archives
are handed to ``docker load`` in whatever the user piped through (bzip2 and xz
too). Callers never know in advance, and the data arrives on non-seekable
streams (HTTP bodies, pipes), so the format is sniffed from the first bytes
and those bytes are re-served to the decoder.

Decoding errors are reported as :class:`~kapal.errors.InvalidArgument`: a
corrupt or truncated blob is the sender's fault and must reach the user as a
400, not as an internal error. I/O errors of the underlying stream (those
carrying an errno) pass through untouched.
"""

from __future__ import annotations

import bz2
import enum
import gzip
import io
import lzma
from typing import Any, BinaryIO, cast

import zstandard
from isal import igzip, igzip_lib, isal_zlib

from kapal.errors import InvalidArgument

# Large enough that per-call Python overhead vanishes next to the codec's work.
CHUNK = 1 << 20

# Enough bytes to tell every supported format apart, bzip2's block magic included.
_PEEK = 10

# Magic numbers are checked as far as each format fixes its first bytes, so a
# plain tar whose first file happens to be called "BZh..." stays a tar.
_GZIP_MAGIC = b"\x1f\x8b\x08"  # deflate is gzip's only method
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BZIP2_MAGIC = b"BZh"
_BZIP2_LEVELS = b"123456789"
_BZIP2_BLOCK_MAGICS = (b"1AY&SY", b"\x17rE8P\x90")  # first block, or end of an empty stream
_XZ_MAGIC = b"\xfd7zXZ\x00"
_ZSTD_FRAME = 0xFD2FB528
# Skippable frames (0x184D2A50..0x184D2A5F) may lead a zstd stream (some tools
# put metadata there), so they identify zstd as well.
_ZSTD_SKIPPABLE_MASK = 0xFFFFFFF0
_ZSTD_SKIPPABLE = 0x184D2A50

# zstd's own default; kept explicit because layer digests depend on it.
_ZSTD_DEFAULT_LEVEL = 3


class Compression(enum.Enum):
    """How a blob or archive is compressed."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"
    BZIP2 = "bzip2"
    XZ = "xz"


def detect(prefix: bytes) -> Compression:
    """The compression of a stream starting with *prefix*, by magic bytes.

    Anything unrecognised is taken as uncompressed: tar has no magic at
    offset 0, so "not a known codec" is the only evidence for plain tar.
    Short prefixes (down to the codec's own magic) are judged on what they
    show.
    """
    if prefix.startswith(_GZIP_MAGIC):
        return Compression.GZIP
    if prefix.startswith(_ZSTD_MAGIC):
        return Compression.ZSTD
    if len(prefix) >= 4:
        magic = int.from_bytes(prefix[:4], "little")
        if magic & _ZSTD_SKIPPABLE_MASK == _ZSTD_SKIPPABLE:
            return Compression.ZSTD
    if prefix.startswith(_XZ_MAGIC):
        return Compression.XZ
    if (
        prefix.startswith(_BZIP2_MAGIC)
        and prefix[3:4] != b""
        and prefix[3:4] in _BZIP2_LEVELS
        and (len(prefix) < 10 or prefix[4:10] in _BZIP2_BLOCK_MAGICS)
    ):
        return Compression.BZIP2
    return Compression.NONE


def media_type_suffix(compression: Compression) -> str:
    """The suffix OCI appends to a layer media type for *compression*.

    bzip2 and xz have no OCI layer media type, so asking for one is a bug in
    the caller (or an attempt to push something registries cannot serve).
    """
    if compression is Compression.NONE:
        return ""
    if compression is Compression.GZIP:
        return "+gzip"
    if compression is Compression.ZSTD:
        return "+zstd"
    raise InvalidArgument(f"{compression.value} is not a valid compression for an OCI layer")


# --------------------------------------------------------------------------
# Reading


class _PeekedStream(io.RawIOBase):
    """A non-seekable stream whose first bytes were already read to sniff it.

    The decoders must see those bytes again; this serves them first, then
    delegates. It never closes the wrapped stream: the caller owns it.
    """

    def __init__(self, raw: BinaryIO, prefix: bytes) -> None:
        super().__init__()
        self._raw = raw
        self._prefix = prefix
        self._raw_readinto = getattr(raw, "readinto", None)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        if self._raw_readinto is not None:
            return self._raw_readinto(view) or 0
        data = self._raw.read(len(view))
        n = len(data)
        view[:n] = data
        return n

    def read(self, size: int = -1) -> bytes:
        # Overridden so decoders that call read() (zstd, bz2, lzma) skip the
        # bytearray round trip RawIOBase.read would make.
        if self._prefix:
            if size is None or size < 0 or size >= len(self._prefix):
                head, self._prefix = self._prefix, b""
                if size is None or size < 0:
                    return head + self._raw.read()
                return head
            head, self._prefix = self._prefix[:size], self._prefix[size:]
            return head
        if size is None or size < 0:
            return self._raw.read()
        return self._raw.read(size)


class _ZstdFrameTracker:
    """Follows the frame and block structure of compressed zstd input.

    python-zstandard's stream reader stops silently when its input ends in the
    middle of a frame, so a truncated download would decode "successfully"
    to a prefix of the data. Block headers carry their compressed sizes, so
    walking them costs a few operations per block (at most 128 KiB of output
    each) and tells whether the input ended exactly on a frame boundary.
    """

    _MAGIC, _SKIP_SIZE, _FRAME_DESCRIPTOR, _FRAME_HEADER_REST, _BLOCK, _LOST = range(6)

    def __init__(self) -> None:
        self._state = self._MAGIC
        self._need = 4
        self._header = bytearray()
        self._skip = 0
        self._checksum = False

    def feed(self, data: bytes | memoryview) -> None:
        if self._state == self._LOST:
            return
        view = memoryview(data)
        i, n = 0, len(view)
        while i < n:
            if self._skip:
                k = min(self._skip, n - i)
                self._skip -= k
                i += k
                continue
            k = min(self._need - len(self._header), n - i)
            self._header += view[i : i + k]
            i += k
            if len(self._header) == self._need:
                self._advance(bytes(self._header))
                self._header.clear()
                if self._state == self._LOST:
                    return

    def complete(self) -> bool:
        """Whether the input so far ends on a frame boundary.

        A "lost" tracker (input that is not zstd structure) claims
        completeness: the decoder itself reports such corruption.
        """
        if self._state == self._LOST:
            return True
        return self._state == self._MAGIC and not self._header and not self._skip

    def _advance(self, header: bytes) -> None:
        state = self._state
        if state == self._MAGIC:
            magic = int.from_bytes(header, "little")
            if magic == _ZSTD_FRAME:
                self._state, self._need = self._FRAME_DESCRIPTOR, 1
            elif magic & _ZSTD_SKIPPABLE_MASK == _ZSTD_SKIPPABLE:
                self._state, self._need = self._SKIP_SIZE, 4
            else:
                self._state = self._LOST
        elif state == self._SKIP_SIZE:
            self._skip = int.from_bytes(header, "little")
            self._state, self._need = self._MAGIC, 4
        elif state == self._FRAME_DESCRIPTOR:
            descriptor = header[0]
            single_segment = (descriptor >> 5) & 1
            self._checksum = bool((descriptor >> 2) & 1)
            rest = (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3]
            rest += (single_segment, 2, 4, 8)[descriptor >> 6]
            if rest:
                self._state, self._need = self._FRAME_HEADER_REST, rest
            else:
                self._state, self._need = self._BLOCK, 3
        elif state == self._FRAME_HEADER_REST:
            self._state, self._need = self._BLOCK, 3
        elif state == self._BLOCK:
            block = int.from_bytes(header, "little")
            block_type = (block >> 1) & 3
            if block_type == 3:  # reserved: corrupt, the decoder will say so
                self._state = self._LOST
                return
            self._skip = 1 if block_type == 1 else block >> 3  # RLE blocks carry one byte
            if block & 1:  # last block of the frame
                self._skip += 4 if self._checksum else 0
                self._state, self._need = self._MAGIC, 4


class _TrackedSource:
    """Feeds everything the zstd decoder reads through a frame tracker."""

    def __init__(self, raw: _PeekedStream, tracker: _ZstdFrameTracker) -> None:
        self._raw = raw
        self._tracker = tracker

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if data:
            self._tracker.feed(data)
        return data


# Errors a codec raises for bad input. OSError is in the list because bz2 and
# gzip report corrupt data as OSError; those carry no errno, which is how they
# are told apart from real I/O errors of the source.
_CODEC_ERRORS: tuple[type[BaseException], ...] = (
    EOFError,
    OSError,
    gzip.BadGzipFile,
    igzip_lib.IsalError,
    lzma.LZMAError,
    zstandard.ZstdError,
)


class DecompressedStream(io.BufferedIOBase):
    """The decoded bytes of a compressed stream, with uniform error reporting.

    ``read(n)`` returns exactly *n* bytes until the end (some decoders return
    short reads mid-stream, which tar readers mistake for truncation), and
    ``readinto`` fills the caller's buffer without an intermediate copy where
    the decoder allows. Closing it does not close the source stream.
    """

    def __init__(
        self,
        decoder: BinaryIO,
        compression: Compression,
        tracker: _ZstdFrameTracker | None = None,
    ) -> None:
        super().__init__()
        self._decoder = decoder
        self.compression = compression
        self._tracker = tracker
        self._eof = False

    def readable(self) -> bool:
        return True

    def _fail(self, error: BaseException) -> InvalidArgument:
        if isinstance(error, EOFError):
            return InvalidArgument(f"invalid {self.compression.value} stream: truncated")
        return InvalidArgument(f"invalid {self.compression.value} stream: {error}")

    def _at_eof(self) -> None:
        self._eof = True
        if self._tracker is not None and not self._tracker.complete():
            raise InvalidArgument(f"invalid {self.compression.value} stream: truncated")

    def _decode(self, method: str, argument: int | memoryview) -> Any:
        try:
            return getattr(self._decoder, method)(argument)
        except _CODEC_ERRORS as error:
            if isinstance(error, OSError) and error.errno is not None:
                raise
            raise self._fail(error) from error

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        total = 0
        while total < len(view) and not self._eof:
            n = self._decode("readinto", view[total:])
            if not n:
                self._at_eof()
            total += n or 0
        return total

    def readinto1(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._eof or not len(view):
            return 0
        n = self._decode("readinto", view) or 0
        if not n:
            self._at_eof()
        return n

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = 1 << 62
        chunks: list[bytes] = []
        total = 0
        while total < size and not self._eof:
            data = self._decode("read", min(size - total, CHUNK * 16))
            if not data:
                self._at_eof()
                break
            chunks.append(data)
            total += len(data)
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def read1(self, size: int = -1) -> bytes:
        if self._eof or size == 0:
            return b""
        data = self._decode("read", CHUNK if size is None or size < 0 else size)
        if not data:
            self._at_eof()
        return data

    def close(self) -> None:
        if not self.closed:
            try:
                self._decoder.close()
            finally:
                super().close()


def open_decompressed(raw: BinaryIO) -> tuple[BinaryIO, Compression]:
    """Sniff *raw*'s compression and return a reader of its decoded bytes.

    *raw* only needs ``read``; it is never seeked and never closed. The
    returned stream raises :class:`InvalidArgument` for corrupt or truncated
    input. Multi-member gzip and multi-frame zstd (as written by parallel
    compressors) decode to the concatenation of their members.
    """
    prefix = b""
    while len(prefix) < _PEEK:
        more = raw.read(_PEEK - len(prefix))
        if not more:
            break
        prefix += more
    compression = detect(prefix)
    source = _PeekedStream(raw, prefix)
    tracker = None
    decoder: BinaryIO
    if compression is Compression.GZIP:
        decoder = cast(BinaryIO, igzip.IGzipFile(fileobj=source, mode="rb"))
    elif compression is Compression.ZSTD:
        tracker = _ZstdFrameTracker()
        decoder = cast(
            BinaryIO,
            zstandard.ZstdDecompressor().stream_reader(
                _TrackedSource(source, tracker),
                read_size=CHUNK,
                read_across_frames=True,
                closefd=False,
            ),
        )
    elif compression is Compression.BZIP2:
        decoder = cast(BinaryIO, bz2.BZ2File(source, mode="rb"))
    elif compression is Compression.XZ:
        decoder = cast(BinaryIO, lzma.LZMAFile(source, mode="rb"))  # noqa: SIM115 (caller closes)
    else:
        decoder = cast(BinaryIO, io.BufferedReader(source, CHUNK))
    return cast(BinaryIO, DecompressedStream(decoder, compression, tracker)), compression


# --------------------------------------------------------------------------
# Writing


class _Uncompressed(io.BufferedIOBase):
    """Pass-through writer whose close() leaves the destination open.

    Gives NONE the same ownership rule as the codecs: the caller closes *out*.
    """

    def __init__(self, out: BinaryIO) -> None:
        super().__init__()
        self._out = out

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to closed file")
        view = memoryview(data).cast("B")
        written = self._out.write(view)
        return len(view) if written is None else written

    def flush(self) -> None:
        if not self.closed:
            self._out.flush()


def compress_writer(out: BinaryIO, compression: Compression, level: int | None = None) -> BinaryIO:
    """A writer that compresses into *out*.

    Closing it writes the codec's trailer but leaves *out* open, so the caller
    can hash, fsync and rename the blob it is writing. The output depends only
    on the input and the level (gzip headers carry no name or timestamp; zstd
    runs in multi-threaded mode, whose output libzstd keeps independent of the
    thread count), so layers rebuilt elsewhere get the same digest.
    """
    if compression is Compression.NONE:
        return cast(BinaryIO, _Uncompressed(out))
    if compression is Compression.GZIP:
        gzip_level = isal_zlib.ISAL_DEFAULT_COMPRESSION if level is None else level
        if not isal_zlib.ISAL_BEST_SPEED <= gzip_level <= isal_zlib.ISAL_BEST_COMPRESSION:
            raise InvalidArgument(
                f"gzip compression level must be {isal_zlib.ISAL_BEST_SPEED}"
                f"-{isal_zlib.ISAL_BEST_COMPRESSION}, got {gzip_level}"
            )
        return cast(
            BinaryIO,
            igzip.IGzipFile(filename="", mode="wb", compresslevel=gzip_level, fileobj=out, mtime=0),
        )
    if compression is Compression.ZSTD:
        zstd_level = _ZSTD_DEFAULT_LEVEL if level is None else level
        if not -(1 << 17) <= zstd_level <= zstandard.MAX_COMPRESSION_LEVEL:
            raise InvalidArgument(f"invalid zstd compression level {zstd_level}")
        compressor = zstandard.ZstdCompressor(level=zstd_level, threads=-1)
        return cast(BinaryIO, compressor.stream_writer(out, closefd=False))
    if compression is Compression.BZIP2:
        bz2_level = 9 if level is None else level
        if not 1 <= bz2_level <= 9:
            raise InvalidArgument(f"bzip2 compression level must be 1-9, got {bz2_level}")
        return cast(BinaryIO, bz2.BZ2File(out, mode="wb", compresslevel=bz2_level))
    if compression is Compression.XZ:
        preset = 6 if level is None else level
        if not 0 <= preset <= 9:
            raise InvalidArgument(f"xz compression level must be 0-9, got {preset}")
        return cast(BinaryIO, lzma.LZMAFile(out, mode="wb", preset=preset))
    raise InvalidArgument(f"unsupported compression {compression!r}")

"""Digests: the names of everything kapal stores.

A digest is ``algorithm:hex``. Only sha256 and sha512 are accepted: they are
what the OCI image spec registers, and a digest we cannot verify is worthless.
"""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

from kapal.errors import DigestMismatch, InvalidArgument

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^(sha256|sha512):([0-9a-f]+)$")


def validate(digest: str) -> str:
    """Return *digest* if it is a well-formed sha256/sha512 digest, else raise."""
    match = _DIGEST_RE.match(digest)
    if not match or len(match.group(2)) != _HEX_LENGTH[match.group(1)]:
        raise InvalidArgument(f"invalid digest {digest!r}")
    return digest


def is_digest(text: str) -> bool:
    match = _DIGEST_RE.match(text)
    return bool(match) and len(match.group(2)) == _HEX_LENGTH[match.group(1)]


def split(digest: str) -> tuple[str, str]:
    algorithm, _, hexpart = validate(digest).partition(":")
    return algorithm, hexpart


def hasher(algorithm: str = "sha256") -> hashlib._Hash:
    if algorithm not in _HEX_LENGTH:
        raise InvalidArgument(f"unsupported digest algorithm {algorithm!r}")
    return hashlib.new(algorithm)


def of_bytes(data: bytes, algorithm: str = "sha256") -> str:
    h = hasher(algorithm)
    h.update(data)
    return f"{algorithm}:{h.hexdigest()}"


class DigestingReader:
    """A file wrapper that hashes everything read through it.

    It lets one pass over a stream both consume it (unpack, store) and prove
    what it was, so no data is read twice to verify it.
    """

    def __init__(self, raw: BinaryIO, algorithm: str = "sha256") -> None:
        self._raw = raw
        self._algorithm = algorithm
        self._hash = hasher(algorithm)
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self._hash.update(data)
            self.count += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        view = memoryview(buffer)
        data = self._raw.read(len(view))
        n = len(data)
        view[:n] = data
        if n:
            self._hash.update(data)
            self.count += n
        return n

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        """Read to the end so the digest covers the whole stream."""
        while self.read(1 << 20):
            pass

    def digest(self) -> str:
        return f"{self._algorithm}:{self._hash.hexdigest()}"

    def verify(self, expected: str, what: str = "content") -> None:
        actual = self.digest() if expected.startswith(self._algorithm + ":") else None
        if actual != expected:
            raise DigestMismatch(f"{what} digest mismatch: expected {expected}, got {actual}")

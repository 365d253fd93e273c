"""The build context: what the client sent, as one spool file and an index of its entries.

The context arrives as a tar (``POST /build``'s body, possibly compressed). It is
never unpacked: each file's bytes are appended to one spool file and hashed on
the way, and an in-memory index keeps each entry's metadata, its offset in the
spool and the digest of its content. COPY reads files straight from the spool
(``copy_file_range``), and a step's cache key is computed from the digests, so a
fully cached rebuild creates no file at all and a cold one creates each file
once, in its layer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import posixpath
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from kapal.errors import InvalidArgument, NotFound

FILE, DIR, SYMLINK, OTHER = "file", "dir", "symlink", "other"

_CHUNK = 1 << 20
_BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")
_NODES = {b"3": stat.S_IFCHR, b"4": stat.S_IFBLK, b"6": stat.S_IFIFO}


def _number(field: bytes) -> int:
    """A tar header number: octal text, or base-256 when the high bit is set."""
    if field and field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise InvalidArgument(f"the build context is not a valid tar archive: bad number {field!r}") from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


@dataclass
class _Header:
    name: str
    kind: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime: float
    linkname: str
    devmajor: int
    devminor: int


class _TarReader:
    """A forward-only reader of tar headers (ustar, PAX and GNU long names) and member data."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def _read(self, size: int) -> bytes:
        data = self._stream.read(size)
        while len(data) < size:
            more = self._stream.read(size - len(data))
            if not more:
                raise InvalidArgument("the build context is not a valid tar archive: unexpected end of data")
            data += more
        return data

    def read_data(self, size: int) -> bytes:
        data = self._read(size) if size else b""
        if size % _BLOCK:
            self._read(_BLOCK - size % _BLOCK)
        return data

    def copy_data(self, size: int, out: BinaryIO) -> str:
        """Copy a big member's data to *out* in chunks; returns the sha256 of it (hex)."""
        hasher = hashlib.sha256()
        remaining = size
        while remaining:
            chunk = self._read(min(remaining, _CHUNK))
            hasher.update(chunk)
            out.write(chunk)
            remaining -= len(chunk)
        if size % _BLOCK:
            self._read(_BLOCK - size % _BLOCK)
        return hasher.hexdigest()

    def skip(self, size: int) -> None:
        remaining = size + (-size) % _BLOCK
        while remaining:
            remaining -= len(self._read(min(remaining, _CHUNK)))

    def __iter__(self) -> Iterator[_Header]:
        pax: dict[str, str] = {}
        global_pax: dict[str, str] = {}
        long_name: str | None = None
        long_link: str | None = None
        while True:
            block = self._stream.read(_BLOCK)
            if not block:
                return
            if len(block) < _BLOCK:
                block += self._read(_BLOCK - len(block))
            if block == b"\0" * _BLOCK:
                return
            checksum = _number(block[148:156])
            unsigned = sum(block) - sum(block[148:156]) + 256  # the checksum field counts as spaces
            if checksum != unsigned:
                high = sum(1 for byte in block[:148] + block[156:] if byte > 127)
                if checksum != unsigned - 256 * high:
                    raise InvalidArgument("the build context is not a valid tar archive: bad header checksum")
            kind = block[156:157]
            size = _number(block[124:136])
            if kind in (b"x", b"g"):
                records = _pax_records(self.read_data(size))
                (pax if kind == b"x" else global_pax).update(records)
                continue
            if kind in (b"L", b"K"):
                value = self.read_data(size).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                if kind == b"L":
                    long_name = value
                else:
                    long_link = value
                continue
            values = {**global_pax, **pax}
            name = _text(block[0:100])
            if block[257:262] == b"ustar":
                prefix = _text(block[345:500])
                if prefix:
                    name = f"{prefix}/{name}"
            name = values.get("path", long_name if long_name is not None else name)
            linkname = values.get("linkpath", long_link if long_link is not None else _text(block[157:257]))
            if "size" in values:
                size = int(values["size"])
            yield _Header(
                name=name,
                kind=kind,
                mode=_number(block[100:108]) & 0o7777,
                uid=int(values.get("uid", _number(block[108:116]))),
                gid=int(values.get("gid", _number(block[116:124]))),
                size=size,
                mtime=float(values.get("mtime", _number(block[136:148]))),
                linkname=linkname,
                devmajor=_number(block[329:337]) if kind in _NODES else 0,
                devminor=_number(block[337:345]) if kind in _NODES else 0,
            )
            pax = {}
            long_name = long_link = None


def _pax_records(data: bytes) -> dict[str, str]:
    from kapal.container.filesystem import _pax_records as records

    return {
        key.decode("utf-8", "surrogateescape"): value.decode("utf-8", "surrogateescape")
        for key, value in records(data).items()
    }


@dataclass
class Entry:
    """One path of a source tree (the context, or an image's filesystem)."""

    name: str  # clean relative path ("" is the root)
    kind: str  # FILE, DIR, SYMLINK or OTHER (devices, fifos)
    mode: int  # permission bits with setuid/setgid/sticky
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: float = 0.0
    linkname: str = ""
    offset: int = 0  # where a file's bytes start in the spool
    digest: str = ""  # sha256 of a file's content (hex)
    rdev: int = 0
    file_type: int = 0  # stat.S_IF* for OTHER entries
    path: str = ""  # on-disk path, for trees read from a filesystem

    def meta_hash(self, rel: str) -> str:
        """What the cache compares: name, type, mode, link target and content; never mtime or owner."""
        text = f"{rel}\0{self.kind}\0{self.mode:o}\0{self.linkname}\0{self.size}\0{self.digest}\0{self.rdev}"
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def clean(name: str) -> str:
    """A tar or Dockerfile path as a clean relative path ("" for the root)."""
    return posixpath.normpath("/" + name).lstrip("/")


@dataclass
class BuildContext:
    """The received context. ``entries`` is keyed by clean relative path."""

    spool_path: Path
    entries: dict[str, Entry] = field(default_factory=dict)
    _children: dict[str, list[str]] | None = None
    _spool_fd: int = -1
    _sums: dict[str, str] = field(default_factory=dict)

    # -- receiving -------------------------------------------------------------------------

    @classmethod
    def receive(
        cls,
        stream: BinaryIO,
        directory: Path,
        on_file: Callable[[BuildContext, str, bytes], None] | None = None,
    ) -> BuildContext:
        """Read a context tar (plain or compressed) from *stream* into ``directory/context.spool``.

        The tar is parsed here rather than by :mod:`tarfile`: a context is thousands of small
        files and this is the path every build, cached or not, waits on. *on_file* is told
        of each small regular file (its name and content) as soon as it has arrived, so the
        build can start on its Dockerfile while the rest of the context is still coming.
        """
        from kapal.image.compression import open_decompressed

        context = cls(directory / "context.spool")
        context.entries[""] = Entry("", DIR, 0o755)
        decoded, _ = open_decompressed(stream)
        reader = _TarReader(decoded)
        offset = 0
        with open(context.spool_path, "wb") as spool:
            for header in reader:
                name = clean(header.name)
                kind = header.kind
                if kind in _REGULAR:
                    if header.size <= _CHUNK:
                        data = reader.read_data(header.size)
                        digest = hashlib.sha256(data).hexdigest()
                        spool.write(data)
                        if on_file is not None:
                            on_file(context, name, data)
                    else:
                        digest = reader.copy_data(header.size, spool)
                    entry = Entry(
                        name,
                        FILE,
                        header.mode,
                        header.uid,
                        header.gid,
                        header.size,
                        header.mtime,
                        offset=offset,
                        digest=digest,
                    )
                    offset += header.size
                elif kind == b"5":
                    entry = Entry(name, DIR, header.mode, header.uid, header.gid, 0, header.mtime)
                elif kind == b"2":
                    entry = Entry(
                        name, SYMLINK, 0o777, header.uid, header.gid, 0, header.mtime, header.linkname
                    )
                elif kind == b"1":
                    target = context.entries.get(clean(header.linkname))
                    if target is None or target.kind != FILE:
                        continue
                    entry = dataclasses.replace(target, name=name, mode=header.mode, mtime=header.mtime)
                elif kind in _NODES:
                    entry = Entry(
                        name,
                        OTHER,
                        header.mode,
                        header.uid,
                        header.gid,
                        0,
                        header.mtime,
                        rdev=os.makedev(header.devmajor, header.devminor),
                        file_type=_NODES[kind],
                    )
                else:
                    reader.skip(header.size)
                    continue
                if name == "":
                    if entry.kind == DIR:
                        context.entries[""] = entry
                    continue
                context._add(entry)
        context.spool_fd()  # opened once, before COPY's threads read it
        return context

    def _add(self, entry: Entry) -> None:
        parent = posixpath.dirname(entry.name)
        while parent and parent not in self.entries:
            self.entries[parent] = Entry(parent, DIR, 0o755)
            parent = posixpath.dirname(parent)
        self.entries[entry.name] = entry

    # -- reading ---------------------------------------------------------------------------

    def read_file(self, name: str) -> bytes | None:
        """A small file of the context (the Dockerfile, .dockerignore), or None."""
        entry = self.entries.get(clean(name))
        if entry is None or entry.kind != FILE:
            return None
        return os.pread(self.spool_fd(), entry.size, entry.offset) if entry.size else b""

    def spool_fd(self) -> int:
        if self._spool_fd < 0:
            self._spool_fd = os.open(self.spool_path, os.O_RDONLY | os.O_CLOEXEC)
        return self._spool_fd

    def close(self) -> None:
        if self._spool_fd >= 0:
            os.close(self._spool_fd)
            self._spool_fd = -1

    def remove(self, names: set[str]) -> None:
        for name in names:
            self.entries.pop(name, None)
        self._children = None
        self._sums.clear()

    def exclude(self, matches: object) -> None:
        """Drop what ``.dockerignore`` excludes (*matches*: path → bool), keeping directories that
        still hold something an exception (``!``) brought back."""
        matcher = matches  # callable(path) -> bool
        dropped = {name for name in self.entries if name and matcher(name)}  # type: ignore[operator]
        kept_dirs = set()
        for name in self.entries:
            if name in dropped or not name:
                continue
            parent = posixpath.dirname(name)
            while parent:
                kept_dirs.add(parent)
                parent = posixpath.dirname(parent)
        self.remove({name for name in dropped if name not in kept_dirs})

    # -- the tree interface COPY uses ------------------------------------------------------

    def lookup(self, name: str) -> Entry | None:
        return self.entries.get(name)

    def children(self, name: str) -> list[str]:
        if self._children is None:
            children: dict[str, list[str]] = {}
            for entry_name in self.entries:
                if entry_name:
                    children.setdefault(posixpath.dirname(entry_name), []).append(entry_name)
            for names in children.values():
                names.sort()
            self._children = children
        return self._children.get(name, [])

    def names(self) -> list[str]:
        return sorted(name for name in self.entries if name)

    def copy_to(self, entry: Entry, fd: int) -> None:
        """Write a file's content to *fd* (kernel-side copy from the spool)."""
        copy_range(self.spool_fd(), entry.offset, entry.size, fd)

    def checksum(self, name: str) -> str:
        """The checksum of a path and everything under it (Docker's "file:…"/"dir:…" source hash)."""
        if name in self._sums:
            return self._sums[name]
        entry = self.entries[name]
        hasher = hashlib.sha256(entry.meta_hash("").encode())
        if entry.kind == DIR:
            stack = list(reversed(self.children(name)))
            prefix = len(name) + 1 if name else 0
            while stack:
                child_name = stack.pop()
                child = self.entries[child_name]
                hasher.update(child.meta_hash(child_name[prefix:]).encode())
                if child.kind == DIR:
                    stack.extend(reversed(self.children(child_name)))
        kind = "dir" if entry.kind == DIR else "file"
        result = f"{kind}:{hasher.hexdigest()}"
        self._sums[name] = result
        return result


def copy_range(src_fd: int, offset: int, size: int, dst_fd: int) -> None:
    """Copy *size* bytes of *src_fd* from *offset* to *dst_fd*'s position, in the kernel when it can."""
    remaining = size
    position = offset
    while remaining > 0:
        try:
            copied = os.copy_file_range(src_fd, dst_fd, remaining, position)
        except OSError:
            copied = 0
        if copied <= 0:
            break
        remaining -= copied
        position += copied
    while remaining > 0:
        chunk = os.pread(src_fd, min(_CHUNK, remaining), position)
        if not chunk:
            raise OSError(f"short read copying {size} bytes")
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst_fd, view) :]
        remaining -= len(chunk)
        position += len(chunk)


def locate_dockerfile(context: BuildContext, name: str) -> tuple[str, bytes]:
    """The Dockerfile the ``dockerfile`` query names (``Dockerfile``, then ``dockerfile``), as dockerd."""
    wanted = clean(name or "Dockerfile")
    if wanted.startswith("../") or wanted == "..":
        raise InvalidArgument(f"Forbidden path outside the build context: {name} ()")
    data = context.read_file(wanted)
    if data is None and wanted == "Dockerfile":
        data = context.read_file("dockerfile")
        if data is not None:
            wanted = "dockerfile"
    if data is None:
        raise NotFound(f"Cannot locate specified Dockerfile: {name or 'Dockerfile'}")
    return wanted, data

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

import hashlib
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from kapal.errors import InvalidArgument, NotFound

FILE, DIR, SYMLINK, OTHER = "file", "dir", "symlink", "other"

_CHUNK = 1 << 20


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
    def receive(cls, stream: BinaryIO, directory: Path) -> BuildContext:
        """Read a context tar from *stream* into ``directory/context.spool``."""
        context = cls(directory / "context.spool")
        context.entries[""] = Entry("", DIR, 0o755)
        offset = 0
        with open(context.spool_path, "wb") as spool:
            try:
                tar = tarfile.open(fileobj=stream, mode="r|*")  # type: ignore[call-overload]  # noqa: SIM115 - the stream is the caller's
            except tarfile.ReadError as error:
                if "empty" in str(error):
                    return context
                raise InvalidArgument(f"the build context is not a valid tar archive: {error}") from None
            except (tarfile.TarError, EOFError, OSError) as error:
                raise InvalidArgument(f"the build context is not a valid tar archive: {error}") from None
            try:
                for info in tar:
                    tar.members.clear()
                    name = clean(info.name)
                    if name.startswith("../") or name == "..":
                        continue
                    if info.isdir():
                        entry = Entry(name, DIR, info.mode & 0o7777, info.uid, info.gid, 0, info.mtime)
                    elif info.issym():
                        entry = Entry(name, SYMLINK, 0o777, info.uid, info.gid, 0, info.mtime, info.linkname)
                    elif info.islnk():
                        target = context.entries.get(clean(info.linkname))
                        if target is None or target.kind != FILE:
                            continue
                        entry = Entry(
                            name,
                            FILE,
                            info.mode & 0o7777,
                            info.uid,
                            info.gid,
                            target.size,
                            info.mtime,
                            offset=target.offset,
                            digest=target.digest,
                        )
                    elif info.isreg():
                        hasher = hashlib.sha256()
                        source = tar.extractfile(info)
                        assert source is not None
                        remaining = info.size
                        while remaining > 0:
                            chunk = source.read(min(_CHUNK, remaining))
                            if not chunk:
                                raise InvalidArgument(f"the build context is truncated at {info.name}")
                            hasher.update(chunk)
                            spool.write(chunk)
                            remaining -= len(chunk)
                        entry = Entry(
                            name,
                            FILE,
                            info.mode & 0o7777,
                            info.uid,
                            info.gid,
                            info.size,
                            info.mtime,
                            offset=offset,
                            digest=hasher.hexdigest(),
                        )
                        offset += info.size
                    elif info.ischr() or info.isblk() or info.isfifo():
                        kind = (
                            stat.S_IFCHR if info.ischr() else stat.S_IFBLK if info.isblk() else stat.S_IFIFO
                        )
                        entry = Entry(
                            name,
                            OTHER,
                            info.mode & 0o7777,
                            info.uid,
                            info.gid,
                            0,
                            info.mtime,
                            rdev=os.makedev(info.devmajor, info.devminor),
                            file_type=kind,
                        )
                    else:
                        continue
                    if name == "":
                        if entry.kind == DIR:
                            context.entries[""] = entry
                        continue
                    context._add(entry)
            except (tarfile.TarError, EOFError, ValueError) as error:
                raise InvalidArgument(f"the build context is not a valid tar archive: {error}") from None
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

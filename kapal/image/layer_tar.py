"""Image layers as tar streams: unpacking them safely, and writing them back.

A layer is untrusted input: anyone can push an image, and a tar can name any
path, link anywhere and claim any owner. :func:`apply_layer` turns one layer
into what Docker's overlay2 driver keeps per layer (an overlayfs lower
directory, whiteouts as 0:0 character devices, opaque directories as an
xattr) and refuses every entry that could touch anything outside that
directory.

The safety argument does not rest on resolving paths (``realpath`` is racy
and follows exactly the links an attacker plants). The destination starts
empty and only this call writes to it, so an in-memory model of what was
created there is the truth: an entry is written only when every parent
component is, in the model, a directory this call made. Symlinks in the
layer are created (they resolve inside the container at run time) but
nothing is ever written *through* one; a tar produced by walking a real
filesystem never does that, so refusing it loses nothing. Every final
component is additionally opened with ``O_NOFOLLOW``/``AT_SYMLINK_NOFOLLOW``
as a second line of defence.

:func:`write_layer` is the opposite direction (export, commit, build): a
deterministic PAX tar of a directory, converting overlayfs whiteouts back to
their ``.wh.`` spelling so the result is a portable OCI layer.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import stat
import struct
import tarfile
from dataclasses import dataclass
from typing import Any, BinaryIO

from kapal.errors import InvalidArgument, KapalError, StorageError
from kapal.image.file_writers import SMALL_FILE, SmallFileWriter

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"

# overlayfs keeps its own metadata in these namespaces ("user." when mounted
# with userxattr). A layer that carries them could forge redirects, origins
# or opaqueness, so they are never taken from a tar and never written to one.
_OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
# The host's SELinux label says nothing about the image and must not leak
# into a layer the way it would if copied blindly.
_UNEXPORTED_XATTRS = frozenset({"security.selinux"})
_XATTR_PAX_PREFIX = "SCHILY.xattr."
# Children of a directory with a default ACL get their mode from it, not from the umask.
_DEFAULT_ACL = "system.posix_acl_default"

# Big enough that the Python loop around each read and write disappears next
# to the copy itself.
_CHUNK = 1 << 20
# tarfile reads PAX and GNU long-name payloads whole; a hostile header claiming
# gigabytes would otherwise be buffered in memory. Real ones are kilobytes.
_MAX_HEADER_READ = 16 << 20

# What the model knows about each path under the destination.
_DIR, _FILE, _SYMLINK, _OTHER = range(4)

_REGULAR_TYPES = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.GNUTYPE_SPARSE})
_NODE_TYPES = {
    tarfile.CHRTYPE: stat.S_IFCHR,
    tarfile.BLKTYPE: stat.S_IFBLK,
    tarfile.FIFOTYPE: stat.S_IFIFO,
}
_SUPPORTED_TYPES = _REGULAR_TYPES | {tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE} | set(_NODE_TYPES)

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_ID = (1 << 32) - 2  # (uid_t)-1 means "leave unchanged" to chown
_MAX_TIME_NS = 1 << 62
_PAX_TIME = re.compile(r"(-?)(\d+)(?:\.(\d*))?")


@dataclass
class LayerStats:
    """What applying a layer wrote, for the image store's bookkeeping."""

    size: int  # bytes of regular-file content written (Docker's layer "size")
    entries: int  # tar entries applied, whiteouts and opaque markers included


# --------------------------------------------------------------------------
# Reading a tar stream


class _ForwardReader:
    """A forward-only, "seekable" view of a non-seekable stream for tarfile.

    tarfile's own streaming mode ("r|") copies every read through a growing
    bytes buffer in 10 KiB steps, which costs several times the decompression
    itself on large files. Random-access mode only ever seeks forward when
    members are read in order, so this gives it ``tell``/``seek`` over the
    stream instead, buffers small header reads, and lets file content be read
    straight into the caller's buffer.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._raw_readinto = getattr(raw, "readinto", None)
        self._buf = b""
        self._view = memoryview(self._buf)
        self._off = 0
        self.pos = 0

    def _fill(self) -> int:
        data = self._raw.read(_CHUNK)
        self._buf = data
        self._view = memoryview(data)
        self._off = 0
        return len(data)

    def read(self, size: int = -1) -> bytes:
        """Read exactly *size* bytes unless the stream ends (tarfile's contract)."""
        if size is None or size < 0 or size > _MAX_HEADER_READ:
            raise InvalidArgument(f"invalid layer: tar header record of {size} bytes is too large")
        available = len(self._buf) - self._off
        if size <= available:
            data = self._buf[self._off : self._off + size]
            self._off += size
            self.pos += size
            return data
        parts = [self._buf[self._off :]]
        got = available
        self._buf, self._view, self._off = b"", memoryview(b""), 0
        while got < size:
            n = self._fill()
            if not n:
                break
            take = min(size - got, n)
            parts.append(self._buf[:take])
            self._off = take
            got += take
        self.pos += got
        return b"".join(parts)

    def readinto(self, buffer: memoryview) -> int:
        """Read up to ``len(buffer)`` bytes; 0 only at the end of the stream."""
        available = len(self._buf) - self._off
        if available:
            n = min(len(buffer), available)
            buffer[:n] = self._view[self._off : self._off + n]
            self._off += n
            self.pos += n
            return n
        if len(buffer) >= _CHUNK // 2 and self._raw_readinto is not None:
            n = self._raw_readinto(buffer) or 0
            self.pos += n
            return n
        if not self._fill():
            return 0
        return self.readinto(buffer)

    def unread(self, data: bytes) -> None:
        """Put back *data*, just read, for a parser that looked at it first."""
        self._buf = data + self._buf[self._off :]
        self._view = memoryview(self._buf)
        self._off = 0
        self.pos -= len(data)

    def tell(self) -> int:
        return self.pos

    def seek(self, target: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or target < self.pos:
            raise tarfile.StreamError("seeking backwards is not allowed")
        remaining = target - self.pos
        while remaining:
            available = len(self._buf) - self._off
            if not available and not self._fill():
                break
            step = min(remaining, len(self._buf) - self._off)
            self._off += step
            self.pos += step
            remaining -= step
        return self.pos

    def seekable(self) -> bool:
        return False

    def drain(self) -> None:
        """Consume the stream to its end, for whoever hashes it underneath."""
        self._buf, self._view, self._off = b"", memoryview(b""), 0
        if self._raw_readinto is not None:
            scratch = memoryview(bytearray(_CHUNK))
            while self._raw_readinto(scratch):
                pass
        else:
            while self._raw.read(_CHUNK):
                pass


# name, mode, uid, gid, size, mtime, chksum, type, linkname, magic+version,
# uname, gname, devmajor, devminor, prefix: the ustar header up to byte 500.
_USTAR = struct.Struct("100s8s8s8s12s12s8s1s100s8s32s32s8s8s155s")


def _octal(field: bytes) -> int:
    """A plain octal tar number; ValueError for anything else (base-256, junk).

    Stripping the NULs and spaces that end the field gives tarfile's number or,
    where something follows a NUL, a ValueError that hands the header to tarfile.
    """
    return int(field.rstrip(b"\0 ") or b"0", 8)


def _plain_pax_records(buf: bytes, size: int) -> dict[str, str] | None:
    """The records of a PAX extended header, or None unless they are plain.

    Plain: ``"<length> <keyword>=<value>\\n"`` records, strict UTF-8, exactly
    filling *size* bytes followed by NUL padding, and nothing about charsets
    or sparse files. For those tarfile's parser gives this same dictionary.
    """
    if len(buf) < size or buf.count(0, size) != len(buf) - size:
        return None
    records = {}
    pos = 0
    while pos < size:
        space = buf.find(b" ", pos, size)
        digits = buf[pos:space]
        if space < 0 or not digits.isdigit():
            return None
        end = pos + int(digits)
        if not space + 1 < end <= size or buf[end - 1] != 0x0A:
            return None
        keyword, equals, value = buf[space + 1 : end - 1].partition(b"=")
        if not equals or not keyword:
            return None
        try:
            records[keyword.decode()] = value.decode()
        except UnicodeDecodeError:
            return None
        pos = end
    if "hdrcharset" in records or any(keyword.startswith("GNU.sparse.") for keyword in records):
        return None
    return records


class _LayerTarInfo(tarfile.TarInfo):
    """TarInfo that parses common headers fast and treats corrupt ones as errors.

    Parsing a header in tarfile costs more than creating the file it
    describes; :meth:`frombuf` handles the plain case (octal numbers, no
    old-GNU sparse map) with one struct unpack and defers everything else to
    tarfile, so the result is the same TarInfo either way.

    And tarfile stops silently at a bad checksum or a half header after the
    first member, where Docker (Go's archive/tar) fails: a layer that loses
    its tail would unpack "successfully" to the wrong content.
    """

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        if len(buf) != tarfile.BLOCKSIZE or not buf[0] or buf[156:157] == tarfile.GNUTYPE_SPARSE:
            return super().frombuf(buf, encoding, errors)
        (name, mode, uid, gid, size, mtime, chksum, kind, linkname, _, uname, gname, major, minor, prefix) = (
            _USTAR.unpack_from(buf)
        )
        try:
            checksum = _octal(chksum)
            numbers = [_octal(field) for field in (mode, uid, gid, size, mtime, major, minor)]
        except ValueError:
            return super().frombuf(buf, encoding, errors)
        if checksum != 256 + sum(buf) - sum(chksum):  # signed-char tars, corruption: tarfile decides
            return super().frombuf(buf, encoding, errors)
        info = cls()
        info.name = name.split(b"\0", 1)[0].decode(encoding, errors)
        info.mode, info.uid, info.gid, info.size, info.mtime, info.devmajor, info.devminor = numbers
        info.chksum = checksum
        info.type = kind
        info.linkname = linkname.split(b"\0", 1)[0].decode(encoding, errors)
        info.uname = uname.split(b"\0", 1)[0].decode(encoding, errors)
        info.gname = gname.split(b"\0", 1)[0].decode(encoding, errors)
        # The same normalisations as tarfile's frombuf, in the same order.
        if kind == tarfile.AREGTYPE and info.name.endswith("/"):
            info.type = tarfile.DIRTYPE
        if info.isdir():
            info.name = info.name.rstrip("/")
        prefix_text = prefix.split(b"\0", 1)[0].decode(encoding, errors)
        if prefix_text and info.type not in tarfile.GNU_TYPES:
            info.name = prefix_text + "/" + info.name
        return info

    def _proc_pax(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        """A PAX extended header, parsed without tarfile's regular expressions when it is plain.

        Nearly every entry of a layer written by Python or Go has one, and
        tarfile's parser costs as much as creating the file. Anything not plain
        is put back and left to tarfile.
        """
        if self.type != tarfile.XHDTYPE:
            return super()._proc_pax(tarfile_)
        reader = tarfile_.fileobj
        buf = reader.read(self._block(self.size))
        records = _plain_pax_records(buf, self.size)
        if records is None:
            reader.unread(buf)
            return super()._proc_pax(tarfile_)
        try:
            member = self.fromtarfile(tarfile_)
        except tarfile.HeaderError as error:
            raise tarfile.SubsequentHeaderError(str(error)) from None
        # What tarfile does with the records next, for an extended (not global) header.
        member._apply_pax_info(records, tarfile_.encoding, tarfile_.errors)
        member.offset = self.offset
        if "size" in records:
            offset = member.offset_data
            if member.isreg() or member.type not in tarfile.SUPPORTED_TYPES:
                offset += member._block(member.size)
            tarfile_.offset = offset
        return member

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        try:
            return super().fromtarfile(tarfile_)
        except (tarfile.EOFHeaderError, tarfile.EmptyHeaderError):
            raise
        except tarfile.HeaderError as error:
            raise InvalidArgument(
                f"invalid layer: bad tar header at offset {tarfile_.offset}: {error}"
            ) from None


class _DiscardGlobals(dict):  # type: ignore[type-arg]
    """A TarFile.pax_headers that drops PAX global headers.

    Go's archive/tar (and so Docker) ignores global headers, while tarfile
    merges them into every later member, so ``git archive``'s comment header,
    or a hostile ``path=`` record, would otherwise rename or re-attribute
    entries. Docker's reading is the one images are built against.
    """

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass

    def setdefault(self, key: Any, default: Any = None) -> Any:
        return default


class _SourceError(Exception):
    """Carries an I/O error of the *input* past the filesystem error mapping."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def _quote(name: str) -> str:
    """Render a hostile name harmlessly in an error message."""
    if len(name) > 256:
        name = name[:256] + "…"
    out = []
    for ch in name:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return '"' + "".join(out) + '"'


def _clean(name: str, link_of: str | None = None) -> str:
    """Normalise a tar name to ``a/b/c`` ("" for the root), refusing escapes.

    *link_of* is the hardlink entry when *name* is its target, so the error
    names both.
    """

    def fail(problem: str) -> InvalidArgument:
        if link_of is None:
            subject = f"entry {_quote(name)}"
        else:
            subject = f"hardlink {_quote(link_of)} target {_quote(name)}"
        return InvalidArgument(f"invalid layer: {subject} {problem}")

    if not name:
        raise fail("has an empty name")
    if "\x00" in name:
        raise fail("contains a NUL byte")
    if name.startswith("/"):
        raise fail("is an absolute path")
    parts = name.split("/")
    if "" in parts or "." in parts:
        parts = [part for part in parts if part and part != "."]
    if ".." in parts:
        raise fail("escapes the layer")
    return "/".join(parts)


def _mtime_ns(info: tarfile.TarInfo) -> int:
    """The entry's mtime in nanoseconds, exact when PAX records it.

    tarfile turns a PAX mtime into a float, which cannot hold today's times
    to the nanosecond; the record's text can.
    """
    text = info.pax_headers.get("mtime") if info.pax_headers else None
    match = _PAX_TIME.fullmatch(text) if isinstance(text, str) else None
    if match:
        sign, seconds, fraction = match.groups()
        ns = int(seconds) * 1_000_000_000 + int((fraction or "")[:9].ljust(9, "0"))
        ns = -ns if sign else ns
    else:
        ns = int(info.mtime) * 1_000_000_000
    if not -_MAX_TIME_NS < ns < _MAX_TIME_NS:
        raise InvalidArgument(f"invalid layer: entry {_quote(info.name)} has an out-of-range mtime")
    return ns


class _Applier:
    """The state of one apply_layer call: the model of what exists under dest."""

    def __init__(self, dest: str, dest_fd: int) -> None:
        self.dest = dest
        self.fd = dest_fd
        # Invariant: every path in ``kinds`` has all its ancestors in ``kinds``
        # as _DIR, so a parent found as _DIR needs no further checking.
        self.kinds: dict[str, int] = {"": _DIR}
        self.children: dict[str, set[str]] = {"": set()}
        self.dir_times: dict[str, int] = {}
        self.size = 0
        self.entries = 0
        self.skipped_xattrs: set[str] = set()
        self.failed_xattrs: set[str] = set()
        self._buffer = memoryview(bytearray(_CHUNK))
        self.writer = SmallFileWriter(dest_fd, _CREATE_FLAGS, _filesystem_error)
        # What creating a node gives without being asked: root's owner and the umask's mode
        # bits. Where a header asks for exactly that, chown and chmod are skipped (most
        # entries of a real layer), except under directories whose new children inherit
        # something else: a setgid one (its group and bit) or one with a default ACL.
        self._creates_root_owned = os.geteuid() == 0 and os.getegid() == 0
        umask = process_umask()
        self._umask = 0o7777 if umask is None else umask  # unknown: never rely on it
        self._inheriting_dirs: set[str] = set()

    # -- the model ---------------------------------------------------------

    def _record(self, rel: str, kind: int) -> None:
        self.kinds[rel] = kind
        self.children[rel.rpartition("/")[0]].add(rel)
        if kind == _DIR:
            self.children[rel] = set()

    def _forget(self, rel: str) -> None:
        self.children[rel.rpartition("/")[0]].discard(rel)
        stack = [rel]
        while stack:
            path = stack.pop()
            if self.kinds.pop(path) == _DIR:
                self.dir_times.pop(path, None)
                self._inheriting_dirs.discard(path)
                stack.extend(self.children.pop(path))

    def _remove(self, rel: str) -> None:
        """Delete whatever this layer put at *rel* (tar: later entries win)."""
        kind = self.kinds.get(rel)
        if kind is None:
            return
        self.writer.wait()  # the path, or something under it, may still be being created
        if kind == _DIR:
            shutil.rmtree(rel, dir_fd=self.fd)
        else:
            os.unlink(rel, dir_fd=self.fd)
        self._forget(rel)

    def _ensure_dir(self, path: str, name: str) -> None:
        """Make sure *path* is a directory of ours, creating what is missing."""
        if self.kinds.get(path) == _DIR:
            return
        prefix = ""
        for component in path.split("/"):
            prefix = f"{prefix}/{component}" if prefix else component
            kind = self.kinds.get(prefix)
            if kind == _DIR:
                continue
            if kind is None:
                # Docker creates missing parents root-owned 0755; be explicit
                # rather than trust the daemon's umask or a setgid parent.
                os.mkdir(prefix, 0o755, dir_fd=self.fd)
                os.chown(prefix, 0, 0, dir_fd=self.fd, follow_symlinks=False)
                os.chmod(prefix, 0o755, dir_fd=self.fd)
                self._record(prefix, _DIR)
            elif kind == _SYMLINK:
                raise InvalidArgument(
                    f"invalid layer: entry {_quote(name)} would be written through symlink {_quote(prefix)}"
                )
            else:
                raise InvalidArgument(
                    f"invalid layer: entry {_quote(name)} would be written under non-directory "
                    f"{_quote(prefix)}"
                )

    # -- metadata ----------------------------------------------------------

    def _as_created(self, rel: str, info: tarfile.TarInfo, mode_matters: bool = True) -> bool:
        """Whether creating *rel* with mode ``info.mode & 0o777`` already gives the header's owner and mode.

        Skipping the chown and chmod then saves two system calls per entry. A
        setgid parent passes its group (and to directories its setgid bit), a
        default ACL replaces the umask: under those everything is set explicitly.
        """
        if not (self._creates_root_owned and info.uid == 0 and info.gid == 0):
            return False
        if rel.rpartition("/")[0] in self._inheriting_dirs:
            return False
        mode = info.mode & 0o7777
        return not mode_matters or mode == mode & ~self._umask & 0o777

    def _xattrs(self, info: tarfile.TarInfo, target: int | str) -> None:
        for key, value in info.pax_headers.items():
            if not key.startswith(_XATTR_PAX_PREFIX):
                continue
            name = key[len(_XATTR_PAX_PREFIX) :]
            if not name or "\x00" in name:
                raise InvalidArgument(f"invalid layer: entry {_quote(info.name)} has an invalid xattr name")
            if name.startswith(_OVERLAY_XATTR_PREFIXES):
                self.skipped_xattrs.add(name)
                continue
            data = value.encode("utf-8", "surrogateescape")
            if name == _DEFAULT_ACL:
                self._inheriting_dirs.add(_clean(info.name) if info.name.strip("/.") else "")
            try:
                if isinstance(target, int):
                    os.setxattr(target, name, data)
                else:
                    os.setxattr(target, name, data, follow_symlinks=False)
            except OSError as error:
                # Docker ignores these too: a namespace the filesystem lacks,
                # or user.* on a symlink, is not worth failing a pull over.
                if error.errno in (errno.ENOTSUP, errno.EPERM):
                    self.failed_xattrs.add(name)
                    continue
                if error.errno in (errno.E2BIG, errno.ERANGE, errno.EINVAL):
                    raise InvalidArgument(
                        f"invalid layer: entry {_quote(info.name)} has an invalid xattr {_quote(name)}"
                    ) from error
                raise

    def _path(self, rel: str) -> str:
        return f"{self.dest}/{rel}"

    # -- entries -----------------------------------------------------------

    def apply(self, info: tarfile.TarInfo, reader: _ForwardReader, tar: tarfile.TarFile) -> None:
        name = info.name
        kind = info.type
        if kind not in _SUPPORTED_TYPES:
            raise InvalidArgument(f"invalid layer: entry {_quote(name)} has unsupported type {kind!r}")
        rel = _clean(name)
        if not 0 <= info.uid <= _MAX_ID or not 0 <= info.gid <= _MAX_ID:
            raise InvalidArgument(f"invalid layer: entry {_quote(name)} has an invalid owner")
        parent, _, base = rel.rpartition("/")

        if base.startswith(WHITEOUT_PREFIX):
            if base == WHITEOUT_OPAQUE:
                self._opaque(parent, info)
            elif not base.startswith(WHITEOUT_META_PREFIX):
                self._whiteout(parent, base[len(WHITEOUT_PREFIX) :], info)
            # else: aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content
            return
        if WHITEOUT_META_PREFIX in parent and any(
            part.startswith(WHITEOUT_META_PREFIX) for part in parent.split("/")
        ):
            return  # inside an aufs metadata directory

        if not rel:
            if kind != tarfile.DIRTYPE:
                raise InvalidArgument(f"invalid layer: entry {_quote(name)} names the layer root")
            self._root(info)
            return
        self._ensure_dir(parent, name)
        if kind in _REGULAR_TYPES:
            self._file(rel, info, reader, tar)
        elif kind == tarfile.DIRTYPE:
            self._directory(rel, info)
        elif kind == tarfile.SYMTYPE:
            self._symlink(rel, info)
        elif kind == tarfile.LNKTYPE:
            self._hardlink(rel, info)
        else:
            self._node(rel, info, _NODE_TYPES[kind])
        self.entries += 1

    def _root(self, info: tarfile.TarInfo) -> None:
        self.writer.wait()  # children created after the change would inherit differently
        os.fchown(self.fd, info.uid, info.gid)
        os.fchmod(self.fd, info.mode & 0o7777)
        self._xattrs(info, self.fd)
        if _inherits(self.fd):
            self._inheriting_dirs.add("")
        self.dir_times[""] = _mtime_ns(info)
        self.entries += 1

    def _file(self, rel: str, info: tarfile.TarInfo, reader: _ForwardReader, tar: tarfile.TarFile) -> None:
        self._remove(rel)
        mtime = _mtime_ns(info)
        as_created = self._as_created(rel, info)
        if info.size <= SMALL_FILE and info.sparse is None and not _has_xattrs(info):
            try:
                data = reader.read(info.size) if info.size else b""
            except OSError as error:
                raise _SourceError(error) from error
            if len(data) != info.size:
                raise InvalidArgument(f"invalid layer: entry {_quote(info.name)} is truncated")
            self._record(rel, _FILE)
            mode = info.mode & 0o7777
            if as_created:
                self.writer.add(info.name, rel, mode, data, None, mtime)
            else:
                self.writer.add(info.name, rel, 0o600, data, (info.uid, info.gid, mode), mtime)
            self.size += info.size
            return
        fd = os.open(rel, _CREATE_FLAGS, info.mode & 0o777 if as_created else 0o600, dir_fd=self.fd)
        try:
            self._record(rel, _FILE)
            if info.size:
                if info.sparse is not None:
                    self._copy_sparse(fd, info, tar)
                else:
                    self._copy(fd, info, reader)
            if not as_created:
                # chown clears setuid/setgid and file capabilities, so it goes
                # first, then the mode, then xattrs (security.capability).
                os.fchown(fd, info.uid, info.gid)
                os.fchmod(fd, info.mode & 0o7777)
            if info.pax_headers:
                self._xattrs(info, fd)
            os.utime(fd, ns=(mtime, mtime))
        finally:
            os.close(fd)
        self.size += info.size

    def _copy(self, fd: int, info: tarfile.TarInfo, reader: _ForwardReader) -> None:
        buffer = self._buffer
        remaining = info.size
        while remaining:
            try:
                n = reader.readinto(buffer if remaining >= _CHUNK else buffer[:remaining])
            except OSError as error:
                raise _SourceError(error) from error
            if not n:
                raise InvalidArgument(f"invalid layer: entry {_quote(info.name)} is truncated")
            _write_all(fd, buffer[:n])
            remaining -= n

    def _copy_sparse(self, fd: int, info: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        """Copy a GNU sparse member, leaving its holes as holes."""
        source = tar.extractfile(info)
        assert source is not None
        buffer = self._buffer
        remaining = info.size
        while remaining:
            try:
                n = source.readinto(buffer if remaining >= _CHUNK else buffer[:remaining])
            except OSError as error:
                raise _SourceError(error) from error
            if not n:
                raise InvalidArgument(f"invalid layer: entry {_quote(info.name)} is truncated")
            if buffer.obj.count(0, 0, n) == n:  # type: ignore[union-attr]
                os.lseek(fd, n, os.SEEK_CUR)
            else:
                _write_all(fd, buffer[:n])
            remaining -= n
        os.ftruncate(fd, info.size)

    def _directory(self, rel: str, info: tarfile.TarInfo) -> None:
        if self.kinds.get(rel) != _DIR:
            # A directory over a directory only updates its metadata and
            # keeps the children; over anything else it replaces it.
            self._remove(rel)
            as_created = self._as_created(rel, info)
            os.mkdir(rel, info.mode & 0o777 if as_created else 0o700, dir_fd=self.fd)
            self._record(rel, _DIR)
        else:
            as_created = False  # an existing directory: its metadata is whatever came before
            self.writer.wait()  # children created after the change would inherit differently
        if not as_created:
            os.chown(rel, info.uid, info.gid, dir_fd=self.fd, follow_symlinks=False)
            os.chmod(rel, info.mode & 0o7777, dir_fd=self.fd)
        if info.mode & stat.S_ISGID:  # (never removed: a directory seen twice stays conservative)
            self._inheriting_dirs.add(rel)
        if info.pax_headers:
            self._xattrs(info, self._path(rel))
        # Creating children changes a directory's mtime: set it at the end.
        self.dir_times[rel] = _mtime_ns(info)

    def _symlink(self, rel: str, info: tarfile.TarInfo) -> None:
        target = info.linkname
        if not target or "\x00" in target:
            raise InvalidArgument(f"invalid layer: symlink {_quote(info.name)} has an invalid target")
        mtime = _mtime_ns(info)
        self._remove(rel)
        os.symlink(target, rel, dir_fd=self.fd)
        self._record(rel, _SYMLINK)
        if not self._as_created(rel, info, mode_matters=False):
            os.chown(rel, info.uid, info.gid, dir_fd=self.fd, follow_symlinks=False)
        if info.pax_headers:
            self._xattrs(info, self._path(rel))
        os.utime(rel, ns=(mtime, mtime), dir_fd=self.fd, follow_symlinks=False)

    def _hardlink(self, rel: str, info: tarfile.TarInfo) -> None:
        target = _clean(info.linkname, link_of=info.name)
        subject = f"hardlink {_quote(info.name)} target {_quote(info.linkname)}"
        if target == rel:
            return  # GNU tar writes this when a file is archived twice: a no-op
        self._check_link_target(target, subject)
        self.writer.wait()  # the target may still be being created
        self._remove(rel)
        kind = self.kinds.get(target)
        if kind is None:  # the replaced directory contained the target
            raise InvalidArgument(f"invalid layer: {subject} does not exist in the layer")
        os.link(target, rel, src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)
        self._record(rel, kind)
        # The inode is shared with an earlier entry whose metadata is already
        # set; touch it only where the link's header disagrees, because chown
        # strips file capabilities even when the owner does not change.
        st = os.stat(rel, dir_fd=self.fd, follow_symlinks=False)
        chowned = (st.st_uid, st.st_gid) != (info.uid, info.gid)
        if chowned:
            os.chown(rel, info.uid, info.gid, dir_fd=self.fd, follow_symlinks=False)
        if kind == _SYMLINK:
            return
        if chowned or stat.S_IMODE(st.st_mode) != info.mode & 0o7777:
            os.chmod(rel, info.mode & 0o7777, dir_fd=self.fd)
        if info.pax_headers:
            self._xattrs(info, self._path(rel))
        mtime = _mtime_ns(info)
        if st.st_mtime_ns != mtime:
            os.utime(rel, ns=(mtime, mtime), dir_fd=self.fd, follow_symlinks=False)

    def _check_link_target(self, target: str, subject: str) -> None:
        kind = self.kinds.get(target)
        if kind == _DIR:
            raise InvalidArgument(f"invalid layer: {subject} is a directory")
        if kind is not None:
            return
        prefix = ""
        for component in target.split("/")[:-1]:
            prefix = f"{prefix}/{component}" if prefix else component
            if self.kinds.get(prefix) == _SYMLINK:
                raise InvalidArgument(f"invalid layer: {subject} lies through symlink {_quote(prefix)}")
        raise InvalidArgument(f"invalid layer: {subject} does not exist in the layer")

    def _node(self, rel: str, info: tarfile.TarInfo, file_type: int) -> None:
        device = 0
        if file_type != stat.S_IFIFO:
            if not (0 <= info.devmajor < 1 << 12 and 0 <= info.devminor < 1 << 20):
                raise InvalidArgument(f"invalid layer: device {_quote(info.name)} has an invalid number")
            device = os.makedev(info.devmajor, info.devminor)
        mtime = _mtime_ns(info)
        self._remove(rel)
        os.mknod(rel, file_type | 0o600, device, dir_fd=self.fd)
        self._record(rel, _OTHER)
        os.chown(rel, info.uid, info.gid, dir_fd=self.fd, follow_symlinks=False)
        # The node was just made by us under a directory of ours, so the
        # final component is not a symlink (Linux has no lchmod to say so).
        os.chmod(rel, info.mode & 0o7777, dir_fd=self.fd)
        if info.pax_headers:
            self._xattrs(info, self._path(rel))
        os.utime(rel, ns=(mtime, mtime), dir_fd=self.fd, follow_symlinks=False)

    def _whiteout(self, parent: str, base: str, info: tarfile.TarInfo) -> None:
        if base in ("", ".", ".."):
            raise InvalidArgument(f"invalid layer: entry {_quote(info.name)} is not a valid whiteout")
        mtime = _mtime_ns(info)
        self._ensure_dir(parent, info.name)
        rel = f"{parent}/{base}" if parent else base
        self._remove(rel)
        # overlayfs's whiteout: a 0:0 character device (mode 0, as Docker makes it).
        os.mknod(rel, stat.S_IFCHR, 0, dir_fd=self.fd)
        self._record(rel, _OTHER)
        os.chown(rel, info.uid, info.gid, dir_fd=self.fd, follow_symlinks=False)
        os.utime(rel, ns=(mtime, mtime), dir_fd=self.fd, follow_symlinks=False)
        self.entries += 1

    def _opaque(self, parent: str, info: tarfile.TarInfo) -> None:
        self._ensure_dir(parent, info.name)
        if parent:
            os.setxattr(self._path(parent), OPAQUE_XATTR, b"y", follow_symlinks=False)
        else:
            os.setxattr(self.fd, OPAQUE_XATTR, b"y")
        self.entries += 1

    def finish(self) -> None:
        """Set directory times, deepest first, once nothing changes them."""
        self.writer.wait()
        for rel in sorted(self.dir_times, key=lambda path: path.count("/") + bool(path), reverse=True):
            mtime = self.dir_times[rel]
            if rel:
                os.utime(rel, ns=(mtime, mtime), dir_fd=self.fd, follow_symlinks=False)
            else:
                os.utime(self.fd, ns=(mtime, mtime))
        if self.skipped_xattrs:
            log.warning("layer carried overlayfs xattrs, ignored: %s", ", ".join(sorted(self.skipped_xattrs)))
        if self.failed_xattrs:
            log.warning("xattrs the filesystem refused, skipped: %s", ", ".join(sorted(self.failed_xattrs)))


def _has_xattrs(info: tarfile.TarInfo) -> bool:
    return bool(info.pax_headers) and any(key.startswith(_XATTR_PAX_PREFIX) for key in info.pax_headers)


def _inherits(dir_fd: int) -> bool:
    """Whether new children of the directory get a group or mode other than the creator's defaults."""
    if os.fstat(dir_fd).st_mode & stat.S_ISGID:
        return True
    try:
        os.getxattr(dir_fd, _DEFAULT_ACL)
    except OSError:
        return False
    return True


def process_umask() -> int | None:
    """The process's umask (None if unknown), read without changing it as ``os.umask`` would."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _filesystem_error(error: OSError, name: str) -> KapalError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"no space left on device while writing layer entry {_quote(name)}")
    if error.errno == errno.ENAMETOOLONG:
        return InvalidArgument(f"invalid layer: entry {_quote(name)} has a path that is too long")
    return StorageError(f"cannot write layer entry {_quote(name)}: {error.strerror or error}")


# Everything tarfile raises for malformed input (it is not always a TarError).
_TAR_ERRORS = (tarfile.TarError, EOFError, ValueError, IndexError, OverflowError, UnicodeError)


def apply_layer(tar_stream: BinaryIO, dest: str | os.PathLike[str]) -> LayerStats:
    """Unpack the uncompressed layer tar *tar_stream* into the empty directory *dest*.

    Raises :class:`InvalidArgument` for a malformed or hostile layer and
    :class:`StorageError` when the disk fails; either way *dest* is left
    half-written for the caller to delete. On success the stream has been
    read to its end, so a digest computed underneath covers all of it.
    """
    dest_path = os.path.abspath(os.fspath(dest))
    dest_fd = os.open(dest_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    applier = None
    try:
        with os.scandir(dest_fd) as listing:
            if next(listing, None) is not None:
                raise StorageError(f"cannot apply a layer into {dest_path}: the directory is not empty")
        applier = _Applier(dest_path, dest_fd)
        if _inherits(dest_fd):
            applier._inheriting_dirs.add("")
        reader = _ForwardReader(tar_stream)
        try:
            tar = tarfile.TarFile(
                fileobj=reader,  # type: ignore[arg-type]
                mode="r",
                tarinfo=_LayerTarInfo,
                format=tarfile.PAX_FORMAT,
                pax_headers=_DiscardGlobals(),
                encoding="utf-8",
                errors="surrogateescape",
            )
        except tarfile.ReadError as error:
            if reader.pos == 0:  # an empty stream is an empty layer, as in Go
                tar = None
            else:
                raise InvalidArgument(f"invalid layer: {error}") from error
        except _TAR_ERRORS as error:
            raise InvalidArgument(f"invalid layer: {error}") from error
        while tar is not None:
            try:
                info = tar.next()
            except _TAR_ERRORS as error:
                raise InvalidArgument(f"invalid layer: {error}") from error
            if info is None:
                break
            tar.members.clear()  # tarfile keeps every member otherwise
            try:
                applier.apply(info, reader, tar)
            except _SourceError as error:
                raise error.error from None
            except OSError as error:
                raise _filesystem_error(error, info.name) from error
            except _TAR_ERRORS as error:  # from reading a sparse member's map
                raise InvalidArgument(f"invalid layer: entry {_quote(info.name)}: {error}") from error
        try:
            applier.finish()
        except OSError as error:
            raise _filesystem_error(error, ".") from error
        reader.drain()
        return LayerStats(size=applier.size, entries=applier.entries)
    finally:
        if applier is not None:
            applier.writer.close()  # no file may appear after the caller saw the outcome
        os.close(dest_fd)


# --------------------------------------------------------------------------
# Writing a tree as a layer


class _TarSink:
    """Where the layer tar goes: buffered, counting, never closing.

    A layer is thousands of small entries; their headers and contents are batched
    here instead of reaching the blob writer (or a compressor) one by one.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._pending: list[bytes] = []
        self._pending_size = 0
        self.pos = 0

    def write(self, data: bytes) -> int:
        n = len(data)
        self.pos += n
        self._pending.append(data)
        self._pending_size += n
        if self._pending_size >= _CHUNK:
            self.flush()
        return n

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        if self._pending:
            self._out.write(b"".join(self._pending))
            self._pending.clear()
            self._pending_size = 0


# The ustar fields after the checksum that an ordinary entry leaves empty: uname, gname
# (numeric owners only), and devmajor/devminor for what is not a device.
_NO_NAMES = b"\0" * 64
_NO_DEVICE = b"\0" * 16
_USTAR_TAIL = b"\0" * (155 + 12)  # prefix, and the block's unused end
_USTAR_MAGIC = b"ustar\x0000"
_OCTAL7_LIMIT = 8**7
_OCTAL11_LIMIT = 8**11


def tar_header(
    name: str,
    kind: bytes,
    mode: int,
    uid: int,
    gid: int,
    mtime: int,
    size: int = 0,
    linkname: str = "",
    devmajor: int = 0,
    devminor: int = 0,
    pax_headers: dict[str, str] | None = None,
) -> bytes:
    """The header of one entry, byte for byte what :mod:`tarfile` writes in PAX format.

    Building a TarInfo and letting tarfile format it costs more than reading the file it
    describes; the common entry (ASCII name and link of at most 100 bytes, no PAX
    record, numbers that fit their octal fields) is formatted here in one go, and
    anything else is left to tarfile so the bytes stay the same either way.
    """
    if kind == tarfile.DIRTYPE and not name.endswith("/"):
        name += "/"
    if (
        not pax_headers
        and len(name) <= 100
        and len(linkname) <= 100
        and name.isascii()
        and linkname.isascii()
        and 0 <= uid < _OCTAL7_LIMIT
        and 0 <= gid < _OCTAL7_LIMIT
        and 0 <= size < _OCTAL11_LIMIT
        and 0 <= mtime < _OCTAL11_LIMIT
        and 0 <= devmajor < _OCTAL7_LIMIT
        and 0 <= devminor < _OCTAL7_LIMIT
    ):
        device = (
            b"%07o\0%07o\0" % (devmajor, devminor)
            if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE)
            else _NO_DEVICE
        )
        block = b"".join(
            (
                name.encode("ascii").ljust(100, b"\0"),
                b"%07o\0%07o\0%07o\0%011o\0%011o\0        " % (mode & 0o7777, uid, gid, size, mtime),
                kind,
                linkname.encode("ascii").ljust(100, b"\0"),
                _USTAR_MAGIC,
                _NO_NAMES,
                device,
                _USTAR_TAIL,
            )
        )
        return b"%s%06o\0%s" % (block[:148], sum(block), block[155:])
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.mtime = mtime
    info.size = size
    info.linkname = linkname
    info.devmajor, info.devminor = devmajor, devminor
    info.pax_headers = pax_headers or {}
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _write_content(fd: int, size: int, sink: _TarSink) -> None:
    """*size* bytes of an open file, then the padding to the next block."""
    remaining = size
    while remaining:
        data = os.read(fd, min(remaining, _CHUNK))
        if not data:
            raise OSError(errno.EIO, "unexpected end of data")  # the file shrank while it was read
        sink.write(data)
        remaining -= len(data)
    if size % tarfile.BLOCKSIZE:
        sink.write(tarfile.NUL * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))


def _exported_xattrs(path: str, names: list[str]) -> dict[str, str]:
    """xattrs that belong in a layer, as tarfile wants PAX values (str)."""
    records = {}
    for name in sorted(names):
        if name.startswith(_OVERLAY_XATTR_PREFIXES) or name in _UNEXPORTED_XATTRS:
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError as error:
            if error.errno == errno.ENODATA:  # removed while we looked
                continue
            raise
        records[_XATTR_PAX_PREFIX + name] = value.decode("utf-8", "surrogateescape")
    return records


def _is_opaque(path: str, xattr_names: list[str]) -> bool:
    if OPAQUE_XATTR not in xattr_names:
        return False
    return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"


def _list_xattrs(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError as error:
        if error.errno == errno.ENOTSUP:
            return []
        raise


def write_layer(
    src_dir: str | os.PathLike[str], out: BinaryIO, *, source_date_epoch: int | None = None
) -> None:
    """Write the tree at *src_dir* to *out* as a deterministic PAX layer tar.

    The same tree always gives the same bytes, so rebuilt layers keep their
    digests: entries in depth-first order with each directory's names sorted
    bytewise, numeric owners only, mtimes truncated to whole seconds (as
    Docker does) and clamped to *source_date_epoch* when given. The root
    directory itself is not an entry (Docker's layers have none); sockets
    are skipped. *out* is flushed but not closed.
    """
    root = os.fspath(src_dir)
    sink = _TarSink(out)
    seen: dict[tuple[int, int], str] = {}

    def clamp(mtime_ns: int) -> int:
        seconds = mtime_ns // 1_000_000_000
        if source_date_epoch is not None and seconds > source_date_epoch:
            return source_date_epoch
        return seconds

    def listing(rel: str) -> list[str]:
        names = sorted(os.listdir(f"{root}/{rel}" if rel else root), key=os.fsencode)
        return [f"{rel}/{name}" if rel else name for name in reversed(names)]

    try:
        stack = listing("")
        while stack:
            rel = stack.pop()
            path = f"{root}/{rel}"
            st = os.lstat(path)
            mode = st.st_mode
            mtime = clamp(st.st_mtime_ns)
            if stat.S_ISCHR(mode) and st.st_rdev == 0:
                # An overlayfs whiteout goes back to its portable spelling.
                parent, _, base = rel.rpartition("/")
                name = f"{parent}/{WHITEOUT_PREFIX}{base}" if parent else WHITEOUT_PREFIX + base
                sink.write(tar_header(name, tarfile.REGTYPE, 0o600, st.st_uid, st.st_gid, mtime))
                continue
            if stat.S_ISSOCK(mode):
                log.info("not writing socket %s into a layer", path)
                continue
            xattr_names = _list_xattrs(path)
            pax = _exported_xattrs(path, xattr_names) if xattr_names else None
            owner = (stat.S_IMODE(mode), st.st_uid, st.st_gid, mtime)
            if stat.S_ISDIR(mode):
                sink.write(tar_header(rel, tarfile.DIRTYPE, *owner, pax_headers=pax))
                if _is_opaque(path, xattr_names):
                    marker = f"{rel}/{WHITEOUT_OPAQUE}"
                    sink.write(tar_header(marker, tarfile.REGTYPE, mode & 0o777, *owner[1:]))
                stack.extend(listing(rel))
                continue
            if st.st_nlink > 1:
                first = seen.setdefault((st.st_dev, st.st_ino), rel)
                if first != rel:
                    sink.write(tar_header(rel, tarfile.LNKTYPE, *owner, linkname=first, pax_headers=pax))
                    continue
            if stat.S_ISREG(mode):
                size = st.st_size
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    sink.write(tar_header(rel, tarfile.REGTYPE, *owner, size=size, pax_headers=pax))
                    _write_content(fd, size, sink)
                finally:
                    os.close(fd)
            elif stat.S_ISLNK(mode):
                link = os.readlink(path)
                sink.write(tar_header(rel, tarfile.SYMTYPE, *owner, linkname=link, pax_headers=pax))
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                kind = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
                major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
                sink.write(tar_header(rel, kind, *owner, devmajor=major, devminor=minor, pax_headers=pax))
            elif stat.S_ISFIFO(mode):
                sink.write(tar_header(rel, tarfile.FIFOTYPE, *owner, pax_headers=pax))
        # the end: two zero blocks, then zeros up to a whole record (as tarfile and tar -b20 do)
        sink.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        if sink.pos % tarfile.RECORDSIZE:
            sink.write(tarfile.NUL * (tarfile.RECORDSIZE - sink.pos % tarfile.RECORDSIZE))
        sink.flush()
        out.flush()
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageError(f"no space left on device while writing a layer of {root}") from error
        raise StorageError(f"cannot write a layer of {root}: {error}") from error

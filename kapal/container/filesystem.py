"""A container's files seen from outside: copy in and out, diff, export and commit.

Everything here reads or writes inside a container's root filesystem from
the daemon, as root, on the host. The root filesystem belongs to whoever
made the image and to the processes running in it, so no host path is ever
built by joining strings and handed to the kernel: every path is resolved
component by component from a descriptor of the rootfs (or of the
extraction directory), each component opened with ``O_NOFOLLOW`` relative
to its parent, and every symlink on the way is followed by this module,
inside that scope, the way Docker's ``FollowSymlinkInScope`` (or a chroot)
would: an absolute target or a ``..`` never climbs above the scope. A
running container can swap a directory for a symlink at any moment; the
worst that does is fail the operation, because the swapped name is then
opened with ``O_NOFOLLOW`` and refused.

Docker works inside the container's mount namespace, so ``docker cp`` sees
the container's volumes, binds and /etc files where the container does.
The daemon here reaches the rootfs from the host, where those mount points
are empty directories; the resolver therefore grafts each mount's host
source in at its destination (read-only mounts stay read-only), for running
and stopped containers alike. Only tmpfs mounts, whose content lives in the
container's namespace alone, show as their empty mount points.

The tar shapes, the ``X-Docker-Container-Path-Stat`` header and the error
messages are Docker's (``daemon/archive_linux.go``, ``go-archive``), so the
docker CLI's ``cp`` and docker-py's ``get_archive``/``put_archive`` work
unchanged. ``changes``, ``export`` and ``commit`` read the rootfs alone (the
overlay upper directory holds exactly what the container changed), never
its mounts, as Docker's do.
"""

from __future__ import annotations

import base64
import copy
import datetime
import errno
import hashlib
import json
import logging
import os
import posixpath
import shutil
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from kapal import reference
from kapal.container.model import RUNNING, Container
from kapal.errors import Conflict, InvalidArgument, KapalError, NotFound, StorageError
from kapal.gopath import asserts_directory, follow_links, preserve_trailing_dot_or_separator
from kapal.gopath import base as go_base
from kapal.gopath import clean as go_clean
from kapal.image import manifest as mf
from kapal.image.changes import apply_changes
from kapal.image.compression import Compression, compress_writer, open_decompressed
from kapal.image.layer_tar import OPAQUE_XATTR, write_layer
from kapal.image.store import familiar

if TYPE_CHECKING:
    from kapal.container.service import ContainerService

log = logging.getLogger("kapald")

MAX_SYMLINKS = 40
"""The kernel's own limit: a symlink loop in a container is an error, not a hang."""

_CHUNK = 1 << 20
_FLUSH_AT = 1 << 16
_BLOCK = tarfile.BLOCKSIZE
_END_OF_ARCHIVE = b"\0" * (2 * _BLOCK)  # what Go's tar writer ends with (no record padding)

_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in for a regular file must not hang the daemon on open.
_READ_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_MAX_ID = (1 << 32) - 1  # (uid_t)-1 means "leave unchanged" to chown: never a real owner
_CREATE_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# overlayfs keeps its own bookkeeping in these xattr namespaces; a tar must never set them.
_OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")
_CAPABILITY_XATTR = "security.capability"
_PAX_XATTR = "SCHILY.xattr."

# Go's os.FileMode bits, which Docker puts in the path stat header as a number.
GO_MODE_DIR = 1 << 31
GO_MODE_SYMLINK = 1 << 27
GO_MODE_DEVICE = 1 << 26
GO_MODE_NAMED_PIPE = 1 << 25
GO_MODE_SOCKET = 1 << 24
GO_MODE_SETUID = 1 << 23
GO_MODE_SETGID = 1 << 22
GO_MODE_CHAR_DEVICE = 1 << 21
GO_MODE_STICKY = 1 << 20

# The files and directories the runtime creates in a container's rootfs as mount points when the
# image lacks them (Docker keeps them in a hidden "init" layer). Left empty, they are not changes.
_MOUNT_POINT_FILES = frozenset({"etc/hosts", "etc/hostname", "etc/resolv.conf"})
_MOUNT_POINT_DIRS = frozenset({"proc", "sys", "dev"})
# The per-container files bind-mounted over those, in the container directory.
_ETC_FILES = {"/etc/hosts": "hosts", "/etc/hostname": "hostname", "/etc/resolv.conf": "resolv.conf"}

# Changes' Kind values (Docker's archive.ChangeType).
CHANGE_MODIFY, CHANGE_ADD, CHANGE_DELETE = 0, 1, 2

# The image config members a commit keeps from a container's Config.
_IMAGE_CONFIG_KEYS = (
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "StopTimeout",
    "Healthcheck",
    "OnBuild",
    "Shell",
    "ArgsEscaped",
)
_DOCKER_TO_OCI_LAYER = {
    mf.DOCKER_LAYER: mf.OCI_LAYER,
    mf.DOCKER_LAYER_GZIP: mf.OCI_LAYER_GZIP,
    mf.DOCKER_LAYER_FOREIGN: mf.OCI_LAYER_NONDIST_GZIP,
}


# --------------------------------------------------------------------------------------------
# Go path semantics (Docker's cp rules are written in terms of them)


def container_abs_path(path: str) -> str:
    """The absolute in-container path Docker derives from a request's ``path``."""
    return preserve_trailing_dot_or_separator(go_clean("/" + path), path)


def go_file_mode(st_mode: int) -> int:
    """A stat mode as Go's ``os.FileMode`` (what ``ContainerPathStat.mode`` carries)."""
    mode = st_mode & 0o777
    kind = stat.S_IFMT(st_mode)
    if kind == stat.S_IFDIR:
        mode |= GO_MODE_DIR
    elif kind == stat.S_IFLNK:
        mode |= GO_MODE_SYMLINK
    elif kind == stat.S_IFBLK:
        mode |= GO_MODE_DEVICE
    elif kind == stat.S_IFCHR:
        mode |= GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE
    elif kind == stat.S_IFIFO:
        mode |= GO_MODE_NAMED_PIPE
    elif kind == stat.S_IFSOCK:
        mode |= GO_MODE_SOCKET
    if st_mode & stat.S_ISUID:
        mode |= GO_MODE_SETUID
    if st_mode & stat.S_ISGID:
        mode |= GO_MODE_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= GO_MODE_STICKY
    return mode


def rfc3339_nano(ns: int) -> str:
    """Go's ``time.RFC3339Nano`` in UTC: trailing zeros of the fraction dropped."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def encode_path_stat(path_stat: dict[str, Any]) -> str:
    """The ``X-Docker-Container-Path-Stat`` header value: base64 of the stat's JSON."""
    return base64.b64encode(json.dumps(path_stat, separators=(",", ":")).encode()).decode()


# --------------------------------------------------------------------------------------------
# Resolving paths inside a scope


@dataclass(frozen=True)
class Mount:
    """One of the container's mounts as the daemon reaches it: where its content is on the host.

    Volumes and binds are mounted in the container's own mount namespace, so
    the daemon's view of the rootfs has only empty mount points there; paths
    below a mount point are taken from the mount's source instead, as the
    container (and Docker, which works inside that namespace) sees them.
    """

    source: str
    rw: bool = True


@dataclass
class _Found:
    """Where a resolved path is: an ``O_PATH`` descriptor of its directory (the caller closes it),
    its name there (``"."`` for that directory itself), its components from the scope root, and
    whether it may be written (not in a read-only mount or rootfs) and lies in a mount."""

    parent: int
    name: str
    parts: list[str]
    writable: bool
    mounted: bool


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]


def _read_only(mounted: bool) -> InvalidArgument:
    """dockerd's refusals to write where the container cannot."""
    if mounted:
        return InvalidArgument("mounted volume is marked read-only")
    return InvalidArgument("container rootfs is marked read-only")


class _Scope:
    """A directory in which paths resolve as if it were ``/``, with the container's mounts grafted in.

    Every component is opened relative to its parent with ``O_NOFOLLOW``;
    symlinks are followed here, an absolute target restarting at the scope
    root and ``..`` never climbing above it (Docker's ``FollowSymlinkInScope``).
    *base* is the scope root's path in the container, which says where the
    mounts (keyed by in-container destination) are met.
    """

    def __init__(
        self,
        root_fd: int,
        mounts: dict[str, Mount] | None = None,
        base: str = "/",
        writable: bool = True,
        mounted: bool = False,
    ) -> None:
        self.root_fd = root_fd
        self.mounts = mounts or {}
        self.base = base
        self.writable = writable
        self.mounted = mounted

    def resolve(self, path: str, follow_final: bool, create: bool = False) -> _Found:
        """Resolve *path*; the last component is followed only with *follow_final*.

        With *create*, missing directories on the way are made (root-owned
        0755, as Docker's untar does). Raises FileNotFoundError,
        NotADirectoryError or an ELOOP OSError.
        """
        pending = _split(path)
        stack: list[tuple[int, bool, bool]] = [(os.dup(self.root_fd), self.writable, self.mounted)]
        parts: list[str] = []
        links = 0
        try:
            while pending:
                name = pending.pop(0)
                if name == "..":
                    if parts:
                        parts.pop()
                        os.close(stack.pop()[0])
                    continue
                top, writable, mounted = stack[-1]
                mount = self.mounts.get(posixpath.join(self.base, *parts, name)) if self.mounts else None
                if mount is not None:
                    found = self._enter_mount(mount, [*parts, name], bool(pending))
                    if isinstance(found, _Found):
                        return found
                    stack.append((found, mount.rw, True))
                    parts.append(name)
                    continue
                try:
                    info = os.stat(name, dir_fd=top, follow_symlinks=False)
                except FileNotFoundError:
                    if not create:
                        raise
                    if not writable:
                        raise _read_only(mounted) from None
                    try:
                        os.mkdir(name, 0o755, dir_fd=top)
                        if os.geteuid() == 0:  # root-owned as in the image; a CLI user keeps its own
                            os.chown(name, 0, 0, dir_fd=top, follow_symlinks=False)
                    except FileExistsError:
                        pass
                    pending.insert(0, name)
                    continue
                if stat.S_ISLNK(info.st_mode) and (pending or follow_final):
                    links += 1
                    if links > MAX_SYMLINKS:
                        raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
                    target = os.readlink(name, dir_fd=top)
                    if target.startswith("/"):
                        while len(stack) > 1:
                            os.close(stack.pop()[0])
                        parts.clear()
                    pending[:0] = _split(target)
                    continue
                if not pending:
                    stack.pop()
                    return _Found(top, name, [*parts, name], writable, mounted)
                if not stat.S_ISDIR(info.st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
                # O_NOFOLLOW: if the name became a symlink since the stat, this fails instead of following.
                stack.append((os.open(name, _PATH_DIR, dir_fd=top), writable, mounted))
                parts.append(name)
            top, writable, mounted = stack.pop()
            return _Found(top, ".", parts, writable, mounted)
        finally:
            for fd, _, _ in stack:
                os.close(fd)

    @staticmethod
    def _enter_mount(mount: Mount, parts: list[str], more: bool) -> _Found | int:
        """A mount met on the way: its source directory to go on in, or the result itself."""
        info = os.stat(mount.source)
        if stat.S_ISDIR(info.st_mode):
            fd = os.open(mount.source, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            return fd if more else _Found(fd, ".", parts, mount.rw, True)
        if more:
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", mount.source)
        head, tail = os.path.split(mount.source)
        fd = os.open(head or "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return _Found(fd, tail, parts, mount.rw, True)

    def open_directory(self, path: str, create: bool = False) -> int:
        """A readable descriptor of the directory *path* (fully resolved)."""
        found = self.resolve(path, follow_final=True, create=create)
        try:
            return os.open(found.name, _READ_DIR, dir_fd=found.parent)
        finally:
            os.close(found.parent)

    def follow(self, path: str) -> str:
        """Docker's ``FollowSymlinkInScope`` for a stat's linkTarget: as far as the links resolve.

        A broken link resolves to where it points: the missing rest is
        appended as written.
        """

        def link_target(candidate: list[str]) -> str | None:
            try:
                found = self.resolve("/".join(candidate), follow_final=False)
            except OSError:
                return None
            try:
                info = os.stat(found.name, dir_fd=found.parent, follow_symlinks=False)
                return os.readlink(found.name, dir_fd=found.parent) if stat.S_ISLNK(info.st_mode) else None
            except OSError:
                return None
            finally:
                os.close(found.parent)

        resolved = follow_links(
            path, link_target, f"too many levels of symbolic links in {path}", max_links=MAX_SYMLINKS
        )
        return "/" + "/".join(resolved)


def _container_mounts(service: ContainerService, container: Container) -> dict[str, Mount]:
    """The container's mounts by in-container destination: its /etc files, volumes and binds.

    tmpfs mounts are left out: their content exists only inside the
    container's mount namespace, so their empty mount points are what shows.
    """
    directory = service.path(container)
    mounts = {inside: Mount(str(directory / name)) for inside, name in _ETC_FILES.items()}
    mounts = {inside: mount for inside, mount in mounts.items() if os.path.exists(mount.source)}
    volumes = getattr(service, "volumes", None)
    if volumes is None:
        return mounts
    for point in volumes.mount_points(container.id):
        if point.type == "volume":
            try:
                source = str(volumes.path(point.name))
            except KapalError:
                continue
        elif point.type == "bind":
            source = point.source
        else:
            continue
        mounts[go_clean(point.destination)] = Mount(source, bool(point.rw))
    return mounts


# --------------------------------------------------------------------------------------------
# The rootfs of a stopped container, mounted while someone uses it

_mount_lock = threading.Lock()
_mount_users: dict[str, int] = {}


def _acquire_rootfs(service: ContainerService, container: Container) -> Path:
    """The container's merged rootfs, mounted (for a stopped one) until :func:`_release_rootfs`.

    Counted per container, so two copies from a stopped container share one
    mount and the last one out unmounts it, unless the container started
    meanwhile (then the mount is its own).
    """
    with _mount_lock:
        target = service.mount_rootfs(container)
        _mount_users[container.id] = _mount_users.get(container.id, 0) + 1
    return target


def _release_rootfs(service: ContainerService, container: Container) -> None:
    """The other half of :func:`_acquire_rootfs`; a failed unmount is logged, the copy succeeded."""
    with _mount_lock:
        count = _mount_users.get(container.id, 1) - 1
        if count > 0:
            _mount_users[container.id] = count
            return
        _mount_users.pop(container.id, None)
        try:
            service.unmount_rootfs(container)
        except KapalError as error:
            log.warning("unmounting the rootfs of %s: %s", container.short_id, error)


def _open_rootfs(path: Path) -> int:
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def _event_attributes(container: Container, **extra: str) -> dict[str, str]:
    attributes = {"image": container.image, "name": container.name}
    attributes.update(container.labels)
    attributes.update(extra)
    return attributes


# --------------------------------------------------------------------------------------------
# Writing tars of what is in a container


class TarStream:
    """The bytes of a tar, produced while they are read; owns what producing them holds.

    The tar is written lazily (a container tree can be gigabytes), so the
    descriptors and the rootfs mount it needs outlive the call that made it.
    Iterating to the end, or ``close()``, releases them; the routes always do
    one or the other, even when the client goes away early.
    """

    def __init__(self, chunks: Iterator[bytes], cleanup: Callable[[], None]) -> None:
        self._chunks = chunks
        self._cleanup: Callable[[], None] | None = cleanup

    def __iter__(self) -> TarStream:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        cleanup, self._cleanup = self._cleanup, None
        if cleanup is None:
            return
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            cleanup()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # a finaliser must not raise; the owner normally closed it already
            pass


def _header(
    name: str,
    info: os.stat_result,
    kind: bytes,
    size: int = 0,
    linkname: str = "",
    pax: dict[str, str] | None = None,
) -> bytes:
    """One tar header as Go's ``archive/tar`` writes Docker's: numeric owners, whole-second mtimes."""
    entry = tarfile.TarInfo(name)
    entry.type = kind
    entry.mode = stat.S_IMODE(info.st_mode)
    entry.uid, entry.gid = info.st_uid, info.st_gid
    entry.uname = entry.gname = ""
    entry.mtime = info.st_mtime_ns // 1_000_000_000
    entry.size = size
    entry.linkname = linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        entry.devmajor, entry.devminor = os.major(info.st_rdev), os.minor(info.st_rdev)
    if pax:
        entry.pax_headers = pax
    return entry.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _capability(fd: int) -> dict[str, str] | None:
    """Docker's tars carry one xattr, ``security.capability`` (what ping and friends need)."""
    try:
        value = os.getxattr(fd, _CAPABILITY_XATTR)
    except OSError:
        return None
    return {_PAX_XATTR + _CAPABILITY_XATTR: value.decode("utf-8", "surrogateescape")}


def _sorted_names(fd: int) -> list[str]:
    """A directory's names in Go's walk order (bytewise), reversed for popping."""
    return sorted(os.listdir(fd), key=os.fsencode, reverse=True)


class TreeWriter:
    """Writes one tree (or one file) as a tar, walking it with descriptors only.

    *mounts* (by in-container path) replace what the walk meets at their
    destinations, as the container sees them. With *one_filesystem*, a
    directory on another filesystem than its parent's (a mount the walk
    does not know about) is written empty, as Docker's view without it.
    """

    def __init__(self, mounts: dict[str, Mount] | None = None, one_filesystem: bool = True) -> None:
        self._mounts = mounts or {}
        self._one_filesystem = one_filesystem
        self._seen: dict[tuple[int, int], str] = {}
        self._buffer = bytearray()
        # Directories being walked: (fd, tar name prefix, in-container path, names left, st_dev).
        self._stack: list[tuple[int, str, str, list[str], int]] = []

    def _flush(self) -> Iterator[bytes]:
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            yield data

    def _add(self, data: bytes) -> Iterator[bytes]:
        self._buffer += data
        if len(self._buffer) >= _FLUSH_AT:
            yield from self._flush()

    def tree(self, parent_fd: int, name: str, tar_name: str | None, inside: str) -> Iterator[bytes]:
        """The entry *name* of *parent_fd* and everything below it.

        *tar_name* is the entry's name in the tar (children are named under
        it); ``None`` leaves the directory itself out and names its children
        from the top, as ``export`` does. *inside* is its in-container path.
        """
        try:
            if tar_name is None:
                fd = os.open(name, _READ_DIR, dir_fd=parent_fd)
                self._stack.append((fd, "", inside, _sorted_names(fd), os.fstat(fd).st_dev))
            else:
                yield from self._entry(parent_fd, name, tar_name, inside, None, top=True)
            while self._stack:
                fd, prefix, directory, names, device = self._stack[-1]
                if not names:
                    os.close(fd)
                    self._stack.pop()
                    continue
                child = names.pop()
                yield from self._entry(fd, child, prefix + child, posixpath.join(directory, child), device)
            yield from self._add(_END_OF_ARCHIVE)
            yield from self._flush()
        finally:
            while self._stack:
                os.close(self._stack.pop()[0])

    def _entry(
        self, dir_fd: int, name: str, tar_name: str, inside: str, device: int | None, top: bool = False
    ) -> Iterator[bytes]:
        mount = None if top else self._mounts.get(inside)
        if mount is not None:
            yield from self._mounted(mount, tar_name, inside)
            return
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return  # removed while we walked: as Docker, a running container's tree is a moving target
        mode = info.st_mode
        if stat.S_ISDIR(mode):
            try:
                fd = os.open(name, _READ_DIR, dir_fd=dir_fd)
            except OSError as error:
                if error.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    return  # replaced while we walked
                raise
            yield from self._directory(fd, tar_name, inside, device)
            return
        if stat.S_ISSOCK(mode):
            return  # tar cannot hold sockets; Docker skips them too
        if info.st_nlink > 1:
            key = (info.st_dev, info.st_ino)
            first = self._seen.setdefault(key, tar_name)
            if first != tar_name:
                yield from self._add(_header(tar_name, info, tarfile.LNKTYPE, linkname=first))
                return
        if stat.S_ISREG(mode):
            try:
                fd = os.open(name, _READ_FILE, dir_fd=dir_fd)
            except OSError as error:
                if error.errno in (errno.ENOENT, errno.ELOOP):
                    return
                raise
            yield from self._file(fd, tar_name)
        elif stat.S_ISLNK(mode):
            try:
                target = os.readlink(name, dir_fd=dir_fd)
            except OSError:
                return
            yield from self._add(_header(tar_name, info, tarfile.SYMTYPE, linkname=target))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            yield from self._add(_header(tar_name, info, kind))
        elif stat.S_ISFIFO(mode):
            yield from self._add(_header(tar_name, info, tarfile.FIFOTYPE))

    def _mounted(self, mount: Mount, tar_name: str, inside: str) -> Iterator[bytes]:
        """A mount point: the mount's own content (a directory tree, or one file)."""
        try:
            fd = os.open(mount.source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return  # a bind whose source went away: the container sees nothing there either
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            yield from self._directory(fd, tar_name, inside, None)
        elif stat.S_ISREG(os.fstat(fd).st_mode):
            yield from self._file(fd, tar_name)
        else:
            os.close(fd)

    def _directory(self, fd: int, tar_name: str, inside: str, device: int | None) -> Iterator[bytes]:
        """Write the directory open at *fd* and queue its children; *fd* is owned from here on."""
        pushed = False
        try:
            info = os.fstat(fd)
            yield from self._add(_header(tar_name, info, tarfile.DIRTYPE, pax=_capability(fd)))
            if device is not None and self._one_filesystem and info.st_dev != device:
                return  # an unknown mount point: its contents belong to another filesystem
            prefix = tar_name if tar_name.endswith("/") else tar_name + "/"
            self._stack.append((fd, prefix, inside, _sorted_names(fd), info.st_dev))
            pushed = True
        finally:
            if not pushed:
                os.close(fd)

    def _file(self, fd: int, tar_name: str) -> Iterator[bytes]:
        """Write the regular file open at *fd* (which is closed afterwards)."""
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return  # swapped for something else while we walked
            size = info.st_size
            yield from self._add(_header(tar_name, info, tarfile.REGTYPE, size=size, pax=_capability(fd)))
            yield from self._flush()
            remaining = size
            while remaining:
                data = os.read(fd, min(_CHUNK, remaining))
                if not data:
                    break
                remaining -= len(data)
                yield data
            # A file that shrank while we read it is padded: the header promised *size* bytes.
            padding = remaining + (-size) % _BLOCK
            if padding:
                yield from self._add(b"\0" * padding)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------------
# GET / HEAD /containers/{id}/archive


class _Located:
    """A path found in a container: where it is and the lstat Docker reports for it."""

    def __init__(self, found: _Found, info: os.stat_result) -> None:
        self.found = found
        self.info = info


def _not_found(path: str, ref: str) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {ref}")


def _resolve(scope: _Scope, abs_path: str, follow: bool, path: str, ref: str, loop_subject: str) -> _Found:
    """*abs_path* resolved inside the container, or Docker's not-found / symlink-loop error."""
    try:
        return scope.resolve(abs_path, follow_final=follow)
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found(path, ref) from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InvalidArgument(f"{loop_subject}: too many levels of symbolic links") from None
        raise


def _locate(scope: _Scope, abs_path: str, path: str, ref: str) -> _Located:
    """Resolve a request path as Docker's ``Stat`` does: the last component is not followed
    unless the path asserts a directory (``/`` or ``/.`` at its end)."""
    follow = asserts_directory(abs_path)
    found = _resolve(scope, abs_path, follow, path, ref, f"{path} in container {ref}")
    try:
        info = os.stat(found.name, dir_fd=found.parent, follow_symlinks=False)
        if follow and not stat.S_ISDIR(info.st_mode):
            raise _not_found(path, ref)
    except FileNotFoundError:
        os.close(found.parent)
        raise _not_found(path, ref) from None
    except BaseException:
        os.close(found.parent)
        raise
    return _Located(found, info)


def _path_stat(scope: _Scope, abs_path: str, located: _Located) -> dict[str, Any]:
    info = located.info
    return {
        "name": go_base(abs_path),
        "size": info.st_size,
        "mode": go_file_mode(info.st_mode),
        "mtime": rfc3339_nano(info.st_mtime_ns),
        "linkTarget": scope.follow(abs_path) if stat.S_ISLNK(info.st_mode) else "",
    }


def archive_head(service: ContainerService, ref: str, path: str) -> dict[str, Any]:
    """``HEAD /containers/{id}/archive``: the path stat Docker puts in ``X-Docker-Container-Path-Stat``."""
    if not path:
        raise InvalidArgument("path is required")
    container = service.get(ref)
    rootfs = _acquire_rootfs(service, container)
    try:
        root_fd = _open_rootfs(rootfs)
        try:
            scope = _Scope(root_fd, _container_mounts(service, container))
            abs_path = container_abs_path(path)
            located = _locate(scope, abs_path, path, ref)
            try:
                return _path_stat(scope, abs_path, located)
            finally:
                os.close(located.found.parent)
        finally:
            os.close(root_fd)
    finally:
        _release_rootfs(service, container)


def archive_get(service: ContainerService, ref: str, path: str) -> tuple[dict[str, Any], TarStream]:
    """``GET /containers/{id}/archive``: the path's stat and a tar of it (``docker cp CTR:path``).

    Entry names follow Docker: a directory's entries are named under the
    request's last element (``etc/…``; ``./…`` for ``/etc/.``; ``/…`` for
    ``/``), a file or symlink is a single entry of its own name. Volumes and
    binds below the path are read from their sources, as the container sees
    them.
    """
    if not path:
        raise InvalidArgument("path is required")
    container = service.get(ref)
    rootfs = _acquire_rootfs(service, container)
    root_fd = -1
    located: _Located | None = None
    try:
        root_fd = _open_rootfs(rootfs)
        mounts = _container_mounts(service, container)
        scope = _Scope(root_fd, mounts)
        abs_path = container_abs_path(path)
        located = _locate(scope, abs_path, path, ref)
        path_stat = _path_stat(scope, abs_path, located)
        base = go_base(abs_path)
        tar_name = "" if base == "/" else base
        found = located.found
        inside = "/" + "/".join(found.parts)
        chunks = TreeWriter(mounts).tree(found.parent, found.name, tar_name, inside)
    except BaseException:
        if located is not None:
            os.close(located.found.parent)
        if root_fd >= 0:
            os.close(root_fd)
        _release_rootfs(service, container)
        raise
    parent = found.parent

    def cleanup() -> None:
        os.close(parent)
        os.close(root_fd)
        _release_rootfs(service, container)

    service.events.publish("container", "archive-path", container.id, **_event_attributes(container))
    return path_stat, TarStream(chunks, cleanup)


# --------------------------------------------------------------------------------------------
# PUT /containers/{id}/archive


class ScopedExtractor:
    """Unpacks a tar under one directory of a container, the way Docker's ``Untar`` does.

    Entry names are relative to the extraction directory (absolute ones too,
    as in Go's ``filepath.Join``); a name that climbs out with ``..`` is an
    error. Each entry's parent is resolved inside the extraction directory
    (its symlinks followed but clamped there, as Docker's ``SecureJoin``),
    missing parents are created, and the entry itself is only ever created,
    replaced or changed through ``*at`` calls that do not follow it.
    """

    def __init__(
        self,
        dest_fd: int,
        dest_path: str,
        no_overwrite_dir_non_dir: bool,
        owner: tuple[int, int] | None = None,
        chown: bool = True,
        mounts: dict[str, Mount] | None = None,
        writable: bool = True,
        mounted: bool = False,
    ) -> None:
        self.dest_fd = dest_fd
        self.dest_path = dest_path
        self.no_overwrite = no_overwrite_dir_non_dir
        self.owner = owner
        self.chown = chown  # False: files belong to whoever extracts (the CLI's NoLchown)
        self.mounts = mounts or {}
        self.scope = _Scope(dest_fd, self.mounts, dest_path, writable, mounted)
        self.dir_times: list[tuple[str, int]] = []

    def run(self, tar_stream: BinaryIO) -> None:
        stream, _ = open_decompressed(tar_stream)
        try:
            tar = tarfile.open(  # noqa: SIM115 - closed by the with below
                fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape"
            )
        except tarfile.ReadError as error:
            if "empty" in str(error):
                return  # an empty body extracts nothing, as in Go
            raise InvalidArgument(f"invalid tar: {error}") from None
        with tar:
            while True:
                try:
                    entry = tar.next()
                except (tarfile.TarError, EOFError) as error:
                    raise InvalidArgument(f"invalid tar: {error}") from None
                if entry is None:
                    break
                tar.members.clear()  # tarfile keeps every member otherwise
                self._apply(entry, tar)
        for rel, mtime in reversed(self.dir_times):
            self._set_dir_time(rel, mtime)

    def _clean(self, name: str) -> str:
        """An entry name relative to the extraction directory; ``""`` is the directory itself."""
        cleaned = go_clean(name)
        if cleaned == ".." or cleaned.startswith("../"):
            raise InvalidArgument(f'invalid tar: "{name}" is outside of "{self.dest_path}"')
        cleaned = cleaned.lstrip("/")
        return "" if cleaned == "." else cleaned

    def _apply(self, entry: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        rel = self._clean(entry.name)
        kind = entry.type
        uid, gid = self.owner if self.owner is not None else (entry.uid, entry.gid)
        if not (0 <= uid < _MAX_ID and 0 <= gid < _MAX_ID):
            raise InvalidArgument(f"invalid tar: entry {entry.name} has an invalid owner")
        if not rel:
            if kind != tarfile.DIRTYPE:
                raise InvalidArgument(
                    "invalid tar: refusing to act on a non-directory entry as the archive root"
                )
            if not self.scope.writable:
                raise _read_only(self.scope.mounted)
            self._metadata_fd(self.dest_fd, entry, uid, gid)
            self.dir_times.append(("", int(entry.mtime)))
            return
        inside = posixpath.join(self.dest_path, rel)
        if inside in self.mounts:
            self._mount_point(rel, inside, entry, uid, gid)
            return
        directory, _, base = rel.rpartition("/")
        try:
            found = self.scope.resolve(directory, follow_final=True, create=True)
        except (NotADirectoryError, FileNotFoundError):
            raise InvalidArgument(f"cannot extract {entry.name}: a parent is not a directory") from None
        try:
            if not found.writable:
                raise _read_only(found.mounted)
            parent = os.open(found.name, _READ_DIR, dir_fd=found.parent)
        except NotADirectoryError:
            raise InvalidArgument(f"cannot extract {entry.name}: a parent is not a directory") from None
        finally:
            os.close(found.parent)
        try:
            self._place(parent, base, rel, entry, tar, uid, gid)
        finally:
            os.close(parent)

    def _mount_point(self, rel: str, inside: str, entry: tarfile.TarInfo, uid: int, gid: int) -> None:
        """An entry naming one of the container's mount points: it cannot be replaced, as in the
        container (the kernel says EBUSY); a directory entry sets the mount's own metadata."""
        if entry.type != tarfile.DIRTYPE:
            raise InvalidArgument(
                f'cannot overwrite mount point "{inside}" with non-directory "{entry.name}"'
            )
        found = self.scope.resolve(rel, follow_final=True)
        try:
            if not found.writable:
                return  # a read-only mount keeps its metadata; its content may still be read-only too
            fd = os.open(found.name, _READ_DIR, dir_fd=found.parent)
        except NotADirectoryError:
            raise InvalidArgument(
                f'cannot overwrite non-directory mount point "{inside}" with directory "{entry.name}"'
            ) from None
        finally:
            os.close(found.parent)
        try:
            self._metadata_fd(fd, entry, uid, gid)
        finally:
            os.close(fd)
        self.dir_times.append((rel, int(entry.mtime)))

    def _place(
        self,
        parent: int,
        base: str,
        rel: str,
        entry: tarfile.TarInfo,
        tar: tarfile.TarFile,
        uid: int,
        gid: int,
    ) -> None:
        kind = entry.type
        is_dir = kind == tarfile.DIRTYPE
        try:
            existing = os.stat(base, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None:
            existing_dir = stat.S_ISDIR(existing.st_mode)
            if self.no_overwrite and existing_dir and not is_dir:
                raise InvalidArgument(
                    f'cannot overwrite directory "{self.dest_path}/{rel}" with non-directory "{entry.name}"'
                )
            if self.no_overwrite and not existing_dir and is_dir:
                raise InvalidArgument(
                    f'cannot overwrite non-directory "{self.dest_path}/{rel}" with directory "{entry.name}"'
                )
            if existing_dir and not is_dir:
                shutil.rmtree(base, dir_fd=parent)
            elif not existing_dir:
                os.unlink(base, dir_fd=parent)
        if kind in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE):
            fd = os.open(base, _CREATE_FILE, 0o600, dir_fd=parent)
            try:
                source = tar.extractfile(entry)
                if source is not None:
                    while chunk := source.read(_CHUNK):
                        _write_all(fd, chunk)
                self._metadata_fd(fd, entry, uid, gid)
                os.utime(fd, ns=(_entry_ns(entry),) * 2)
            finally:
                os.close(fd)
        elif is_dir:
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                os.mkdir(base, 0o700, dir_fd=parent)
            fd = os.open(base, _READ_DIR, dir_fd=parent)
            try:
                self._metadata_fd(fd, entry, uid, gid)
            finally:
                os.close(fd)
            self.dir_times.append((rel, int(entry.mtime)))
        elif kind == tarfile.SYMTYPE:
            os.symlink(entry.linkname, base, dir_fd=parent)
            if self.chown:
                os.chown(base, uid, gid, dir_fd=parent, follow_symlinks=False)
            self._xattrs(f"/proc/self/fd/{parent}/{base}", entry, follow=False)
            os.utime(base, ns=(_entry_ns(entry),) * 2, dir_fd=parent, follow_symlinks=False)
        elif kind == tarfile.LNKTYPE:
            self._hardlink(parent, base, entry)
        elif kind in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
            node = {tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK}.get(kind, stat.S_IFIFO)
            device = os.makedev(entry.devmajor, entry.devminor) if node != stat.S_IFIFO else 0
            os.mknod(base, node | 0o600, device, dir_fd=parent)
            fd = os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                if stat.S_IFMT(os.fstat(fd).st_mode) != node:
                    raise InvalidArgument(f"cannot extract {entry.name}: it changed while being created")
                if self.chown:
                    os.chown(base, uid, gid, dir_fd=parent, follow_symlinks=False)
                # chmod through the descriptor's magic link: never through a name that could be swapped.
                os.chmod(f"/proc/self/fd/{fd}", entry.mode & 0o7777)
            finally:
                os.close(fd)
            os.utime(base, ns=(_entry_ns(entry),) * 2, dir_fd=parent, follow_symlinks=False)
        else:
            raise InvalidArgument(f"unhandled tar header type {kind!r} for {entry.name}")

    def _hardlink(self, parent: int, base: str, entry: tarfile.TarInfo) -> None:
        target = self._clean(entry.linkname)
        if not target:
            raise InvalidArgument(f"invalid tar: hardlink {entry.name} points at the extraction root")
        directory, _, name = target.rpartition("/")
        try:
            source_dir = self.scope.open_directory(directory)
        except (FileNotFoundError, NotADirectoryError):
            raise InvalidArgument(f"invalid tar: hardlink target {entry.linkname} does not exist") from None
        try:
            os.link(name, base, src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            raise InvalidArgument(f"invalid tar: hardlink target {entry.linkname} does not exist") from None
        finally:
            os.close(source_dir)

    def _metadata_fd(self, fd: int, entry: tarfile.TarInfo, uid: int, gid: int) -> None:
        # chown clears setuid bits and capabilities, so it goes first, then the mode, then xattrs.
        if self.chown:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, entry.mode & 0o7777)
        self._xattrs(fd, entry, follow=True)

    def _xattrs(self, target: int | str, entry: tarfile.TarInfo, follow: bool) -> None:
        for key, value in (entry.pax_headers or {}).items():
            if not key.startswith(_PAX_XATTR):
                continue
            name = key[len(_PAX_XATTR) :]
            if not name or name.startswith(_OVERLAY_XATTRS):
                continue
            try:
                os.setxattr(target, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=follow)
            except OSError as error:
                if error.errno not in (errno.ENOTSUP, errno.EPERM, errno.EINVAL):
                    raise

    def _set_dir_time(self, rel: str, mtime: int) -> None:
        """Directory times go last (creating children changes them); a replaced one is skipped."""
        try:
            found = self.scope.resolve(rel, follow_final=False)
        except OSError:
            return
        try:
            if not found.writable:
                return
            fd = os.open(found.name, _READ_DIR, dir_fd=found.parent)
        except OSError:
            return  # no longer a directory: a later entry replaced it
        finally:
            os.close(found.parent)
        try:
            os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)


def _entry_ns(entry: tarfile.TarInfo) -> int:
    return int(entry.mtime * 1_000_000_000)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy_owner(rootfs: Path, container: Container) -> tuple[int, int] | None:
    """``copyUIDGID``: Docker chowns to the container's ``User`` (when it has one)."""
    user = container.config.get("User") or ""
    if not user:
        return None
    from kapal.runtime.users import resolve_user

    resolved = resolve_user(str(rootfs), user)
    return resolved.uid, resolved.gid


def archive_put(
    service: ContainerService,
    ref: str,
    path: str,
    tar_stream: BinaryIO,
    no_overwrite_dir_non_dir: bool,
    copy_uid_gid: bool,
) -> None:
    """``PUT /containers/{id}/archive``: extract a (possibly compressed) tar into the directory *path*.

    The directory must exist; a symlink to one is followed inside the
    container. Works on running and stopped containers alike.
    """
    if not path:
        raise InvalidArgument("path is required")
    container = service.get(ref)
    rootfs = _acquire_rootfs(service, container)
    try:
        root_fd = _open_rootfs(rootfs)
        try:
            mounts = _container_mounts(service, container)
            scope = _Scope(root_fd, mounts, writable=not container.host_config.get("ReadonlyRootfs"))
            abs_path = container_abs_path(path)
            found = _resolve(scope, abs_path, True, path, ref, path)
            try:
                try:
                    dest_fd = os.open(found.name, _READ_DIR, dir_fd=found.parent)
                except FileNotFoundError:
                    raise _not_found(path, ref) from None
                except NotADirectoryError:
                    raise InvalidArgument("extraction point is not a directory") from None
            finally:
                os.close(found.parent)
            try:
                if not found.writable:
                    raise _read_only(found.mounted)
                owner = _copy_owner(rootfs, container) if copy_uid_gid else None
                extractor = ScopedExtractor(
                    dest_fd,
                    "/" + "/".join(found.parts),
                    no_overwrite_dir_non_dir,
                    owner,
                    mounts=mounts,
                    writable=found.writable,
                    mounted=found.mounted,
                )
                try:
                    extractor.run(tar_stream)
                except OSError as error:
                    if error.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise StorageError(
                            "no space left on device while extracting into the container"
                        ) from None
                    if error.errno == errno.EROFS:
                        raise _read_only(True) from None
                    raise InvalidArgument(f"extracting into {path}: {error.strerror or error}") from None
            finally:
                os.close(dest_fd)
        finally:
            os.close(root_fd)
    finally:
        _release_rootfs(service, container)
    service.events.publish("container", "extract-to-dir", container.id, **_event_attributes(container))


# --------------------------------------------------------------------------------------------
# GET /containers/{id}/export


def export(service: ContainerService, ref: str) -> TarStream:
    """``GET /containers/{id}/export``: the whole merged root filesystem as one tar."""
    container = service.get(ref)
    rootfs = _acquire_rootfs(service, container)
    try:
        root_fd = _open_rootfs(rootfs)
    except BaseException:
        _release_rootfs(service, container)
        raise
    chunks = TreeWriter().tree(root_fd, ".", None, "/")

    def cleanup() -> None:
        os.close(root_fd)
        _release_rootfs(service, container)

    service.events.publish("container", "export", container.id, **_event_attributes(container))
    return TarStream(chunks, cleanup)


# --------------------------------------------------------------------------------------------
# GET /containers/{id}/changes


def _is_whiteout(info: os.stat_result) -> bool:
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == 0


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


class _LowerView:
    """What the image's layers show at a path, merged as overlayfs merges them.

    Layers are lower directories, topmost first. A whiteout hides what is
    below it, a non-directory ends the merge, an opaque directory ends it
    after itself. Only directories that really are directories in a layer
    are descended into, so an image's symlink never leads the lookup out of
    the layer onto the host.
    """

    def __init__(self, layers: list[str]) -> None:
        self.layers = layers
        root: tuple[os.stat_result | None, list[int]] = (None, list(range(len(layers))))
        self._cache: dict[tuple[str, ...], tuple[os.stat_result | None, list[int]]] = {(): root}

    def lookup(self, parts: tuple[str, ...]) -> tuple[os.stat_result | None, list[int]]:
        """(the topmost entry's lstat or None, the layers whose directories merge there)."""
        cached = self._cache.get(parts)
        if cached is not None:
            return cached
        _, layers = self.lookup(parts[:-1])
        found: os.stat_result | None = None
        merged: list[int] = []
        for index in layers:
            path = os.path.join(self.layers[index], *parts)
            try:
                info = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if _is_whiteout(info):
                break
            if found is None:
                found = info
                if not stat.S_ISDIR(info.st_mode):
                    break
            elif not stat.S_ISDIR(info.st_mode):
                break
            merged.append(index)
            if _is_opaque(path):
                break
        result = (found, merged if found is not None and stat.S_ISDIR(found.st_mode) else [])
        self._cache[parts] = result
        return result

    def children(self, parts: tuple[str, ...]) -> set[str]:
        """The names a merged lower directory shows (whiteouts applied)."""
        _, layers = self.lookup(parts)
        shown: set[str] = set()
        decided: set[str] = set()
        for index in layers:
            directory = os.path.join(self.layers[index], *parts)
            try:
                names = os.listdir(directory)
            except OSError:
                continue
            for name in names:
                if name in decided:
                    continue
                decided.add(name)
                try:
                    if not _is_whiteout(os.lstat(os.path.join(directory, name))):
                        shown.add(name)
                except OSError:
                    continue
        return shown


def _same_fs_time(a: int, b: int) -> bool:
    """Go archive's ``sameFsTime``: equal, or equal seconds when one side lost its nanoseconds."""
    if a == b:
        return True
    return a // 1_000_000_000 == b // 1_000_000_000 and (a % 1_000_000_000 == 0 or b % 1_000_000_000 == 0)


def _mount_point_placeholder(rel: str, info: os.stat_result, in_lower: bool, path: str) -> bool:
    """Whether an upper entry is only the runtime's mount point for an image that lacked one."""
    if in_lower:
        return False
    if rel in _MOUNT_POINT_FILES:
        return stat.S_ISREG(info.st_mode) and info.st_size == 0
    if rel in _MOUNT_POINT_DIRS and stat.S_ISDIR(info.st_mode):
        try:
            return not os.listdir(path)
        except OSError:
            return False
    return False


def _placeholders(upper: str, lower: _LowerView) -> set[str]:
    """The upper dir's mount-point placeholders, as relative paths."""
    found = set()
    for rel in (*_MOUNT_POINT_FILES, *_MOUNT_POINT_DIRS):
        path = os.path.join(upper, rel)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        in_lower = lower.lookup(tuple(rel.split("/")))[0] is not None
        if _mount_point_placeholder(rel, info, in_lower, path):
            found.add(rel)
    return found


def _runtime_entries(upper: str, lower: _LowerView) -> set[str]:
    """What the runtime alone put in the upper dir: the placeholders, and directories holding only them.

    Docker keeps these in a hidden "init" layer under the container's own,
    so neither ``diff`` nor ``commit`` ever shows them; here they share the
    upper dir and are told apart by shape: an empty mount point the image
    lacked, or a directory made or copied up for nothing else (same mode as
    the image's, not opaque).
    """
    entries = _placeholders(upper, lower)
    for rel in sorted(entries, key=lambda item: item.count("/"), reverse=True):
        parent = posixpath.dirname(rel)
        while parent and parent not in entries:
            full = os.path.join(upper, parent)
            try:
                info = os.lstat(full)
                names = os.listdir(full)
            except OSError:
                break
            if not stat.S_ISDIR(info.st_mode) or _is_opaque(full):
                break
            if not all(f"{parent}/{name}" in entries for name in names):
                break
            below = lower.lookup(tuple(parent.split("/")))[0]
            if below is not None and below.st_mode != info.st_mode:
                break
            entries.add(parent)
            parent = posixpath.dirname(parent)
    return entries


def _lower_view(service: ContainerService, container: Container) -> _LowerView:
    image = service.images.get_by_id(container.image_id)
    return _LowerView([str(service.layers.path(diff_id)) for diff_id, _ in reversed(image.layers)])


def changes(service: ContainerService, ref: str) -> list[dict[str, Any]]:
    """``GET /containers/{id}/changes``: what the container changed, from its overlay upper dir.

    Docker's rules (go-archive ``changes``): a whiteout is a deletion, an
    entry the image has is a modification (a directory only when its size,
    mode or mtime differ), anything else an addition; the parent of an
    addition or deletion is listed as modified. Paths come in walk order
    (depth first, names sorted), as Docker lists them. An opaque directory
    (removed, then made again) is a modification when the image had it, and
    what the image had in it is listed as deleted.
    """
    container = service.get(ref)
    upper = str(service.path(container) / "upper")
    lower = _lower_view(service, container)
    skip = _runtime_entries(upper, lower)
    result: list[dict[str, Any]] = []
    changed_dirs: set[str] = set()

    def record(path: str, kind: int) -> None:
        if kind in (CHANGE_ADD, CHANGE_DELETE):
            parent = posixpath.dirname(path)
            if parent != "/" and parent not in changed_dirs:
                result.append({"Path": parent, "Kind": CHANGE_MODIFY})
                changed_dirs.add(parent)
        result.append({"Path": path, "Kind": kind})

    def walk(parts: tuple[str, ...], hidden: bool) -> None:
        directory = os.path.join(upper, *parts)
        try:
            upper_names = set(os.listdir(directory))
        except OSError:
            return
        deleted: set[str] = set()
        if hidden and parts:
            # An opaque directory hides all the image had here: that is deleted unless made again.
            deleted = lower.children(parts) - upper_names
        for name in sorted(upper_names | deleted, key=os.fsencode):
            child = (*parts, name)
            rel = "/".join(child)
            path = "/" + rel
            if name in deleted:
                record(path, CHANGE_DELETE)
                continue
            if rel in skip:
                continue
            full = os.path.join(directory, name)
            try:
                info = os.lstat(full)
            except OSError:
                continue
            if _is_whiteout(info):
                record(path, CHANGE_DELETE)
                continue
            below = None if hidden else lower.lookup(child)[0]
            if stat.S_ISDIR(info.st_mode):
                opaque = _is_opaque(full)
                if below is None:
                    kind: int | None = CHANGE_ADD
                elif opaque:
                    kind = CHANGE_MODIFY
                elif stat.S_ISDIR(below.st_mode) and _unchanged_dir(info, below):
                    kind = None
                else:
                    kind = CHANGE_MODIFY
                if kind is not None:
                    changed_dirs.add(path)
                    record(path, kind)
                walk(child, hidden or below is None or opaque or not stat.S_ISDIR(below.st_mode))
                continue
            record(path, CHANGE_ADD if below is None else CHANGE_MODIFY)

    walk((), False)
    return result


def _unchanged_dir(info: os.stat_result, below: os.stat_result) -> bool:
    """Docker's test for a directory that is only in the upper dir because something below changed."""
    return (
        info.st_mode == below.st_mode
        and info.st_size == below.st_size
        and _same_fs_time(info.st_mtime_ns, below.st_mtime_ns)
    )


# --------------------------------------------------------------------------------------------
# POST /commit


class _DropEntries:
    """A tar writer that passes a stream through, leaving out the entries named in *drop*.

    Used on write_layer's output (PAX, entries in walk order): an entry's
    extended headers wait until its own header says whether it is kept.
    Kept bytes pass through unchanged, so the layer stays deterministic.
    """

    def __init__(self, out: Any, drop: set[str]) -> None:
        self._out = out
        self._drop = drop
        self._header = bytearray()
        self._pending = bytearray()  # extended headers (and their data) waiting for their entry
        self._ext_kind = b""
        self._ext_size = 0
        self._ext_data = bytearray()
        self._collect = 0  # bytes of extended header data still to collect
        self._pass = 0  # bytes of the current entry's data to forward
        self._skip = 0  # bytes of the current entry's data to drop
        self._pax: dict[bytes, bytes] = {}
        self._long_name: bytes | None = None
        self._ended = False
        self.entries = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            if self._ended:
                self._out.write(view)
                break
            if self._pass:
                n = min(self._pass, len(view))
                self._out.write(view[:n])
                self._pass -= n
            elif self._skip:
                n = min(self._skip, len(view))
                self._skip -= n
            elif self._collect:
                n = min(self._collect, len(view))
                self._pending += view[:n]
                self._ext_data += view[:n]
                self._collect -= n
                if not self._collect:
                    self._end_extended()
            else:
                n = min(_BLOCK - len(self._header), len(view))
                self._header += view[:n]
                if len(self._header) == _BLOCK:
                    header = bytes(self._header)
                    self._header.clear()
                    self._on_header(header)
            view = view[n:]
        return total

    def flush(self) -> None:
        pass

    def _on_header(self, header: bytes) -> None:
        if header == b"\0" * _BLOCK:
            self._ended = True
            self._out.write(bytes(self._pending) + header)
            return
        kind = header[156:157]
        size = _tar_number(header[124:136])
        padded = size + (-size) % _BLOCK
        if kind in (b"x", b"g", b"L", b"K"):
            self._pending += header
            self._ext_kind, self._ext_size, self._ext_data = kind, size, bytearray()
            self._collect = padded
            if not padded:
                self._end_extended()
            return
        name = self._long_name if self._long_name is not None else self._pax.get(b"path")
        if name is None:
            prefix = header[345:500].split(b"\0", 1)[0]
            base = header[0:100].split(b"\0", 1)[0]
            name = prefix + b"/" + base if prefix else base
        if b"size" in self._pax:
            size = int(self._pax[b"size"])
            padded = size + (-size) % _BLOCK
        data_size = padded if kind in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE) else 0
        if os.fsdecode(name).rstrip("/") in self._drop:
            self._skip = data_size
        else:
            self._out.write(bytes(self._pending) + header)
            self._pass = data_size
            self.entries += 1
        self._pending.clear()
        self._pax = {}
        self._long_name = None

    def _end_extended(self) -> None:
        data = bytes(self._ext_data[: self._ext_size])
        if self._ext_kind == b"x":
            self._pax.update(_pax_records(data))
        elif self._ext_kind == b"L":
            self._long_name = data.split(b"\0", 1)[0]


def _tar_number(field: bytes) -> int:
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            break
        if length <= 0:
            break
        record = data[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        records[key] = value
        pos += length
    return records


class _Compressed:
    """Adapter giving the gzip writer a file to write the blob through."""

    def __init__(self, blob: Any) -> None:
        self._blob = blob

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return self._blob.write(data)

    def flush(self) -> None:
        pass


class _Tee:
    """Writes the layer tar into the hash and the compressor at once."""

    def __init__(self, gzip: BinaryIO) -> None:
        self._gzip = gzip
        self._hash = hashlib.sha256()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._hash.update(data)
        self._gzip.write(data)
        return len(data)

    def flush(self) -> None:
        pass

    def diff_id(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def _merge_config(user: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """dockerd's ``merge``: the commit's config, completed from the container's own."""
    if not user.get("User"):
        user["User"] = container.get("User") or ""
    exposed = dict(user.get("ExposedPorts") or {})
    for port in container.get("ExposedPorts") or {}:
        exposed.setdefault(port, {})
    user["ExposedPorts"] = exposed or None
    if not user.get("Env"):
        user["Env"] = container.get("Env")
    else:
        keys = {item.partition("=")[0] for item in user["Env"]}
        user["Env"] = list(user["Env"]) + [
            item for item in container.get("Env") or [] if item.partition("=")[0] not in keys
        ]
    labels = dict(user.get("Labels") or {})
    for key, value in (container.get("Labels") or {}).items():
        labels.setdefault(key, value)
    user["Labels"] = labels
    if not user.get("Entrypoint"):
        if not user.get("Cmd"):
            user["Cmd"] = container.get("Cmd")
        if user.get("Entrypoint") is None:
            user["Entrypoint"] = container.get("Entrypoint")
    if container.get("Healthcheck") and not user.get("Healthcheck"):
        user["Healthcheck"] = container["Healthcheck"]
    if not user.get("WorkingDir"):
        user["WorkingDir"] = container.get("WorkingDir") or ""
    volumes = dict(user.get("Volumes") or {})
    volumes.update(container.get("Volumes") or {})
    user["Volumes"] = volumes or None
    if not user.get("StopSignal") and container.get("StopSignal"):
        user["StopSignal"] = container["StopSignal"]
    return user


def _commit_target(repo: str, tag: str) -> str | None:
    """dockerd's ``RepoTagReference``: the name a commit tags, ``repo[:tag]`` with ``latest`` by default."""
    if not repo:
        return None
    ref = reference.parse(repo, default_tag=False)
    if ref.digest:
        raise InvalidArgument("cannot import digest reference")
    if tag:
        if not reference.valid_tag(tag):
            raise InvalidArgument(f"invalid tag format: {tag!r}")
        return f"{ref.repository}:{tag}"
    return f"{ref.repository}:{ref.tag or reference.DEFAULT_TAG}"


def _now_rfc3339() -> str:
    return rfc3339_nano(time.time_ns())


def commit(
    service: ContainerService,
    ref: str,
    repo: str = "",
    tag: str = "",
    comment: str = "",
    author: str = "",
    changes: list[str] | None = None,
    pause: bool = True,
    config: dict[str, Any] | None = None,
) -> str:
    """``POST /commit``: a new image of the container's image plus the container's changes.

    The changes become one layer (the overlay upper dir, whiteouts turned
    into ``.wh.`` entries, the runtime's empty mount points left out); the
    config is the container's (or *config*) with *changes* applied, as
    dockerd builds it. A running container is paused while its upper dir is
    read, unless *pause* is false. An empty diff adds no layer, only a
    history entry marked ``empty_layer``, as in Docker. Returns the image ID.
    """
    container = service.get(ref)
    status = container.state.status
    if status == "dead":
        raise Conflict(f"You cannot commit container {container.id} which is Dead")
    if status == "removing":
        raise Conflict(f"You cannot commit container {container.id} which is being removed")
    target = _commit_target(repo, tag)
    user_config = copy.deepcopy(config) if config else copy.deepcopy(container.config)
    user_config = apply_changes(user_config, list(changes or []))
    merged = _merge_config(user_config, container.config)
    image_config = {
        key: merged[key] for key in _IMAGE_CONFIG_KEYS if merged.get(key) not in (None, "", [], {})
    }

    images = service.images
    parent = images.get_by_id(container.image_id)
    parent_manifest = mf.Manifest.parse(images.content.read_bytes(parent.manifest_digest))
    upper = service.path(container) / "upper"

    with images.content.leases.lease() as lease:
        for diff_id, blob in parent.layers:
            lease.add(diff_id)
            lease.add(blob)
        paused = False
        if pause and status == RUNNING:
            try:
                service.pause(container.id)
                paused = True
            except KapalError as error:  # dockerd ignores a failed pause too
                log.warning("committing %s without pausing it: %s", container.short_id, error)
        try:
            with images.content.writer(lease=lease) as writer:
                gzip = compress_writer(_Compressed(writer), Compression.GZIP)  # type: ignore[arg-type]
                tee = _Tee(gzip)
                sink = _DropEntries(tee, _runtime_entries(str(upper), _lower_view(service, container)))
                write_layer(upper, sink)  # type: ignore[arg-type]
                gzip.close()
                empty = sink.entries == 0
                diff_id = tee.diff_id()
                blob_digest = None if empty else writer.commit()
        finally:
            if paused:
                try:
                    service.unpause(container.id)
                except KapalError as error:
                    log.warning("unpausing %s after the commit: %s", container.short_id, error)

        layers = [
            mf.Descriptor(
                _DOCKER_TO_OCI_LAYER.get(layer.media_type, layer.media_type), layer.digest, layer.size
            )
            for layer in parent_manifest.layers
        ]
        diff_ids = [diff_id_ for diff_id_, _ in parent.layers]
        if blob_digest is not None:
            with images.content.open(blob_digest) as blob:
                images.layers.unpack(blob, diff_id, lease)
            layers.append(mf.Descriptor(mf.OCI_LAYER_GZIP, blob_digest, images.content.size(blob_digest)))
            diff_ids.append(diff_id)
        now = _now_rfc3339()
        history_entry: dict[str, Any] = {"created": now}
        if author:
            history_entry["author"] = author
        created_by = " ".join(container.config.get("Cmd") or [])
        if created_by:
            history_entry["created_by"] = created_by
        if comment:
            history_entry["comment"] = comment
        if empty:
            history_entry["empty_layer"] = True
        new_config: dict[str, Any] = {
            "architecture": parent.config.get("architecture") or mf.host_platform()["architecture"],
            "os": parent.config.get("os") or "linux",
            "created": now,
            "config": image_config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [*(parent.config.get("history") or []), history_entry],
        }
        if parent.config.get("variant"):
            new_config["variant"] = parent.config["variant"]
        if author:
            new_config["author"] = author
        config_bytes = mf.canonical_json(new_config)
        config_digest = images.content.put_bytes(config_bytes, lease=lease)
        manifest_digest = images.content.put_bytes(
            mf.build_manifest(config_digest, len(config_bytes), layers), lease=lease
        )
        image, _ = images.register(manifest_digest, lease, [target] if target else [])
    if target:
        images.events.publish("image", "tag", image.id, name=familiar(target))
    service.events.publish(
        "container",
        "commit",
        container.id,
        **_event_attributes(
            container, comment=comment, imageID=image.id, imageRef=familiar(target) if target else ""
        ),
    )
    return image.id

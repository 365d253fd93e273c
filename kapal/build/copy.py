"""COPY and ADD: Docker's rules for sources, destinations, owners and modes.

Sources come from a tree: the build context (files in its spool) or another
stage's or image's filesystem. The destination is written through the step's
overlay mount, resolved inside the container's root (symlinks followed, never
out of it). The rules are the legacy builder's:

- a source directory's *contents* are copied, not the directory itself;
- a destination ending in ``/`` (or an existing directory) receives sources by
  their base name, otherwise a single file source is copied *to* it;
- several sources (or a wildcard) need a destination ending in ``/``;
- copied entries are owned by root unless ``--chown`` names a user (resolved in
  the image's /etc/passwd and /etc/group; the group defaults to the user);
- ADD unpacks a local tar (plain, gzip, bzip2, xz) and downloads a URL.
"""

from __future__ import annotations

import errno
import fnmatch
import io
import os
import posixpath
import re
import stat
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from kapal.build.context import DIR, FILE, OTHER, SYMLINK, Entry, clean, copy_range
from kapal.errors import InvalidArgument
from kapal.gopath import follow_links
from kapal.image.layer_tar import process_umask
from kapal.runtime.users import resolve_user

_WILDCARD = re.compile(r"[*?\[]")
_COPY_THREADS = 4
_BATCH = 128
_PARALLEL_FROM = 64  # files; fewer are copied on the calling thread


class Tree(Protocol):
    def lookup(self, name: str) -> Entry | None: ...
    def children(self, name: str) -> list[str]: ...
    def copy_to(self, entry: Entry, fd: int) -> None: ...


class RootfsTree:
    """A mounted image filesystem as a COPY source (``COPY --from``)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def lookup(self, name: str) -> Entry | None:
        path = os.path.join(self.root, name) if name else self.root
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return entry_of(name, st, path)

    def children(self, name: str) -> list[str]:
        path = os.path.join(self.root, name) if name else self.root
        try:
            names = sorted(os.listdir(path))
        except OSError:
            return []
        return [f"{name}/{child}" if name else child for child in names]

    def copy_to(self, entry: Entry, fd: int) -> None:
        src = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            copy_range(src, 0, entry.size, fd)
        finally:
            os.close(src)


def entry_of(name: str, st: os.stat_result, path: str) -> Entry:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        kind = DIR
    elif stat.S_ISREG(mode):
        kind = FILE
    elif stat.S_ISLNK(mode):
        kind = SYMLINK
    else:
        kind = OTHER
    return Entry(
        name,
        kind,
        stat.S_IMODE(mode),
        st.st_uid,
        st.st_gid,
        st.st_size if kind == FILE else 0,
        st.st_mtime,
        os.readlink(path) if kind == SYMLINK else "",
        rdev=st.st_rdev,
        file_type=stat.S_IFMT(mode),
        path=path,
    )


# -- sources ------------------------------------------------------------------------------------


def has_wildcards(path: str) -> bool:
    return bool(_WILDCARD.search(path))


def _go_pattern(component: str) -> str:
    """Go's filepath.Match negation ``[^…]`` in fnmatch's spelling ``[!…]``."""
    return component.replace("[^", "[!")


def _resolve_links(tree: Tree, name: str) -> tuple[str, Entry | None]:
    """Follow symlinks in *name* inside the tree (as the builder follows a source path)."""

    def link_target(parts: list[str]) -> str | None:
        entry = tree.lookup("/".join(parts))
        return entry.linkname if entry is not None and entry.kind == SYMLINK else None

    final = "/".join(follow_links(name, link_target))
    return final, tree.lookup(final)


def _glob(tree: Tree, pattern: str) -> list[str]:
    parts = [p for p in pattern.split("/") if p]
    found = [""]
    for part in parts:
        following = []
        for base in found:
            if has_wildcards(part):
                entry = tree.lookup(base)
                if entry is None or entry.kind != DIR:
                    continue
                for child in tree.children(base):
                    if fnmatch.fnmatchcase(posixpath.basename(child), _go_pattern(part)):
                        following.append(child)
            else:
                child = f"{base}/{part}" if base else part
                if tree.lookup(child) is not None:
                    following.append(child)
        found = following
    return sorted(found)


@dataclass(frozen=True)
class Source:
    name: str  # path in the tree, symlinks resolved
    entry: Entry
    original: str  # as written


def resolve_sources(tree: Tree, sources: list[str], keyword: str, is_context: bool) -> list[Source]:
    """What each source names in *tree*; Docker's errors for a path outside or a source that is missing."""
    resolved: list[Source] = []
    for original in sources:
        raw = posixpath.normpath(original) if original else "."
        if is_context and (raw == ".." or raw.startswith("../")):
            raise InvalidArgument(
                f"{keyword} failed: forbidden path outside the build context: {original} ()"
            )
        name = clean(original)
        if has_wildcards(name):
            matches = _glob(tree, name)
            for match in matches:
                path, entry = _resolve_links(tree, match)
                if entry is not None:
                    resolved.append(Source(path, entry, original))
            continue
        path, entry = _resolve_links(tree, name)
        if entry is None:
            if is_context:
                raise InvalidArgument(
                    f"{keyword} failed: file not found in build context or excluded by .dockerignore: "
                    f"stat {name or '.'}: file does not exist"
                )
            raise InvalidArgument(f"{keyword} failed: stat {original}: file does not exist")
        resolved.append(Source(path, entry, original))
    if not resolved:
        raise InvalidArgument(f"{keyword} failed: no source files were specified")
    return resolved


def walk(tree: Tree, name: str) -> Iterator[tuple[str, Entry]]:
    """Every entry under directory *name* (pre-order), as (path relative to it, entry)."""
    prefix = len(name) + 1 if name else 0
    stack = list(reversed(tree.children(name)))
    while stack:
        child = stack.pop()
        entry = tree.lookup(child)
        if entry is None:
            continue
        yield child[prefix:], entry
        if entry.kind == DIR:
            stack.extend(reversed(tree.children(child)))


# -- destinations -------------------------------------------------------------------------------


def scoped_path(root: str, path: str) -> str:
    """*path* inside *root* with symlinks followed, never leaving *root* (FollowSymlinkInScope)."""

    def link_target(parts: list[str]) -> str | None:
        host = os.path.join(root, *parts)
        try:
            return os.readlink(host) if stat.S_ISLNK(os.lstat(host).st_mode) else None
        except (FileNotFoundError, NotADirectoryError):
            return None

    return os.path.join(root, *follow_links(path, link_target))


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int


def parse_chown(rootfs: str, chown: str | None) -> Owner | None:
    """``--chown=user[:group]``: names resolved in the image, the group defaulting to the user's string."""
    if not chown:
        return None
    user, _, group = chown.partition(":")
    group = group or user
    try:
        resolved = resolve_user(rootfs, f"{user}:{group}")
    except InvalidArgument as error:
        raise InvalidArgument(f"unable to convert uid/gid chown string to host mapping: {error}") from None
    return Owner(resolved.uid, resolved.gid)


def parse_chmod(chmod: str | None) -> int | None:
    if not chmod:
        return None
    try:
        mode = int(chmod, 8)
    except ValueError:
        raise InvalidArgument(f"invalid chmod parameter {chmod!r}: it must be an octal number") from None
    if not 0 <= mode <= 0o7777:
        raise InvalidArgument(f"invalid chmod parameter {chmod!r}")
    return mode


_UMASK = 0o022 if (_umask := process_umask()) is None else _umask


class Writer:
    """Writes entries under a destination inside a mounted root.

    Files are the bulk of a COPY: each costs one create, so the syscalls around it are
    kept to what changes something (no chown to the owner it already has, no chmod to the
    mode it was created with, no lookup in a directory this copy just made).
    """

    def __init__(self, rootfs: str, owner: Owner | None, chmod: int | None, upper: str | None = None) -> None:
        self.rootfs = rootfs
        self.owner = owner
        self.chmod = chmod
        self.upper = upper  # the overlay's upper dir, when *rootfs* is an overlay mount
        self._fresh: set[str] = set()  # directories this writer created (nothing else is in them)
        self._ids_are_mine = (owner is None or (owner.uid, owner.gid) == (0, 0)) and os.geteuid() == 0

    def _ids(self, entry: Entry | None) -> tuple[int, int]:
        if self.owner is not None:
            return self.owner.uid, self.owner.gid
        return 0, 0

    def mkdirs(self, path: str) -> str:
        """Create the directory *path* (inside the root) and its missing parents; returns its host path."""
        host = scoped_path(self.rootfs, path)
        missing = []
        probe = host
        while not os.path.lexists(probe) and probe != self.rootfs:
            missing.append(probe)
            probe = os.path.dirname(probe)
        if os.path.lexists(probe) and not os.path.isdir(probe):
            raise InvalidArgument(f"cannot copy to {path}: {probe[len(self.rootfs) :]} is not a directory")
        uid, gid = self._ids(None)
        for directory in reversed(missing):
            os.mkdir(directory, 0o755)
            os.chmod(directory, 0o755)
            os.lchown(directory, uid, gid)
            self._fresh.add(directory)
        return host

    def _remove_existing(self, host: str, keep_dir: bool) -> bool:
        """Make room for a new entry at *host*; returns whether a directory is already there."""
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            raise InvalidArgument(
                f"cannot overwrite directory {host[len(self.rootfs) :]} with a non-directory"
            )
        os.unlink(host)
        return False

    def write(self, tree: Tree, entry: Entry, host: str, dir_time: bool = True) -> None:
        """Write one entry at the host path *host* (whose parent exists)."""
        uid, gid = self._ids(entry)
        mode = self.chmod if self.chmod is not None else entry.mode
        fresh_parent = os.path.dirname(host) in self._fresh
        if entry.kind == DIR:
            if fresh_parent or not self._remove_existing(host, keep_dir=True):
                os.mkdir(host, 0o700)
                self._fresh.add(host)
            if not self._ids_are_mine:
                os.lchown(host, uid, gid)
            os.chmod(host, mode)
            if dir_time:
                os.utime(host, (entry.mtime, entry.mtime), follow_symlinks=False)
            return
        if not fresh_parent:
            self._remove_existing(host, keep_dir=False)
        if entry.kind == FILE:
            fd = os.open(
                host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode & 0o777
            )
            try:
                if entry.size:
                    tree.copy_to(entry, fd)
                if not self._ids_are_mine:
                    os.fchown(fd, uid, gid)
                if mode != mode & 0o777 & ~_UMASK:
                    os.fchmod(fd, mode)
                os.utime(fd, (entry.mtime, entry.mtime))
            finally:
                os.close(fd)
        elif entry.kind == SYMLINK:
            os.symlink(entry.linkname, host)
            os.lchown(host, uid, gid)
            os.utime(host, (entry.mtime, entry.mtime), follow_symlinks=False)
        else:
            os.mknod(host, entry.file_type | mode, entry.rdev)
            os.lchown(host, uid, gid)

    def copy_tree(self, tree: Tree, name: str, host_dir: str) -> None:
        """The contents of directory *name* into the existing host directory *host_dir*.

        Directories first, then the files in batches on a few threads: a create costs a
        disk round trip here, and creates in different directories proceed side by side.
        Directory times are set last, once nothing more is created in them.
        """
        host_dir = self._in_upper(host_dir)
        directories: list[tuple[str, Entry]] = []
        batches: dict[str, list[tuple[Entry, str]]] = {}
        count = 0
        for rel, entry in walk(tree, name):
            host = os.path.join(host_dir, rel)
            if entry.kind == DIR:
                self.write(tree, entry, host, dir_time=False)
                directories.append((host, entry))
            else:
                batches.setdefault(os.path.dirname(host), []).append((entry, host))
                count += 1
        work = [items[i : i + _BATCH] for items in batches.values() for i in range(0, len(items), _BATCH)]
        if count >= _PARALLEL_FROM and len(work) > 1:
            with ThreadPoolExecutor(max_workers=_COPY_THREADS, thread_name_prefix="copy") as pool:
                for future in [pool.submit(self._write_batch, tree, items) for items in work]:
                    future.result()
        else:
            for items in work:
                self._write_batch(tree, items)
        for host, entry in reversed(directories):
            os.utime(host, (entry.mtime, entry.mtime), follow_symlinks=False)

    def settle(self) -> None:
        """Forget which directories this writer made: what one source wrote in them, the next
        (``COPY dir1 dir2 /dest/``) may overwrite, as Docker does."""
        self._fresh.clear()

    def _in_upper(self, host_dir: str) -> str:
        """Where to write a tree bound for *host_dir*: the same directory in the upper dir when
        this writer made it through the overlay and it is still empty.

        Nothing below such a directory can come from a lower layer, so writing there directly
        is what the overlay would do, without its per-file lookups and with the content
        copied in the kernel (the overlay refuses ``copy_file_range`` from the spool). The
        overlay is not read again before the step commits, which unmounts it.
        """
        if self.upper is None or host_dir not in self._fresh:
            return host_dir
        target = os.path.join(self.upper, os.path.relpath(host_dir, self.rootfs))
        try:
            if not os.path.isdir(target) or os.path.islink(target) or os.listdir(target):
                return host_dir
        except OSError:
            return host_dir
        self._fresh.add(target)
        return target

    def _write_batch(self, tree: Tree, items: list[tuple[Entry, str]]) -> None:
        for entry, host in items:
            self.write(tree, entry, host)


def copy_sources(
    tree: Tree,
    sources: list[Source],
    dest: str,
    workdir: str,
    rootfs: str,
    owner: Owner | None,
    chmod: int | None,
    keyword: str,
    unpack_archives: bool = False,
    upper: str | None = None,
) -> None:
    """Copy resolved *sources* to *dest* (relative to *workdir*) inside *rootfs*.

    *upper* is the upper dir of the overlay mounted at *rootfs*, if it is one.
    """
    dest_is_dir = dest.endswith("/") or dest in (".", "..") or dest.endswith("/.")
    if not dest.startswith("/"):
        dest = posixpath.join(workdir or "/", dest)
    if len(sources) > 1 and not dest_is_dir:
        raise InvalidArgument(
            f"When using {keyword} with more than one source file, the destination must be a directory "
            "and end with a /"
        )
    writer = Writer(rootfs, owner, chmod, upper)
    dest_host = scoped_path(rootfs, dest)
    if not dest_is_dir and os.path.isdir(dest_host):
        dest_is_dir = True
    for source in sources:
        writer.settle()
        entry = source.entry
        if entry.kind == DIR:
            host = writer.mkdirs(dest)
            writer.copy_tree(tree, source.name, host)
            continue
        if unpack_archives and entry.kind == FILE and _unpack_if_archive(tree, entry, writer, dest):
            continue
        if dest_is_dir:
            parent = writer.mkdirs(dest)
            target = os.path.join(parent, posixpath.basename(source.name))
        else:
            parent = writer.mkdirs(posixpath.dirname(dest.rstrip("/")) or "/")
            target = os.path.join(parent, posixpath.basename(dest.rstrip("/")))
        writer.write(tree, entry, target)


# -- ADD ----------------------------------------------------------------------------------------


def _open_entry(tree: Tree, entry: Entry) -> io.BufferedReader:
    """A file of a tree as a readable stream (the archive ADD unpacks), spilled to a temporary file."""
    import tempfile

    spill = tempfile.TemporaryFile()  # noqa: SIM115 - returned open
    tree.copy_to(entry, spill.fileno())
    spill.seek(0)
    return spill  # type: ignore[return-value]


def _is_archive(head: bytes) -> bool:
    from kapal.image.compression import Compression, detect

    if detect(head) is not Compression.NONE:
        return True
    return len(head) >= 262 and head[257:262] == b"ustar"


def _unpack_if_archive(tree: Tree, entry: Entry, writer: Writer, dest: str) -> bool:
    from kapal.image.compression import open_decompressed

    reader = _open_entry(tree, entry)
    try:
        if not _is_archive(reader.peek(512)[:512]):
            return False
        stream, _ = open_decompressed(reader)  # type: ignore[arg-type]
        host = writer.mkdirs(dest)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for info in tar:
                    tar.members.clear()
                    if writer.owner is not None:
                        info.uid, info.gid = writer.owner.uid, writer.owner.gid
                    try:
                        tar.extract(info, host, numeric_owner=True, filter="tar")
                    except tarfile.FilterError as error:
                        raise InvalidArgument(f"ADD failed: {error}") from None
                    except OSError as error:
                        if error.errno != errno.EEXIST:
                            raise
        except tarfile.ReadError:
            return False
        return True
    finally:
        reader.close()

"""Resolve a container's ``User`` against the image's own passwd and group files.

Docker looks names up in the container's ``/etc/passwd`` and ``/etc/group``,
never the host's: a user called ``app`` is whatever uid the image says. Those
files belong to an untrusted image, so they are opened the way a process
chrooted into the rootfs would see them: every symlink is resolved inside the
rootfs (an absolute target or a ``..`` climbs no higher than the rootfs), no
path component is followed by the kernel on our behalf, and only regular files
of bounded size are read. An image whose ``/etc/passwd`` points at the host's
``/etc/shadow`` gets the rootfs's ``/etc/shadow`` (usually missing), not the
host's.

The parsing rules are those of moby/sys/user (what Docker, runc and crun use),
so the same ``User`` string gives the same uid, gid and groups here as there.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from kapal.errors import InvalidArgument

MAX_ID = 2**31 - 1
MAX_ACCOUNT_FILE = 8 * 1024 * 1024
"""Larger passwd/group files are refused: an image must not make the daemon read gigabytes."""
MAX_SYMLINKS = 40
"""As the kernel's own limit: a symlink loop in the rootfs ends in an error, not a hang."""

_DIR_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class ResolvedUser:
    """The numeric identity a container process runs as (the OCI ``process.user``)."""

    uid: int
    gid: int
    additional_gids: list[int] = field(default_factory=list)
    home: str = "/"

    def oci(self) -> dict:
        """The OCI ``process.user`` object (umask left unset, as Docker does)."""
        return {"uid": self.uid, "gid": self.gid, "additionalGids": list(self.additional_gids)}


@dataclass(frozen=True)
class _Passwd:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class _Group:
    name: str
    gid: int
    members: tuple[str, ...]


# --- reading files inside an untrusted root ------------------------------------------------------


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]


def _walk(root_fd: int, path: str, *, create_dirs: bool = False, mode: int = 0o755) -> tuple[int, str] | None:
    """Resolve all but the last component of *path* inside the root; symlinks stay inside.

    Returns an O_PATH descriptor of the parent directory (the caller closes it)
    and the final name, already resolved through any symlinks except that the
    final name itself is not followed (the caller opens it with O_NOFOLLOW and
    calls again if it is a symlink). ``None`` when a directory on the way is
    missing (or is not a directory) and *create_dirs* is false.
    """
    pending = _split(path)
    stack = [os.dup(root_fd)]
    links = 0
    try:
        while pending:
            name = pending.pop(0)
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            if not pending:
                parent = stack.pop()
                return parent, name
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=stack[-1])
            except FileNotFoundError:
                if not create_dirs:
                    return None
                try:
                    os.mkdir(name, mode, dir_fd=stack[-1])
                except FileExistsError:
                    pass
                pending.insert(0, name)
                continue
            info = os.fstat(fd)
            if stat.S_ISLNK(info.st_mode):
                os.close(fd)
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
                target = os.readlink(name, dir_fd=stack[-1])
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                pending[:0] = _split(target)
                continue
            if not stat.S_ISDIR(info.st_mode):
                os.close(fd)
                if create_dirs:
                    raise OSError(errno.ENOTDIR, "not a directory", path)
                return None
            stack.append(fd)
        # An empty path (or one of only "/" and "..") names the root itself.
        return stack.pop(), "."
    finally:
        for fd in stack:
            os.close(fd)


def _resolve_final(root_fd: int, path: str) -> tuple[int, str] | None:
    """Follow symlinks at the last component too, all inside the root: (parent fd, name)."""
    links = 0
    while True:
        walked = _walk(root_fd, path)
        if walked is None:
            return None
        parent, name = walked
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return parent, name
        except BaseException:
            os.close(parent)
            raise
        if not stat.S_ISLNK(info.st_mode):
            return parent, name
        links += 1
        try:
            if links > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
            target = os.readlink(name, dir_fd=parent)
            if target.startswith("/"):
                path = target
            else:
                # Relative to the link's directory: re-walk its parent, then the target.
                path = "/".join([*_split(path)[:-1], target])
        finally:
            os.close(parent)


def read_file_in_root(rootfs: str, path: str, limit: int | None = None) -> bytes | None:
    """The contents of *path* as seen from inside *rootfs*, or ``None`` if it is not a regular file.

    Raises InvalidArgument when the file is larger than *limit* bytes or the
    path loops through symlinks: an image made to exhaust the daemon is
    reported, not silently treated as having no users. *limit* defaults to
    MAX_ACCOUNT_FILE.
    """
    limit = MAX_ACCOUNT_FILE if limit is None else limit
    try:
        root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        resolved = _resolve_final(root_fd, path)
        if resolved is None:
            return None
        parent, name = resolved
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as error:
            if error.errno == errno.ELOOP:  # swapped for a symlink after it was resolved
                return None
            raise
        finally:
            os.close(parent)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return None
            if info.st_size > limit:
                raise InvalidArgument(f"{path} in the container is too large ({info.st_size} bytes)")
            chunks = []
            total = 0
            while chunk := os.read(fd, 65536):
                total += len(chunk)
                if total > limit:
                    raise InvalidArgument(f"{path} in the container is too large (over {limit} bytes)")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InvalidArgument(f"{path} in the container: too many levels of symbolic links") from None
        raise
    finally:
        os.close(root_fd)


def mkdir_in_root(rootfs: str, path: str, mode: int = 0o755) -> None:
    """Create directory *path* (and its parents) inside *rootfs*, symlinks resolved inside it.

    Docker creates a missing WorkingDir before starting the container (runc
    would fail to chdir); doing it with host paths would let an image's symlink
    make the daemon create directories anywhere on the host.
    """
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for _ in range(MAX_SYMLINKS):
            walked = _walk(root_fd, path, create_dirs=True, mode=mode)
            assert walked is not None
            parent, name = walked
            try:
                if name == ".":
                    return
                try:
                    info = os.stat(name, dir_fd=parent, follow_symlinks=False)
                except FileNotFoundError:
                    try:
                        os.mkdir(name, mode, dir_fd=parent)
                    except FileExistsError:
                        continue
                    return
                if stat.S_ISDIR(info.st_mode):
                    return
                if not stat.S_ISLNK(info.st_mode):
                    raise InvalidArgument(f"cannot create directory {path} in the container: not a directory")
                target = os.readlink(name, dir_fd=parent)
                path = target if target.startswith("/") else "/".join([*_split(path)[:-1], target])
            finally:
                os.close(parent)
        raise InvalidArgument(f"cannot create directory {path} in the container: too many symbolic links")
    except OSError as error:
        raise InvalidArgument(f"cannot create directory {path} in the container: {error.strerror}") from None
    finally:
        os.close(root_fd)


# --- passwd and group ----------------------------------------------------------------------------


def _lines(data: bytes | None) -> Iterator[list[str]]:
    if data is None:
        return
    for raw in data.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        yield line.split(":")


def _number(text: str) -> int | None:
    text = text.strip()
    if not text or not text.isdigit():
        return None
    return int(text)


def _parse_passwd(data: bytes | None) -> list[_Passwd]:
    entries = []
    for fields in _lines(data):
        fields += [""] * (7 - len(fields))
        uid, gid = _number(fields[2]), _number(fields[3])
        if uid is None or gid is None:
            continue  # a malformed line is skipped, not read as uid 0
        entries.append(_Passwd(fields[0], uid, gid, fields[5]))
    return entries


def _parse_group(data: bytes | None) -> list[_Group]:
    entries = []
    for fields in _lines(data):
        fields += [""] * (4 - len(fields))
        gid = _number(fields[2])
        if gid is None:
            continue
        members = tuple(name.strip() for name in fields[3].split(",") if name.strip())
        entries.append(_Group(fields[0], gid, members))
    return entries


def _numeric(value: str) -> int | None:
    """A uid/gid written as a number (Docker treats any integer as an id, then range-checks it)."""
    try:
        number = int(value, 10)
    except ValueError:
        return None
    if number < 0 or number > MAX_ID:
        raise InvalidArgument(f"uids and gids must be in range 0-{MAX_ID}")
    return number


def _dedupe(values: Iterable[int]) -> list[int]:
    seen: set[int] = set()
    ordered = []
    for value in values:
        if value not in seen:
            seen.add(value)
            ordered.append(value)
    return ordered


def resolve_user(rootfs: str, user: str, group_add: Iterable[str] = ()) -> ResolvedUser:
    """Docker's meaning of ``Config.User`` (plus ``HostConfig.GroupAdd``) for the image at *rootfs*.

    ``""`` is root; ``name`` / ``uid`` take the primary group and home from
    passwd and the supplementary groups that list the user by name; an
    explicit ``:group`` replaces the primary group and (as in Docker) drops the
    implicit supplementary groups. A numeric uid need not be in passwd.
    ``additional_gids`` starts with the primary gid, as Docker's spec does.
    """
    user = user or ""
    user_part, _, group_part = user.partition(":")
    user_part, group_part = user_part.strip(), group_part.strip()
    uid_arg = _numeric(user_part) if user_part else None
    gid_arg = _numeric(group_part) if group_part else None

    passwd_data = read_file_in_root(rootfs, "/etc/passwd")
    uid, gid, home = 0, 0, "/"
    matched_name = ""
    for entry in _parse_passwd(passwd_data):
        if (not user_part and entry.uid == 0) or (
            entry.uid == uid_arg if uid_arg is not None else entry.name == user_part
        ):
            matched_name, uid, gid, home = entry.name, entry.uid, entry.gid, entry.home or "/"
            break
    else:
        if user_part:
            if uid_arg is None:
                raise InvalidArgument(f"unable to find user {user_part}: no matching entries in passwd file")
            uid = uid_arg

    groups: list[_Group] = []
    if group_part or matched_name or group_add:
        groups = _parse_group(read_file_in_root(rootfs, "/etc/group"))

    supplementary: list[int] = []
    if group_part:
        for group in groups:
            if (group.gid == gid_arg) if gid_arg is not None else (group.name == group_part):
                gid = group.gid
                break
        else:
            if gid_arg is None:
                raise InvalidArgument(f"unable to find group {group_part}: no matching entries in group file")
            gid = gid_arg
    elif matched_name:
        supplementary = [group.gid for group in groups if matched_name in group.members]

    added: list[int] = []
    for wanted in group_add:
        wanted = str(wanted).strip()
        number = _numeric(wanted)
        for group in groups:
            if (group.gid == number) if number is not None else (group.name == wanted):
                added.append(group.gid)
                break
        else:
            if number is None:
                raise InvalidArgument(f"unable to find group {wanted}: no matching entries in group file")
            added.append(number)

    return ResolvedUser(uid, gid, _dedupe([gid, *supplementary, *added]), home)

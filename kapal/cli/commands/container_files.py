"""Container file and process commands: cp, diff, commit, export, top, stats, update.

``cp`` is most of this module because most of ``docker cp`` happens in the
client: it stats both ends, decides where the tar is extracted and what its
top entry must be renamed to (go-archive's ``PrepareArchiveCopy``), and
only then asks the daemon for a plain tar (or gives it one). The rules for
``/`` and ``/.`` at the end of a path ("the directory" versus "its
contents") are go-archive's, reproduced with Go's path semantics. The local
end is written with the same scoped extractor the daemon uses, so a tar
from a hostile container cannot place files outside the destination either.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time

from kapal.cli.common import (
    CommandError,
    Context,
    DaemonError,
    for_each,
    output_rows,
    parser,
    print_error,
    sorted_row,
)
from kapal.gopath import asserts_directory as _asserts_directory
from kapal.gopath import base as _base
from kapal.gopath import clean as _clean
from kapal.gopath import dirname as _dir
from kapal.gopath import join as _join
from kapal.gopath import preserve_trailing_dot_or_separator as preserve_trailing
from kapal.gopath import specifies_current_dir as _current_dir
from kapal.units import bytes_size, human_size_with_precision, parse_size

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings here
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

    from kapal.cli.client import Client

# Go os.FileMode bits, as the daemon's path stat header carries them.
_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27
_GO_DEVICE = 1 << 26
_GO_IRREGULAR = 1 << 19
_KINDS = {0: "C", 1: "A", 2: "D"}
_CHUNK = 1 << 20
_ZERO_TIME = "0001-01-01T00:00:00Z"


# -- Go path semantics ------------------------------------------------------------------------


def split_path_dir_entry(path: str) -> tuple[str, str]:
    """go-archive's ``SplitPathDirEntry``: (directory, entry), keeping a trailing ``/.``."""
    cleaned = _clean(path)
    if _current_dir(path):
        cleaned += "/."
    return _dir(cleaned), _base(cleaned)


def split_cp_arg(arg: str) -> tuple[str, str]:
    """``CONTAINER:PATH`` or a local path (absolute, ``./x:y`` or without a colon)."""
    if arg.startswith("/"):
        return "", arg
    container, sep, path = arg.partition(":")
    if not sep or container.startswith("."):
        return "", arg
    return container, path


def _resolve_local(path: str) -> str:
    return preserve_trailing(_clean(os.path.join(os.getcwd(), path)), path)


def _os_error(operation: str, path: str, error: OSError) -> CommandError:
    """An OSError worded as Go prints it (``lstat /x: no such file or directory``)."""
    reason = (error.strerror or str(error)).lower()
    return CommandError(f"{operation} {path}: {reason}")


class CopyInfo:
    """go-archive's ``CopyInfo``: one end of a copy."""

    def __init__(self, path: str, exists: bool = False, is_dir: bool = False, rebase_name: str = "") -> None:
        self.path = path
        self.exists = exists
        self.is_dir = is_dir
        self.rebase_name = rebase_name


def rebase_name_for(path: str, resolved: str) -> tuple[str, str]:
    """go-archive's ``GetRebaseName``: keep ``/.`` and ``/`` and say what the entry must be called."""
    if _current_dir(path) and not _current_dir(resolved):
        resolved += "/."
    if path.endswith("/") and not resolved.endswith("/"):
        resolved += "/"
    rebase = _base(path) if _base(path) != _base(resolved) else ""
    return resolved, rebase


def _eval_symlinks(path: str) -> str:
    try:
        return os.path.realpath(path, strict=True)
    except OSError as error:
        raise _os_error("lstat", path, error) from None


def copy_info_source_path(path: str, follow_link: bool) -> CopyInfo:
    """go-archive's ``CopyInfoSourcePath``: symlinks before the last ``/`` (all, with ``-L``) resolved."""
    if follow_link:
        resolved, rebase = rebase_name_for(path, _eval_symlinks(path))
    else:
        head, _, tail = path.rpartition("/")
        resolved_dir = _eval_symlinks(head + "/")
        resolved = resolved_dir.rstrip("/") + "/" + tail
        rebase = _base(path) if path.endswith("/") and _base(path) != _base(resolved) else ""
    try:
        info = os.lstat(resolved)
    except OSError as error:
        raise _os_error("lstat", resolved, error) from None
    return CopyInfo(resolved, True, stat.S_ISDIR(info.st_mode), rebase)


def copy_info_destination_path(path: str) -> CopyInfo:
    """go-archive's ``CopyInfoDestinationPath``: follow a final symlink; the parent must exist."""
    original = path
    try:
        info: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as error:
        raise _os_error("lstat", path, error) from None
    hops = 0
    while info is not None and stat.S_ISLNK(info.st_mode):
        hops += 1
        if hops > 10:
            raise CommandError(f"too many symlinks in {original}")
        target = os.readlink(path)
        if not target.startswith("/"):
            target = _join(split_path_dir_entry(path)[0], target)
        path = target
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            info = None
    if info is not None:
        return CopyInfo(path, True, stat.S_ISDIR(info.st_mode))
    parent = split_path_dir_entry(path)[0]
    try:
        parent_info = os.stat(parent)
    except OSError as error:
        raise _os_error("stat", parent, error) from None
    if not stat.S_ISDIR(parent_info.st_mode):
        raise CommandError("not a directory")
    return CopyInfo(path)


def prepare_archive_copy(src: CopyInfo, dst: CopyInfo) -> tuple[str, tuple[str, str] | None]:
    """go-archive's ``PrepareArchiveCopy``: where to extract, and the (old, new) top-entry rename.

    A directory destination takes the archive as it is; otherwise the
    archive is extracted in the destination's parent with its top entry
    renamed to the destination's name.
    """
    dst_dir, dst_base = split_path_dir_entry(dst.path)
    _, src_base = split_path_dir_entry(src.path)
    if dst.exists and dst.is_dir:
        return dst.path, None
    if dst.exists and src.is_dir:
        raise CommandError("cannot copy directory")
    if not dst.exists and not src.is_dir and _asserts_directory(dst.path):
        raise CommandError("no such directory")
    return dst_dir, (src.rebase_name or src_base, dst_base)


def _renamed(name: str, old: str, new: str) -> str:
    """go-archive's rename of the first occurrence (the top entry is always the prefix)."""
    if old == "/":
        old = ""
    return name.replace(old, new, 1)


# -- tar streams ------------------------------------------------------------------------------


class _IterReader:
    """A file-like ``read`` over an iterator of byte chunks (a tar being written as it is read)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            data = self._buffer + b"".join(self._chunks)
            self._buffer = b""
        else:
            while len(self._buffer) < size:
                try:
                    self._buffer += next(self._chunks)
                except StopIteration:
                    break
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        self.count += len(data)
        return data


class _Counting:
    """Counts what is read through it (``docker cp``'s "transferred" size)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.count += len(data)
        return data


def rebase_entries(source: Any, old: str, new: str) -> Iterator[bytes]:
    """go-archive's ``RebaseArchiveEntries``: the tar with *old* renamed *new* in its entry names."""
    import tarfile

    with tarfile.open(fileobj=source, mode="r|", encoding="utf-8", errors="surrogateescape") as tar:
        for entry in tar:
            tar.members.clear()
            entry.name = _renamed(entry.name if not entry.isdir() else entry.name + "/", old, new)
            if entry.islnk():
                entry.linkname = _renamed(entry.linkname, old, new)
            yield entry.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            if entry.isreg():
                data = tar.extractfile(entry)
                if data is not None:
                    while chunk := data.read(_CHUNK):
                        yield chunk
                if entry.size % tarfile.BLOCKSIZE:
                    yield b"\0" * (tarfile.BLOCKSIZE - entry.size % tarfile.BLOCKSIZE)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def tar_resource(src: CopyInfo, rename: tuple[str, str] | None) -> Iterator[bytes]:
    """go-archive's ``TarResource``, with the destination's rename applied as it is written."""
    from kapal.container.filesystem import TreeWriter

    source_dir, source_base = split_path_dir_entry(src.path)
    top = source_base
    if src.rebase_name:
        top = _renamed(top, source_base, src.rebase_name if src.rebase_name != "/" else "")
    if rename is not None:
        top = _renamed(top, *rename)
    fd = os.open(source_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield from TreeWriter(one_filesystem=False).tree(fd, source_base, top, "/")
    finally:
        os.close(fd)


def _extract_local(content: Any, directory: str) -> None:
    """go-archive's ``Untar`` with ``NoLchown`` and ``NoOverwriteDirNonDir``, kept inside *directory*."""
    from kapal.container.filesystem import ScopedExtractor
    from kapal.errors import KapalError

    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise _os_error("open", directory, error) from None
    try:
        ScopedExtractor(fd, directory, True, chown=False).run(content)
    except KapalError as error:
        raise CommandError(error.message) from None
    except OSError as error:
        raise _os_error("extract", directory, error) from None
    finally:
        os.close(fd)


def _local_content_size(path: str) -> int:
    """What ``docker cp`` reports as copied: the regular files' bytes."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        return info.st_size if stat.S_ISREG(info.st_mode) else 0
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                entry = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if stat.S_ISREG(entry.st_mode):
                total += entry.st_size
    return total


def _summary(content: int, transferred: int, destination: str) -> str:
    """docker cp's closing line; both sizes when the tar's overhead made them differ."""
    if content != transferred:
        return (
            f"Successfully copied {human_size_with_precision(content, 3)} "
            f"(transferred {human_size_with_precision(transferred, 3)}) to {destination}"
        )
    return f"Successfully copied {human_size_with_precision(content, 3)} to {destination}"


# -- talking to the daemon --------------------------------------------------------------------


def stat_container_path(client: Client, container: str, path: str) -> dict[str, Any] | None:
    """``HEAD /containers/{id}/archive``: the path stat, or None when it cannot be had.

    Sent by hand because a HEAD response announces a length it never sends:
    a reader that trusted it, as the client's error path does, would wait.
    """
    import base64
    import socket

    from kapal.cli.client import API_VERSION, Response, urlencode

    socket_path = client.host[len("unix://") :] if client.host.startswith("unix://") else client.host
    url = f"/v{API_VERSION}/containers/{container}/archive?" + urlencode([("path", path)])
    request = f"HEAD {url} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: kapal-cli\r\nConnection: close\r\n\r\n"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(socket_path)
        sock.sendall(request.encode("latin-1"))
        response = Response(sock)
        header = response.headers.get("x-docker-container-path-stat")
        if response.status != 200 or not header:
            return None
        return json.loads(base64.b64decode(header))
    except (OSError, ValueError):
        return None
    finally:
        sock.close()


# -- cp ---------------------------------------------------------------------------------------


def cp(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(
        prog,
        f"{prog} [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n\t{prog} [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH",
        "Copy files/folders between a container and the local filesystem",
    )
    p.add_argument("source")
    p.add_argument("destination")
    p.add_argument("-L", "--follow-link", action="store_true")
    p.add_argument("-a", "--archive", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", default=None)
    opts = p.parse_args(args)
    if not opts.source:
        raise CommandError("source can not be empty")
    if not opts.destination:
        raise CommandError("destination can not be empty")
    quiet = opts.quiet if opts.quiet is not None else not sys.stdout.isatty()
    src_container, src_path = split_cp_arg(opts.source)
    dst_container, dst_path = split_cp_arg(opts.destination)
    if src_container and dst_container:
        raise CommandError("copying between containers is not supported")
    if src_container:
        return _copy_from(ctx.client, src_container, src_path, dst_path, opts.follow_link, quiet)
    if dst_container:
        return _copy_to(ctx.client, dst_container, src_path, dst_path, opts.follow_link, opts.archive, quiet)
    raise CommandError("must specify at least one container source")


def _validate_output_path(path: str) -> None:
    """docker's ``ValidateOutputPath``: the parent must exist; an existing path is a dir or a file."""
    directory = _dir(_clean(path))
    if directory not in ("", ".") and not os.path.exists(directory):
        raise CommandError(f'invalid output path: directory "{directory}" does not exist')
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as error:
        raise _os_error("stat", path, error) from None
    if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
        raise CommandError(
            f'invalid output path: "{path}" must be a directory or a regular file: got a device'
        )


def _copy_from(
    client: Client, container: str, src_path: str, dst_path: str, follow: bool, quiet: bool
) -> int:
    if dst_path != "-":
        dst_path = _resolve_local(dst_path)
        _validate_output_path(dst_path)
    rebase = ""
    if follow:
        path_stat = stat_container_path(client, container, src_path)
        if path_stat is not None and path_stat.get("mode", 0) & _GO_SYMLINK:
            target = path_stat.get("linkTarget") or ""
            if not target.startswith("/"):
                target = _join(split_path_dir_entry(src_path)[0], target)
            src_path, rebase = rebase_name_for(src_path, target)
    response = client.request("GET", f"/containers/{container}/archive", {"path": src_path})
    try:
        import base64

        header = response.headers.get("x-docker-container-path-stat", "")
        path_stat = json.loads(base64.b64decode(header)) if header else {}
        if dst_path == "-":
            out = sys.stdout.buffer
            while chunk := response.read1(_CHUNK):
                out.write(chunk)
            out.flush()
            return 0
        is_dir = bool(path_stat.get("mode", 0) & _GO_DIR)
        src = CopyInfo(src_path, True, is_dir, rebase)
        counted = _Counting(response)
        content: Any = counted
        if rebase:
            content = _IterReader(rebase_entries(content, split_path_dir_entry(src.path)[1], rebase))
        dst = copy_info_destination_path(dst_path)
        directory, rename = prepare_archive_copy(src, dst)
        if rename is not None:
            content = _IterReader(rebase_entries(content, *rename))
        _extract_local(content, directory)
    finally:
        response.close()
    if not quiet:
        reported = counted.count if is_dir else int(path_stat.get("size", 0))
        print_error(_summary(reported, counted.count, dst_path))
    return 0


def _copy_to(
    client: Client,
    container: str,
    src_path: str,
    dst_path: str,
    follow: bool,
    copy_uid_gid: bool,
    quiet: bool,
) -> int:
    if src_path != "-":
        src_path = _resolve_local(src_path)
    dst = CopyInfo(dst_path)
    path_stat = stat_container_path(client, container, dst_path)
    if path_stat is not None and path_stat.get("mode", 0) & _GO_SYMLINK:
        target = path_stat.get("linkTarget") or ""
        if not target.startswith("/"):
            target = _join(split_path_dir_entry(dst_path)[0], target)
        dst.path = target
        path_stat = stat_container_path(client, container, target)
    if path_stat is not None:
        mode = int(path_stat.get("mode", 0))
        if mode & (_GO_DEVICE | _GO_IRREGULAR):
            kind = "a device" if mode & _GO_DEVICE else "an irregular file"
            raise CommandError(
                f'destination "{container}:{dst_path}" must be a directory or a regular file: got {kind}'
            )
        dst.exists, dst.is_dir = True, bool(mode & _GO_DIR)

    body: Any
    content_size = -1
    if src_path == "-":
        if not dst.is_dir:
            raise CommandError(f'destination "{container}:{dst_path}" must be a directory')
        body = sys.stdin.buffer
        target_dir = dst.path
    else:
        src = copy_info_source_path(src_path, follow)
        target_dir, rename = prepare_archive_copy(src, dst)
        content_size = _local_content_size(src.path)
        body = _IterReader(tar_resource(src, rename))
    query: dict[str, Any] = {"path": target_dir, "noOverwriteDirNonDir": "true"}
    if copy_uid_gid:
        query["copyUIDGID"] = "true"
    client.request("PUT", f"/containers/{container}/archive", query, body).close()
    if not quiet:
        sent = getattr(body, "count", content_size)
        print_error(_summary(content_size if content_size >= 0 else sent, sent, f"{container}:{dst.path}"))
    return 0


# -- diff, commit, export ---------------------------------------------------------------------


def diff(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(
        prog, f"{prog} CONTAINER", "Inspect changes to files or directories on a container's filesystem"
    )
    p.add_argument("container")
    opts = p.parse_args(args)
    for change in ctx.client.get(f"/containers/{opts.container}/changes") or []:
        print(f"{_KINDS.get(change.get('Kind'), '?')} {change.get('Path', '')}")
    return 0


def _split_pause(args: list[str]) -> tuple[bool, list[str]]:
    """``-p``/``--pause`` is a Go bool flag (``--pause=false``): argparse would take the next word."""
    pause = True
    rest: list[str] = []
    for index, arg in enumerate(args):
        if not arg.startswith("-") or arg == "--":
            rest += args[index:]  # flags stop at the first argument, as in docker commit
            break
        name, sep, value = arg.partition("=")
        if name in ("-p", "--pause"):
            if sep and value.lower() not in ("1", "t", "true", "0", "f", "false"):
                raise CommandError(f'invalid argument "{value}" for "{name}" flag: parse error', 125)
            pause = not sep or value.lower() in ("1", "t", "true")
            continue
        rest.append(arg)
    return pause, rest


def _split_reference(text: str) -> tuple[str, str]:
    """``REPOSITORY[:TAG]`` as the docker client sends it: repo and tag (``latest`` by default)."""
    if "@" in text:
        raise CommandError("refusing to create a tag with a digest reference")
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        return text[:colon], text[colon + 1 :]
    return text, "latest"


def commit(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(
        prog,
        f"{prog} [OPTIONS] CONTAINER [REPOSITORY[:TAG]]",
        "Create a new image from a container's changes",
    )
    p.add_argument("container")
    p.add_argument("reference", nargs="?")
    p.add_argument("-a", "--author", default="")
    p.add_argument("-c", "--change", action="append", default=[])
    p.add_argument("-m", "--message", default="")
    pause, rest = _split_pause(args)
    opts = p.parse_args(rest)
    query: list[tuple[str, Any]] = [
        ("container", opts.container),
        ("comment", opts.message),
        ("author", opts.author),
        ("pause", pause),
    ]
    if opts.reference:
        repo, tag = _split_reference(opts.reference)
        query += [("repo", repo), ("tag", tag)]
    query += [("changes", change) for change in opts.change]
    result = ctx.client.json("POST", "/commit", query)
    print(result["Id"])
    return 0


def export(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] CONTAINER", "Export a container's filesystem as a tar archive")
    p.add_argument("container")
    p.add_argument("-o", "--output")
    opts = p.parse_args(args)
    if not opts.output and sys.stdout.isatty():
        raise CommandError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    if opts.output:
        _validate_output_path(_resolve_local(opts.output))
    response = ctx.client.request("GET", f"/containers/{opts.container}/export")
    try:
        if not opts.output:
            out = sys.stdout.buffer
            while chunk := response.read1(_CHUNK):
                out.write(chunk)
            out.flush()
            return 0
        _save_to_file(response, opts.output)
    finally:
        response.close()
    return 0


def _save_to_file(response: Any, path: str) -> None:
    """Write to a temporary file beside *path* and rename it: never a half-written archive."""
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".kapal-export-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := response.read1(_CHUNK):
                out.write(chunk)
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- top --------------------------------------------------------------------------------------


def top(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} CONTAINER [ps OPTIONS]", "Display the running processes of a container")
    p.add_argument("container")
    p.add_argument("ps_args", nargs="...")
    opts = p.parse_args(args)
    from kapal.cli.template import tabwrite

    query = {"ps_args": " ".join(opts.ps_args)} if opts.ps_args else None
    result = ctx.client.get(f"/containers/{opts.container}/top", query)
    rows = [result.get("Titles") or [], *(result.get("Processes") or [])]
    sys.stdout.write(tabwrite(rows, minwidth=20, padding=3))
    return 0


# -- stats ------------------------------------------------------------------------------------

STATS_DEFAULT = (
    "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}"
)
STATS_HEADER = {
    "Container": "CONTAINER",
    "Name": "NAME",
    "ID": "CONTAINER ID",
    "CPUPerc": "CPU %",
    "MemUsage": "MEM USAGE / LIMIT",
    "MemPerc": "MEM %",
    "NetIO": "NET I/O",
    "BlockIO": "BLOCK I/O",
    "PIDs": "PIDS",
}


def cpu_percent(sample: dict[str, Any]) -> float:
    """The docker CLI's ``calculateCPUPercentUnix``: container CPU delta over host CPU delta."""
    cpu = sample.get("cpu_stats") or {}
    pre = sample.get("precpu_stats") or {}
    usage = (cpu.get("cpu_usage") or {}).get("total_usage", 0)
    pre_usage = (pre.get("cpu_usage") or {}).get("total_usage", 0)
    system_delta = float(cpu.get("system_cpu_usage", 0)) - float(pre.get("system_cpu_usage", 0))
    cpu_delta = float(usage) - float(pre_usage)
    online = float(cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []))
    if system_delta > 0 and cpu_delta > 0:
        return cpu_delta / system_delta * online * 100.0
    return 0.0


def memory_usage(memory: dict[str, Any]) -> float:
    """The docker CLI's ``calculateMemUsageUnixNoCache``: usage less the inactive page cache."""
    usage = int(memory.get("usage", 0))
    stats_ = memory.get("stats") or {}
    if "total_inactive_file" in stats_ and stats_["total_inactive_file"] < usage:
        return float(usage - stats_["total_inactive_file"])
    inactive = stats_.get("inactive_file", 0)
    if inactive < usage:
        return float(usage - inactive)
    return float(usage)


def _block_io(blkio: dict[str, Any]) -> tuple[int, int]:
    read = write = 0
    for entry in blkio.get("io_service_bytes_recursive") or []:
        op = str(entry.get("op") or "")[:1].lower()
        if op == "r":
            read += int(entry.get("value", 0))
        elif op == "w":
            write += int(entry.get("value", 0))
    return read, write


class _StatsEntry:
    """One row of ``docker stats``: the last sample of one container, or why there is none."""

    def __init__(self, container: str) -> None:
        self.container = container
        self.sample: dict[str, Any] | None = None
        self.error: str | None = None
        self.done = False
        self.first = threading.Event()

    @property
    def stopped(self) -> bool:
        """Gone, or sending the name-and-ID-only samples of a container that is not running."""
        return self.done or (self.sample is not None and self.sample.get("read", _ZERO_TIME) == _ZERO_TIME)

    def row(self, no_trunc: bool) -> dict[str, Any]:
        sample = self.sample or {}
        name = str(sample.get("name") or "")
        ident = str(sample.get("id") or "")
        row: dict[str, Any] = {
            "Container": self.container,
            "Name": name[1:] if len(name) > 1 else "--",
            "ID": ident if no_trunc else ident[:12],
        }
        if self.error is not None or self.sample is None:
            row.update(CPUPerc="--", MemUsage="-- / --", MemPerc="--", NetIO="--", BlockIO="--", PIDs="--")
            return sorted_row(row)
        memory = sample.get("memory_stats") or {}
        used = memory_usage(memory)
        limit = float(memory.get("limit", 0))
        rx = sum(float(n.get("rx_bytes", 0)) for n in (sample.get("networks") or {}).values())
        tx = sum(float(n.get("tx_bytes", 0)) for n in (sample.get("networks") or {}).values())
        read, write = _block_io(sample.get("blkio_stats") or {})
        row.update(
            CPUPerc=f"{cpu_percent(sample):.2f}%",
            MemUsage=f"{bytes_size(used)} / {bytes_size(limit)}",
            MemPerc=f"{(used / limit * 100.0) if limit else 0.0:.2f}%",
            NetIO=f"{human_size_with_precision(rx, 3)} / {human_size_with_precision(tx, 3)}",
            BlockIO=f"{human_size_with_precision(read, 3)} / {human_size_with_precision(write, 3)}",
            PIDs=str((sample.get("pids_stats") or {}).get("current", 0)),
        )
        return sorted_row(row)


def _collect(client: Client, entry: _StatsEntry, stream: bool) -> None:
    try:
        if not stream:
            entry.sample = client.get(f"/containers/{entry.container}/stats", {"stream": False})
            return
        for sample in client.stream("GET", f"/containers/{entry.container}/stats", {"stream": True}):
            entry.sample = sample
            entry.first.set()
    except DaemonError as error:
        entry.error = f"Error response from daemon: {error.message}"
    except OSError as error:
        entry.error = str(error)
    finally:
        entry.done = True
        entry.first.set()


def stats(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(
        prog,
        f"{prog} [OPTIONS] [CONTAINER...]",
        "Display a live stream of container(s) resource usage statistics",
    )
    p.add_argument("containers", nargs="*")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("--no-stream", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format")
    opts = p.parse_args(args)
    client = ctx.client
    show_all = not opts.containers
    if show_all:
        listing = client.get("/containers/json", {"all": opts.all}) or []
        names = [container["Id"][:12] for container in listing]
    else:
        names = list(dict.fromkeys(opts.containers))
    entries = [_StatsEntry(name) for name in names]
    stream = not opts.no_stream
    threads = [
        threading.Thread(target=_collect, args=(client, entry, stream), daemon=True) for entry in entries
    ]
    for thread in threads:
        thread.start()
    if not stream:
        for thread in threads:
            thread.join()
    else:
        for entry in entries:
            entry.first.wait(timeout=2.0)  # as docker: a container that sends nothing shows "--"
    if not show_all:
        errors = [entry.error for entry in entries if entry.error]
        if errors:
            raise CommandError("\n".join(errors))
    tty = sys.stdout.isatty()
    while True:
        if stream and tty:
            sys.stdout.write("\033[2J\033[H")
        # Without -a, docker drops a container from the table when it stops.
        visible = [entry for entry in entries if not (show_all and not opts.all and stream and entry.stopped)]
        output_rows(opts.format, STATS_DEFAULT, STATS_HEADER, [entry.row(opts.no_trunc) for entry in visible])
        sys.stdout.flush()
        if not stream or (not show_all and all(entry.done for entry in entries)):
            return 0
        time.sleep(0.5)


# -- update -----------------------------------------------------------------------------------


def _restart_policy(value: str) -> dict[str, Any]:
    """docker's ``ParseRestartPolicy``."""
    name, sep, count = value.partition(":")
    if sep and not name:
        raise CommandError("invalid restart policy format: no policy provided before colon", 125)
    if name not in ("no", "always", "on-failure", "unless-stopped"):
        raise CommandError(f"invalid restart policy '{value}'", 125)
    retries = 0
    if count:
        if name != "on-failure":
            raise CommandError(
                "invalid restart policy: maximum retry count can only be used with 'on-failure'", 125
            )
        try:
            retries = int(count)
        except ValueError:
            raise CommandError(
                f"invalid restart policy format: maximum retry count must be an integer: {count}"
            ) from None
    return {"Name": name, "MaximumRetryCount": retries}


def _size_flag(value: str | None, flag: str, allow_unlimited: bool = False) -> int | None:
    if value is None:
        return None
    if allow_unlimited and value == "-1":
        return -1
    try:
        return parse_size(value)
    except ValueError as error:
        raise CommandError(f'invalid argument "{value}" for "{flag}" flag: {error}', 125) from None


def update(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(
        prog, f"{prog} [OPTIONS] CONTAINER [CONTAINER...]", "Update configuration of one or more containers"
    )
    p.add_argument("containers", nargs="+")
    p.add_argument("--blkio-weight", type=int)
    p.add_argument("--cpu-period", type=int)
    p.add_argument("--cpu-quota", type=int)
    p.add_argument("--cpu-rt-period", type=int)
    p.add_argument("--cpu-rt-runtime", type=int)
    p.add_argument("-c", "--cpu-shares", type=int)
    p.add_argument("--cpus")
    p.add_argument("--cpuset-cpus")
    p.add_argument("--cpuset-mems")
    p.add_argument("-m", "--memory")
    p.add_argument("--memory-reservation")
    p.add_argument("--memory-swap")
    p.add_argument("--pids-limit", type=int)
    p.add_argument("--restart")
    opts = p.parse_args(args)
    body: dict[str, Any] = {}
    for key, value in (
        ("BlkioWeight", opts.blkio_weight),
        ("CpuPeriod", opts.cpu_period),
        ("CpuQuota", opts.cpu_quota),
        ("CpuRealtimePeriod", opts.cpu_rt_period),
        ("CpuRealtimeRuntime", opts.cpu_rt_runtime),
        ("CpuShares", opts.cpu_shares),
        ("CpusetCpus", opts.cpuset_cpus),
        ("CpusetMems", opts.cpuset_mems),
        ("Memory", _size_flag(opts.memory, "--memory")),
        ("MemoryReservation", _size_flag(opts.memory_reservation, "--memory-reservation")),
        ("MemorySwap", _size_flag(opts.memory_swap, "--memory-swap", allow_unlimited=True)),
    ):
        if value is not None:
            body[key] = value
    if opts.cpus is not None:
        try:
            body["NanoCpus"] = round(float(opts.cpus) * 1e9)
        except ValueError:
            raise CommandError(f'invalid argument "{opts.cpus}" for "--cpus" flag', 125) from None
    if opts.pids_limit:
        body["PidsLimit"] = opts.pids_limit
    if opts.restart:
        body["RestartPolicy"] = _restart_policy(opts.restart)
    if not body and opts.pids_limit is None and opts.restart is None:
        raise CommandError("you must provide one or more flags when using this command")
    warnings: list[str] = []

    def apply(name: str) -> None:
        result = ctx.client.json("POST", f"/containers/{name}/update", None, body) or {}
        warnings.extend(result.get("Warnings") or [])

    status = for_each(opts.containers, apply)
    if warnings:
        print("\n".join(warnings))
    return status

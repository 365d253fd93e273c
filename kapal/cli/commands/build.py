"""``kapal build``: send a context to kapald's ``/build`` and show its progress.

The context is streamed as a tar made on the fly (``.dockerignore`` applied,
owners zeroed as the docker CLI does), so nothing is staged on disk. On a
terminal the progress is a compact live view (rich, imported only then);
``--progress plain`` or a pipe prints the daemon's log as ``docker build``
does.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
import tarfile

from kapal.cli.common import CommandError, Context, parser

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, BinaryIO

_BLOCK = 512
_CHUNK = 1 << 20
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd")


class TarStream:
    """A file-like object whose reads produce a tar of *entries* (path on disk, name in the tar)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


def _header(name: str, st: os.stat_result, kind: bytes, linkname: str = "", size: int = 0) -> bytes:
    """A ustar header with owners zeroed (as the docker CLI sends a context); PAX for long names."""
    encoded = name.encode("utf-8", "surrogateescape")
    link = linkname.encode("utf-8", "surrogateescape")
    mtime = max(int(st.st_mtime), 0)
    if len(encoded) > 100 or len(link) > 100 or not encoded.isascii() or mtime >= 8**11 or size >= 8**11:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = stat.S_IMODE(st.st_mode)
        info.mtime = mtime
        info.size = size
        info.linkname = linkname
        info.uname = info.gname = ""
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    block = bytearray(512)
    block[0 : len(encoded)] = encoded
    block[100:108] = b"%07o\0" % stat.S_IMODE(st.st_mode)
    block[108:116] = block[116:124] = b"0000000\0"
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"%011o\0" % mtime
    block[148:156] = b"        "
    block[156:157] = kind
    block[157 : 157 + len(link)] = link
    block[257:265] = b"ustar\x0000"
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def context_chunks(root: str, matcher: Any, extra: list[tuple[str, bytes]]) -> Iterator[bytes]:
    """The tar of directory *root* (minus what *matcher* ignores), then *extra* (name, content) files."""
    pending: list[bytes] = []
    pending_size = 0
    stack = [("", None)]
    while stack:
        rel, parent_results = stack.pop()
        directory = os.path.join(root, rel) if rel else root
        try:
            names = sorted(os.listdir(directory))
        except OSError as error:
            raise CommandError(f"error checking context: {error}") from None
        children = []
        for name in names:
            child = f"{rel}/{name}" if rel else name
            ignored, results = (False, None)
            if matcher:
                ignored, results = matcher.matches_using_parent(child, parent_results)
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except OSError as error:
                raise CommandError(f"error checking context: {error}") from None
            if stat.S_ISDIR(st.st_mode):
                if ignored and matcher.can_skip_dir(child):
                    continue
                if not ignored:
                    pending.append(_header(child, st, tarfile.DIRTYPE))
                children.append((child, results))
                continue
            if ignored:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size >= _CHUNK:
                # a big file streams through in chunks, never whole in memory
                yield b"".join(pending)
                pending, pending_size = [], 0
                yield _header(child, st, tarfile.REGTYPE, size=st.st_size)
                yield from _file_chunks(path, child, st.st_size)
            elif stat.S_ISREG(st.st_mode):
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        data = os.read(fd, st.st_size + 1)
                    finally:
                        os.close(fd)
                except OSError as error:
                    raise CommandError(f"error checking context: can't open '{child}': {error}") from None
                if len(data) != st.st_size:
                    raise CommandError(f"error checking context: '{child}' changed while it was read")
                pending.append(_header(child, st, tarfile.REGTYPE, size=len(data)))
                pending.append(data)
                if len(data) % _BLOCK:
                    pending.append(b"\0" * (_BLOCK - len(data) % _BLOCK))
                pending_size += len(data)
            elif stat.S_ISLNK(st.st_mode):
                pending.append(_header(child, st, tarfile.SYMTYPE, os.readlink(path)))
            if pending_size >= _CHUNK or len(pending) > 4096:
                yield b"".join(pending)
                pending, pending_size = [], 0
        stack.extend(reversed(children))
    for name, data in extra:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o600
        pending.append(info.tobuf(tarfile.PAX_FORMAT))
        pending.append(data + b"\0" * (-len(data) % _BLOCK))
    pending.append(b"\0" * (_BLOCK * 2))
    yield b"".join(pending)


def _file_chunks(path: str, name: str, size: int) -> Iterator[bytes]:
    try:
        with open(path, "rb") as source:
            remaining = size
            while remaining:
                chunk = source.read(min(_CHUNK, remaining))
                if not chunk:
                    raise CommandError(f"error checking context: '{name}' changed while it was read")
                remaining -= len(chunk)
                yield chunk
    except OSError as error:
        raise CommandError(f"error checking context: can't open '{name}': {error}") from None
    if size % _BLOCK:
        yield b"\0" * (_BLOCK - size % _BLOCK)


def _single_file_tar(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    return info.tobuf(tarfile.PAX_FORMAT) + data + b"\0" * (-len(data) % _BLOCK) + b"\0" * (_BLOCK * 2)


def _is_archive(head: bytes) -> bool:
    return head.startswith(_COMPRESSED_MAGIC) or (len(head) >= 262 and head[257:262] == b"ustar")


def _parse_key_values(values: list[str], what: str, from_env: bool) -> dict[str, str | None]:
    result: dict[str, str | None] = {}
    for value in values:
        key, has_value, rest = value.partition("=")
        if not key:
            raise CommandError(f"invalid {what} {value!r}", 125)
        if has_value:
            result[key] = rest
        elif from_env:
            result[key] = os.environ.get(key)
        else:
            result[key] = ""
    return result


def build(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] PATH | URL | -", "Build an image from a Dockerfile")
    p.add_argument("context")
    p.add_argument("-t", "--tag", action="append", default=[], help="Name and optionally a tag (name:tag)")
    p.add_argument("-f", "--file", help="Name of the Dockerfile (default: PATH/Dockerfile)")
    p.add_argument("--build-arg", action="append", default=[], help="Set build-time variables")
    p.add_argument("--label", action="append", default=[], help="Set metadata for an image")
    p.add_argument("--target", default="", help="Set the target build stage to build")
    p.add_argument("--no-cache", action="store_true", help="Do not use cache when building the image")
    p.add_argument("--pull", action="store_true", help="Always attempt to pull a newer version of the image")
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress the build output and print image ID")
    p.add_argument("--iidfile", help="Write the image ID to the file")
    p.add_argument("--progress", default="auto", choices=["auto", "plain", "tty", "quiet"])
    p.add_argument("--network", default="", help="Set the networking mode for the RUN instructions")
    p.add_argument("--platform", default="", help="Set platform if server is multi-platform capable")
    p.add_argument("--cache-from", action="append", default=[], help="Images to consider as cache sources")
    p.add_argument("--rm", default="true", help="Remove intermediate containers after a successful build")
    p.add_argument("--force-rm", action="store_true", help="Always remove intermediate containers")
    p.add_argument(
        "--secret",
        action="append",
        default=[],
        help='Secret to expose to RUN --mount=type=secret ("id=mysecret[,src=/local/secret|,env=VAR]")',
    )
    opts = p.parse_args(args)
    query: list[tuple[str, Any]] = [("t", tag) for tag in opts.tag]
    build_args = _parse_key_values(opts.build_arg, "build-arg", from_env=True)
    if "SOURCE_DATE_EPOCH" not in build_args and os.environ.get("SOURCE_DATE_EPOCH"):
        build_args["SOURCE_DATE_EPOCH"] = os.environ["SOURCE_DATE_EPOCH"]
    if build_args:
        query.append(("buildargs", build_args))
    if opts.label:
        query.append(("labels", _parse_key_values(opts.label, "label", from_env=False)))
    for key, value in (
        ("target", opts.target),
        ("networkmode", opts.network),
        ("platform", opts.platform),
    ):
        if value:
            query.append((key, value))
    if opts.cache_from:
        query.append(("cachefrom", opts.cache_from))
    query += [("nocache", opts.no_cache), ("pull", opts.pull), ("q", opts.quiet)]
    query += [("rm", opts.rm.lower() != "false"), ("forcerm", opts.force_rm)]
    body, dockerfile_name = _context_body(opts)
    if dockerfile_name:
        query.append(("dockerfile", dockerfile_name))
    headers = {"X-Kapal-Build-Secrets": _secrets_header(opts.secret)} if opts.secret else {}
    registry_config = _registry_config()
    if registry_config:
        headers["X-Registry-Config"] = registry_config
    messages = ctx.client.stream("POST", "/build", query, body=body, headers=headers)
    mode = opts.progress
    if opts.quiet or mode == "quiet":
        image_id = _quiet(messages)
    elif mode == "plain" or (mode == "auto" and not sys.stdout.isatty()):
        image_id = _plain(messages)
    else:
        image_id = _live(messages)
    if opts.quiet:
        print(image_id)
    if opts.iidfile:
        with open(opts.iidfile, "w") as out:
            out.write(image_id)
    return 0


def _registry_config() -> str:
    """Every login of ``config.json`` for the images FROM may pull, as the docker CLI sends them
    in ``X-Registry-Config`` (the builder picks the one of each base image's registry)."""
    import base64
    import json

    from kapal.distribution.credentials import ConfigFile
    from kapal.errors import InvalidArgument

    try:
        config = ConfigFile()
    except InvalidArgument as error:
        raise CommandError(str(error)) from None
    document: dict[str, dict[str, str]] = {}
    for key in [*(config.data.get("auths") or {}), *(config.data.get("credHelpers") or {})]:
        credentials = config.get(key)
        if credentials.anonymous:
            continue
        entry = {"username": credentials.username, "password": credentials.password}
        if credentials.identity_token:
            entry = {"identitytoken": credentials.identity_token}
        document[key] = {**entry, "serveraddress": credentials.server_address}
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode() if document else ""


def _secrets_header(specs: list[str]) -> str:
    """``--secret id=…,src=…|env=…`` as the header kapald reads them from (base64 JSON, values base64)."""
    import base64
    import json

    secrets_: dict[str, str] = {}
    for spec in specs:
        fields = dict(part.partition("=")[::2] for part in spec.split(",") if part)
        secret_id = fields.get("id") or ""
        source = fields.get("src") or fields.get("source")
        if fields.get("env"):
            value = os.environ.get(fields["env"])
            if value is None:
                raise CommandError(f"secret {secret_id}: environment variable {fields['env']} is not set", 1)
            data = value.encode()
        else:
            path = source or secret_id
            try:
                with open(os.path.expanduser(path), "rb") as source_file:
                    data = source_file.read()
            except OSError as error:
                raise CommandError(f"secret {secret_id}: {error}", 1) from None
        if not secret_id:
            secret_id = os.path.basename(source or "")
        if not secret_id:
            raise CommandError(f"invalid secret {spec!r}: an id is required", 125)
        secrets_[secret_id] = base64.b64encode(data).decode()
    header = base64.b64encode(json.dumps(secrets_).encode()).decode()
    if len(header) > 7000:
        raise CommandError("secrets are too large to send (at most about 5 kB in all)", 1)
    return header


def _context_body(opts: Any) -> tuple[BinaryIO | TarStream, str]:
    """The request body and the ``dockerfile`` query value."""
    if opts.context == "-":
        if opts.file == "-":
            raise CommandError("invalid argument: can't use stdin for both build context and dockerfile", 125)
        stdin = sys.stdin.buffer
        head = stdin.peek(512)[:512] if hasattr(stdin, "peek") else b""
        if _is_archive(head):
            return stdin, opts.file or ""
        data = stdin.read()
        return TarStream(iter([_single_file_tar("Dockerfile", data)])), "Dockerfile"
    if "://" in opts.context or opts.context.startswith("git@"):
        raise CommandError("building from a URL is not supported: clone it and build the directory", 125)
    root = opts.context
    if not os.path.isdir(root):
        if os.path.isfile(root):
            raise CommandError(f"unable to prepare context: path {root!r} is not a directory", 1)
        raise CommandError(f"unable to prepare context: path {root!r} not found", 1)
    from kapal.build.dockerignore import (
        IgnoreMatcher,
        ignore_file_for,
        keep_build_files,
        read_ignore_patterns,
    )

    extra: list[tuple[str, bytes]] = []
    if opts.file == "-":
        name = f".dockerfile.{secrets.token_hex(10)}"
        extra.append((name, sys.stdin.buffer.read()))
        dockerfile_path = None
    elif opts.file:
        dockerfile_path = os.path.abspath(opts.file)
        if not os.path.exists(dockerfile_path):
            raise CommandError(f"unable to prepare context: the Dockerfile ({opts.file}) cannot be empty", 1)
        rel = os.path.relpath(dockerfile_path, os.path.abspath(root))
        if rel.startswith(".."):
            name = f".dockerfile.{secrets.token_hex(10)}"
            with open(dockerfile_path, "rb") as source:
                extra.append((name, source.read()))
        else:
            name = rel.replace(os.sep, "/")
    else:
        dockerfile_path = os.path.join(root, "Dockerfile")
        name = "Dockerfile"
        if not os.path.exists(dockerfile_path):
            if os.path.exists(os.path.join(root, "dockerfile")):
                name = "dockerfile"
            else:
                raise CommandError(
                    f"unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat "
                    f"{os.path.abspath(dockerfile_path)}: no such file or directory",
                    1,
                )
    ignore_path = ignore_file_for(root, dockerfile_path)
    matcher = None
    if ignore_path is not None:
        with open(ignore_path, "rb") as source:
            patterns = read_ignore_patterns(source.read())
        if patterns:
            matcher = IgnoreMatcher(keep_build_files(patterns, name))
    return TarStream(context_chunks(root, matcher, extra)), name


def _error(message: dict[str, Any]) -> None:
    detail = message.get("errorDetail") or {}
    code = detail.get("code")
    # as the docker CLI: a failed RUN's exit code becomes the build's
    status = code if isinstance(code, int) and 0 < code < 256 else 1
    raise CommandError(detail.get("message") or message.get("error") or "build failed", status)


def _image_id(message: dict[str, Any]) -> str | None:
    aux = message.get("aux")
    if isinstance(aux, dict) and aux.get("ID"):
        return str(aux["ID"])
    return None


def _quiet(messages: Iterator[dict[str, Any]]) -> str:
    image_id = ""
    for message in messages:
        if "error" in message or "errorDetail" in message:
            _error(message)
        image_id = _image_id(message) or image_id
    return image_id


def _plain(messages: Iterator[dict[str, Any]]) -> str:
    image_id = ""
    out = sys.stdout
    for message in messages:
        if "error" in message or "errorDetail" in message:
            out.flush()
            _error(message)
        image_id = _image_id(message) or image_id
        text = message.get("stream")
        if text:
            out.write(text)
            out.flush()
        elif "status" in message:  # pulling a base image
            from kapal.cli.commands.registry import status_line

            line = status_line(message)
            if line is not None:
                out.write(line + "\n")
                out.flush()
    return image_id


def _live(messages: Iterator[dict[str, Any]]) -> str:
    """A compact view: the current step and the last lines of its output, redrawn in place."""
    from rich.console import Console, Group
    from rich.live import Live
    from rich.text import Text

    console = Console()
    image_id = ""
    done: list[str] = []
    current = ""
    tail: list[str] = []
    partial = ""

    def view() -> Group:
        lines = [Text(f"✔ {step}", style="green") for step in done[-6:]]
        if current:
            lines.append(Text(f"▶ {current}", style="bold"))
            lines += [Text(f"    {line}", style="dim") for line in tail[-5:]]
        return Group(*lines)

    with Live(view(), console=console, refresh_per_second=12, transient=False) as live:
        for message in messages:
            if "error" in message or "errorDetail" in message:
                live.update(view())
                live.stop()
                if tail:
                    console.print("\n".join(tail[-20:]), markup=False, highlight=False)
                _error(message)
            image_id = _image_id(message) or image_id
            text = message.get("stream") or ""
            partial += text
            *complete, partial = partial.split("\n")
            for line in complete:
                if line.startswith("Step ") and " : " in line:
                    if current:
                        done.append(current)
                    current, tail = line, []
                elif line.startswith(" ---> Using cache"):
                    current += "  (cached)"
                elif line.startswith(" ---> "):
                    continue
                elif line.startswith(("Successfully built", "Successfully tagged")):
                    if current:
                        done.append(current)
                        current = ""
                    done.append(line)
                elif line:
                    tail.append(line)
            live.update(view())
    return image_id

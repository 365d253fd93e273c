"""The build context reader: tar dialects in, an index and a spool out, checksums that ignore mtimes."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kapal.build.context import DIR, FILE, SYMLINK, BuildContext
from kapal.build.dockerignore import IgnoreMatcher
from kapal.errors import InvalidArgument


def make_tar(members: list[tuple[str, bytes | None, dict]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w", format=fmt) as tar:
        for name, data, extra in members:
            info = tarfile.TarInfo(name)
            for key, value in extra.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return body.getvalue()


def receive(data: bytes, scratch: Path) -> BuildContext:
    directory = scratch / f"ctx-{len(os.listdir(scratch))}"
    directory.mkdir()
    return BuildContext.receive(io.BytesIO(data), directory)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_dialects_and_entry_kinds(scratch: Path, fmt: int) -> None:
    long_name = "deep/" + "d" * 60 + "/" + "f" * 60 + ".txt"
    data = make_tar(
        [
            ("./dir/", None, {"type": tarfile.DIRTYPE, "mode": 0o750}),
            ("dir/a.txt", b"alpha\n", {"mode": 0o640, "uid": 1000, "mtime": 1234}),
            (long_name, b"long\n", {}),
            ("link", None, {"type": tarfile.SYMTYPE, "linkname": "dir/a.txt"}),
            ("hard", None, {"type": tarfile.LNKTYPE, "linkname": "dir/a.txt"}),
        ],
        fmt,
    )
    context = receive(data, scratch)
    assert context.entries["dir"].kind == DIR and context.entries["dir"].mode == 0o750
    entry = context.entries["dir/a.txt"]
    assert (entry.kind, entry.mode, entry.uid, entry.mtime) == (FILE, 0o640, 1000, 1234)
    assert context.read_file("dir/a.txt") == b"alpha\n"
    assert context.read_file(long_name) == b"long\n"
    assert context.entries["deep"].kind == DIR  # implied by the long name's path
    assert context.entries["link"].kind == SYMLINK and context.entries["link"].linkname == "dir/a.txt"
    assert context.read_file("hard") == b"alpha\n"
    context.close()


def test_compressed_context_and_errors(scratch: Path) -> None:
    plain = make_tar([("Dockerfile", b"FROM scratch\n", {})])
    context = receive(gzip.compress(plain), scratch)
    assert context.read_file("Dockerfile") == b"FROM scratch\n"
    context.close()
    assert receive(b"", scratch).entries.keys() == {""}
    with pytest.raises(InvalidArgument, match="not a valid tar"):
        receive(plain[:700], scratch)
    corrupt = bytearray(plain)
    corrupt[10] ^= 0xFF
    with pytest.raises(InvalidArgument, match="checksum"):
        receive(bytes(corrupt), scratch)


def test_checksums_ignore_mtime_and_owner_not_mode_or_content(scratch: Path) -> None:
    def checksum(**changes: object) -> str:
        extra = {"mode": 0o644, "mtime": 1, "uid": 0}
        extra.update(changes)
        content = changes.pop("content", b"x")  # type: ignore[arg-type]
        extra.pop("content", None)
        context = receive(
            make_tar([("d/", None, {"type": tarfile.DIRTYPE}), ("d/f", content, extra)]), scratch
        )
        try:
            return context.checksum("d")
        finally:
            context.close()

    base = checksum()
    assert checksum(mtime=999) == base
    assert checksum(uid=1000, gid=5) == base
    assert checksum(mode=0o600) != base
    assert checksum(content=b"y") != base


def test_dockerignore_keeps_directories_an_exception_needs(scratch: Path) -> None:
    data = make_tar([(name, b"", {}) for name in ("a.log", "keep/b.log", "keep/c.txt", "junk/x", "ok.txt")])
    context = receive(data, scratch)
    context.exclude(IgnoreMatcher(["*.log", "keep", "!keep/c.txt", "junk"]).matches)
    assert sorted(name for name in context.entries if name) == ["keep", "keep/c.txt", "ok.txt"]
    context.close()


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as directory:
        try:
            BuildContext.receive(io.BytesIO(data), Path(directory)).close()
        except InvalidArgument:
            pass

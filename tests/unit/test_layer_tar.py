"""apply_layer / write_layer: what a layer becomes on disk, and what it may never touch.

Runs as root on tmpfs: devices, ownership and trusted.* xattrs are real here.
Every hostile layer is applied into ``sandbox/outer/layer`` next to canaries,
and the whole sandbox (ctime included, so even a same-value chmod shows) must
be unchanged afterwards.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kapal.errors import InvalidArgument, StorageError
from kapal.image import layer_tar
from kapal.image.compression import Compression, compress_writer, open_decompressed
from kapal.image.layer_tar import LayerStats, apply_layer, write_layer

MTIME = 1_600_000_000


@pytest.fixture
def shm_path() -> Iterator[Path]:
    """Like tmp_path, but on tmpfs: trusted.* xattrs and speed need it."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = Path(tempfile.mkdtemp(prefix="kapal-test-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def dest(shm_path: Path) -> Path:
    path = shm_path / "layer"
    path.mkdir()
    return path


class NonSeekable:
    """A stream with nothing but read(), like an HTTP body; counts what was consumed."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.consumed = 0

    def read(self, n: int = -1) -> bytes:
        chunk = self._data.read(n)
        self.consumed += len(chunk)
        return chunk


class TarBuilder:
    """Builds layer tars in memory, including the kinds of entries real tools write."""

    def __init__(self, **tar_options: Any) -> None:
        self._buffer = io.BytesIO()
        tar_options.setdefault("format", tarfile.PAX_FORMAT)
        self._tar = tarfile.open(fileobj=self._buffer, mode="w", **tar_options)  # noqa: SIM115 (bytes() closes)

    def _info(
        self,
        name: str,
        kind: bytes,
        mode: int,
        uid: int = 0,
        gid: int = 0,
        mtime: float = MTIME,
        xattrs: dict[str, bytes] | None = None,
        pax: dict[str, str] | None = None,
    ) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.uname = info.gname = ""
        info.mtime = mtime
        headers = dict(pax or {})
        for key, value in (xattrs or {}).items():
            headers[f"SCHILY.xattr.{key}"] = value.decode("utf-8", "surrogateescape")
        info.pax_headers = headers
        return info

    def file(self, name: str, data: bytes = b"", mode: int = 0o644, **kw: Any) -> TarBuilder:
        info = self._info(name, tarfile.REGTYPE, mode, **kw)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))
        return self

    def dir(self, name: str, mode: int = 0o755, **kw: Any) -> TarBuilder:
        self._tar.addfile(self._info(name, tarfile.DIRTYPE, mode, **kw))
        return self

    def symlink(self, name: str, target: str, **kw: Any) -> TarBuilder:
        info = self._info(name, tarfile.SYMTYPE, 0o777, **kw)
        info.linkname = target
        self._tar.addfile(info)
        return self

    def hardlink(self, name: str, target: str, mode: int = 0o644, **kw: Any) -> TarBuilder:
        info = self._info(name, tarfile.LNKTYPE, mode, **kw)
        info.linkname = target
        self._tar.addfile(info)
        return self

    def device(
        self, name: str, kind: bytes, major: int, minor: int, mode: int = 0o666, **kw: Any
    ) -> TarBuilder:
        info = self._info(name, kind, mode, **kw)
        info.devmajor, info.devminor = major, minor
        self._tar.addfile(info)
        return self

    def fifo(self, name: str, mode: int = 0o644, **kw: Any) -> TarBuilder:
        self._tar.addfile(self._info(name, tarfile.FIFOTYPE, mode, **kw))
        return self

    def whiteout(self, name: str) -> TarBuilder:
        """``name`` deleted, spelled the way image layers spell it."""
        parent, _, base = name.rpartition("/")
        return self.file(f"{parent}/.wh.{base}" if parent else f".wh.{base}", mode=0o600)

    def opaque(self, directory: str) -> TarBuilder:
        return self.file(f"{directory}/.wh..wh..opq" if directory else ".wh..wh..opq", mode=0o600)

    def entry(self, info: tarfile.TarInfo, data: bytes | None = None) -> TarBuilder:
        self._tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return self

    def bytes(self) -> bytes:
        self._tar.close()
        return self._buffer.getvalue()


def apply(data: bytes, dest: Path) -> LayerStats:
    return apply_layer(NonSeekable(data), dest)  # type: ignore[arg-type]


def xattrs_of(path: Path) -> dict[str, bytes]:
    names = os.listxattr(path, follow_symlinks=False)
    return {name: os.getxattr(path, name, follow_symlinks=False) for name in sorted(names)}


def snapshot(root: Path, *, skip: Path | None = None, times: bool = True) -> dict[str, tuple[Any, ...]]:
    """Everything observable about a tree, keyed by relative path."""
    result: dict[str, tuple[Any, ...]] = {}
    paths = [root]
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if skip is None or Path(directory, d) != skip]
        paths.extend(Path(directory, name) for name in sorted(dirnames + filenames))
    for path in paths:
        st = os.lstat(path)
        content: Any = None
        if stat.S_ISREG(st.st_mode):
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            content = os.readlink(path)
        fields: tuple[Any, ...] = (
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_size,
            st.st_rdev,
            st.st_nlink,
            content,
            xattrs_of(path),
        )
        if times:
            fields += (st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        result[str(path.relative_to(root))] = fields
    return result


# ---------------------------------------------------------------------------
# What each kind of entry becomes


def test_regular_file_keeps_owner_mode_mtime_and_xattrs(dest: Path) -> None:
    binary = b"\x01\x00\xff\xfe-not-utf8"
    layer = (
        TarBuilder()
        .file(
            "bin/tool",
            b"#!/bin/sh\necho hi\n",
            mode=0o4755,
            uid=1234,
            gid=5678,
            xattrs={"user.comment": b"hello", "trusted.blob": binary},
            pax={"mtime": "1600000000.123456789"},
        )
        .bytes()
    )
    stats = apply(layer, dest)
    st = os.lstat(dest / "bin/tool")
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o4755  # setuid survives the chown
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert st.st_mtime_ns == 1_600_000_000_123_456_789
    assert (dest / "bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert xattrs_of(dest / "bin/tool") == {"trusted.blob": binary, "user.comment": b"hello"}
    assert stats == LayerStats(size=18, entries=1)


def test_setgid_and_sticky_bits_are_kept(dest: Path) -> None:
    apply(TarBuilder().dir("tmp", mode=0o1777).file("sgid", b"x", mode=0o2711, gid=50).bytes(), dest)
    assert stat.S_IMODE(os.lstat(dest / "tmp").st_mode) == 0o1777
    st = os.lstat(dest / "sgid")
    assert stat.S_IMODE(st.st_mode) == 0o2711 and st.st_gid == 50


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_root_owned_entries_get_exact_modes_whatever_the_umask(dest: Path, umask: int) -> None:
    """Entries whose header matches what creation gives skip chown/chmod: the result is the same."""
    layer = TarBuilder().dir("d").file("d/f", b"x").file("d/x", b"y", mode=0o755).file("d/w", mode=0o666)
    old = os.umask(umask)
    try:
        apply(layer.dir("d/e", mode=0o700).symlink("d/l", "f").bytes(), dest)
    finally:
        os.umask(old)
    assert owner_and_mode(dest / "d") == (0, 0, 0o755)
    assert owner_and_mode(dest / "d/f") == (0, 0, 0o644)
    assert owner_and_mode(dest / "d/x") == (0, 0, 0o755)
    assert owner_and_mode(dest / "d/w") == (0, 0, 0o666)
    assert owner_and_mode(dest / "d/e") == (0, 0, 0o700)
    assert os.lstat(dest / "d/l").st_uid == 0 and os.lstat(dest / "d/l").st_gid == 0


def test_children_of_a_setgid_directory_keep_their_own_group(dest: Path) -> None:
    """A setgid directory hands its group (and to directories its bit) to new children: undo it."""
    layer = TarBuilder().dir("shared", mode=0o2775, gid=50).file("shared/f", b"x").dir("shared/sub")
    apply(layer.symlink("shared/l", "f").file("shared/sub/g", b"y").bytes(), dest)
    assert owner_and_mode(dest / "shared") == (0, 50, 0o2775)
    assert owner_and_mode(dest / "shared/f") == (0, 0, 0o644)
    assert owner_and_mode(dest / "shared/sub") == (0, 0, 0o755)
    assert os.lstat(dest / "shared/l").st_gid == 0
    assert owner_and_mode(dest / "shared/sub/g") == (0, 0, 0o644)


def test_a_setgid_destination_does_not_leak_its_group(dest: Path) -> None:
    os.chown(dest, 0, 60)
    os.chmod(dest, 0o2755)
    apply(TarBuilder().file("f", b"x").dir("d").bytes(), dest)
    assert owner_and_mode(dest / "f") == (0, 0, 0o644)
    assert owner_and_mode(dest / "d") == (0, 0, 0o755)


def test_a_default_acl_does_not_decide_modes(dest: Path) -> None:
    # A default ACL u::rwx,g::---,o::--- would make new files 0600 whatever the header says.
    import struct

    acl = struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, perm, 0xFFFFFFFF) for tag, perm in ((0x01, 7), (0x04, 0), (0x20, 0))
    )
    layer = TarBuilder().dir("acl", xattrs={"system.posix_acl_default": acl}).file("acl/f", b"x")
    try:
        apply(layer.dir("acl/d").bytes(), dest)
    except StorageError:
        pytest.skip("no POSIX ACLs on this filesystem")
    if "system.posix_acl_default" not in os.listxattr(dest / "acl"):
        pytest.skip("no POSIX ACLs on this filesystem")
    assert owner_and_mode(dest / "acl/f") == (0, 0, 0o644)
    assert owner_and_mode(dest / "acl/d") == (0, 0, 0o755)


def test_names_are_never_resolved_to_users(dest: Path) -> None:
    info = tarfile.TarInfo("f")
    info.uid, info.gid, info.uname, info.gname = 4321, 8765, "root", "root"
    apply(TarBuilder().entry(info, b"").bytes(), dest)
    st = os.lstat(dest / "f")
    assert (st.st_uid, st.st_gid) == (4321, 8765)


def test_directory_mtime_is_set_after_its_children(dest: Path) -> None:
    layer = (
        TarBuilder()
        .dir("a", mode=0o750, uid=7, gid=8, mtime=1_000_000_000, xattrs={"user.d": b"1"})
        .dir("a/b", mtime=1_100_000_000)
        .file("a/b/c", b"data", mtime=1_200_000_000)
        .file("a/d", b"more")
        .symlink("a/e", "d")
        .bytes()
    )
    apply(layer, dest)
    st = os.lstat(dest / "a")
    assert st.st_mtime_ns == 1_000_000_000 * 10**9
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 7, 8)
    assert xattrs_of(dest / "a") == {"user.d": b"1"}
    assert os.lstat(dest / "a/b").st_mtime_ns == 1_100_000_000 * 10**9
    assert os.lstat(dest / "a/b/c").st_mtime_ns == 1_200_000_000 * 10**9


def test_symlink_may_point_anywhere_and_keeps_its_own_metadata(dest: Path) -> None:
    layer = (
        TarBuilder()
        .symlink("abs", "/etc/passwd", uid=3, gid=4, mtime=1_234_567_890, xattrs={"trusted.s": b"v"})
        .symlink("up", "../../../../etc")
        .bytes()
    )
    apply(layer, dest)
    st = os.lstat(dest / "abs")
    assert stat.S_ISLNK(st.st_mode)
    assert os.readlink(dest / "abs") == "/etc/passwd"
    assert os.readlink(dest / "up") == "../../../../etc"
    assert (st.st_uid, st.st_gid) == (3, 4)
    assert st.st_mtime_ns == 1_234_567_890 * 10**9
    assert xattrs_of(dest / "abs") == {"trusted.s": b"v"}


def test_hardlink_shares_the_inode(dest: Path) -> None:
    layer = (
        TarBuilder()
        .file("usr/bin/a", b"binary", mode=0o755, uid=9)
        .hardlink("usr/bin/b", "usr/bin/a", mode=0o755, uid=9)
        .hardlink("./c", "./usr/bin/a", mode=0o755, uid=9)
        .bytes()
    )
    stats = apply(layer, dest)
    a, b, c = (os.lstat(dest / name) for name in ("usr/bin/a", "usr/bin/b", "c"))
    assert a.st_ino == b.st_ino == c.st_ino
    assert a.st_nlink == 3
    assert stats.size == len(b"binary")
    assert stats.entries == 3


def test_hardlink_to_a_symlink_stays_a_symlink(dest: Path) -> None:
    apply(TarBuilder().symlink("s", "/nowhere").hardlink("t", "s").bytes(), dest)
    s, t = os.lstat(dest / "s"), os.lstat(dest / "t")
    assert stat.S_ISLNK(t.st_mode) and s.st_ino == t.st_ino
    assert os.readlink(dest / "t") == "/nowhere"


def test_hardlink_header_does_not_strip_the_shared_inodes_xattrs(dest: Path) -> None:
    layer = (
        TarBuilder()
        .file("f", b"x", mode=0o4755, uid=5, xattrs={"trusted.cap": b"\x01"})
        .hardlink("g", "f", mode=0o4755, uid=5)
        .bytes()
    )
    apply(layer, dest)
    st = os.lstat(dest / "g")
    assert stat.S_IMODE(st.st_mode) == 0o4755
    assert xattrs_of(dest / "g") == {"trusted.cap": b"\x01"}


def test_devices_and_fifos(dest: Path) -> None:
    layer = (
        TarBuilder()
        .device("dev/null", tarfile.CHRTYPE, 1, 3, mode=0o666, uid=2, gid=3, mtime=1_111_111_111)
        .device("dev/loop0", tarfile.BLKTYPE, 7, 0, mode=0o660, gid=6)
        .fifo("run/pipe", mode=0o620)
        .bytes()
    )
    apply(layer, dest)
    null = os.lstat(dest / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    assert (stat.S_IMODE(null.st_mode), null.st_uid, null.st_gid) == (0o666, 2, 3)
    assert null.st_mtime_ns == 1_111_111_111 * 10**9
    loop = os.lstat(dest / "dev/loop0")
    assert stat.S_ISBLK(loop.st_mode) and loop.st_rdev == os.makedev(7, 0)
    assert stat.S_IMODE(loop.st_mode) == 0o660 and loop.st_gid == 6
    pipe = os.lstat(dest / "run/pipe")
    assert stat.S_ISFIFO(pipe.st_mode) and stat.S_IMODE(pipe.st_mode) == 0o620


def test_whiteout_becomes_a_0_0_character_device(dest: Path) -> None:
    layer = (
        TarBuilder()
        .whiteout("gone")
        .dir("etc")
        .file("etc/old.conf", b"replaced by the whiteout below")
        .whiteout("etc/old.conf")
        .whiteout("deep/er/dir")
        .bytes()
    )
    stats = apply(layer, dest)
    for name in ("gone", "etc/old.conf", "deep/er/dir"):
        st = os.lstat(dest / name)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, name
    assert not (dest / ".wh.gone").exists()
    assert sorted(os.listdir(dest / "etc")) == ["old.conf"]
    assert stat.S_IMODE(os.lstat(dest / "deep").st_mode) == 0o755
    assert stats.entries == 5


def test_whiteout_replaces_a_directory_the_layer_made(dest: Path) -> None:
    apply(TarBuilder().dir("d").file("d/f", b"x").whiteout("d").bytes(), dest)
    st = os.lstat(dest / "d")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def test_opaque_marker_sets_the_overlay_xattr(dest: Path) -> None:
    layer = (
        TarBuilder()
        .dir("var/cache", mode=0o700)
        .opaque("var/cache")
        .file("var/cache/new", b"n")
        .opaque("missing/dir")
        .bytes()
    )
    apply(layer, dest)
    assert os.getxattr(dest / "var/cache", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(dest / "missing/dir", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(dest / "var/cache")) == ["new"]
    assert stat.S_IMODE(os.lstat(dest / "var/cache").st_mode) == 0o700


def test_aufs_metadata_is_ignored(dest: Path) -> None:
    layer = (
        TarBuilder()
        .dir(".wh..wh.plnk")
        .file(".wh..wh.plnk/1234.5678", b"aufs hardlink store")
        .file(".wh..wh.aufs")
        .file("sub/.wh..wh.orph", b"")
        .file("kept", b"k")
        .bytes()
    )
    stats = apply(layer, dest)
    assert sorted(os.listdir(dest)) == ["kept"]
    assert stats.entries == 1


def test_later_entries_replace_earlier_ones(dest: Path) -> None:
    layer = (
        TarBuilder()
        .file("f", b"first")
        .file("f", b"second", mode=0o600)
        .dir("d", mode=0o755)
        .file("d/child", b"c")
        .dir("d", mode=0o700, uid=11)  # directory over directory: metadata only
        .dir("t")
        .file("t/x", b"x")
        .file("t", b"now a file")  # non-directory over a directory tree
        .file("n", b"file first")
        .dir("n", mode=0o711)  # directory over a file
        .symlink("l", "/somewhere")
        .file("l", b"file over symlink")
        .bytes()
    )
    apply(layer, dest)
    assert (dest / "f").read_bytes() == b"second"
    assert stat.S_IMODE(os.lstat(dest / "f").st_mode) == 0o600
    assert (dest / "d/child").read_bytes() == b"c"
    d = os.lstat(dest / "d")
    assert (stat.S_IMODE(d.st_mode), d.st_uid) == (0o700, 11)
    assert (dest / "t").read_bytes() == b"now a file"
    n = os.lstat(dest / "n")
    assert stat.S_ISDIR(n.st_mode) and stat.S_IMODE(n.st_mode) == 0o711
    assert stat.S_ISREG(os.lstat(dest / "l").st_mode)


def test_an_entry_may_replace_a_path_after_its_tree_was_replaced(dest: Path) -> None:
    layer = TarBuilder().dir("a").dir("a/b").file("a/b/c").file("a", b"f").dir("a").file("a/b/c", b"new")
    apply(layer.bytes(), dest)
    assert (dest / "a/b/c").read_bytes() == b"new"


def test_missing_parents_are_created_root_owned_0755(dest: Path) -> None:
    old = os.umask(0o077)
    try:
        apply(TarBuilder().file("a/b/c.txt", b"x", uid=5).bytes(), dest)
    finally:
        os.umask(old)
    for name in ("a", "a/b"):
        st = os.lstat(dest / name)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
        assert (st.st_uid, st.st_gid) == (0, 0)
    assert os.lstat(dest / "a/b/c.txt").st_uid == 5


def test_dot_slash_prefix_and_root_entry(dest: Path) -> None:
    layer = (
        TarBuilder()
        .dir("./", mode=0o751, uid=1, gid=2, mtime=1_000_000_001)
        .dir("./etc/", mode=0o755)
        .file("./etc/hosts", b"127.0.0.1 localhost\n")
        .file(".//etc//./motd", b"hi")
        .bytes()
    )
    apply(layer, dest)
    assert (dest / "etc/hosts").read_bytes() == b"127.0.0.1 localhost\n"
    assert (dest / "etc/motd").read_bytes() == b"hi"
    st = os.lstat(dest)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o751, 1, 2)
    assert st.st_mtime_ns == 1_000_000_001 * 10**9


def test_large_file_and_stream_drained_to_the_end(dest: Path) -> None:
    big = os.urandom(3 << 20) + b"tail"
    data = TarBuilder().file("big", big).file("small", b"s").bytes() + b"\0" * 4096
    stream = NonSeekable(data)
    stats = apply_layer(stream, dest)  # type: ignore[arg-type]
    assert (dest / "big").read_bytes() == big
    assert stream.consumed == len(data)
    assert stats.size == len(big) + 1


def test_through_a_decompressing_stream_the_digest_covers_everything(dest: Path) -> None:
    data = TarBuilder().file("big", os.urandom(2 << 20)).dir("d").file("d/x", b"x").bytes()
    blob = io.BytesIO()
    with compress_writer(blob, Compression.GZIP) as writer:
        writer.write(data)
    stream, compression = open_decompressed(NonSeekable(blob.getvalue()))  # type: ignore[arg-type]
    assert compression is Compression.GZIP

    class Hashing:
        def __init__(self) -> None:
            self.hash = hashlib.sha256()

        def read(self, n: int = -1) -> bytes:
            chunk = stream.read(n)
            self.hash.update(chunk)
            return chunk

    hashing = Hashing()
    apply_layer(hashing, dest)  # type: ignore[arg-type]
    assert hashing.hash.hexdigest() == hashlib.sha256(data).hexdigest()
    assert (dest / "d/x").read_bytes() == b"x"


def test_empty_streams_are_empty_layers(dest: Path, shm_path: Path) -> None:
    assert apply(b"", dest) == LayerStats(size=0, entries=0)
    other = shm_path / "zeros"
    other.mkdir()
    assert apply(b"\0" * 1024, other) == LayerStats(size=0, entries=0)
    assert os.listdir(dest) == [] and os.listdir(other) == []


def test_pax_global_headers_are_ignored(dest: Path) -> None:
    layer = TarBuilder(pax_headers={"comment": "git archive", "path": "hijacked", "uid": "99"})
    layer.file("real", b"r", uid=1, xattrs={"user.x": b"1"}).file("plain", b"p")
    apply(layer.bytes(), dest)
    assert sorted(os.listdir(dest)) == ["plain", "real"]
    assert os.lstat(dest / "plain").st_uid == 0
    assert os.lstat(dest / "real").st_uid == 1


def test_a_gnu_tar_layer(dest: Path, shm_path: Path) -> None:
    """A layer written by GNU tar (long names, ustar/gnu headers), if tar is installed."""
    tar = shutil.which("tar")
    if tar is None:
        pytest.skip("no tar")
    src = shm_path / "src"
    (src / ("long" * 40)).mkdir(parents=True)
    (src / ("long" * 40) / "file").write_bytes(b"deep")
    os.symlink("long" * 40, src / "link")
    data = subprocess.run(
        [tar, "-C", str(src), "--numeric-owner", "-cf", "-", "."], check=True, capture_output=True
    ).stdout
    apply(data, dest)
    assert (dest / ("long" * 40) / "file").read_bytes() == b"deep"
    assert os.readlink(dest / "link") == "long" * 40


# ---------------------------------------------------------------------------
# Hostile layers: refused, and nothing outside dest changes


@pytest.fixture
def sandbox(shm_path: Path) -> Path:
    """shm/sandbox/outer/layer is dest; canaries sit beside it and above it."""
    root = shm_path / "sandbox"
    (root / "outer" / "layer").mkdir(parents=True)
    (root / "canary.txt").write_bytes(b"top canary")
    (root / "outer" / "canary.txt").write_bytes(b"outer canary")
    (root / "canary_dir").mkdir()
    (root / "canary_dir" / "inner").write_bytes(b"inner canary")
    os.chmod(root / "canary_dir", 0o755)
    return root


def assert_refused(sandbox: Path, layer: bytes, message: str) -> None:
    dest = sandbox / "outer" / "layer"
    before = snapshot(sandbox, skip=dest)
    with pytest.raises(InvalidArgument) as caught:
        apply(layer, dest)
    assert message in str(caught.value)
    assert snapshot(sandbox, skip=dest) == before


def test_refuses_dotdot(sandbox: Path) -> None:
    assert_refused(
        sandbox,
        TarBuilder().file("../canary.txt", b"pwned").bytes(),
        'invalid layer: entry "../canary.txt" escapes the layer',
    )


def test_refuses_dotdot_in_the_middle(sandbox: Path) -> None:
    assert_refused(
        sandbox,
        TarBuilder().dir("a").file("a/../../canary.txt", b"pwned").bytes(),
        'entry "a/../../canary.txt" escapes the layer',
    )


def test_refuses_absolute_names(sandbox: Path) -> None:
    target = str(sandbox / "outer" / "canary.txt")
    assert_refused(
        sandbox, TarBuilder().file(target, b"pwned").bytes(), f'entry "{target}" is an absolute path'
    )


def test_refuses_writing_through_a_symlink_to_an_absolute_path(sandbox: Path) -> None:
    layer = TarBuilder().symlink("evil", str(sandbox / "canary_dir")).file("evil/inner", b"pwned").bytes()
    assert_refused(sandbox, layer, 'entry "evil/inner" would be written through symlink "evil"')


def test_refuses_writing_through_a_symlink_to_dotdot(sandbox: Path) -> None:
    layer = TarBuilder().symlink("evil", "../..").file("evil/canary.txt", b"pwned").bytes()
    assert_refused(sandbox, layer, 'entry "evil/canary.txt" would be written through symlink "evil"')


def test_refuses_writing_through_an_in_layer_symlink(sandbox: Path) -> None:
    layer = TarBuilder().dir("usr/lib").symlink("lib", "usr/lib").file("lib/libc.so", b"x").bytes()
    assert_refused(sandbox, layer, 'entry "lib/libc.so" would be written through symlink "lib"')


def test_refuses_a_directory_through_a_nested_symlink(sandbox: Path) -> None:
    layer = TarBuilder().dir("a").symlink("a/b", "/").dir("a/b/c/d").bytes()
    assert_refused(sandbox, layer, 'entry "a/b/c/d" would be written through symlink "a/b"')


def test_refuses_writing_under_a_file(sandbox: Path) -> None:
    layer = TarBuilder().file("f", b"x").file("f/g", b"y").bytes()
    assert_refused(sandbox, layer, 'entry "f/g" would be written under non-directory "f"')


def test_refuses_hardlink_with_dotdot(sandbox: Path) -> None:
    layer = TarBuilder().hardlink("h", "../canary.txt").bytes()
    assert_refused(sandbox, layer, 'hardlink "h" target "../canary.txt" escapes the layer')


def test_refuses_absolute_hardlink(sandbox: Path) -> None:
    target = str(sandbox / "outer" / "canary.txt")
    layer = TarBuilder().hardlink("h", target).bytes()
    assert_refused(sandbox, layer, f'hardlink "h" target "{target}" is an absolute path')


def test_refuses_hardlink_to_a_missing_file(sandbox: Path) -> None:
    layer = TarBuilder().file("present", b"p").hardlink("h", "absent").bytes()
    assert_refused(sandbox, layer, 'hardlink "h" target "absent" does not exist in the layer')


def test_refuses_hardlink_through_a_symlink(sandbox: Path) -> None:
    layer = TarBuilder().symlink("evil", str(sandbox / "outer")).hardlink("h", "evil/canary.txt").bytes()
    assert_refused(sandbox, layer, 'hardlink "h" target "evil/canary.txt" lies through symlink "evil"')


def test_refuses_hardlink_to_a_directory(sandbox: Path) -> None:
    layer = TarBuilder().dir("d").hardlink("h", "d").bytes()
    assert_refused(sandbox, layer, 'hardlink "h" target "d" is a directory')


def test_refuses_hardlink_whose_target_the_entry_itself_removes(sandbox: Path) -> None:
    layer = TarBuilder().dir("d").file("d/f", b"x").hardlink("d", "d/f").bytes()
    assert_refused(sandbox, layer, 'hardlink "d" target "d/f" does not exist in the layer')


def test_refuses_a_device_through_a_symlink(sandbox: Path) -> None:
    layer = (
        TarBuilder()
        .symlink("evil", str(sandbox / "canary_dir"))
        .device("evil/sda", tarfile.BLKTYPE, 8, 0)
        .bytes()
    )
    assert_refused(sandbox, layer, 'entry "evil/sda" would be written through symlink "evil"')


def test_refuses_a_whiteout_through_a_symlink(sandbox: Path) -> None:
    layer = TarBuilder().symlink("evil", str(sandbox / "canary_dir")).whiteout("evil/inner").bytes()
    assert_refused(sandbox, layer, 'entry "evil/.wh.inner" would be written through symlink "evil"')


def test_refuses_an_opaque_marker_through_a_symlink(sandbox: Path) -> None:
    layer = TarBuilder().symlink("evil", str(sandbox / "canary_dir")).opaque("evil").bytes()
    assert_refused(sandbox, layer, 'entry "evil/.wh..wh..opq" would be written through symlink "evil"')


def test_refuses_a_whiteout_of_dotdot(sandbox: Path) -> None:
    assert_refused(sandbox, TarBuilder().file(".wh..", b"").bytes(), 'entry ".wh.." is not a valid whiteout')


def test_refuses_unsupported_entry_types(sandbox: Path) -> None:
    info = tarfile.TarInfo("contiguous")
    info.type = tarfile.CONTTYPE
    assert_refused(sandbox, TarBuilder().entry(info, b"").bytes(), 'entry "contiguous" has unsupported type')


def test_refuses_nul_in_names(sandbox: Path) -> None:
    layer = TarBuilder().file("safe", b"", pax={"path": "a\x00/../../canary.txt"}).bytes()
    assert_refused(sandbox, layer, "contains a NUL byte")


def test_refuses_an_empty_name(sandbox: Path) -> None:
    assert_refused(sandbox, TarBuilder().file("", b"x").bytes(), "has an empty name")


def test_ignores_overlay_xattrs_from_the_tar(sandbox: Path) -> None:
    dest = sandbox / "outer" / "layer"
    layer = (
        TarBuilder()
        .dir(
            "d",
            xattrs={
                "trusted.overlay.redirect": b"/etc",
                "trusted.overlay.opaque": b"y",
                "user.overlay.origin": b"x",
                "user.kept": b"k",
            },
        )
        .file("f", b"", xattrs={"trusted.overlay.metacopy": b""})
        .bytes()
    )
    before = snapshot(sandbox, skip=dest)
    apply(layer, dest)
    assert xattrs_of(dest / "d") == {"user.kept": b"k"}
    assert xattrs_of(dest / "f") == {}
    assert snapshot(sandbox, skip=dest) == before


def test_refuses_a_truncated_tar(sandbox: Path) -> None:
    data = TarBuilder().file("a", os.urandom(5000)).file("b", b"b").bytes()
    assert_refused(sandbox, data[:3000], 'invalid layer: entry "a" is truncated')


def test_refuses_a_tar_cut_inside_a_header(sandbox: Path) -> None:
    data = TarBuilder().file("a", b"x" * 512).file("b", b"b").bytes()
    assert_refused(sandbox, data[: 1024 + 300], "invalid layer: bad tar header")


def test_refuses_a_corrupt_header_after_the_first(sandbox: Path) -> None:
    data = bytearray(TarBuilder().file("a", b"x" * 512).file("b", b"b").bytes())
    data[1024 + 10] ^= 0xFF  # inside b's name: the checksum no longer matches
    assert_refused(sandbox, bytes(data), "invalid layer: bad tar header at offset 1024")


def test_refuses_a_corrupt_first_header(sandbox: Path) -> None:
    assert_refused(sandbox, b"not a tar at all" * 64, "invalid layer")


@pytest.fixture
def tiny_fs(shm_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, to run out of space on."""
    mountpoint = shm_path / "tiny"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint)], check=False
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_disk_full_is_a_storage_error(tiny_fs: Path) -> None:
    (tiny_fs / "layer").mkdir()
    with pytest.raises(StorageError, match="no space left on device"):
        apply(TarBuilder().file("big", b"x" * (1 << 20)).bytes(), tiny_fs / "layer")


def test_disk_full_while_small_files_are_created_in_the_pool(tiny_fs: Path) -> None:
    (tiny_fs / "layer").mkdir()
    layer = TarBuilder()
    for index in range(200):
        layer.file(f"d/f{index:03d}", b"x" * 4096)
    with pytest.raises(StorageError, match=r'no space left on device while writing layer entry "d/f\d+"'):
        apply(layer.bytes(), tiny_fs / "layer")
    # Every worker is done once apply_layer returns: the tree can be removed for good.
    shutil.rmtree(tiny_fs / "layer")
    assert os.listdir(tiny_fs) == []


def test_refuses_a_non_empty_destination(dest: Path) -> None:
    (dest / "existing").write_bytes(b"")
    with pytest.raises(StorageError, match="not empty"):
        apply(TarBuilder().file("x").bytes(), dest)


# ---------------------------------------------------------------------------
# write_layer


def make_tree(root: Path) -> None:
    """A tree with every kind of entry an overlay upper directory can hold."""
    root.mkdir()
    (root / "etc").mkdir(mode=0o755)
    (root / "etc/passwd").write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    os.chown(root / "etc/passwd", 0, 42)
    (root / "bin").mkdir()
    (root / "bin/su").write_bytes(os.urandom(70_000))
    os.chown(root / "bin/su", 0, 0)
    os.chmod(root / "bin/su", 0o4755)
    os.setxattr(root / "bin/su", "trusted.cap", b"\x00\x01\xff")
    os.setxattr(root / "bin/su", "user.note", "ünïcode".encode())
    os.link(root / "bin/su", root / "bin/su-again")
    os.symlink("/bin/su", root / "bin/abs-link")
    os.symlink("x" * 150, root / "bin/long-target")
    os.link(root / "bin/abs-link", root / "bin/linked-symlink", follow_symlinks=False)
    (root / "dev").mkdir()
    os.mknod(root / "dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "dev/sda", stat.S_IFBLK | 0o660, os.makedev(8, 0))
    os.mkfifo(root / "dev/fifo", 0o600)
    os.chown(root / "dev/fifo", 1000, 1000)
    os.mknod(root / "deleted", stat.S_IFCHR, 0)  # an overlayfs whiteout
    os.mknod(root / "etc/deleted.conf", stat.S_IFCHR, 0)
    (root / "var/cache").mkdir(parents=True)
    os.setxattr(root / "var/cache", "trusted.overlay.opaque", b"y")
    (root / "var/cache/fresh").write_bytes(b"f")
    (root / "tmp").mkdir(mode=0o1777)
    os.chmod(root / "tmp", 0o1777)
    deep = root / ("d" * 120) / ("e" * 120)
    deep.mkdir(parents=True)
    (deep / "file").write_bytes(b"deep")
    os.mkdir(os.fsencode(root) + b"/caf\xe9")  # not UTF-8
    (root / "日本").write_bytes(b"unicode name")
    (root / "empty").write_bytes(b"")
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        os.utime(path, ns=(MTIME * 10**9, (MTIME + len(path.parts)) * 10**9), follow_symlinks=False)
    os.utime(root, ns=(MTIME * 10**9, MTIME * 10**9))


def written(src: Path, **options: Any) -> bytes:
    out = io.BytesIO()
    write_layer(src, out, **options)
    return out.getvalue()


def test_round_trip_reproduces_the_tree(shm_path: Path) -> None:
    src = shm_path / "src"
    make_tree(src)
    data = written(src)
    dest = shm_path / "dest"
    dest.mkdir()
    apply(data, dest)

    def comparable(root: Path) -> dict[str, tuple[Any, ...]]:
        tree = snapshot(root, times=False)
        del tree["."]  # the root is no entry of the layer
        mtimes = {name: os.lstat(root / name).st_mtime_ns for name in tree}
        return {name: (*fields, mtimes[name]) for name, fields in tree.items()}

    assert comparable(dest) == comparable(src)
    assert os.lstat(dest / "bin/su").st_ino == os.lstat(dest / "bin/su-again").st_ino
    assert os.lstat(dest / "bin/abs-link").st_ino == os.lstat(dest / "bin/linked-symlink").st_ino


def test_write_layer_is_deterministic_and_docker_shaped(shm_path: Path) -> None:
    src = shm_path / "src"
    make_tree(src)
    first = written(src)
    assert written(src) == first
    with tarfile.open(
        fileobj=io.BytesIO(first), mode="r:", encoding="utf-8", errors="surrogateescape"
    ) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert not any(name.startswith(("./", "/")) for name in names)
    assert all(m.uname == "" and m.gname == "" for m in members)
    assert names.index("var/cache/.wh..wh..opq") == names.index("var/cache") + 1
    assert "deleted" not in names and ".wh.deleted" in names
    assert "etc/.wh.deleted.conf" in names
    whiteout = members[names.index(".wh.deleted")]
    assert whiteout.isreg() and whiteout.size == 0
    cache = members[names.index("var/cache")]
    assert not any(key.startswith("SCHILY.xattr.trusted.overlay.") for key in cache.pax_headers)
    su = members[names.index("bin/su")]
    assert su.pax_headers["SCHILY.xattr.trusted.cap"].encode("utf-8", "surrogateescape") == b"\x00\x01\xff"
    again = members[names.index("bin/su-again")]
    assert again.islnk() and again.linkname == "bin/su"
    # directories precede their contents; each directory's names are sorted
    assert names.index("bin") < names.index("bin/abs-link") < names.index("bin/su")
    raw_dirs = [raw for raw in first.split(b"\0") if raw.endswith(b"/")]
    assert b"etc/" in raw_dirs
    dirs = [m for m in members if m.isdir()]
    assert all(not m.name.endswith("/") for m in dirs)  # tarfile strips it on reading


def test_write_layer_clamps_to_source_date_epoch(shm_path: Path) -> None:
    src = shm_path / "src"
    make_tree(src)
    epoch = MTIME + 2
    first = written(src, source_date_epoch=epoch)
    for path in src.rglob("*"):  # everything touched later must not change the bytes
        os.utime(path, ns=(0, (MTIME + 10_000) * 10**9 + 123), follow_symlinks=False)
    second = written(src, source_date_epoch=epoch)
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:") as tar:
        assert {m.mtime for m in tar.getmembers()} == {epoch}


def test_write_layer_keeps_older_mtimes_and_truncates_to_seconds(shm_path: Path) -> None:
    src = shm_path / "src"
    src.mkdir()
    (src / "old").write_bytes(b"o")
    (src / "new").write_bytes(b"n")
    os.utime(src / "old", ns=(0, 1_000_000_000_999_999_999))
    os.utime(src / "new", ns=(0, 3_000_000_000 * 10**9))
    with tarfile.open(fileobj=io.BytesIO(written(src, source_date_epoch=2_000_000_000)), mode="r:") as tar:
        mtimes = {m.name: m.mtime for m in tar.getmembers()}
    assert mtimes == {"new": 2_000_000_000, "old": 1_000_000_000}


def test_write_layer_does_not_close_out_and_skips_sockets(shm_path: Path) -> None:
    import socket

    src = shm_path / "src"
    src.mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(src / "sock"))
        (src / "f").write_bytes(b"f")
        out = io.BytesIO()
        write_layer(src, out)
    assert not out.closed
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r:") as tar:
        assert tar.getnames() == ["f"]


def tarfile_reserialized(data: bytes) -> bytes:
    """*data* parsed and written again by tarfile itself (PAX, as write_layer always wrote)."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(data), mode="r:", encoding="utf-8", errors="surrogateescape") as src,
        tarfile.open(
            fileobj=out, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape"
        ) as dst,
    ):
        for member in src:
            # what reading derived from PAX (long names, big ids) is derived again on writing
            member.pax_headers = {k: v for k, v in member.pax_headers.items() if k.startswith("SCHILY.")}
            content = src.extractfile(member) if member.isreg() else None
            dst.addfile(member, content)
    return out.getvalue()


@pytest.mark.parametrize("epoch", [None, MTIME + 2])
def test_write_layer_writes_the_bytes_tarfile_would(shm_path: Path, epoch: int | None) -> None:
    """Headers are formatted without tarfile; the layer (and so its digest) must not change."""
    src = shm_path / "src"
    make_tree(src)
    (src / ("n" * 100)).write_bytes(b"a name of exactly 100 bytes")
    os.symlink("t" * 100, src / "link100")
    os.chown(src / "link100", 2**21, 2**21, follow_symlinks=False)  # more than 7 octal digits: PAX
    data = written(src, source_date_epoch=epoch)
    assert data == tarfile_reserialized(data)


_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=120)


@settings(max_examples=300, deadline=None)
@given(
    name=_names,
    kind=st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                          tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE]),
    mode=st.integers(0, 0o7777),
    uid=st.one_of(st.integers(0, 70_000), st.integers(0, 2**32 - 1)),
    gid=st.one_of(st.integers(0, 70_000), st.integers(0, 2**32 - 1)),
    mtime=st.one_of(st.integers(0, 2**33), st.integers(-(2**31), 2**40)),
    size=st.one_of(st.integers(0, 1 << 20), st.integers(0, 2**40)),
    linkname=st.one_of(st.just(""), _names),
    device=st.tuples(st.integers(0, 4095), st.integers(0, 2**20)),
    xattr=st.one_of(st.none(), st.binary(max_size=8)),
)  # fmt: skip
def test_tar_header_is_tarfiles_header(
    name: str, kind: bytes, mode: int, uid: int, gid: int, mtime: int, size: int,
    linkname: str, device: tuple[int, int], xattr: bytes | None,
) -> None:  # fmt: skip
    from kapal.image.layer_tar import tar_header

    pax = {"SCHILY.xattr.user.x": xattr.decode("utf-8", "surrogateescape")} if xattr is not None else None
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode, info.uid, info.gid, info.mtime, info.size = mode, uid, gid, mtime, size
    info.uname = info.gname = ""
    info.linkname = linkname
    info.devmajor, info.devminor = device
    info.pax_headers = dict(pax or {})
    expected = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    got = tar_header(name, kind, mode, uid, gid, mtime, size, linkname, *device, pax_headers=pax)
    assert got == expected


# ---------------------------------------------------------------------------
# The fast header parser must agree with tarfile's


def header_fields(parse: Any, block: bytes) -> tuple[Any, ...]:
    try:
        info = parse(block, "utf-8", "surrogateescape")
    except Exception as error:  # noqa: BLE001 - the exception type is what is compared
        return ("error", type(error))
    return tuple(
        getattr(info, field)
        for field in (
            "name", "mode", "uid", "gid", "size", "mtime", "chksum", "type",
            "linkname", "uname", "gname", "devmajor", "devminor",
        )
    ) + (getattr(info, "_sparse_structs", None),)  # fmt: skip


def test_fast_header_parsing_matches_tarfile(shm_path: Path) -> None:
    from kapal.image.layer_tar import _LayerTarInfo

    archives = []
    for tar_format in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        builder = TarBuilder(format=tar_format)
        builder.dir("dir/", mode=0o2755).file("dir/" + "n" * 99, b"x" * 700, uid=2**20, gid=7)
        builder.file("p" * 80 + "/" + "q" * 80, b"ustar prefix").symlink("s", "t" * 90)
        builder.device("dev/c", tarfile.CHRTYPE, 4095, 2**19).fifo("fifo").file("ünï", b"u")
        if tar_format != tarfile.USTAR_FORMAT:
            builder.file("big-ids", b"", uid=2**30, gid=2**25, mtime=2**40)
        archives.append(builder.bytes())
    v7_dir = tarfile.TarInfo("v7dir/")  # V7 tar: a directory is a "regular file" ending in /
    v7_dir.type = tarfile.AREGTYPE
    archives.append(TarBuilder(format=tarfile.USTAR_FORMAT).entry(v7_dir).bytes())
    archives.append(os.urandom(512 * 64))
    if shutil.which("tar"):
        src = shm_path / "gnu"
        (src / ("x" * 150)).mkdir(parents=True)
        (src / "sparse").write_bytes(b"")
        os.truncate(src / "sparse", 10 << 20)
        with open(src / "sparse", "r+b") as f:
            f.seek(5 << 20)
            f.write(b"data in the middle")
        for options in (["--format=gnu", "--sparse"], ["--format=posix", "--sparse"], ["--format=oldgnu"]):
            archives.append(
                subprocess.run(
                    ["tar", *options, "-C", str(src), "-cf", "-", "."], check=True, capture_output=True
                ).stdout
            )
    compared = 0
    for archive in archives:
        for start in range(0, len(archive) - 511, 512):
            block = archive[start : start + 512]
            assert header_fields(_LayerTarInfo.frombuf, block) == header_fields(
                tarfile.TarInfo.frombuf, block
            )
            compared += 1
    flipped = bytearray(archives[0][:512])
    flipped[0] |= 0x80  # signed-checksum territory: the slow path must decide
    assert header_fields(_LayerTarInfo.frombuf, bytes(flipped)) == header_fields(
        tarfile.TarInfo.frombuf, bytes(flipped)
    )
    assert compared > 100


def test_a_gnu_sparse_layer(dest: Path, shm_path: Path) -> None:
    if shutil.which("tar") is None:
        pytest.skip("no tar")
    src = shm_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.truncate(8 << 20)
        f.seek(3 << 20)
        f.write(b"middle")
    for tar_format in ("gnu", "posix"):
        data = subprocess.run(
            ["tar", f"--format={tar_format}", "--sparse", "-C", str(src), "-cf", "-", "sparse"],
            check=True,
            capture_output=True,
        ).stdout
        target = dest / tar_format
        target.mkdir()
        apply(data, target)
        content = (target / "sparse").read_bytes()
        assert content == (src / "sparse").read_bytes()
        assert os.stat(target / "sparse").st_blocks * 512 <= 1 << 20  # holes stay holes


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD])
def test_round_trip_through_a_compressed_blob(shm_path: Path, compression: Compression) -> None:
    src = shm_path / "src"
    make_tree(src)
    blob = io.BytesIO()
    writer = compress_writer(blob, compression)
    write_layer(src, writer)
    writer.close()
    dest = shm_path / "dest"
    dest.mkdir()
    stream, detected = open_decompressed(NonSeekable(blob.getvalue()))  # type: ignore[arg-type]
    assert detected is compression
    apply_layer(stream, dest)
    assert snapshot(dest, times=False).keys() == snapshot(src, times=False).keys()
    assert (dest / "bin/su").read_bytes() == (src / "bin/su").read_bytes()


# ---------------------------------------------------------------------------
# Small files are created by a pool of threads: the tree is the same as written in order


def busy_layer() -> bytes:
    """Many small files around every entry whose ordering matters."""
    layer = TarBuilder().dir(".", mode=0o755, mtime=1_000_000_001)
    for d in range(8):
        layer.dir(f"d{d}", mtime=1_000_000_000 + d)
        for f in range(40):
            layer.file(
                f"d{d}/f{f}", os.urandom(f * 37), mode=0o644 if f % 3 else 0o600, mtime=1_500_000_000 + f
            )
    layer.file("d0/owned", b"o", mode=0o4755, uid=1000, gid=1000)  # chown, then chmod keeps setuid
    layer.file("d0/f1", b"replaced")  # a path overwritten while its first version may be pending
    layer.hardlink("d1/link", "d1/f5")  # a link to a file that may be pending
    layer.file("d1/f5", b"relinked")  # replacing a linked name keeps the link's inode intact
    layer.whiteout("d2/f7")  # a whiteout over a pending file
    layer.opaque("d3")
    layer.file("d4", b"a file over a tree of pending files")
    layer.dir("d5", mode=0o2770, gid=44, mtime=1_000_000_055)  # re-declared after its children
    layer.file("d5/late", b"created under the setgid directory")
    layer.file("d6/x", b"xattr, written inline", xattrs={"user.x": b"1"})
    layer.file("d7/big", os.urandom(300 << 10))  # above the small-file size: written inline
    layer.symlink("d7/f0", "f1")  # a symlink over a pending file
    layer.dir(".", mode=0o751, mtime=1_000_000_002)  # the root re-declared late
    # The same, each right after what it depends on (still waiting in the batch being filled).
    layer.dir("now", mtime=1_000_000_077).file("now/f", b"first").file("now/f", b"second")
    layer.file("now/t", b"target").hardlink("now/l", "now/t")
    layer.file("now/w", b"gone").whiteout("now/w")
    layer.file("now/tree/a", b"a").file("now/tree", b"file")
    layer.dir("now/sgid").file("now/sgid/a", b"a").dir("now/sgid", mode=0o2770, gid=44)
    layer.file("now/sym", b"s").symlink("now/sym", "f")
    layer.file("now/dev", b"d").device("now/dev", tarfile.CHRTYPE, 1, 3)
    layer.file("now/last", b"still in the batch when the stream ends")
    return layer.bytes()


def test_the_pool_gives_the_tree_written_in_order(shm_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layer = busy_layer()
    pooled, in_order = shm_path / "pooled", shm_path / "in_order"
    pooled.mkdir()
    in_order.mkdir()
    pooled_stats = apply(layer, pooled)
    monkeypatch.setattr(layer_tar, "SMALL_FILE", -1)  # nothing qualifies: every file written inline
    in_order_stats = apply(layer, in_order)
    assert pooled_stats == in_order_stats
    assert snapshot(pooled, times=False) == snapshot(in_order, times=False)
    mtimes = {}
    for root in (pooled, in_order):
        mtimes[root] = {
            str(path.relative_to(root)): os.lstat(path).st_mtime_ns for path in [root, *root.rglob("*")]
        }
    assert mtimes[pooled] == mtimes[in_order]
    assert mtimes[pooled]["."] == 1_000_000_002 * 10**9
    assert mtimes[pooled]["d5"] == 1_000_000_055 * 10**9
    assert (pooled / "d0/f1").read_bytes() == b"replaced"
    assert os.lstat(pooled / "d1/link").st_nlink == 1 and (pooled / "d1/f5").read_bytes() == b"relinked"
    assert stat.S_ISCHR(os.lstat(pooled / "d2/f7").st_mode)
    assert owner_and_mode(pooled / "d0/owned") == (1000, 1000, 0o4755)
    assert owner_and_mode(pooled / "d5/late") == (0, 0, 0o644)


def test_a_hostile_entry_after_many_small_files_changes_nothing_outside(sandbox: Path) -> None:
    layer = TarBuilder()
    for index in range(300):
        layer.file(f"pending/f{index}", b"p" * 100)
    layer.symlink("escape", "../../canary_dir").file("escape/inner", b"pwned")
    assert_refused(sandbox, layer.bytes(), 'would be written through symlink "escape"')


# ---------------------------------------------------------------------------
# PAX extended headers: the fast parser and tarfile read the same members


def pax_member(records: bytes, name: str = "member", data: bytes = b"content") -> bytes:
    """An extended header with exactly *records*, then a regular file (USTAR) with *data*."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = len(records)
    padding = b"\0" * (-len(records) % 512)
    member = tarfile.TarInfo(name)
    member.size = len(data)
    return (
        header.tobuf(tarfile.USTAR_FORMAT)
        + records
        + padding
        + member.tobuf(tarfile.USTAR_FORMAT)
        + data
        + b"\0" * (-len(data) % 512)
    )


def record(keyword: bytes, value: bytes) -> bytes:
    body = b" " + keyword + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length).encode()) + len(body) != length:
        length += 1
    return str(length).encode() + body


def members_of(data: bytes) -> Any:
    """What the layer reader makes of each member (name, type, size, pax headers, offsets…) or its error."""
    found: list[Any] = []
    try:
        tar = tarfile.TarFile(
            fileobj=layer_tar._ForwardReader(io.BytesIO(data)),  # type: ignore[arg-type]
            mode="r",
            tarinfo=layer_tar._LayerTarInfo,
            pax_headers=layer_tar._DiscardGlobals(),
            encoding="utf-8",
            errors="surrogateescape",
        )
        while (info := tar.next()) is not None:
            fields = (info.name, info.type, info.size, info.mtime, info.uid, info.linkname, info.pax_headers)
            found.append((*fields, info.offset, info.offset_data, info.sparse))
    except Exception as error:  # noqa: BLE001 - the exception is what is compared
        found.append((type(error), str(error)))
    return found


def test_plain_pax_headers_parse_as_tarfile_parses_them(
    shm_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archives = [
        TarBuilder()
        .file("a" * 150 + "/long/name", b"x", pax={"mtime": "1600000000.5", "comment": "héllo = world"})
        .file("ünï/\udcff-raw", b"y")  # not UTF-8: tarfile writes hdrcharset=BINARY
        .symlink("s", "t" * 200)
        .file("x", b"z", xattrs={"user.a": b"1=2\n3", "trusted.b": b"\xff"})
        .bytes(),
        pax_member(record(b"path", b"renamed") + record(b"size", b"3"), data=b"abc"),
        pax_member(record(b"path", b"one") + record(b"path", b"two")),  # the later record wins
        pax_member(record(b"uid", b"12") + record(b"mtime", b"-5.25")),
        pax_member(b"", name="no-records"),
        pax_member(b"9 path=x\n" + b"\n" * 3),  # records followed by junk inside the size
        pax_member(record(b"path", b"p")[:-1] + b"X"),  # a record not ending in a newline
        pax_member(b"0 path=x\n"),  # a zero length: tarfile's error
        pax_member(b"12 path=x\n"),  # a length past the end
        pax_member(b"a path=x\n"),
        pax_member(b"10 pathxyz\n"),  # no "="
        pax_member(b"8 =empty\n"),
        pax_member(record(b"path", b"\xff\xfe")),
        pax_member(record(b"hdrcharset", b"BINARY") + record(b"path", b"\xff")),
        pax_member(record(b"GNU.sparse.map", b"0,1") + record(b"GNU.sparse.realsize", b"5")),
    ]
    padded = bytearray(pax_member(record(b"path", b"padded")))
    padded[512 + 20] = ord("7")  # a byte in the padding after the records
    archives.append(bytes(padded))
    if shutil.which("tar"):
        src = shm_path / "gnu"
        src.mkdir()
        (src / "sparse").write_bytes(b"")
        os.truncate(src / "sparse", 1 << 20)
        (src / ("long" * 40)).write_bytes(b"l")
        archives.append(
            subprocess.run(
                ["tar", "--format=posix", "--sparse", "-C", str(src), "-cf", "-", "."],
                check=True,
                capture_output=True,
            ).stdout
        )
    plain = layer_tar._plain_pax_records
    verdicts: list[bool] = []
    monkeypatch.setattr(
        layer_tar, "_plain_pax_records", lambda *a: verdicts.append(plain(*a) is not None) or plain(*a)
    )
    fast = [members_of(archive) for archive in archives]
    assert True in verdicts and False in verdicts  # both ways were taken
    monkeypatch.setattr(layer_tar, "_plain_pax_records", lambda buf, size: None)  # all to tarfile
    assert fast == [members_of(archive) for archive in archives]
    assert fast[1] == [
        ("renamed", tarfile.REGTYPE, 3, 0, 0, "", {"path": "renamed", "size": "3"}, 0, 1536, None)
    ]
    assert fast[2][0][0] == "two"
    assert fast[7] == [(InvalidArgument, "invalid layer: bad tar header at offset 0: invalid header")]

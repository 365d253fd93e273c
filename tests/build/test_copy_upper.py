"""COPY into a directory it creates writes straight to the overlay's upper dir: the layer must be
exactly the one writing through the overlay gives."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from kapal.build.context import BuildContext
from kapal.build.copy import Owner, Writer, copy_sources, resolve_sources
from kapal.image.layer_tar import write_layer
from kapal.runtime import rootfs as rootfs_mount

EPOCH = 1_700_000_000


def context_tar() -> bytes:
    """A tree with what COPY has to get right: modes, owners, links, empty and big files, nesting."""
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **fields: object) -> None:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mtime = 1_600_000_000 + len(name)
            for key, value in fields.items():
                setattr(info, key, value)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add("tree", tarfile.DIRTYPE, mode=0o750)
        add("tree/sub", tarfile.DIRTYPE, mode=0o755)
        add("tree/sub/deeper", tarfile.DIRTYPE, mode=0o700)
        for index in range(120):  # enough to go through the copy's threads
            add(f"tree/sub/f{index:03d}", data=os.urandom(index * 37), mode=0o644)
        add("tree/sub/deeper/secret", data=b"s", mode=0o600)
        add("tree/setuid", data=b"#!/bin/sh\n", mode=0o4755)
        add("tree/empty", mode=0o640)
        add("tree/big", data=os.urandom(3 << 20), mode=0o644)
        add("tree/link", tarfile.SYMTYPE, linkname="sub/f001")
        add("tree/sticky", tarfile.DIRTYPE, mode=0o1777)
        add("tree/ünïcode", data=b"u")
    return body.getvalue()


def copy_layer(
    base: Path, context: BuildContext, direct: bool, owner: Owner | None, chmod: int | None
) -> bytes:
    lower = base / "lower"
    (lower / "srv" / "existing").mkdir(parents=True, exist_ok=True)
    upper, work, target = base / "upper", base / "work", base / "merged"
    rootfs_mount.mount_overlay([str(lower)], upper, work, target)
    try:
        found = resolve_sources(context, ["tree"], "COPY", True)
        copy_sources(
            context,
            found,
            "/srv/app/",
            "/",
            str(target),
            owner,
            chmod,
            "COPY",
            upper=str(upper) if direct else None,
        )
    finally:
        rootfs_mount.unmount(target)
    out = io.BytesIO()
    write_layer(upper, out, source_date_epoch=EPOCH)  # /srv and /srv/app were made now: clamped
    return out.getvalue()


@pytest.mark.parametrize(
    ("owner", "chmod"),
    [(None, None), (Owner(1000, 1000), None), (None, 0o751)],
    ids=["root", "chown", "chmod"],
)
def test_a_copy_into_a_new_directory_gives_the_overlays_layer(
    scratch: Path, owner: Owner | None, chmod: int | None
) -> None:
    spool = scratch / "spool"
    spool.mkdir()
    context = BuildContext.receive(io.BytesIO(context_tar()), spool)
    try:
        through_overlay = copy_layer(scratch / "a", context, False, owner, chmod)
        into_upper = copy_layer(scratch / "b", context, True, owner, chmod)
    finally:
        context.close()
    assert into_upper == through_overlay
    with tarfile.open(fileobj=io.BytesIO(into_upper)) as tar:
        names = tar.getnames()
    assert "srv/app/sub/f119" in names and "srv/app/ünïcode" in names and "srv/app/link" in names


def test_only_a_directory_the_copy_made_and_left_empty_is_written_directly(scratch: Path) -> None:
    lower, upper, work, target = (scratch / name for name in ("lower", "upper", "work", "merged"))
    (lower / "srv").mkdir(parents=True)
    rootfs_mount.mount_overlay([str(lower)], upper, work, target)
    try:
        writer = Writer(str(target), None, None, str(upper))
        existing = writer.mkdirs("/srv")
        assert writer._in_upper(existing) == existing  # from a lower layer: through the overlay
        made = writer.mkdirs("/srv/app")
        assert writer._in_upper(made) == str(upper / "srv" / "app")
        (Path(made) / "file").write_bytes(b"x")
        assert writer._in_upper(made) == made  # not empty any more
    finally:
        rootfs_mount.unmount(target)


def test_later_sources_overwrite_what_earlier_ones_wrote(scratch: Path) -> None:
    """``COPY d1 d2 f /dest/``: names the sources share end up with the later source's content."""
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w") as tar:
        for name, data in (
            ("d1/a", b"1a"),
            ("d1/sub/x", b"1x"),
            ("d2/a", b"2a"),
            ("d2/sub/x", b"2x"),
            ("a", b"fa"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (scratch / "spool").mkdir()
    context = BuildContext.receive(io.BytesIO(body.getvalue()), scratch / "spool")
    lower, upper, work, target = (scratch / name for name in ("lower", "upper", "work", "merged"))
    lower.mkdir()
    rootfs_mount.mount_overlay([str(lower)], upper, work, target)
    try:
        found = resolve_sources(context, ["d1", "d2", "a"], "COPY", True)
        copy_sources(context, found, "/dest/", "/", str(target), None, None, "COPY", upper=str(upper))
        assert (target / "dest" / "a").read_bytes() == b"fa"
        assert (target / "dest" / "sub" / "x").read_bytes() == b"2x"
    finally:
        rootfs_mount.unmount(target)
        context.close()

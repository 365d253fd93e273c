"""The layer store asks ext4 to spread layer directories over the disk, and works where it cannot."""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kapal.content.lease import LeaseRegistry
from kapal.image.layers import LayerStore, spread_subdirectories
from kapal.metadata import Database

FS_IOC_GETFLAGS = 0x80086601
FS_TOPDIR_FL = 0x00020000


@pytest.fixture
def shm_path() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kapal-test-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ext4(shm_path: Path) -> Iterator[Path]:
    """A small ext4 filesystem without a journal (like the machine's root), loop-mounted."""
    image, mountpoint = shm_path / "ext4.img", shm_path / "mnt"
    mountpoint.mkdir()
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", str(image)], capture_output=True)
    if (
        made.returncode != 0
        or subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)]).returncode
    ):
        pytest.skip("cannot make and mount an ext4 filesystem here")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def inode_flags(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = bytearray(4)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags)
        return int.from_bytes(flags, "little")
    finally:
        os.close(fd)


def assert_unpacks_a_layer(store: LayerStore, leases: LeaseRegistry) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("etc/hostname")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"kapal"))
    data = out.getvalue()
    with leases.lease() as lease:
        layer = store.unpack(io.BytesIO(data), "sha256:" + hashlib.sha256(data).hexdigest(), lease)
    assert (store.path(layer.diff_id) / "etc/hostname").read_bytes() == b"kapal"


def test_on_ext4_the_layers_directory_is_a_top_directory(ext4: Path) -> None:
    leases = LeaseRegistry()
    db = Database(ext4 / "metadata.db")
    try:
        store = LayerStore(ext4 / "layers", db, leases)
        flags = inode_flags(ext4 / "layers")
        assert flags & FS_TOPDIR_FL
        assert spread_subdirectories(ext4 / "layers")  # asked again: already so, nothing else changed
        assert inode_flags(ext4 / "layers") == flags
        assert_unpacks_a_layer(store, leases)
    finally:
        db.close()


def test_where_the_filesystem_has_no_such_flag_the_store_works_as_before(shm_path: Path) -> None:
    assert not spread_subdirectories(shm_path)
    leases = LeaseRegistry()
    db = Database(shm_path / "metadata.db")
    try:
        assert_unpacks_a_layer(LayerStore(shm_path / "layers", db, leases), leases)
    finally:
        db.close()

"""A container's root filesystem: overlayfs over the image's layer directories.

Mounted with the mount(2) system call directly: spawning mount(8) costs a few
milliseconds per container for nothing.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from kapal.errors import InvalidArgument, StorageError

_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2
# The overlay mount options must fit in one page.
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise StorageError(f"{what}: {os.strerror(errno)}")


def mount_overlay(lowerdirs: list[str], upper: Path, work: Path, target: Path) -> None:
    """Mount *lowerdirs* (topmost first) under a writable *upper* at *target*."""
    for directory in (upper, work, target):
        directory.mkdir(parents=True, exist_ok=True)
    if not lowerdirs:
        # overlayfs needs a lower layer; an image from scratch gets an empty one.
        empty = upper.parent / "empty"
        empty.mkdir(exist_ok=True)
        lowerdirs = [str(empty)]
    options = f"lowerdir={':'.join(lowerdirs)},upperdir={upper},workdir={work}"
    if os.path.exists("/sys/module/overlay/parameters/index"):
        options += ",index=off"
    if len(options) >= _PAGE:
        raise InvalidArgument(
            f"image has too many layers ({len(lowerdirs)}) for one overlay mount on this data root path"
        )
    _check(
        _libc.mount(b"overlay", str(target).encode(), b"overlay", 0, options.encode()),
        f"mounting the container's root filesystem at {target}",
    )


def unmount(target: Path) -> None:
    if not os.path.ismount(target):
        return
    if _libc.umount2(str(target).encode(), 0) != 0:
        # Busy (a process still holds it): detach now, the kernel frees it when released.
        _check(_libc.umount2(str(target).encode(), MNT_DETACH), f"unmounting {target}")


def is_mounted(target: Path) -> bool:
    return os.path.ismount(target)

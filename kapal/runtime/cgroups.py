"""Which cgroup layout this host has, the fix crun needs on hybrid hosts, and resource readings.

A hybrid host mounts v1 controllers plus a cgroup2 hierarchy. crun refuses to
run when that cgroup2 hierarchy holds any controller ("cgroups in hybrid mode
not supported, drop all controllers from cgroupv2"); runc copes. A controller
sits in cgroup2 only while no v1 hierarchy claims it, so mounting a v1
hierarchy for it moves it out: that is the fix kapald applies, once, and logs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("kapald")

ROOT = Path("/sys/fs/cgroup")
PARENT = "kapal"


@dataclass(frozen=True)
class Layout:
    version: int  # 1 (including hybrid) or 2
    hybrid: bool
    unified_controllers: tuple[str, ...]  # controllers held by the cgroup2 mount of a hybrid host


def detect() -> Layout:
    if (ROOT / "cgroup.controllers").exists():
        return Layout(2, False, ())
    unified = ROOT / "unified" / "cgroup.controllers"
    if unified.exists():
        return Layout(1, True, tuple(unified.read_text().split()))
    return Layout(1, False, ())


def fix_hybrid_for_crun(layout: Layout) -> Layout:
    """Move the controllers of a hybrid host's cgroup2 mount to v1 hierarchies, so crun can run.

    Returns the layout afterwards; logs what it did and what it could not do.
    """
    if not layout.hybrid or not layout.unified_controllers:
        return layout
    for controller in layout.unified_controllers:
        target = ROOT / controller
        try:
            target.mkdir(exist_ok=True)
            if not os.path.ismount(target):
                _mount("cgroup", str(target), "cgroup", 0, controller)
            log.warning(
                "cgroups are hybrid and cgroup2 held the %s controller, which crun refuses; "
                "mounted it as a v1 hierarchy at %s",
                controller,
                target,
            )
        except OSError as error:
            log.warning("could not move cgroup controller %s out of cgroup2: %s", controller, error)
    return detect()


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), target)


def cgroups_path(container_id: str) -> str:
    """The OCI ``linux.cgroupsPath`` kapal gives a container (cgroupfs driver)."""
    return f"/{PARENT}/{container_id}"


def _v1_dir(controller: str, container_id: str) -> Path:
    return ROOT / controller / PARENT / container_id


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def memory_usage(container_id: str, layout: Layout) -> tuple[int | None, int | None]:
    """(usage, limit) in bytes."""
    if layout.version == 2:
        base = ROOT / PARENT / container_id
        usage = _read_int(base / "memory.current")
        raw = (base / "memory.max").read_text().strip() if (base / "memory.max").exists() else "max"
        return usage, None if raw == "max" else int(raw)
    base = _v1_dir("memory", container_id)
    return _read_int(base / "memory.usage_in_bytes"), _read_int(base / "memory.limit_in_bytes")


def freezer_supported(layout: Layout) -> bool:
    return layout.version == 2 or (ROOT / "freezer").is_dir()


def remove(container_id: str, layout: Layout) -> None:
    """Remove a container's cgroups the runtime left behind (empty directories only)."""
    if layout.version == 2:
        candidates = [ROOT / PARENT / container_id]
    else:
        candidates = [entry / PARENT / container_id for entry in ROOT.iterdir() if entry.is_dir()]
    for path in candidates:
        try:
            path.rmdir()
        except OSError:
            pass

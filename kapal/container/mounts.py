"""A container's mounts: ``-v``, ``--mount``, ``--volumes-from`` and image ``VOLUME``s, as dockerd has them.

Docker decides a container's mount points once, when the container is created
(``registerMountPoints`` and ``createContainerVolumesOS`` in moby): named
volumes are created on first use, every image ``VOLUME`` not covered by another
mount gets an anonymous volume, and the container references them all until it
is removed. ``prepare_mounts`` does that and records the points with the volume
service. At each start ``resolve_mounts`` turns the record into OCI mounts,
creating ``-v`` host directories that went missing and, at the first start,
copying the image's content into volumes that are still empty (Docker's
copy-up; ``nocopy`` disables it). ``HostConfig.Tmpfs`` stays with
``build_spec``; a ``--mount type=tmpfs`` is a mount point like the others.

Error messages are moby's (``volume/mounts/linux_parser.go``), so a client
sees what dockerd would tell it.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kapal.container.model import Container
from kapal.errors import InvalidArgument, KapalError, NotFound, NotImplementedYet
from kapal.runtime.spec import merge_mount_options
from kapal.runtime.users import _resolve_final
from kapal.volume.service import (
    DEFAULT_DRIVER,
    MountPoint,
    VolumeService,
    mount_table,
    validate_name,
    validate_options,
    volume_is_empty,
)

log = logging.getLogger("kapald")

_RW_MODES = {"rw", "ro"}
_LABEL_MODES = {"z", "Z"}
PROPAGATION_MODES = {"private", "rprivate", "slave", "rslave", "shared", "rshared"}
_COPY_MODES = {"nocopy"}
_CONSISTENCY_MODES = {"consistent", "cached", "delegated"}
_MODE_FAMILIES = (_RW_MODES, _LABEL_MODES, PROPAGATION_MODES, _COPY_MODES, _CONSISTENCY_MODES)
DEFAULT_PROPAGATION = "rprivate"
_TMPFS_FLAG_OPTIONS = {"exec", "noexec"}
_TMPFS_DEFAULTS = ["noexec", "nosuid", "nodev", DEFAULT_PROPAGATION]
# Mount types moby's Linux parser knows but kapal does not serve.
_UNSUPPORTED_TYPES = {"image": "image mounts", "cluster": "cluster volumes"}

Lookup = Callable[[str], Container]


# -- parsing: moby's linux_parser, messages and all --------------------------------------------


def _modes(mode: str) -> list[str]:
    return mode.split(",") if mode else []


def valid_mode(mode: str) -> bool:
    """A ``-v`` mode: comma-separated flags, at most one of each family (rw, label, propagation, ...)."""
    if not mode:
        return True
    counts = [0] * len(_MODE_FAMILIES)
    for flag in mode.split(","):
        for index, family in enumerate(_MODE_FAMILIES):
            if flag in family:
                counts[index] += 1
                break
        else:
            return False
    return max(counts) <= 1


def read_write(mode: str) -> bool:
    return valid_mode(mode) and "ro" not in _modes(mode)


def _propagation_of(mode: str) -> str:
    return next((flag for flag in _modes(mode) if flag in PROPAGATION_MODES), "")


def clean_path(path: str) -> str:
    return posixpath.normpath(path) if path else path


def _config_error(kind: str, message: str) -> InvalidArgument:
    return InvalidArgument(f'invalid mount config for type "{kind}": {message}')


def _validate_target(spec: dict[str, Any]) -> None:
    kind, target = str(spec.get("Type") or ""), str(spec.get("Target") or "")
    if not target:
        raise _config_error(kind, "field Target must not be empty")
    if posixpath.normpath(target.replace("\\", "/")) == "/":
        raise _config_error(kind, "invalid specification: destination can't be '/'")
    if not target.replace("\\", "/").startswith("/"):
        raise _config_error(kind, f"invalid mount path: '{target}' mount path must be absolute")


def _reject_fields(spec: dict[str, Any], *names: str) -> None:
    for name in names:
        if spec.get(name) is not None:
            raise _config_error(str(spec.get("Type") or ""), f"field {name} must not be specified")


def tmpfs_data(options: dict[str, Any] | None, read_only: bool) -> str:
    """``ConvertTmpfsOptions``: ``ro``, ``mode=<octal>``, ``size=<n>[kmg]`` and exec/noexec flags."""
    options = options or {}
    data = ["ro"] if read_only else []
    mode = int(options.get("Mode") or 0)
    if mode:
        data.append(f"mode={mode:o}")
    size = int(options.get("SizeBytes") or 0)
    if size:
        for suffix, divisor in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
            if size % divisor == 0:
                data.append(f"size={size // divisor}{suffix}")
                break
        else:
            data.append(f"size={size}")
    for option in options.get("Options") or []:
        if not isinstance(option, list) or not 1 <= len(option) <= 2:
            raise InvalidArgument("invalid option array length")
        if option[0] not in _TMPFS_FLAG_OPTIONS:
            raise InvalidArgument(f"invalid option: {option[0]}")
        data.append(option[0] if len(option) == 1 else f"{option[0]}={option[1]}")
    return ",".join(data)


def parse_mount(spec: dict[str, Any], check_source: bool = True) -> MountPoint:
    """One ``HostConfig.Mounts`` entry (moby's ``ParseMountSpec``) as a mount point.

    A bind's source must exist unless ``BindOptions.CreateMountpoint`` says to
    create it; ``check_source`` is off for ``-v`` binds, whose missing source
    Docker creates.
    """
    if not isinstance(spec, dict):
        raise InvalidArgument("invalid mount config: want an object")
    kind = str(spec.get("Type") or "")
    _validate_target(spec)
    source = str(spec.get("Source") or "")
    read_only = bool(spec.get("ReadOnly"))
    point = MountPoint(type=kind, destination=clean_path(str(spec["Target"])), rw=not read_only)
    if kind == "bind":
        if not source:
            raise _config_error(kind, "field Source must not be empty")
        bind_options = spec.get("BindOptions") or {}
        propagation = str(bind_options.get("Propagation") or "")
        if propagation and propagation not in PROPAGATION_MODES:
            raise _config_error(kind, f"invalid propagation mode: {propagation}")
        _reject_fields(spec, "VolumeOptions", "ImageOptions", "TmpfsOptions")
        if not source.startswith("/"):
            raise _config_error(kind, f"invalid mount path: '{source}' mount path must be absolute")
        create = bool(bind_options.get("CreateMountpoint"))
        if check_source and not create and not os.path.exists(source):
            raise _config_error(kind, f"bind source path does not exist: {source}")
        point.source = clean_path(source)
        point.propagation = propagation or DEFAULT_PROPAGATION
        point.non_recursive = bool(bind_options.get("NonRecursive"))
        point.create_source = create
    elif kind == "volume":
        _reject_fields(spec, "BindOptions", "ImageOptions", "TmpfsOptions")
        volume_options = spec.get("VolumeOptions") or {}
        if volume_options.get("Subpath"):
            if not source:
                raise _config_error(kind, "must not set Subpath when using anonymous volumes")
            raise NotImplementedYet("volume subpaths (VolumeOptions.Subpath) are not supported by kapal")
        driver_config = volume_options.get("DriverConfig") or {}
        point.name = source
        point.anonymous = not source
        point.driver = str(driver_config.get("Name") or "")
        point.copy_data = not volume_options.get("NoCopy")
        point.volume_labels = volume_options.get("Labels") or None
        point.volume_options = driver_config.get("Options") or None
    elif kind == "tmpfs":
        _reject_fields(spec, "BindOptions", "VolumeOptions", "ImageOptions")
        if source:
            raise _config_error(kind, "field Source must not be specified")
        try:
            point.tmpfs_data = tmpfs_data(spec.get("TmpfsOptions"), read_only)
        except InvalidArgument as error:
            raise _config_error(kind, str(error)) from None
    elif kind in _UNSUPPORTED_TYPES:
        raise NotImplementedYet(f"{_UNSUPPORTED_TYPES[kind]} are not supported by kapal")
    else:
        raise _config_error(kind, "mount type unknown")
    return point


def parse_bind(raw: str, volume_driver: str = "") -> MountPoint:
    """One ``-v``/``HostConfig.Binds`` entry (moby's ``ParseMountRaw``).

    ``/host:/ctr[:mode]`` is a bind, ``name:/ctr[:mode]`` a named volume and a
    lone ``/ctr`` an anonymous volume. The mode is kept as given: inspect's
    ``Mode`` shows it.
    """
    invalid = InvalidArgument(f"invalid volume specification: '{raw}'")
    parts = raw.split(":", 3)
    if not parts[0]:
        raise invalid
    source, mode = "", ""
    if len(parts) == 1:
        target = parts[0]
    elif len(parts) == 2:
        if valid_mode(parts[1]):
            raise invalid  # a destination and a mode, but volumes have no mode alone: "/foo:rw"
        source, target = parts
    elif len(parts) == 3:
        source, target, mode = parts
    else:
        raise invalid
    if not valid_mode(mode):
        raise InvalidArgument(f"invalid mode: {mode}")
    spec: dict[str, Any] = {
        "Type": "bind" if source.startswith("/") else "volume",
        "Source": source,
        "Target": target,
        "ReadOnly": not read_write(mode),
    }
    if spec["Type"] == "volume" and volume_driver:
        spec["VolumeOptions"] = {"DriverConfig": {"Name": volume_driver}}
    if "nocopy" in _modes(mode):
        spec.setdefault("VolumeOptions", {})["NoCopy"] = True
    if _propagation_of(mode):
        spec["BindOptions"] = {"Propagation": _propagation_of(mode)}
    try:
        point = parse_mount(spec, check_source=False)
    except NotImplementedYet:
        raise
    except InvalidArgument as error:
        raise InvalidArgument(f"{invalid}: {error}") from None
    point.mode = mode
    point.create_source = point.type == "bind"  # Docker creates a missing -v host directory
    return point


def _parse_volumes_from(item: str) -> tuple[str, str]:
    if not item:
        raise InvalidArgument("volumes-from specification cannot be an empty string")
    ref, _, mode = item.partition(":")
    if not mode:
        return ref, "rw"
    if not valid_mode(mode) or _propagation_of(mode) or "nocopy" in _modes(mode):
        raise InvalidArgument(f"invalid mode: {mode}")
    return ref, mode


def _duplicate(destination: str) -> InvalidArgument:
    return InvalidArgument(f"Duplicate mount point: {destination}")


def plan_mounts(
    container: Container,
    volumes: VolumeService,
    lookup: Lookup | None = None,
    extra_volumes: dict[str, Any] | None = None,
) -> list[MountPoint]:
    """The container's mount points, in dockerd's order of precedence; nothing is created yet.

    ``--volumes-from`` first, overridden by ``-v`` binds, then ``--mount``
    (a destination both bound and mounted is an error), then an anonymous volume
    for each ``Config.Volumes`` entry (the image's ``VOLUME``s merged with the
    request's) that nothing else covers. Raises InvalidArgument for anything
    dockerd rejects at create.
    """
    host_config = container.host_config
    volume_driver = str(host_config.get("VolumeDriver") or "")
    points: dict[str, MountPoint] = {}
    bound: set[str] = set()
    tmpfs = {clean_path(str(d)) for d in (host_config.get("Tmpfs") or {})}

    for item in host_config.get("VolumesFrom") or []:
        ref, mode = _parse_volumes_from(str(item))
        if lookup is None:  # only when recording a container created before mount points were
            log.warning("container %s: --volumes-from %s skipped", container.short_id, ref)
            continue
        try:
            other = lookup(ref)
        except NotFound as error:
            raise InvalidArgument(str(error)) from None
        for theirs in volumes.mount_points(other.id):
            theirs.rw = theirs.rw and read_write(mode)
            theirs.mode = ""
            theirs.copy_data = False
            theirs.active = False
            points[theirs.destination] = theirs

    for raw in host_config.get("Binds") or []:
        point = parse_bind(str(raw), volume_driver)
        if point.destination in bound or point.destination in tmpfs:
            raise _duplicate(point.destination)
        if point.type == "volume" and not point.mode:
            point.mode = "z"  # dockerd's setBindModeIfNull for local volumes
        bound.add(point.destination)
        points[point.destination] = point

    for spec in host_config.get("Mounts") or []:
        point = parse_mount(spec)
        if point.destination in bound:
            raise _duplicate(str(spec.get("Target")))
        if point.type == "volume" and not point.mode:
            point.mode = "z"
        bound.add(point.destination)
        points[point.destination] = point

    declared = dict(extra_volumes or {})
    declared.update(container.config.get("Volumes") or {})
    for spec in declared:
        destination = clean_path(str(spec))
        if not destination.startswith("/") or destination in points or destination in tmpfs:
            continue
        points[destination] = MountPoint(
            type="volume",
            destination=destination,
            driver=volume_driver,
            anonymous=True,
            copy_data=True,
        )
    for point in points.values():
        if point.type == "volume":
            _check_volume(volumes, point)
    return list(points.values())


def _check_volume(volumes: VolumeService, point: MountPoint) -> None:
    """Refuse now what creating the volume would refuse, before any volume of the container is made."""
    driver = point.driver or DEFAULT_DRIVER
    if driver != DEFAULT_DRIVER:
        raise NotFound(
            f'create {point.name}: error looking up volume plugin {driver}: plugin "{driver}" not found'
        )
    if not point.name:
        validate_options("", point.volume_options)
        return
    validate_name(point.name)
    try:
        volumes.get(point.name)
    except NotFound:
        validate_options(point.name, point.volume_options)  # an existing volume ignores them


# -- the container service's hooks ---------------------------------------------------------------


def prepare_mounts(
    container: Container, volumes: VolumeService, lookup: Lookup | None = None
) -> list[MountPoint]:
    """At container create: validate the mounts, create the volumes, record the mount points.

    Raises before anything is created when the configuration is invalid, so a
    refused create leaves no volume behind.
    """
    points = plan_mounts(container, volumes, lookup)
    return volumes.record_mounts(container.id, points)


def _configured(container: Container, image_config: dict[str, Any]) -> bool:
    host_config = container.host_config
    return any(
        (
            host_config.get("Binds"),
            host_config.get("Mounts"),
            host_config.get("VolumesFrom"),
            container.config.get("Volumes"),
            image_config.get("Volumes"),
        )
    )


def resolve_mounts(
    container: Container, volumes: VolumeService, image_config: dict[str, Any], rootfs: Path
) -> list[dict[str, Any]]:
    """At container start, its root filesystem mounted at *rootfs*: the OCI mounts of its mount points.

    Volumes are mounted (their devices, for ``type``/``device`` volumes) and
    marked in use by this run, so the caller must call ``release_mounts`` if
    the start fails after this returns. A container created before mount points
    were recorded gets them recorded now.
    """
    points = volumes.mount_points(container.id)
    if not points and _configured(container, image_config):
        points = volumes.record_mounts(
            container.id,
            plan_mounts(container, volumes, None, image_config.get("Volumes") or {}),
        )
    for point in points:  # checks first: a refused start marks nothing in use
        if point.type == "bind":
            _ensure_bind_source(point)
        elif point.type == "volume":
            _check_mountable(rootfs, point.destination)
    points = volumes.mount(container.id)
    mounts: list[dict[str, Any]] = []
    for point in points:
        if point.type == "tmpfs":
            options = [*_TMPFS_DEFAULTS, *(o for o in point.tmpfs_data.split(",") if o)]
            mounts.append(
                {
                    "destination": point.destination,
                    "type": "tmpfs",
                    "source": "tmpfs",
                    "options": merge_mount_options(options),
                }
            )
            continue
        if point.type == "volume":
            source = str(volumes.path(point.name))
            if point.copy_data:
                with volumes.content_lock(point.name):
                    populate_volume(Path(source), rootfs, point.destination)
                point.copy_data = False
                volumes.save_mount_point(container.id, point)
        else:
            source = point.source
        options = ["bind" if point.non_recursive else "rbind"]
        if not point.rw:
            options.append("ro")
        options.append(point.propagation or DEFAULT_PROPAGATION)
        mounts.append(
            {"destination": point.destination, "type": "bind", "source": source, "options": options}
        )
    return mounts


def release_mounts(container: Container, volumes: VolumeService) -> None:
    """The container's run ended (or its start failed): its volumes are no longer mounted by it."""
    volumes.unmount(container.id)


def remove_mounts(container: Container, volumes: VolumeService, remove_volumes: bool) -> None:
    """The container is removed: drop its references, and its anonymous volumes with *remove_volumes*."""
    volumes.release(container.id, remove_anonymous=remove_volumes)


def container_mounts_json(container: Container, volumes: VolumeService) -> list[dict[str, Any]]:
    """Inspect's (and ``ps``'s) ``Mounts``: Docker's ``MountPoint`` objects, by destination."""
    out = []
    for point in volumes.mount_points(container.id):
        entry: dict[str, Any] = {"Type": point.type}
        if point.name:
            entry["Name"] = point.name
        if point.type == "volume":
            try:
                entry["Source"] = str(volumes.path(point.name))
            except NotFound:
                entry["Source"] = ""
        else:
            entry["Source"] = point.source
        entry["Destination"] = point.destination
        if point.driver or point.type == "volume":
            entry["Driver"] = point.driver or DEFAULT_DRIVER
        entry["Mode"] = point.mode
        entry["RW"] = point.rw
        entry["Propagation"] = point.propagation
        out.append(entry)
    return out


def set_root_propagation(spec: dict[str, Any], mounts: list[dict[str, Any]]) -> None:
    """Make the root's propagation carry shared and slave binds (dockerd's ``withMounts``).

    A shared bind needs a shared root and a shared source; a slave bind needs
    a shared or slave source and a root that is not private.
    """
    linux = spec.setdefault("linux", {})
    for mount in mounts:
        options = mount.get("options") or []
        if "shared" in options or "rshared" in options:
            _check_source_propagation(mount["source"], ("shared:",), "a shared mount")
            linux["rootfsPropagation"] = "shared"
        elif "slave" in options or "rslave" in options:
            _check_source_propagation(mount["source"], ("shared:", "master:"), "a shared or slave mount")
            if linux.get("rootfsPropagation") not in ("shared", "rshared"):
                linux["rootfsPropagation"] = "rslave"


# -- helpers ---------------------------------------------------------------------------------------


def _ensure_bind_source(point: MountPoint) -> None:
    if os.path.lexists(point.source):
        return
    if not point.create_source:
        raise _config_error("bind", f"bind source path does not exist: {point.source}")
    try:
        os.makedirs(point.source, 0o755, exist_ok=True)
    except FileExistsError:
        pass
    except OSError as error:
        raise InvalidArgument(
            f"error while creating mount source path '{point.source}': {error.strerror.lower()}"
        ) from None


def _open_in_root(rootfs: Path, path: str) -> int | None:
    """An fd of directory *path* inside *rootfs*, symlinks resolved inside it; ``None`` if missing.

    Raises NotADirectoryError when *path* is something other than a directory.
    """
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        resolved = _resolve_final(root_fd, path)
        if resolved is None:
            return None
        parent, name = resolved
        try:
            return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno == errno.ELOOP:
                return None
            raise
        finally:
            os.close(parent)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InvalidArgument(f"{path} in the container: too many levels of symbolic links") from None
        raise
    finally:
        os.close(root_fd)


def _check_mountable(rootfs: Path, destination: str) -> None:
    """A volume goes on a directory or where nothing is; not over a file of the image."""
    try:
        fd = _open_in_root(rootfs, destination)
    except NotADirectoryError:
        raise InvalidArgument(
            f"cannot mount volume over existing file, file exists {rootfs}{destination}"
        ) from None
    if fd is not None:
        os.close(fd)


def populate_volume(volume_path: Path, rootfs: Path, destination: str) -> bool:
    """Docker's copy-up: an empty volume gets the image's content at *destination*.

    Owners, modes, times, symlinks, hard links, device nodes and extended
    attributes are kept, and the volume's directory takes the image
    directory's owner and mode. Returns whether anything was copied.
    """
    try:
        fd = _open_in_root(rootfs, destination)
    except NotADirectoryError:
        return False
    if fd is None:
        return False
    try:
        if not volume_is_empty(volume_path):
            return False
        copy_tree(f"/proc/self/fd/{fd}", str(volume_path))
        return True
    except OSError as error:
        raise KapalError(f"copying {destination} of the image into its volume: {error}") from None
    finally:
        os.close(fd)


def copy_tree(source: str, target: str) -> None:
    """Copy the contents of directory *source* into directory *target*, then *source*'s metadata."""
    _copy_children(source, target, {})
    _copy_metadata(source, target, os.stat(source))


def _copy_children(source: str, target: str, links: dict[tuple[int, int], str]) -> None:
    with os.scandir(source) as entries:
        names = [entry.name for entry in entries]
    for name in names:
        src, dst = os.path.join(source, name), os.path.join(target, name)
        info = os.lstat(src)
        mode = info.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(dst, 0o700)
            _copy_children(src, dst, links)
        elif stat.S_ISREG(mode):
            key = (info.st_dev, info.st_ino)
            if info.st_nlink > 1 and key in links:
                os.link(links[key], dst)
                continue  # a hard link shares its inode's metadata
            shutil.copyfile(src, dst, follow_symlinks=False)
            if info.st_nlink > 1:
                links[key] = dst
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            os.mknod(dst, mode, info.st_rdev)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(dst, 0o600)
        else:
            continue  # sockets are not content
        _copy_metadata(src, dst, info)


def _copy_metadata(source: str, target: str, info: os.stat_result) -> None:
    """Owner, then mode (a chown clears set-id bits), then xattrs (file capabilities too), then times."""
    is_link = stat.S_ISLNK(info.st_mode)
    os.chown(target, info.st_uid, info.st_gid, follow_symlinks=False)
    if not is_link:
        os.chmod(target, stat.S_IMODE(info.st_mode))
    try:
        names = os.listxattr(source, follow_symlinks=False)
    except OSError:
        names = []
    for name in names:
        try:
            os.setxattr(target, name, os.getxattr(source, name, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            pass  # as dockerd: an attribute the volume's filesystem refuses is skipped
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)


def _mount_info_for(path: str) -> tuple[str, list[str]]:
    """The mount point holding *path* and its optional fields (``shared:N``, ``master:N``)."""
    real = os.path.realpath(path)
    best, fields = "/", []
    for mount_point, optional in mount_table():
        inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, fields = mount_point, optional
    return best, fields


def _check_source_propagation(source: str, wanted: tuple[str, ...], what: str) -> None:
    mount_point, fields = _mount_info_for(source)
    if not any(field.startswith(prefix) for field in fields for prefix in wanted):
        raise InvalidArgument(f"path {source} is mounted on {mount_point} but it is not {what}")
